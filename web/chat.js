"use strict";
// The web chat: conversations and settings live in this browser's localStorage; the API key only for
// the session (sessionStorage). Replies are markdown rendered by markdown-it with raw HTML off, then
// sanitised by DOMPurify, so nothing the model writes becomes an element or a script of its own.
// Raw completion mode (a setting, for base models): the chat is one text that the model continues through
// /v1/completions; its messages are the text's pieces, the user's and the model's, joined as they are.
const $ = id => document.getElementById(id);
const log = $("log"), input = $("input"), sendButton = $("send"), stopButton = $("stop"), banner = $("banner");
const CHATS = "llmpack-chats", CURRENT = "llmpack-current", SETTINGS = "llmpack-settings", KEY = "llmpack-api-key";
const NUMBERS = ["temperature", "top_p", "max_tokens", "seed"];
const MAX_ATTACHMENT = 512 * 1024;
const RAW_SUGGESTED = "llmpack-raw-suggested";  // the models whose page has already suggested raw mode
const NO_TEMPLATE = "(the model has none)";  // /v1/models' chat_template when ChatML stands in (messages.py)

let chats = load(CHATS, []), current = localStorage.getItem(CURRENT), settings = load(SETTINGS, {});
let controller = null, editIndex = null, attachments = [], nCtx = null, modelName = null;

function load(name, fallback) {
  try { return JSON.parse(localStorage.getItem(name)) || fallback; } catch (e) { return fallback; }
}
function save() {
  try {
    localStorage.setItem(CHATS, JSON.stringify(chats));
    if (current) localStorage.setItem(CURRENT, current);
  } catch (e) {  // the origin's quota (about 5 MB): the chat goes on, unsaved
    showBanner("error: the browser's storage for this page is full: delete or export some chats");
  }
}
function chat() { return chats.find(c => c.id === current); }
function newId() { return Date.now().toString(36) + Math.random().toString(36).slice(2, 8); }

// --- markdown -------------------------------------------------------------------------------------
const md = window.markdownit({html: false, linkify: true, breaks: false, highlight(code, lang) {
  if (lang && hljs.getLanguage(lang)) {
    try { return hljs.highlight(code, {language: lang, ignoreIllegals: true}).value; } catch (e) { /* plain */ }
  }
  return "";
}});
// Images would be fetched from wherever the model says (a tracker); show them as links instead.
md.renderer.rules.image = (tokens, i) => {
  const token = tokens[i], src = token.attrGet("src") || "";
  return `<a href="${md.utils.escapeHtml(src)}">${md.utils.escapeHtml(token.content || src)}</a>`;
};
DOMPurify.addHook("afterSanitizeAttributes", node => {
  if (node.tagName === "A") { node.setAttribute("target", "_blank"); node.setAttribute("rel", "noopener noreferrer"); }
});

function renderMarkdown(element, text) {
  element.innerHTML = DOMPurify.sanitize(md.render(text), {FORBID_TAGS: ["img", "style", "form", "input"],
                                                           FORBID_ATTR: ["style"]});
  for (const pre of element.querySelectorAll("pre")) {
    const code = pre.querySelector("code");
    if (code) code.classList.add("hljs");
    const box = document.createElement("div");
    box.className = "code";
    pre.replaceWith(box);
    box.appendChild(pre);
    const copy = button("Copy", () => copyText(pre.textContent, copy));
    copy.className = "copy";
    copy.setAttribute("aria-label", "Copy the code");
    box.appendChild(copy);
  }
}

async function copyText(text, where) {
  try {
    await navigator.clipboard.writeText(text);
  } catch (e) {  // no clipboard API (an http:// address other than localhost): the old way
    const area = document.createElement("textarea");
    area.value = text; document.body.appendChild(area); area.select();
    document.execCommand("copy"); area.remove();
  }
  if (where) { where.textContent = "Copied"; setTimeout(() => { where.textContent = "Copy"; }, 1200); }
}

function button(label, onClick) {
  const b = document.createElement("button");
  b.type = "button"; b.textContent = label; b.addEventListener("click", onClick);
  return b;
}

// --- the conversation on screen --------------------------------------------------------------------
function render() {
  log.replaceChildren();
  const c = chat();
  if (c && settings.raw && c.messages.length) addDocument(c);
  else if (c) c.messages.forEach((m, i) => addTurn(m, i, c.messages.length));
  $("mode").hidden = !settings.raw;
  fitPlaceholder();
  renderList();
  showContext(c && c.lastUsage);
  log.scrollTop = log.scrollHeight;
}

