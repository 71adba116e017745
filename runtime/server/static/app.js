// app.js — the chat page: conversations in localStorage, streamed replies from
// /v1/chat/completions (server-sent events read from fetch), stop, settings, speeds.
"use strict";

const $ = (id) => document.getElementById(id);
const STORE = "llamapack.chats.v1";
const SETTINGS = "llamapack.settings.v2";      // only what the user changed
const OLD_SETTINGS = "llamapack.settings.v1";  // every setting, the page's old defaults included
const CURRENT = "llamapack.current.v1";
// The generation settings come from the server (/props: its command line and a packed file's
// .args set them); these stand in only until /props answers. A request carries only the
// settings the user changed, so the server's defaults apply to the rest.
const FALLBACK = { temperature: 0.8, top_p: 0.95, min_p: 0.05, repeat_penalty: 1.0, top_k: 40, max_tokens: -1,
                   seed: -1 };
const SAMPLING = Object.keys(FALLBACK);

const state = {
  chats: [],          // [{id, title, messages: [{role, content, meta?}], updated}]
  current: null,      // id of the open chat
  server: { ...FALLBACK },  // the server's defaults
  settings: {},       // the user's own choices: system, api_key, and changed generation settings
  controller: null,   // AbortController of the running request
  touched: new Set(), // ids of the chats this tab changed since it last saved (other tabs keep theirs)
  removed: new Set(), // ids of the chats this tab deleted since it last saved
};
const setting = (k) => (k in state.settings ? state.settings[k] : state.server[k]);

// ---------------------------------------------------------------------------------------------
// storage

function load() {
  try { state.chats = JSON.parse(localStorage.getItem(STORE) || "[]"); } catch { state.chats = []; }
  try {
    const saved = localStorage.getItem(SETTINGS);
    const old = () => changedOnly(JSON.parse(localStorage.getItem(OLD_SETTINGS) || "{}"));
    const parsed = saved !== null ? JSON.parse(saved) : old();
    state.settings = parsed && typeof parsed === "object" && !Array.isArray(parsed) ? parsed : {};
  } catch { state.settings = {}; }
  state.current = localStorage.getItem(CURRENT);
  if (!chat()) state.current = null;
}
// The stored chats with this tab's changes: another tab (the packed file opened twice) saves its
// own conversations into the same list, and a save here must not write over them.
function merged() {
  let stored = [];
  try { stored = JSON.parse(localStorage.getItem(STORE) || "[]"); } catch { /* unreadable: ours only */ }
  if (!Array.isArray(stored)) stored = [];
  const out = new Map(stored.filter((c) => c && c.id && !state.removed.has(c.id)).map((c) => [c.id, c]));
  for (const c of state.chats) if (state.touched.has(c.id) || !out.has(c.id) && !stored.length) out.set(c.id, c);
  return [...out.values()].sort((a, b) => b.updated - a.updated).slice(0, 100);
}
function save() {
  try {
    state.chats = merged();
    localStorage.setItem(STORE, JSON.stringify(state.chats));
    state.touched.clear();
    state.removed.clear();
    if (state.current) localStorage.setItem(CURRENT, state.current); else localStorage.removeItem(CURRENT);
    notice("");
  } catch {  // storage full or disabled: the page still works, and says what is not kept
    notice("This browser's storage is full: conversations are not being saved (delete old ones to make room).");
  }
}
// A line over the page that stays until what it says is over ("" takes it away)
function notice(text) {
  let n = document.getElementById("notice");
  if (!n && !text) return;
  if (!n) {
    n = document.createElement("div");
    n.id = "notice";
    n.className = "notice";
    n.setAttribute("role", "alert");
    document.body.appendChild(n);
  }
  n.textContent = text;
  n.hidden = !text;
}
const touch = (c) => { state.touched.add(c.id); c.updated = Date.now(); };
// Settings saved by an older page held every value: only those that differ from its defaults were choices.
function changedOnly(old) {
  const oldDefaults = { ...FALLBACK, system: "", api_key: "" };
  return Object.fromEntries(Object.entries(old).filter(([k, v]) => k in oldDefaults && v !== oldDefaults[k]));
}
function saveSettings() { localStorage.setItem(SETTINGS, JSON.stringify(state.settings)); }
const chat = () => state.chats.find((c) => c.id === state.current) || null;

