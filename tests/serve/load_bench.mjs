// The serving benchmark's client (bench/serve.sh): C concurrent streams,
// each sending one streamed greedy completion after another for a fixed
// time, max_tokens T with ignore_eos (so every request decodes T tokens);
// per request the time to first token (first text chunk) and the gaps
// between chunks. Prints one JSON line: aggregate decode tokens/s and the
// p50 / p99 of both latencies.
//   node load_bench.mjs --base http://127.0.0.1:8080 --clients 16 --seconds 20 --tokens 64 --prompt "..."
const a = {};
for (let i = 2; i < process.argv.length; i += 2) a[process.argv[i].replace(/^--/, "")] = process.argv[i + 1];
const clients = Number(a.clients), seconds = Number(a.seconds ?? 20), tokens = Number(a.tokens ?? 64);
const ttft = [], itl = [];
let generated = 0, requests = 0, rejected = 0;
const t0 = performance.now(), until = t0 + seconds * 1000;
await Promise.all(Array.from({ length: clients }, async () => {
  while (performance.now() < until) {
    const start = performance.now();
    const r = await fetch(a.base + "/v1/completions", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ model: "memoe", prompt: a.prompt, max_tokens: tokens, temperature: 0, ignore_eos: true, stream: true }) });
    if (r.status === 429) {
      rejected++;
      await r.text();
      continue;
    }
    const reader = r.body.getReader(), decoder = new TextDecoder();
    let buffer = "", last = 0;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        if (!event.startsWith("data: {")) continue;
        const j = JSON.parse(event.slice(6));
        if (j.usage) generated += j.usage.completion_tokens;
        if (!j.choices[0].text) continue;
        const now = performance.now();
        if (last === 0) ttft.push(now - start);
        else itl.push(now - last);
        last = now;
      }
    }
    requests++;
  }
}));
const elapsed = (performance.now() - t0) / 1000;
const pct = (v, p) => {
  const s = [...v].sort((x, y) => x - y);
  return s.length ? s[Math.min(s.length - 1, Math.floor(p * s.length))] : 0;
};
console.log(JSON.stringify({ clients, requests, rejected, tokens_per_s: generated / elapsed,
  ttft_p50_ms: pct(ttft, 0.5), ttft_p99_ms: pct(ttft, 0.99), itl_p50_ms: pct(itl, 0.5), itl_p99_ms: pct(itl, 0.99) }));
