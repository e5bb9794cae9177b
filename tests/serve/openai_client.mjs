// `memoe serve` against the official openai client and raw HTTP:
// completions and chat, streamed and not; greedy output equal to `memoe
// generate --greedy` for the same prompt, alone and with other requests
// running; a seeded sampled request streamed equal to the same request not
// streamed; every kind of bad request answered with its status and an
// OpenAI-style error object; a wrong or missing key 401; a full queue 429;
// a client that disconnects freeing its sequence; the server alive after.
//   node openai_client.mjs --memoe BIN --model DIR [--port 18080]
import { execFileSync, spawn } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import OpenAI from "openai";

const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, "")] = process.argv[i + 1];
let port = Number(args.port ?? 18080);
let failures = 0;
const check = (ok, what) => {
  if (!ok) {
    failures++;
    console.error(`FAIL: ${what}`);
  }
};

async function startServer(extra = []) {
  const p = port++;
  const child = spawn(args.memoe, ["serve", "--model", args.model, "--port", String(p), "--precision", "fp32", ...extra],
    { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, OMP_NUM_THREADS: "1" } });
  let err = "";
  await new Promise((resolve, reject) => {
    child.stderr.on("data", (d) => {
      err += d;
      if (err.includes("listening on")) resolve();
    });
    child.on("exit", (code) => reject(new Error(`memoe serve exited ${code}: ${err}`)));
  });
  return { child, base: `http://127.0.0.1:${p}` };
}

const generate = (prompt, n) =>
  JSON.parse(execFileSync(args.memoe, ["generate", "--model", args.model, "--prompt", prompt, "--greedy", "--max-tokens",
    String(n), "--precision", "fp32", "--json"], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"],
    env: { ...process.env, OMP_NUM_THREADS: "1" } })).text;

const post = (base, path, body, headers = {}) =>
  fetch(base + path, { method: "POST", headers: { "Content-Type": "application/json", ...headers },
    body: typeof body === "string" || Buffer.isBuffer(body) ? body : JSON.stringify(body) });

