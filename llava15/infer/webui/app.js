// llava15 web UI: keeps the conversation in OpenAI message form and streams replies from
// /v1/chat/completions (server-sent events). Images are sent as data: URLs in image_url parts.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { model: null, history: [], pendingImage: null, busy: false };

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h.Authorization = "Bearer " + key;
  return h;
}

function setStatus(text, s) {
  $("status").textContent = text;
  $("status").dataset.state = s;
}

function addBubble(role, text, imageUrl) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  if (imageUrl) {
    const img = document.createElement("img");
    img.src = imageUrl;
    div.appendChild(img);
  }
  const span = document.createElement("span");
  span.className = "text";
  span.textContent = text;
  div.appendChild(span);
  $("log").appendChild(div);
  $("log").scrollTop = $("log").scrollHeight;
  return div;
}

async function loadModel() {
  try {
    const r = await fetch("v1/models", { headers: headers() });
    const body = await r.json();
    if (!r.ok) throw new Error(body.error ? body.error.message : r.statusText);
    state.model = body.data[0].id;
    $("model").textContent = state.model;
  } catch (e) {
    $("model").textContent = "(enter the API key)";
  }
}

function attach(file) {
  if (!file || !file.type.startsWith("image/")) return;
  const reader = new FileReader();
  reader.onload = () => {
    state.pendingImage = reader.result;
    $("preview").src = reader.result;
    $("attachment-name").textContent = file.name || "pasted image";
    $("attachment").hidden = false;
  };
  reader.readAsDataURL(file);
}

function detach() {
  state.pendingImage = null;
  $("attachment").hidden = true;
  $("file-input").value = "";
}

// Parse an SSE byte stream into JSON events; calls onEvent for each `data:` payload.
async function readSSE(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of block.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") return;
        onEvent(JSON.parse(data));
      }
    }
  }
}

async function send(event) {
  event.preventDefault();
  const text = $("prompt").value.trim();
  if (state.busy || (!text && !state.pendingImage)) return;
  if (!state.model) await loadModel();
  const content = [];
  if (state.pendingImage) content.push({ type: "image_url", image_url: { url: state.pendingImage } });
  content.push({ type: "text", text: text });
  addBubble("user", text, state.pendingImage);
  state.history.push({ role: "user", content: content });
  $("prompt").value = "";
  detach();

  const bubble = addBubble("assistant", "");
  const out = bubble.querySelector(".text");
  bubble.dataset.chunks = "0";
  state.busy = true;
  $("send").disabled = true;
  setStatus("generating…", "busy");
  try {
    const r = await fetch("v1/chat/completions", {
      method: "POST", headers: headers(),
      body: JSON.stringify({
        model: state.model, messages: state.history, stream: true,
        temperature: Number($("temperature").value), max_tokens: Number($("max-tokens").value),
      }),
    });
    if (!r.ok) {
      const body = await r.json().catch(() => ({}));
      throw new Error(body.error ? body.error.message : r.status + " " + r.statusText);
    }
    await readSSE(r, (chunk) => {
      if (chunk.error) throw new Error(chunk.error.message);
      const choice = chunk.choices && chunk.choices[0];
      if (choice && choice.delta && choice.delta.content) {
        out.textContent += choice.delta.content;
        bubble.dataset.chunks = String(Number(bubble.dataset.chunks) + 1);
        $("log").scrollTop = $("log").scrollHeight;
      }
      if (choice && choice.finish_reason) bubble.dataset.finish = choice.finish_reason;
    });
    state.history.push({ role: "assistant", content: out.textContent });
    setStatus("done", "done");
  } catch (e) {
    bubble.remove();
    state.history.pop();
    addBubble("error", "Error: " + e.message);
    setStatus("error", "error");
  } finally {
    state.busy = false;
    $("send").disabled = false;
  }
}

$("composer").addEventListener("submit", send);
$("prompt").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) send(e);
});
$("prompt").addEventListener("paste", (e) => {
  for (const item of e.clipboardData.items) {
    if (item.type.startsWith("image/")) attach(item.getAsFile());
  }
});
$("file-input").addEventListener("change", (e) => attach(e.target.files[0]));
$("detach").addEventListener("click", detach);
$("clear").addEventListener("click", () => {
  state.history = [];
  $("log").innerHTML = "";
  detach();
  setStatus("ready", "idle");
});
$("api-key").value = localStorage.getItem("llava15-api-key") || "";
$("api-key").addEventListener("change", () => {
  localStorage.setItem("llava15-api-key", $("api-key").value.trim());
  loadModel();
});
loadModel();