// ---------------------------------------------------------------------------------------------
// rendering

function fmt(n, digits = 1) { return Number.isFinite(n) ? n.toFixed(digits) : "–"; }

function metaText(meta) {
  if (!meta) return "";
  const t = meta.timings;
  const parts = [];
  if (t) {
    parts.push(`<span title="generation speed">⚡ ${fmt(t.predicted_per_second)} tok/s</span>`);
    parts.push(`<span>${t.predicted_n} tokens</span>`);
    const cached = t.cache_n ? ` (${t.cache_n} cached)` : "";
    parts.push(`<span title="prompt processing">prompt ${t.prompt_n} tokens${cached} · ${fmt(t.prompt_per_second)} tok/s</span>`);
  }
  else if (meta.client && meta.client.pieces) {  // stopped before the server's timings arrived
    if (Number.isFinite(meta.client.tps)) parts.push(`<span title="measured in the browser">⚡ ~${fmt(meta.client.tps)} tok/s</span>`);
    parts.push(`<span>~${meta.client.pieces} token${meta.client.pieces > 1 ? "s" : ""}</span>`);
  }
  if (meta.left_out) {
    parts.push(`<span class="tag" title="the conversation no longer fits in the server's context">${meta.left_out} earlier message${meta.left_out > 1 ? "s" : ""} left out</span>`);
  }
  if (meta.stopped) parts.push("<span class=\"tag\">stopped</span>");
  else if (meta.finish === "length") parts.push("<span class=\"tag\">length limit</span>");
  if (meta.error) parts.push(`<span class="tag error">${Markdown.escapeHtml(meta.error)}</span>`);
  return parts.join("<span class=\"sep\">·</span>");
}

function messageNode(msg) {
  const node = document.createElement("div");
  node.className = `msg ${msg.role}`;
  const body = document.createElement("div");
  body.className = "body";
  node.appendChild(body);
  if (msg.role === "assistant") {
    const avatar = document.createElement("div");
    avatar.className = "avatar";
    avatar.textContent = "L";
    node.prepend(avatar);
    const meta = document.createElement("div");
    meta.className = "meta";
    body.after(meta);
  }
  fillMessage(node, msg);
  return node;
}

function fillMessage(node, msg, streaming = false) {
  const body = node.querySelector(".body");
  if (msg.role === "assistant") {
    // the reply's thinking (reasoning_content): open while it is all there is, folded once the
    // answer begins, unless the person opened or folded it (msg.thinkOpen, kept across repaints)
    const open = msg.thinkOpen !== undefined ? msg.thinkOpen : !msg.content;
    const thinking = msg.reasoning
      ? `<details class="thinking"${open ? " open" : ""}><summary>Thinking</summary>` +
        "<div class=\"thinking-text\"></div></details>"
      : "";
    body.innerHTML = thinking +
      (msg.content ? Markdown.render(msg.content) :
       (streaming || msg.reasoning ? "" : "<p class=\"muted\">(no reply)</p>"));
    if (msg.reasoning) {
      body.querySelector(".thinking-text").textContent = msg.reasoning;
      const details = body.querySelector("details.thinking");
      details.querySelector("summary").addEventListener("click", () => { msg.thinkOpen = !details.open; });
    }
    if (streaming) body.insertAdjacentHTML("beforeend", "<span class=\"cursor\"></span>");
    node.querySelector(".meta").innerHTML = metaText(msg.meta);
  } else {
    body.textContent = msg.content;
  }
}

function renderMessages() {
  const box = $("messages");
  box.querySelectorAll(".msg").forEach((n) => n.remove());
  const c = chat();
  const msgs = c ? c.messages : [];
  $("empty").hidden = msgs.length > 0;
  for (const m of msgs) box.appendChild(messageNode(m));
  $("chat-title").textContent = c ? c.title : "New chat";
  document.title = c ? `${c.title} · llamapack` : "llamapack";
  box.scrollTop = box.scrollHeight;
}