function addTurn(message, index, count) {
  const turn = document.createElement("div");
  turn.className = "turn " + message.role;
  const bubble = document.createElement("div");
  bubble.className = "msg " + message.role + (message.stopped ? " stopped" : "");
  turn.appendChild(bubble);
  const meta = document.createElement("div");
  meta.className = "meta";
  turn.appendChild(meta);
  if (message.role === "user") {
    bubble.textContent = message.content;
    if (message.files && message.files.length) {
      const files = document.createElement("div");
      files.className = "attached";
      files.textContent = "attached: " + message.files.join(", ");
      meta.appendChild(files);
    }
    meta.appendChild(button("Edit", () => startEdit(index)));
  } else {
    renderMarkdown(bubble, message.content);
    fillMeta(meta, message, index === count - 1);
  }
  log.appendChild(turn);
  return {turn, bubble, meta};
}

// Raw mode: the whole chat as one text, the model's pieces marked; its meta line is the last reply's.
function addDocument(c) {
  const turn = document.createElement("div");
  turn.className = "turn raw";
  const doc = document.createElement("div");
  doc.className = "msg raw";
  for (const m of c.messages) {
    const part = document.createElement("span");
    part.className = "part " + m.role + (m.stopped ? " stopped" : "");
    part.textContent = m.content;
    doc.appendChild(part);
  }
  const meta = document.createElement("div");
  meta.className = "meta";
  turn.append(doc, meta);
  const files = c.messages.flatMap(m => m.files || []);
  const last = c.messages[c.messages.length - 1];
  if (last.role === "assistant") fillMeta(meta, last, true, promptOf(c));
  else meta.appendChild(button("Copy", event => copyText(promptOf(c), event.target)));
  if (files.length) {
    const attached = document.createElement("span");
    attached.className = "attached"; attached.textContent = "attached: " + files.join(", ");
    meta.prepend(attached);
  }
  log.appendChild(turn);
  return {turn, bubble: doc.lastChild, meta};
}

function fillMeta(meta, message, last, copy = message.content) {
  meta.replaceChildren();
  if (message.stopped) {
    const label = document.createElement("span");
    label.className = "stopped-label"; label.textContent = "stopped";
    meta.appendChild(label);
  }
  if (message.stats) {
    const stats = document.createElement("span");
    stats.className = "stats"; stats.textContent = message.stats;
    meta.appendChild(stats);
  }
  meta.appendChild(button("Copy", event => copyText(copy, event.target)));
  if (last) meta.appendChild(button("Regenerate", regenerate));
}

function renderList() {
  const list = $("chats");
  list.replaceChildren();
  for (const c of chats.slice().sort((a, b) => b.updated - a.updated)) {
    const item = document.createElement("li");
    const b = button(c.title || "New chat", () => { switchTo(c.id); closeSidebar(); });
    b.title = c.title || "New chat";
    if (c.id === current) b.setAttribute("aria-current", "true");
    item.appendChild(b);
    list.appendChild(item);
  }
}

function switchTo(id) {
  if (controller) controller.abort();
  current = id; cancelEdit(); save(); render(); input.focus();
}

function newChat() {
  const c = chat();
  if (c && !c.messages.length) { input.focus(); return; }  // already on an empty one
  const fresh = {id: newId(), title: "", created: Date.now(), updated: Date.now(), messages: []};
  chats.push(fresh);
  switchTo(fresh.id);
}

function showContext(usage) {
  const used = usage ? usage.prompt_tokens + usage.completion_tokens : 0;
  $("context").textContent = nCtx ? `context ${used} / ${nCtx}` : "";
}

// --- talking to the server ------------------------------------------------------------------------
function apiKey() { return sessionStorage.getItem(KEY) || ""; }

async function api(path, options = {}) {
  const headers = Object.assign({"Content-Type": "application/json"}, options.headers || {});
  if (apiKey()) headers.Authorization = "Bearer " + apiKey();
  const response = await fetch(path, Object.assign({}, options, {headers}));
  if (response.status === 401) throw Object.assign(new Error("this server needs its API key"), {kind: "auth"});
  return response;
}

function showBanner(...parts) {
  banner.replaceChildren(...parts);
  banner.hidden = false;
}
function hideBanner() { banner.hidden = true; banner.replaceChildren(); }

function askForKey(then) {
  const field = document.createElement("input");
  field.type = "password"; field.placeholder = "API key"; field.setAttribute("aria-label", "API key");
  const text = document.createElement("span");
  text.textContent = "This server needs its API key (--api-key); it is kept for this browser session only.";
  const ok = button("Use this key", () => {
    if (!field.value) return;
    sessionStorage.setItem(KEY, field.value.trim());
    hideBanner(); then();
  });
  field.addEventListener("keydown", e => { if (e.key === "Enter") ok.click(); });
  showBanner(text, field, ok);
  field.focus();
}

