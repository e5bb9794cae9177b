// The chat page in headless Chromium (Debian's chromium, driven by
// playwright-core): loads /, types a message, sends it with the button, and
// waits for the streamed reply; the reply must be the one the API gives for
// the same conversation (greedy). Saves a screenshot.
//   node chat_page.mjs --memoe BIN --model DIR --port 18090 --screenshot FILE
import { spawn } from "node:child_process";
import { chromium } from "playwright-core";

const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, "")] = process.argv[i + 1];
const port = Number(args.port ?? 18090), base = `http://127.0.0.1:${port}`;
const server = spawn(args.memoe, ["serve", "--model", args.model, "--port", String(port), "--precision", "fp32"],
  { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, OMP_NUM_THREADS: "1" } });
let err = "";
await new Promise((resolve, reject) => {
  server.stderr.on("data", (d) => ((err += d), err.includes("listening on") && resolve()));
  server.on("exit", (code) => reject(new Error(`memoe serve exited ${code}: ${err}`)));
});
let failed = false;
const browser = await chromium.launch({ executablePath: args.chromium ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--headless=new"] });
try {
  const page = await browser.newPage({ viewport: { width: 900, height: 640 } });
  await page.goto(base + "/");
  await page.fill("#temperature", "0");
  await page.fill("#max_tokens", "24");
  await page.fill("#input", "the cat");
  await page.click("#send");
  await page.waitForSelector(".msg.assistant[data-done='true']", { timeout: 20000 });
  const shown = await page.textContent(".msg.assistant");
  const api = await fetch(base + "/v1/chat/completions", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ model: "memoe", messages: [{ role: "user", content: "the cat" }], temperature: 0, max_tokens: 24 }) });
  const want = (await api.json()).choices[0].message.content;
  if (!shown || shown !== want) {
    failed = true;
    console.error(`FAIL: the page shows ${JSON.stringify(shown)}, the API gives ${JSON.stringify(want)}`);
  }
  if (args.screenshot) await page.screenshot({ path: args.screenshot });
  console.log(failed ? "chat page: FAILED" : `chat page: the streamed reply appeared (${JSON.stringify(shown)})`);
} finally {
  await browser.close();
  server.kill("SIGTERM");
}
process.exit(failed ? 1 : 0);