function renderHistory() {
  const nav = $("history");
  nav.innerHTML = "";
  const sorted = [...state.chats].sort((a, b) => b.updated - a.updated);
  for (const c of sorted) {
    const item = document.createElement("div");
    item.className = "history-item" + (c.id === state.current ? " active" : "");
    const open = document.createElement("button");
    open.type = "button";
    open.className = "history-open";
    open.textContent = c.title;
    open.title = c.title;
    open.onclick = () => { if (!busy()) { state.current = c.id; save(); renderAll(); closeSidebar(); } };
    const del = document.createElement("button");
    del.type = "button";
    del.className = "history-del";
    del.title = "Delete this conversation";
    del.innerHTML = "<svg viewBox=\"0 0 24 24\"><path d=\"M6 6l12 12M18 6L6 18\"/></svg>";
    del.onclick = () => {
      if (busy()) return;
      state.chats = state.chats.filter((x) => x.id !== c.id);
      state.removed.add(c.id);
      if (state.current === c.id) state.current = null;
      save();
      renderAll();
    };
    item.append(open, del);
    nav.appendChild(item);
  }
}

function renderAll() { renderHistory(); renderMessages(); }

// ---------------------------------------------------------------------------------------------
// server

function headers() {
  const h = { "Content-Type": "application/json" };
  if (state.settings.api_key) h.Authorization = `Bearer ${state.settings.api_key}`;
  return h;
}

async function loadModelInfo() {
  try {
    const r = await fetch("/props", { headers: headers() });
    if (r.status === 401) {  // the server was started with --api-key
      $("model-name").textContent = "API key needed: set it in Settings";
      $("status-dot").className = "dot bad";
      return;
    }
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    const p = await r.json();
    $("model-name").textContent = p.model_alias;
    $("model-name").title = p.model_path;
    $("model-meta").textContent = `context ${p.n_ctx} tokens · ${p.total_slots} slot${p.total_slots > 1 ? "s" : ""}`;
    $("empty-model").textContent = `${p.model_alias} · running locally — nothing leaves this machine.`;
    const g = (p.default_generation_settings && p.default_generation_settings.params) || {};
    state.server = { ...FALLBACK };
    for (const k of SAMPLING) {
      const v = k === "max_tokens" ? (g.max_tokens ?? g.n_predict) : g[k];
      if (Number.isFinite(v)) state.server[k] = v;
    }
    showSettings();
    $("status-dot").className = "dot ok";
  } catch (e) {
    $("model-name").textContent = "server not reachable";
    $("status-dot").className = "dot bad";
  }
}

// Reads server-sent events from a fetch response: calls onData(json) for each `data:` line.
async function readEvents(response, onData) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buf.search(/\r?\n/)) >= 0) {
      const line = buf.slice(0, cut);
      buf = buf.slice(buf[cut] === "\r" ? cut + 2 : cut + 1);
      if (!line.startsWith("data:")) continue;
      const data = line.slice(5).trim();
      if (data === "[DONE]") return;
      onData(JSON.parse(data));
    }
  }
}

const busy = () => state.controller !== null;

function setBusy(on) {
  document.body.dataset.state = on ? "generating" : "idle";
  $("input").disabled = false;
}