async function loadModel() {
  for (;;) {
    let response = null;
    try { response = await api("/v1/models"); } catch (error) {
      if (error.kind === "auth") { $("model").textContent = "API key needed"; askForKey(loadModel); return; }
      $("model").textContent = "server unreachable, retrying…";
    }
    if (response && response.ok) {
      const model = (await response.json()).data[0];
      modelName = model.id;
      nCtx = model.meta && model.meta.n_ctx;
      $("model").textContent = model.id;
      showContext(chat() && chat().lastUsage);
      suggestRaw(model);
      return;
    }
    if (response) $("model").textContent = "loading the model…";
    await new Promise(resolve => setTimeout(resolve, 1000));
  }
}

// A model without a template of its own (a base model) chats through ChatML, which it never learnt: the
// page offers raw mode once per model, and switches only if asked to.
function suggestRaw(model) {
  const box = $("suggest"), asked = load(RAW_SUGGESTED, []);
  if (settings.raw || !String(model.chat_template || "").includes(NO_TEMPLATE) || asked.includes(model.id)) {
    box.hidden = true;
    return;
  }
  const answer = raw => {
    asked.push(model.id);
    localStorage.setItem(RAW_SUGGESTED, JSON.stringify(asked));
    box.hidden = true;
    if (raw) setRaw(true);
    input.focus();
  };
  const text = document.createElement("span");
  text.textContent = "This model has no chat template of its own (chats use ChatML). If it is a base model, " +
                     "raw completion suits it better: it continues your text as it is.";
  box.replaceChildren(text, button("Use raw completion", () => answer(true)), button("Keep chatting", () => answer(false)));
  box.hidden = false;
}

function setRaw(on) {
  settings.raw = on;
  localStorage.setItem(SETTINGS, JSON.stringify(settings));
  render();
}

function requestBody(fields) {
  const body = Object.assign(fields, {stream: true, stream_options: {include_usage: true}});
  if (modelName) body.model = modelName;
  for (const name of NUMBERS) {
    if (settings[name] !== undefined && settings[name] !== "") body[name] = Number(settings[name]);
  }
  return body;
}

function conversationFor(c) {
  const system = (settings.system || "").trim();
  const messages = c.messages.map(m => ({role: m.role, content: m.role === "user" ? withFiles(m) : m.content}));
  return system ? [{role: "system", content: system}, ...messages] : messages;
}

function promptOf(c) {  // raw mode: the text so far, files before the piece they came with
  return c.messages.map(m => (m.role === "user" ? withFiles(m) : m.content)).join("");
}

function withFiles(message) {
  if (!message.context) return message.content;
  return message.context + "\n\n" + message.content;
}

async function errorOf(response) {
  try {
    const body = await response.json();
    return Object.assign(new Error(body.error.message), {code: body.error.code, status: response.status});
  } catch (e) {
    return Object.assign(new Error(`${response.status} ${response.statusText}`), {status: response.status});
  }
}

