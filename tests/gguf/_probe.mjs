// llama.cpp's side of bench/llama_cpp.sh: prefill and decode speed of a GGUF
// in node-llama-cpp's prebuilt CPU llama.cpp (here because node resolves
// node-llama-cpp from tests/gguf/node_modules). Prefills the prompt ids in
// one batch, then decodes greedily; prints one JSON line:
// {"prefill_tokens_per_s", "decode_tokens_per_s", "tokens"}.
//   node decode_speed.mjs --gguf FILE --prompt 1,2,3 --tokens 64 --threads 2
import { getLlama, LlamaLogLevel } from "node-llama-cpp";

const a = {};
for (let i = 2; i < process.argv.length; i += 2) a[process.argv[i].replace(/^--/, "")] = process.argv[i + 1];
const prompt = a.prompt.split(",").map(Number), tokens = Number(a.tokens ?? 64), threads = Number(a.threads ?? 2);
const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath: a.gguf, gpuLayers: 0 });
// memoe's KV cache holds fp32 (MLA's latent and rope key): the same here.
const context = await model.createContext({ contextSize: prompt.length + tokens + 8, threads, batchSize: 512,
  experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32" });
const sequence = context.getSequence();
const t0 = performance.now();
let first = 0, n = 0, last = 0; const gaps = [];
for await (const token of sequence.evaluate(prompt, { temperature: 0 })) {
  void token;
  const now = performance.now(); if (n > 0) gaps.push((now - last).toFixed(2)); last = now;
  if (n === 0) first = performance.now();
  if (++n >= tokens) break;
}
const t1 = performance.now();
// The first token comes out of the prefill; the other tokens - 1 are decode steps.
console.log(JSON.stringify({ prefill_tokens_per_s: prompt.length / ((first - t0) / 1000),
  decode_tokens_per_s: (tokens - 1) / ((t1 - first) / 1000), tokens: n }));
console.error(gaps.join(' '));
await context.dispose();
await model.dispose();
