// The chat page the server answers GET / with: one static HTML document,
// its script inline (no build step, no CDN, nothing read from disk), which
// streams replies from /v1/chat/completions.
#pragma once

namespace memoe {

inline constexpr const char* kChatPage = R"HTML(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>memoe chat</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 0; background: #f5f5f4; color: #1c1917; }
  header { padding: 12px 20px; background: #1c1917; color: #fafaf9; font-weight: 600; }
  header span { font-weight: 400; opacity: .7; margin-left: 8px; font-size: 14px; }
  #log { max-width: 760px; margin: 16px auto; padding: 0 16px 140px; }
  .msg { margin: 10px 0; padding: 10px 14px; border-radius: 10px; white-space: pre-wrap; line-height: 1.45; }
  .user { background: #dbeafe; margin-left: 80px; }
  .assistant { background: #fff; border: 1px solid #e7e5e4; margin-right: 80px; min-height: 1.4em; }
  .error { background: #fee2e2; }
  form { position: fixed; bottom: 0; left: 0; right: 0; background: #fafaf9; border-top: 1px solid #e7e5e4; padding: 12px; }
  .row { max-width: 760px; margin: 0 auto; display: flex; gap: 8px; align-items: flex-end; }
  textarea { flex: 1; resize: none; height: 56px; padding: 8px; font: inherit; border: 1px solid #d6d3d1; border-radius: 8px; }
  button { padding: 10px 18px; font: inherit; border: 0; border-radius: 8px; background: #1c1917; color: #fff; cursor: pointer; }
  button:disabled { opacity: .5; cursor: default; }
  .settings { max-width: 760px; margin: 6px auto 0; font-size: 13px; color: #57534e; display: flex; gap: 14px; }
  .settings input { width: 64px; }
</style>
</head>
<body>
<header>memoe<span id="model"></span></header>
<div id="log"></div>
<form id="form">
  <div class="row">
    <textarea id="input" placeholder="Write a message; Enter sends, Shift+Enter breaks the line"></textarea>
    <button id="send" type="submit">Send</button>
  </div>
  <div class="settings">
    <label>temperature <input id="temperature" type="number" min="0" max="2" step="0.1" value="0.7"></label>
    <label>max tokens <input id="max_tokens" type="number" min="1" value="128"></label>
    <label>API key <input id="key" type="password" style="width: 140px"></label>
  </div>
</form>
<script>
const log = document.getElementById("log"), input = document.getElementById("input");
const send = document.getElementById("send"), form = document.getElementById("form");
const messages = [];
let model = "memoe";
fetch("/v1/models").then((r) => r.json()).then((j) => {
  if (j.data && j.data[0]) { model = j.data[0].id; document.getElementById("model").textContent = model; }
}).catch(() => {});
function bubble(role, text) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  div.textContent = text;
  log.appendChild(div);
  window.scrollTo(0, document.body.scrollHeight);
  return div;
}
input.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); form.requestSubmit(); }
});
form.addEventListener("submit", async (e) => {
  e.preventDefault();
  const text = input.value.trim();
  if (!text || send.disabled) return;
  input.value = "";
  send.disabled = true;
  messages.push({ role: "user", content: text });
  bubble("user", text);
  const reply = bubble("assistant", "");
  const headers = { "Content-Type": "application/json" };
  const key = document.getElementById("key").value;
  if (key) headers.Authorization = "Bearer " + key;
  let content = "";
  try {
    const r = await fetch("/v1/chat/completions", { method: "POST", headers, body: JSON.stringify({
      model, messages, stream: true,
      temperature: Number(document.getElementById("temperature").value),
      max_tokens: Number(document.getElementById("max_tokens").value) }) });
    if (!r.ok) throw new Error((await r.json()).error.message);
    const reader = r.body.getReader(), decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        if (!event.startsWith("data: ")) continue;
        const data = event.slice(6);
        if (data === "[DONE]") continue;
        const delta = JSON.parse(data).choices[0].delta;
        if (delta && delta.content) { content += delta.content; reply.textContent = content; }
      }
    }
    messages.push({ role: "assistant", content });
  } catch (err) {
    reply.className = "msg assistant error";
    reply.textContent = "error: " + err.message;
  }
  reply.dataset.done = "true";
  send.disabled = false;
  input.focus();
});
</script>
</body>
</html>
)HTML";

}  // namespace memoe