// Sends the conversation as it stands (its last message is the user's) and streams the reply into it.
async function generate() {
  const c = chat(), raw = !!settings.raw;
  hideBanner();
  // Made before the reply joins the conversation.
  const body = JSON.stringify(requestBody(raw ? {prompt: promptOf(c)} : {messages: conversationFor(c)}));
  const reply = {role: "assistant", content: ""};
  c.messages.push(reply);
  c.updated = Date.now();
  if (raw) log.replaceChildren();
  const view = raw ? addDocument(c) : addTurn(reply, c.messages.length - 1, c.messages.length);
  view.meta.replaceChildren();
  log.scrollTop = log.scrollHeight;
  controller = new AbortController();
  const signal = controller.signal;
  sendButton.hidden = true; stopButton.hidden = false;
  const started = performance.now();
  let usage = null, timings = null, scheduled = false, firstToken = null;
  const paint = () => {
    scheduled = false;
    // Follow the reply only if the reader has not scrolled up to read something else.
    const following = log.scrollHeight - log.scrollTop - log.clientHeight < 60;
    if (raw) view.bubble.textContent = reply.content;
    else renderMarkdown(view.bubble, reply.content);
    if (following) log.scrollTop = log.scrollHeight;
  };
  try {
    const response = await api(raw ? "/v1/completions" : "/v1/chat/completions", {method: "POST", signal, body});
    if (!response.ok) throw await errorOf(response);
    const reader = response.body.getReader(), decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, {stream: true});
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, end); buffer = buffer.slice(end + 2);
        if (!event.startsWith("data: ")) continue;
        const data = event.slice(6);
        if (data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        if (chunk.error) throw Object.assign(new Error(chunk.error.message), {code: chunk.error.code});
        if (chunk.usage) usage = chunk.usage;
        if (chunk.timings) timings = chunk.timings;
        const choice = chunk.choices && chunk.choices.length ? chunk.choices[0] : {};
        const piece = raw ? choice.text : choice.delta && choice.delta.content;
        if (piece) {
          if (firstToken === null) firstToken = performance.now();
          reply.content += piece;
          if (!scheduled) { scheduled = true; requestAnimationFrame(paint); }
        }
      }
    }
    if (usage) {
      const seconds = (performance.now() - (firstToken || started)) / 1000;
      const speed = timings && timings.predicted_per_second ? timings.predicted_per_second
                                                           : usage.completion_tokens / Math.max(seconds, 1e-3);
      reply.stats = `${usage.completion_tokens} tokens, ${speed.toFixed(1)} tok/s, prompt ${usage.prompt_tokens} tokens`;
      c.lastUsage = usage;
    }
  } catch (error) {
    if (error.name === "AbortError") {
      reply.stopped = true;
    } else {
      if (!reply.content) c.messages.pop();
      else reply.stopped = true;
      failed(error);
    }
  } finally {
    if (signal === (controller && controller.signal)) {
      controller = null;
      sendButton.hidden = false; stopButton.hidden = true;
    }
    save();
    if (chat() === c) { render(); input.focus(); }
  }
}

function failed(error) {
  const text = document.createElement("span");
  if (error.kind === "auth") {
    askForKey(() => generate());
    return;
  }
  if (error instanceof TypeError) {  // fetch's own failure: nothing answered at all
    text.textContent = "error: the server is unreachable (is it still running?)";
    showBanner(text, button("Retry", () => { hideBanner(); generate(); }));
  } else if (error.code === "context_length_exceeded") {
    text.textContent = "error: " + error.message;
    showBanner(text, button("Start a new chat", () => { hideBanner(); newChat(); }));
  } else {
    text.textContent = "error: " + error.message;
    showBanner(text, button("Retry", () => { hideBanner(); generate(); }));
  }
  banner.classList.add("error");
}

function regenerate() {
  const c = chat();
  if (controller || !c || !c.messages.length) return;
  if (c.messages[c.messages.length - 1].role === "assistant") c.messages.pop();
  render();
  generate();
}

function startEdit(index) {
  if (controller) return;
  editIndex = index;
  input.value = chat().messages[index].content;
  $("editing").hidden = false;
  grow(); input.focus();
}
function cancelEdit() {
  if (editIndex === null) return;
  editIndex = null; $("editing").hidden = true; input.value = ""; grow();
}

function submit() {
  // Raw mode keeps the text as typed (a trailing space or line matters to what comes next), and an empty
  // input with text already there asks the model to go on.
  const raw = !!settings.raw, text = raw ? input.value : input.value.trim();
  const started = chat() && chat().messages.length;
  if (controller || (raw ? !text && !attachments.length && !started : !text)) return;
  if (raw && !text && !attachments.length) { generate(); return; }
  if (!chat()) newChat();
  const c = chat();
  if (editIndex !== null) { c.messages = c.messages.slice(0, editIndex); editIndex = null; $("editing").hidden = true; }
  const message = {role: "user", content: text};
  if (attachments.length) {
    message.files = attachments.map(a => a.name);
    message.context = attachments.map(a => `File ${a.name}:\n\`\`\`\n${a.text}\n\`\`\``).join("\n\n");
    attachments = []; showAttachments();
  }
  c.messages.push(message);
  if (!c.title) c.title = text.trim().split("\n")[0].slice(0, 60) || (message.files || []).join(", ");
  input.value = ""; grow();
  render();
  generate();
}

// --- files, settings, export ------------------------------------------------------------------------
function showAttachments() {
  const box = $("attachments");
  box.replaceChildren(...attachments.map((a, i) => {
    const chip = document.createElement("span");
    chip.textContent = "attached: " + a.name + " ";
    chip.appendChild(button("×", () => { attachments.splice(i, 1); showAttachments(); }));
    chip.lastChild.setAttribute("aria-label", "Remove " + a.name);
    return chip;
  }));
}

$("file").addEventListener("change", async event => {
  await attachFiles([...event.target.files]);  // files.js
  event.target.value = "";
});