async function send(text) {
  text = text.trim();
  if (!text || busy()) return;
  let c = chat();
  if (!c) {  // (the title cut at a character, not inside one: an emoji is two UTF-16 units)
    c = { id: `c${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`,
          title: Array.from(text).slice(0, 60).join(""), messages: [], updated: Date.now() };
    state.chats.push(c);
    state.current = c.id;
  }
  const earlier = sendable(c.messages);
  c.messages.push({ role: "user", content: text });
  const reply = { role: "assistant", content: "", meta: null };
  c.messages.push(reply);
  touch(c);
  save();  // the question survives a reload while the reply streams
  renderAll();
  const box = $("messages");
  const node = box.lastElementChild;  // the reply just rendered
  node.classList.add("streaming");
  fillMessage(node, reply, true);

  const s = state.settings;
  const system = (s.system || "").trim();
  const body = { stream: true };
  for (const k of SAMPLING) if (k in s) body[k] = +s[k];  // the server's defaults fill in the rest
  // the conversation, less the oldest exchanges while the server says it does not fit its context
  let left = 0;
  const request = () => {
    body.messages = [...(system ? [{ role: "system", content: system }] : []), ...earlier.slice(left),
                     { role: "user", content: text }];
    return fetch("/v1/chat/completions", {
      method: "POST", headers: headers(), body: JSON.stringify(body), signal: state.controller.signal,
    });
  };

  state.controller = new AbortController();
  setBusy(true);
  let firstAt = 0, lastAt = 0, pieces = 0;  // streamed pieces, for a stopped reply's speed
  let pending = false;
  const paint = () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      const stick = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
      fillMessage(node, reply, busy());
      if (stick) box.scrollTop = box.scrollHeight;
    });
  };
  try {
    let r;
    for (;;) {
      r = await request();
      if (r.ok) break;
      let err = { message: `HTTP ${r.status}` };
      try { err = (await r.json()).error || err; } catch { /* keep */ }
      if (err.code === "context_length_exceeded" && left < earlier.length) {
        left = Math.min(earlier.length, left + 2);  // one exchange: a question and its reply
        continue;
      }
      throw new Error(err.message);
    }
    $("status-dot").className = "dot ok";
    if (left) reply.meta = { left_out: left };
    await readEvents(r, (ev) => {
      if (ev.error) throw new Error(ev.error.message);
      const choice = ev.choices && ev.choices[0];
      if (!choice) return;
      if (choice.delta && choice.delta.reasoning_content) {
        reply.reasoning = (reply.reasoning || "") + choice.delta.reasoning_content;
      }
      if (choice.delta && (choice.delta.content || choice.delta.reasoning_content)) {
        reply.content += choice.delta.content || "";
        const now = performance.now();
        if (!firstAt) firstAt = now;
        pieces++;
        lastAt = now;
      }
      if (choice.finish_reason) reply.meta = { ...(reply.meta || {}), finish: choice.finish_reason, timings: ev.timings };
      paint();
    });
    // a stream that just stops (a proxy or the network cut it) is no finished reply
    if (!(reply.meta && reply.meta.finish)) throw new Error("the reply stopped before it was finished");
  } catch (e) {
    const client = { pieces, tps: pieces > 1 ? (pieces - 1) / ((lastAt - firstAt) / 1000) : NaN };
    if (e.name === "AbortError") reply.meta = { ...(reply.meta || {}), stopped: true, client };
    else {
      reply.meta = { ...(reply.meta || {}), error: e.message || String(e) };
      if (e instanceof TypeError) $("status-dot").className = "dot bad";  // the server is not answering
    }
  } finally {
    state.controller = null;
    setBusy(false);
    node.classList.remove("streaming");
    fillMessage(node, reply, false);
    touch(c);
    save();
    renderHistory();
    $("input").focus();
  }
}

// The messages of a conversation to send again: a question whose request failed (no reply, an
// error) is left out with its empty reply, so that one failure does not fail every later turn.
function sendable(messages) {
  const out = [];
  for (let i = 0; i < messages.length; i++) {
    const m = messages[i], next = messages[i + 1];
    if (m.role === "user" && next && next.role === "assistant" && !next.content && next.meta && next.meta.error) {
      i++;
      continue;
    }
    out.push({ role: m.role, content: m.content });
  }
  return out;
}

function stop() { if (state.controller) state.controller.abort(); }

function newChat() {
  if (busy()) stop();
  closeSidebar();
  state.current = null;
  save();
  renderAll();
  $("input").value = "";
  autosize();
  $("input").focus();
}

// ---------------------------------------------------------------------------------------------
// settings panel

const SLIDERS = ["temperature", "top_p", "min_p", "repeat_penalty"];
const NUMBERS = ["top_k", "max_tokens", "seed"];

function showSettings() {
  $("system-prompt").value = state.settings.system || "";
  for (const k of SLIDERS) { $(k).value = setting(k); $(`out-${k}`).textContent = fmt(+setting(k), 2); }
  for (const k of NUMBERS) $(k).value = setting(k);
  $("api_key").value = state.settings.api_key || "";
}

