// Loads a GGUF that `memoe export gguf` wrote into llama.cpp (node-llama-cpp's
// prebuilt CPU build) and checks it against memoe on the same model:
//   1. the same token ids for each test string (llama.cpp's SPM tokenizer
//      against memoe's sentencepiece model);
//   2. the same greedy continuation of the prompt ids, STEPS tokens long:
//      at each position llama.cpp decoded, memoe's most likely next token
//      (its logits along llama.cpp's tokens) is llama.cpp's, except at a
//      near-tie (memoe's top two within TOL), and memoe's own greedy decoding
//      gives the same tokens up to the first near-tie;
//   3. at each position, the log-probabilities of memoe's likely next tokens
//      (at least 1 %, at most five) within TOL of llama.cpp's.
// A mismatch prints the first position and both values; the exit status is
// non-zero on any mismatch.
//   node check_llama_cpp.mjs --memoe BIN --model DIR --gguf FILE --prompt 3,17,40 [--steps 32] [--tol 1e-4]
//     [--threads 1] [--precision fp32|bf16 (memoe's)] [--also-precision bf16|fp32] [--text "a string"]...
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { getLlama, LlamaLogLevel } from "node-llama-cpp";

function parseArgs(argv) {
  const a = { steps: 32, tol: 1e-4, threads: 1, text: [], precision: "fp32" };
  for (let i = 2; i < argv.length; i += 2) {
    const k = argv[i].replace(/^--/, ""), v = argv[i + 1];
    if (v === undefined) throw new Error(`${argv[i]} needs a value`);
    if (k === "text") a.text.push(v);
    else a[k] = ["steps", "threads"].includes(k) ? Number(v) : k === "tol" ? Number(v) : v;
  }
  for (const k of ["memoe", "model", "gguf", "prompt"]) if (!a[k]) throw new Error(`--${k} is required`);
  return a;
}

// memoe's logits [1, L, V] from its .npy (float32, C order).
function readNpy(file) {
  const buf = fs.readFileSync(file);
  const headerLen = buf.readUInt16LE(8);
  const header = buf.toString("latin1", 10, 10 + headerLen);
  const shape = header.match(/\(([^)]*)\)/)[1].split(",").filter((s) => s.trim()).map(Number);
  const data = new Float32Array(buf.buffer.slice(buf.byteOffset + 10 + headerLen, buf.byteOffset + buf.length));
  return { shape, data };
}

function logSoftmax(row) {
  let max = -Infinity;
  for (const x of row) max = Math.max(max, x);
  let sum = 0;
  for (const x of row) sum += Math.exp(x - max);
  const lse = max + Math.log(sum);
  return Array.from(row, (x) => x - lse);
}