function loadSettings() {
  $("set-system").value = settings.system || "";
  $("set-raw").checked = !!settings.raw;
  for (const name of NUMBERS) $("set-" + name).value = settings[name] ?? "";
}
$("settings-form").addEventListener("input", () => {
  const wasRaw = !!settings.raw;
  settings = {system: $("set-system").value, raw: $("set-raw").checked};
  for (const name of NUMBERS) {
    const value = $("set-" + name).value;
    if (value !== "" && !Number.isNaN(Number(value))) settings[name] = value;
  }
  localStorage.setItem(SETTINGS, JSON.stringify(settings));
  if (settings.raw !== wasRaw) { render(); if (settings.raw) $("suggest").hidden = true; }
});
$("settings-button").addEventListener("click", () => { loadSettings(); $("settings").showModal(); });
$("settings").addEventListener("close", () => input.focus());

function download(name, type, text) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([text], {type}));
  link.download = name;
  document.body.appendChild(link); link.click(); link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}
function fileName(c, extension) {
  return ((c.title || "chat").replace(/[^\w.-]+/g, "-").slice(0, 40) || "chat") + extension;
}
$("export-json").addEventListener("click", () => {
  const c = chat();
  if (c) download(fileName(c, ".json"), "application/json", JSON.stringify(c, null, 2));
});
$("export-md").addEventListener("click", () => {
  const c = chat();
  if (!c) return;
  const parts = [`# ${c.title || "Chat"}`];
  for (const m of c.messages) parts.push(`## ${m.role}${m.stopped ? " (stopped)" : ""}\n\n${m.content}`);
  download(fileName(c, ".md"), "text/markdown", parts.join("\n\n") + "\n");
});
$("rename").addEventListener("click", () => {
  const c = chat();
  if (!c) return;
  const title = prompt("Name of this chat:", c.title);
  if (title !== null && title.trim()) { c.title = title.trim(); save(); renderList(); }
});
$("delete").addEventListener("click", () => {
  const c = chat();
  if (!c || !confirm(`Delete "${c.title || "New chat"}"?`)) return;
  if (controller) controller.abort();
  chats = chats.filter(other => other.id !== c.id);
  current = chats.length ? chats.reduce((a, b) => (a.updated > b.updated ? a : b)).id : null;
  if (!current) localStorage.removeItem(CURRENT);
  save(); render();
});

// --- the input and the keyboard ----------------------------------------------------------------------
function grow() {
  input.style.height = "auto";
  input.style.height = Math.min(input.scrollHeight + 2, window.innerHeight * 0.4) + "px";
}
input.addEventListener("input", grow);
input.addEventListener("keydown", event => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) { event.preventDefault(); submit(); }
  if (event.key === "Escape") cancelEdit();
});
$("form").addEventListener("submit", event => { event.preventDefault(); submit(); });
$("cancel-edit").addEventListener("click", () => { cancelEdit(); input.focus(); });
stopButton.addEventListener("click", () => controller && controller.abort());
$("new-chat").addEventListener("click", () => { newChat(); closeSidebar(); });
$("menu").addEventListener("click", () => {
  const open = $("sidebar").classList.toggle("open");
  $("menu").setAttribute("aria-expanded", String(open));
  if (open) $("new-chat").focus();
});
$("close-sidebar").addEventListener("click", () => { closeSidebar(); $("menu").focus(); });
$("main").addEventListener("click", event => {  // a tap beside the open sidebar closes it
  if ($("sidebar").classList.contains("open") && !$("menu").contains(event.target)) closeSidebar();
});
function closeSidebar() { $("sidebar").classList.remove("open"); $("menu").setAttribute("aria-expanded", "false"); }
document.addEventListener("keydown", event => {
  if (event.key === "Escape" && $("sidebar").classList.contains("open")) { closeSidebar(); $("menu").focus(); }
});

// At phone width the hint would wrap into a second, half-hidden line of the empty input.
const narrow = matchMedia("(max-width: 760px)");
function fitPlaceholder() {
  if (settings.raw) input.placeholder = narrow.matches ? "Text" : "Text for the model to continue (empty: it goes on)";
  else input.placeholder = narrow.matches ? "Message" : "Message (Shift+Enter: new line)";
}
narrow.addEventListener("change", () => { fitPlaceholder(); grow(); });
if (!chat()) current = chats.length ? chats[chats.length - 1].id : null;
render();
grow();
// For tests and bookmarks: /?q=hello sends a first message as soon as the page loads.
const first = new URLSearchParams(location.search).get("q");
loadModel().then(() => { if (first) { newChat(); input.value = first; submit(); } });
