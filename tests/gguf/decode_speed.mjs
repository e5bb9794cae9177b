// llama.cpp's side of bench/llama_cpp.sh: prefill and decode speed of a GGUF
// in node-llama-cpp's prebuilt CPU llama.cpp (here because node resolves
// node-llama-cpp from tests/gguf/node_modules). Prefills the prompt ids in
// one batch, then decodes greedily; prints one JSON line:
// {"prefill_tokens_per_s", "decode_tokens_per_s", "tokens", "threads", "sched"}.
//   node decode_speed.mjs --gguf FILE --prompt 1,2,3 --tokens 64 --threads 2 [--sched rr|normal]
//
// --sched rr (the default) moves every thread of this process but the main
// (JavaScript) thread to SCHED_RR before llama.cpp starts; "sched" reports the
// class of those threads. The prebuilt has no OpenMP and node-llama-cpp
// attaches no threadpool, so ggml creates its helper threads afresh for every
// graph (every decoded token) and waits for them in a spinning barrier
// (ggml_barrier, no yield). On the 2-vCPU VMs here (their kernel is booted
// with sched_vcpu_pack=15) the fresh helper often starts on its creator's vCPU
// and stays there, so the two threads take turns on one vCPU while the other
// idles: decode on two threads ran 10-50x slower than on one (small, f32: 52
// against 1017 tokens/s). The real-time class puts a woken thread on an idle
// CPU at once. The main thread stays in the normal class: in the real-time
// class it holds a vCPU while it pumps the event loop, the helper queues
// behind it for what is left of a round-robin slice (60-100 ms), and about
// half the runs stalled once, in the prefill or a decode step.
// bench/llama_cpp.sh runs memoe in the same class. Needs CAP_SYS_NICE (root);
// without it the run goes on as it is and "sched" says so.
import { execFileSync } from "node:child_process";
import { readFileSync, readdirSync } from "node:fs";

const a = {};
for (let i = 2; i < process.argv.length; i += 2) a[process.argv[i].replace(/^--/, "")] = process.argv[i + 1];
const prompt = a.prompt.split(",").map(Number), tokens = Number(a.tokens ?? 64), threads = Number(a.threads ?? 2);
// The scheduling classes of this process's threads but the main one (field 41 of /proc/…/stat).
const policies = () => [...new Set(readdirSync("/proc/self/task").filter((t) => t !== String(process.pid)).map((t) => {
  try { return ["normal", "fifo", "rr", "batch", "iso", "idle"][readFileSync(`/proc/self/task/${t}/stat`, "utf8").split(") ")[1].split(" ")[38]]; }
  catch { return undefined; }
}).filter(Boolean))].join("+");
if ((a.sched ?? "rr") === "rr" && policies() !== "rr") {
  try {
    execFileSync("chrt", ["-a", "-r", "-p", "1", String(process.pid)], { stdio: "ignore" });
    execFileSync("chrt", ["-o", "-p", "0", String(process.pid)], { stdio: "ignore" });  // the main thread alone
  } catch { console.error("decode_speed.mjs: could not move to SCHED_RR (chrt -r needs CAP_SYS_NICE); two-thread decode may collapse"); }
}
// Imported after the class is set; ggml's helpers inherit it from the libuv worker that starts them.
const { getLlama, LlamaLogLevel } = await import("node-llama-cpp");
const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath: a.gguf, gpuLayers: 0 });
// memoe's KV cache holds fp32 (MLA's latent and rope key): the same here.
const context = await model.createContext({ contextSize: prompt.length + tokens + 8, threads, batchSize: 512,
  experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32" });
const sequence = context.getSequence();
const t0 = performance.now();
let first = 0, n = 0;
for await (const token of sequence.evaluate(prompt, { temperature: 0 })) {
  void token;
  if (n === 0) first = performance.now();
  if (++n >= tokens) break;
}
const t1 = performance.now();
// The first token comes out of the prefill; the other tokens - 1 are decode steps.
console.log(JSON.stringify({ prefill_tokens_per_s: prompt.length / ((first - t0) / 1000),
  decode_tokens_per_s: (tokens - 1) / ((t1 - first) / 1000), tokens: n, threads: context.currentThreads,
  sched: policies() }));
await context.dispose();
await model.dispose();