const args = parseArgs(process.argv);
const memoe = (...argv) => execFileSync(args.memoe, argv, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
let failures = 0;
const fail = (msg) => {
  failures++;
  console.error(`MISMATCH ${path.basename(args.gguf)}: ${msg}`);
};

const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath: args.gguf, gpuLayers: 0 });
// An f32 KV cache: llama.cpp's default f16 cache alone moves log-probabilities by 1e-3.
const context = await model.createContext({ contextSize: 512, threads: args.threads, batchSize: 512,
  experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32" });
const sequence = context.getSequence();

// 1. Tokenization.
for (const text of args.text) {
  const ours = memoe("tokenizer", "encode", "--tokenizer", args.model, "--text", text).trim();
  const theirs = Array.from(model.tokenize(text, false)).join(",");
  if (ours !== theirs) {
    const a = ours.split(","), b = theirs.split(",");
    let i = 0;
    while (i < a.length && a[i] === b[i]) i++;
    fail(`tokenization of ${JSON.stringify(text)} differs first at position ${i}: memoe ${a[i]}, llama.cpp ${b[i]}`);
  }
}

// 2. Greedy continuation.
const prompt = args.prompt.split(",").map(Number);
const theirs = [], probabilities = [];
for await (const out of sequence.evaluateWithMetadata(prompt, { probabilities: true }, { temperature: 0 })) {
  theirs.push(out.token);
  probabilities.push(out.probabilities);
  if (theirs.length >= args.steps) break;
}
const generated = JSON.parse(memoe("generate", "--model", args.model, "--ids", prompt.join(","), "--greedy",
  "--max-tokens", String(args.steps), "--precision", args.precision, "--json"));
const ours = generated.ids;
if (ours.length < args.steps && generated.finish !== "stop") fail(`memoe generated only ${ours.length} tokens`);

// memoe's logits along llama.cpp's continuation (teacher-forced): its own
// greedy choice and log-probabilities at every position llama.cpp decoded.
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "memoe-gguf-"));
const ids = prompt.concat(theirs.slice(0, theirs.length - 1));
const logitsAt = (precision) => {
  memoe("logits", "--model", args.model, "--ids", ids.join(","), "--out", path.join(tmp, `${precision}.npy`),
    "--precision", precision);
  return readNpy(path.join(tmp, `${precision}.npy`));
};
const { shape, data } = logitsAt(args.precision);
// --also-precision P: memoe's logits in P as well. At a near-tie of the
// router, rounding alone may route a token to the other expert, and the two
// memoe precisions then give two answers, each right for its routing; a
// low-precision llama.cpp may side with either, so a position's difference
// is the smaller of the two.
const also = args["also-precision"] ? logitsAt(args["also-precision"]).data : null;
fs.rmSync(tmp, { recursive: true, force: true });
const V = shape[2];
// The largest difference between memoe's log-probabilities lp of its likely
// tokens (at least 1 %, at most 5) and llama.cpp's at decoded token i.
const likelyDiff = (lp, i, pos) => {
  let d = 0, at = "";
  for (const [x, t] of lp.map((x, t) => [x, t]).sort((a, b) => b[0] - a[0]).slice(0, 5)) {
    if (x < Math.log(0.01)) break;
    const y = Math.log(probabilities[i].get(t) ?? 0);
    if (!(Math.abs(x - y) <= d)) (d = Math.abs(x - y)), (at = `position ${pos + 1}, token ${t}: memoe ${x.toFixed(6)}, llama.cpp ${y.toFixed(6)}`);
  }
  return [d, at];
};
let settledByAlso = 0;
// A position where memoe's two most likely tokens are closer than the
// tolerance is a near-tie: either is a greedy choice there (rounding of the
// weights alone may swap them). Everywhere else the tokens must agree.
let alike = 0, ties = 0, firstTie = theirs.length, worst = 0, worstAt = "";
for (let i = 0; i < theirs.length; i++) {
  const pos = prompt.length - 1 + i;
  const lp = logSoftmax(data.subarray(pos * V, (pos + 1) * V));
  const top = lp.map((x, t) => [x, t]).sort((a, b) => b[0] - a[0]);
  if (top[0][1] === theirs[i]) {
    alike++;
  } else if (top[0][0] - top[1][0] < args.tol && top[1][1] === theirs[i]) {
    ties++;
    firstTie = Math.min(firstTie, i);
  } else {
    fail(`greedy token ${i} (position ${pos + 1}): memoe ${top[0][1]} (log-probability ${top[0][0].toFixed(4)}), ` +
      `llama.cpp ${theirs[i]} (memoe gives it ${lp[theirs[i]].toFixed(4)})`);
    break;
  }
  let [diff, at] = likelyDiff(lp, i, pos);
  if (also && diff > args.tol) {
    const [d2, at2] = likelyDiff(logSoftmax(also.subarray(pos * V, (pos + 1) * V)), i, pos);
    if (d2 < diff) (diff = d2), (at = `${at2} (memoe in ${args["also-precision"]})`), settledByAlso++;
  }
  if (!(diff <= worst)) (worst = diff), (worstAt = at);
}
// memoe's own greedy decoding (through its KV cache) up to the first near-tie.
for (let i = 0; i < Math.min(firstTie, ours.length); i++)
  if (ours[i] !== theirs[i]) {
    fail(`memoe generate's greedy token ${i}: ${ours[i]}, llama.cpp ${theirs[i]}`);
    break;
  }
if (!(worst <= args.tol)) fail(`log-probability differs by ${worst.toExponential(3)} > ${args.tol} at ${worstAt}`);
const compared = theirs.length;
console.log(`${path.basename(args.gguf)}: ${args.text.length} strings tokenized alike, ${alike} of ${compared} greedy tokens ` +
  `alike${ties ? ` and ${ties} near-ties` : ""}, largest log-probability difference ${worst.toExponential(3)} ` +
  `(tolerance ${args.tol})${settledByAlso ? `; ${settledByAlso} positions closer to memoe in ${args["also-precision"]}` : ""}`);
await context.dispose();
await model.dispose();
process.exit(failures ? 1 : 0);