function bindSettings() {
  $("system-prompt").addEventListener("input", (e) => { state.settings.system = e.target.value; saveSettings(); });
  for (const k of SLIDERS) {
    $(k).addEventListener("input", (e) => {
      state.settings[k] = +e.target.value;
      $(`out-${k}`).textContent = fmt(+e.target.value, 2);
      saveSettings();
    });
  }
  for (const k of NUMBERS) {
    $(k).addEventListener("change", (e) => {
      const field = e.target, raw = field.value.trim();
      const v = Number(raw), min = field.min === "" ? -Infinity : Number(field.min);
      if (raw === "") delete state.settings[k];  // cleared: the server's default
      else if (Number.isInteger(v) && v >= min) state.settings[k] = v;  // (1e3 is 1000, not 1)
      else {  // not a whole number in range: the field says so and keeps what it had
        field.classList.add("invalid");
        field.title = `a whole number, at least ${field.min}`;
        field.value = setting(k);
        setTimeout(() => field.classList.remove("invalid"), 2500);
        return;
      }
      field.classList.remove("invalid");
      field.value = setting(k);
      saveSettings();
    });
  }
  $("api_key").addEventListener("change", (e) => { state.settings.api_key = e.target.value; saveSettings(); loadModelInfo(); });
  $("reset-settings").onclick = () => {
    state.settings = state.settings.api_key ? { api_key: state.settings.api_key } : {};
    saveSettings();
    showSettings();
  };
  const panel = $("settings");
  $("settings-button").onclick = () => {
    const open = !document.body.classList.contains("settings-open");
    document.body.classList.toggle("settings-open", open);
    panel.setAttribute("aria-hidden", String(!open));
  };
  $("close-settings").onclick = () => {
    document.body.classList.remove("settings-open");
    panel.setAttribute("aria-hidden", "true");
  };
}

// ---------------------------------------------------------------------------------------------
// composer

function autosize() {
  const t = $("input");
  t.style.height = "auto";
  t.style.height = `${Math.min(t.scrollHeight, 240)}px`;
}
function closeSidebar() { document.body.classList.remove("sidebar-open"); }

function bindComposer() {
  const input = $("input");
  input.addEventListener("input", autosize);
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    if (busy()) return;
    const text = input.value;
    if (!text.trim()) return;
    input.value = "";
    autosize();
    send(text);
  });
  $("stop").onclick = stop;
  $("new-chat").onclick = newChat;
  $("toggle-sidebar").onclick = () => document.body.classList.toggle("sidebar-open");
  for (const b of document.querySelectorAll(".suggestion")) b.onclick = () => send(b.textContent);
  // copy buttons of code blocks
  $("messages").addEventListener("click", (e) => {
    const btn = e.target.closest(".copy");
    if (!btn) return;
    const code = btn.closest(".code").querySelector("code").textContent;
    const done = () => { btn.textContent = "Copied"; setTimeout(() => { btn.textContent = "Copy"; }, 1200); };
    if (navigator.clipboard && window.isSecureContext) navigator.clipboard.writeText(code).then(done, () => {});
    else {
      const ta = document.createElement("textarea");
      ta.value = code;
      document.body.appendChild(ta);
      ta.select();
      try { document.execCommand("copy"); done(); } catch { /* ignore */ }
      ta.remove();
    }
  });
  document.addEventListener("keydown", (e) => {
    if (e.key !== "Escape") return;
    if (busy()) stop();
    else if (document.body.classList.contains("settings-open")) $("close-settings").click();
    else closeSidebar();
  });
  $("messages").addEventListener("click", closeSidebar);  // narrow screens: a tap beside the list closes it
  $("composer").addEventListener("click", closeSidebar);
  // another tab saved: its conversations join the list (the open one keeps going)
  window.addEventListener("storage", (e) => {
    if (e.key !== STORE || busy()) return;
    state.chats = merged();
    if (!chat()) state.current = null;
    renderAll();
  });
}

load();
bindSettings();
showSettings();
bindComposer();
renderAll();
loadModelInfo();
$("input").focus();