const server = await startServer();
const client = new OpenAI({ baseURL: server.base + "/v1", apiKey: "unused", maxRetries: 0 });
try {
  const models = await client.models.list();
  check(models.data.length === 1 && models.data[0].id === "memoe", "GET /v1/models lists memoe");

  // Greedy completions equal memoe generate, and streamed equals not streamed.
  const prompts = ["the cat", "every bird never", "a stone", "my dog often", "the river", "some cloud", "one", "that tree"];
  const want = prompts.map((p) => generate(p, 24));
  const one = await client.completions.create({ model: "memoe", prompt: prompts[0], max_tokens: 24, temperature: 0 });
  check(one.choices[0].text === want[0], `greedy completion equals memoe generate: ${JSON.stringify(one.choices[0].text)} vs ${JSON.stringify(want[0])}`);
  check(one.object === "text_completion" && one.usage.completion_tokens > 0 &&
    one.usage.total_tokens === one.usage.prompt_tokens + one.usage.completion_tokens, "completion usage adds up");
  check(["stop", "length"].includes(one.choices[0].finish_reason), "finish_reason is stop or length");
  const together = await Promise.all(prompts.map((p) =>
    client.completions.create({ model: "memoe", prompt: p, max_tokens: 24, temperature: 0 })));
  together.forEach((r, i) => check(r.choices[0].text === want[i], `concurrent greedy request ${i} equals memoe generate`));

  const streamText = async (req) => {
    let text = "", finish = null;
    for await (const chunk of await client.completions.create({ ...req, stream: true })) {
      text += chunk.choices[0]?.text ?? "";
      finish = chunk.choices[0]?.finish_reason ?? finish;
    }
    return { text, finish };
  };
  const seeded = { model: "memoe", prompt: "the dog", max_tokens: 32, temperature: 0.9, top_p: 0.95, seed: 7 };
  const plain = await client.completions.create(seeded);
  const streamed = await streamText(seeded);
  check(streamed.text === plain.choices[0].text, "a seeded sampled request streams the text it returns unstreamed");
  check(streamed.finish === plain.choices[0].finish_reason, "the stream's last chunk carries the finish reason");

  // Stop strings end the text before them.
  const stopAt = want[0].length > 3 ? want[0].slice(2, 4) : null;
  if (stopAt) {
    const s = await client.completions.create({ model: "memoe", prompt: prompts[0], max_tokens: 24, temperature: 0, stop: [stopAt] });
    check(s.choices[0].text === want[0].slice(0, want[0].indexOf(stopAt)) && s.choices[0].finish_reason === "stop",
      `stop ${JSON.stringify(stopAt)} cuts the text`);
  }

  // Chat, streamed and not.
  const messages = [{ role: "system", content: "be brief" }, { role: "user", content: "the cat" }];
  const chat = await client.chat.completions.create({ model: "memoe", messages, max_tokens: 16, temperature: 0 });
  check(chat.object === "chat.completion" && chat.choices[0].message.role === "assistant", "chat completion shape");
  let chatText = "";
  for await (const c of await client.chat.completions.create({ model: "memoe", messages, max_tokens: 16, temperature: 0, stream: true }))
    chatText += c.choices[0]?.delta?.content ?? "";
  check(chatText === chat.choices[0].message.content, "streamed chat equals unstreamed chat");
  check(chat.choices[0].message.content === generate("System: be brief\nUser: the cat\nAssistant:", 16),
    "chat follows the documented template");

  // Bad requests: status and an error object naming the problem.
  const bad = async (body, status, what, path = "/v1/completions") => {
    const r = await post(server.base, path, body);
    const j = await r.json().catch(() => ({}));
    check(r.status === status && typeof j?.error?.message === "string", `${what}: ${r.status} ${JSON.stringify(j)}`);
  };
  await bad("{not json", 400, "malformed JSON");
  await bad("[1,2]", 400, "a JSON array");
  await bad({ model: "memoe", prompt: 5 }, 400, "a prompt that is a number");
  await bad({ model: "memoe", prompt: "x", max_tokens: "9" }, 400, "max_tokens a string");
  await bad({ model: "memoe", prompt: "x", max_tokens: -1 }, 400, "max_tokens negative");
  await bad({ model: "memoe", prompt: "x", max_tokens: 100000 }, 400, "max_tokens above the limit");
  await bad({ model: "memoe", prompt: "x", temperature: 5 }, 400, "temperature out of range");
  await bad({ model: "memoe", prompt: "x", top_p: 0 }, 400, "top_p zero");
  await bad({ model: "memoe", prompt: "x", n: 2 }, 400, "n above 1");
  await bad({ model: "memoe", prompt: "x", stream: "yes" }, 400, "stream a string");
  await bad({ model: "memoe", prompt: "x", stop: [1] }, 400, "stop not strings");
  await bad({ model: "memoe", prompt: "x", frobnicate: 1 }, 400, "an unknown field");
  await bad({ model: "other", prompt: "x" }, 400, "another model");
  await bad({ model: "memoe", prompt: "x ".repeat(4000), max_tokens: 10 }, 400, "a prompt beyond the context");
  await bad({ model: "memoe", messages: [{ role: "wizard", content: "x" }] }, 400, "a chat role that does not exist",
    "/v1/chat/completions");
  await bad({ model: "memoe", messages: [] }, 400, "no messages", "/v1/chat/completions");
  await bad({ model: "memoe", prompt: "x".repeat(2 << 20) }, 413, "a body above the limit");
  await bad(Buffer.from('{"prompt": "\xff\xfe", "max_tokens": 2}', "latin1"), 400, "ill-formed UTF-8");
  await bad("[".repeat(400000) + "]".repeat(400000), 400, "JSON nested 400,000 deep");
  const nowhere = await fetch(server.base + "/v1/nothing");
  check(nowhere.status === 404, "an unknown path is 404");

  // A client that goes away: its sequence is freed.
  // (node:http, whose destroy() closes the socket; fetch's cancel may drain it instead.)
  await new Promise((resolve, reject) => {
    const req = http.request(server.base + "/v1/completions", { method: "POST", headers: { "Content-Type": "application/json" } },
      (res) => res.once("data", () => (req.destroy(), resolve())));
    req.on("error", () => {});
    req.end(JSON.stringify({ model: "memoe", prompt: "the cat", max_tokens: 480, ignore_eos: true, stream: true }));
    setTimeout(() => reject(new Error("no first chunk in 10 s")), 10000);
  });
  await new Promise((res) => setTimeout(res, 1000));
  const metrics = await (await fetch(server.base + "/metrics")).text();
  check(/\nmemoe_requests_cancelled_total 1\n/.test(metrics), `a disconnected stream is cancelled: ${metrics}`);
  check(/\nmemoe_batch_size 0\n/.test(metrics), "nothing left decoding");
  check((await fetch(server.base + "/health")).status === 200, "alive after all of it");
} finally {
  server.child.kill("SIGTERM");
}

// The key.
const keyed = await startServer(["--api-key", "sesame"]);
try {
  const noKey = await post(keyed.base, "/v1/completions", { prompt: "x" });
  check(noKey.status === 401 && (await noKey.json()).error.code === "invalid_api_key", "no key is 401");
  const wrong = await post(keyed.base, "/v1/completions", { prompt: "x" }, { Authorization: "Bearer nope" });
  check(wrong.status === 401, "a wrong key is 401");
  const right = new OpenAI({ baseURL: keyed.base + "/v1", apiKey: "sesame", maxRetries: 0 });
  const ok = await right.completions.create({ model: "memoe", prompt: "x", max_tokens: 2, temperature: 0 });
  check(ok.choices.length === 1, "the right key is served");
} finally {
  keyed.child.kill("SIGTERM");
}

// A full queue answers 429, and every request is answered.
const small = await startServer(["--max-batch", "1", "--max-queue", "1"]);
try {
  const statuses = await Promise.all(Array.from({ length: 8 }, () =>
    post(small.base, "/v1/completions", { model: "memoe", prompt: "the cat", max_tokens: 64, temperature: 0 })
      .then(async (r) => (await r.text(), r.status))));
  check(statuses.every((s) => s === 200 || s === 429) && statuses.includes(429) && statuses.includes(200),
    `a full queue answers 429: ${statuses}`);
} finally {
  small.child.kill("SIGTERM");
}
// 64 clients at once for 6 s: every request answered (the right greedy text,
// or 429), the server alive, its memory back near where it started.
const loaded = await startServer(["--max-batch", "16", "--max-queue", "32"]);
try {
  const rss = () => Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${loaded.child.pid}/status`, "utf8"))[1]) * 1024;
  const expect = generate("the cat", 24);
  const warm = await post(loaded.base, "/v1/completions", { model: "memoe", prompt: "the cat", max_tokens: 24, temperature: 0 });
  await warm.text();
  const before = rss();
  const counts = { ok: 0, busy: 0, wrong: 0 };
  const until = Date.now() + 6000;
  await Promise.all(Array.from({ length: 64 }, async (_, c) => {
    while (Date.now() < until) {
      const stream = c % 2 === 1;
      const r = await post(loaded.base, "/v1/completions", { model: "memoe", prompt: "the cat", max_tokens: 24, temperature: 0, stream });
      const body = await r.text();
      if (r.status === 429) {
        counts.busy++;
        continue;
      }
      let text = "";
      if (r.status === 200 && !stream) text = JSON.parse(body).choices[0].text;
      if (r.status === 200 && stream)
        for (const line of body.split("\n\n"))
          if (line.startsWith("data: {")) text += JSON.parse(line.slice(6)).choices[0].text;
      if (r.status === 200 && text === expect) counts.ok++;
      else counts.wrong++;
    }
  }));
  await new Promise((res) => setTimeout(res, 500));
  const after = rss();
  console.log(`64 clients for 6 s: ${counts.ok} answered right, ${counts.busy} told 429, ${counts.wrong} wrong; ` +
    `RSS ${(before / 1e6).toFixed(1)} MB before, ${(after / 1e6).toFixed(1)} MB after`);
  check(counts.wrong === 0 && counts.ok > 0, "under 64 clients every request is answered right or with 429");
  check((await fetch(loaded.base + "/health")).status === 200, "alive after the load");
  // In a sanitized build freed memory waits in ASan's quarantine: RSS says nothing there (MEMOE_SANITIZED, set by CMake).
  if (!process.env.MEMOE_SANITIZED) check(after <= before + 64e6, "RSS back within 64 MB of its start after the load");
} finally {
  loaded.child.kill("SIGTERM");
}
console.log(failures ? `${failures} checks failed` : "memoe serve: every check passed");
process.exit(failures ? 1 : 0);
