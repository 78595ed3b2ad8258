"use strict";
// The web chat: conversations and settings live in this browser's localStorage; the API key only for
// the session (sessionStorage). Replies are markdown rendered by markdown-it with raw HTML off, then
// sanitised by DOMPurify, so nothing the model writes becomes an element or a script of its own.
// Raw completion mode (a setting, for base models): the chat is one text that the model continues through
// /v1/completions; its messages are the text's pieces, the user's and the model's, joined as they are.
const $ = id => document.getElementById(id);
const log = $("log"), input = $("input"), sendButton = $("send"), stopButton = $("stop"), banner = $("banner");
const CHATS = "llmpack-chats", CURRENT = "llmpack-current", SETTINGS = "llmpack-settings", KEY = "llmpack-api-key";
// The sampling settings the server honours (settings.js), sent as numbers when set.
const NUMBERS = ["temperature", "top_k", "top_p", "min_p", "repeat_penalty", "presence_penalty", "frequency_penalty",
                 "max_tokens", "seed"];
const MAX_ATTACHMENT = 512 * 1024;
const RAW_SUGGESTED = "llmpack-raw-suggested";  // the models whose page has already suggested raw mode
const NO_TEMPLATE = "(the model has none)";  // /v1/models' chat_template when ChatML stands in (messages.py)

let chats = recoverToolCalls(recoverInterrupted(load(CHATS, []))), current = localStorage.getItem(CURRENT), settings = load(SETTINGS, {});
let editIndex = null, attachments = [], nCtx = null, nCtxTrain = null, modelName = null;
const running = new Map();  // chat id -> the AbortController of its reply in progress (stream.js)
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
  renderMath(element);  // math.js
  for (const pre of element.querySelectorAll("pre")) {
    const code = pre.querySelector("code");
    if (code) code.classList.add("hljs");
    // The code's bar, above it: a button floating over the code would hide the end of long lines.
    const box = document.createElement("div"), bar = document.createElement("div");
    box.className = "code"; bar.className = "code-bar";
    const language = code && [...code.classList].find(name => name.startsWith("language-"));
    bar.appendChild(label("language", language ? language.slice(9) : ""));
    const copy = button("Copy", () => copyText(pre.textContent, copy));
    copy.className = "copy";
    copy.setAttribute("aria-label", "Copy the code");
    bar.appendChild(copy);
    pre.replaceWith(box);
    box.append(bar, pre);
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
  else if (c) addTurns(c);
  $("mode").hidden = !settings.raw;
  showBusy();
  fitPlaceholder();
  renderList();
  showContext(c && c.lastUsage);
  log.scrollTop = log.scrollHeight;
}

function addTurns(c) {
  const lastDropped = c.messages.map(m => !!m.dropped).lastIndexOf(true);
  c.messages.forEach((m, i) => {
    addTurn(m, i, c);
    if (i === lastDropped) log.appendChild(droppedNote(c.messages.filter(d => d.dropped).length));
  });
}

function showBusy() {
  const busy = !!chat() && running.has(current);
  sendButton.hidden = busy; stopButton.hidden = !busy;
}

function addTurn(message, index, c) {
  const turn = document.createElement("div");
  turn.className = "turn " + message.role + (message.dropped ? " dropped" : "");
  const bubble = document.createElement("div");
  bubble.className = "msg " + message.role + (message.stopped ? " stopped" : "");
  bubble.dataset.index = index;  // where a streaming reply finds its bubble again (stream.js)
  turn.appendChild(bubble);
  const meta = document.createElement("div");
  meta.className = "meta";
  turn.appendChild(meta);
  if (message.role === "user") {
    bubble.textContent = message.content;
    bubble.hidden = !message.content && !!(message.media && message.media.length);  // only files sent
    if (message.media && message.media.length) showMedia(turn, message);  // attach.js
    if (message.files && message.files.length) {
      const files = document.createElement("div");
      files.className = "attached";
      files.textContent = "attached: " + message.files.join(", ");
      meta.appendChild(files);
    }
    const actions = actionsOf(meta);
    actions.appendChild(button("Edit", () => startEdit(index)));
    const versions = versionSwitch(c, index);
    if (versions) actions.appendChild(versions);
    if (unanswered(c, index)) addRetry(meta);
  } else {
    renderMarkdown(bubble, message.content);
    if (message.reasoning) showThought(bubble, message);
    if (message.toolCalls) {
      showToolCalls(turn, message);  // tools.js
      bubble.hidden = !message.content && !message.pending;  // a reply that only called tools
    }
    fillMeta(meta, message, index === c.messages.length - 1, message.content, c, index);
  }
  log.appendChild(turn);
}

// A thinking model's thought, set apart above its answer: folded once the answer comes, open while it thinks.
function showThought(bubble, message) {
  let box = bubble.previousElementSibling;
  if (!box || !box.classList.contains("thought")) {
    box = document.createElement("details");
    box.className = "thought";
    box.appendChild(document.createElement("summary"));
    box.appendChild(document.createElement("div"));
    bubble.parentNode.insertBefore(box, bubble);
  }
  const thinking = !message.content && message.pending;
  box.open = thinking || box.dataset.opened === "1";
  box.ontoggle = () => { if (!thinking) box.dataset.opened = box.open ? "1" : ""; };
  box.firstChild.textContent = thinking ? "thinking…" : `thought for ${message.thoughtPieces || "some"} tokens`;
  box.lastChild.textContent = message.reasoning;
}

// Raw mode: the whole chat as one text, the model's pieces marked; its meta line is the last reply's.
function addDocument(c) {
  const turn = document.createElement("div");
  turn.className = "turn raw";
  const doc = document.createElement("div");
  doc.className = "msg raw";
  c.messages.forEach((m, i) => {
    const part = document.createElement("span");
    part.className = "part " + m.role + (m.stopped ? " stopped" : "") + (m.dropped ? " dropped" : "");
    part.dataset.index = i;
    part.textContent = m.content;
    doc.appendChild(part);
  });
  const dropped = c.messages.filter(m => m.dropped).length;
  if (dropped) log.appendChild(droppedNote(dropped));
  const meta = document.createElement("div");
  meta.className = "meta";
  turn.append(doc, meta);
  const files = c.messages.flatMap(m => m.files || []);
  const last = c.messages[c.messages.length - 1];
  if (last.role === "assistant") fillMeta(meta, last, true, promptOf(c), c, c.messages.length - 1);
  else meta.appendChild(button("Copy", event => copyText(promptOf(c), event.target)));
  if (unanswered(c, c.messages.length - 1)) addRetry(meta);
  if (files.length) {
    const attached = document.createElement("span");
    attached.className = "attached"; attached.textContent = "attached: " + files.join(", ");
    meta.prepend(attached);
  }
  log.appendChild(turn);
}

// A question left without its answer (the server was down, or the page went away first): it keeps a Retry,
// and sending the same text again retries it rather than asking twice (submit).
function unanswered(c, index) {
  return index === c.messages.length - 1 && c.messages[index].role === "user" && !running.has(c.id);
}
function addRetry(meta) {
  meta.appendChild(label("unanswered-label", "no reply"));
  meta.appendChild(button("Retry", () => { hideBanner(); generate(); }));
}

function label(className, text) {
  const span = document.createElement("span");
  span.className = className; span.textContent = text;
  return span;
}

// The buttons of a meta line, kept together on one line (the stats before them may wrap).
function actionsOf(meta) {
  let actions = meta.querySelector(".actions");
  if (!actions) { actions = document.createElement("span"); actions.className = "actions"; meta.appendChild(actions); }
  return actions;
}

function fillMeta(meta, message, last, copy = message.content, c = null, index = -1) {
  meta.replaceChildren();
  if (message.pending) return;  // still streaming: the buttons come with its end
  if (message.stopped) meta.appendChild(label("stopped-label", "stopped"));
  if (message.cut) meta.appendChild(label("cut-label", CUT_LABELS[message.cut]));
  if (message.stats) {
    const stats = document.createElement("span");
    stats.className = "stats"; stats.textContent = message.stats;
    meta.appendChild(stats);
  }
  const actions = actionsOf(meta);
  actions.appendChild(button("Copy", event => copyText(copy, event.target)));
  if (last && (message.stopped || message.cut) && message.content) actions.appendChild(button("Continue", continueReply));
  if (last) actions.appendChild(button("Regenerate", regenerate));
  const versions = c && versionSwitch(c, index);
  if (versions) actions.appendChild(versions);
}

// --- the conversation's own buttons and the input ---------------------------------------------------
function regenerate() {
  const c = chat();
  if (!c || running.has(c.id) || !c.messages.length) return;
  // The reply regenerated stays, as another version (branches.js).
  const fork = c.messages[c.messages.length - 1].role === "assistant" ? forkAt(c, c.messages.length - 1) : null;
  render();
  generate(c, {fork});
}

// Raw mode's text goes on as a new piece, as an empty input does; a chat reply is continued in place.
function continueReply() {
  const c = chat();
  if (!c || running.has(c.id)) return;
  generate(c, {continuing: !settings.raw});
}

function startEdit(index) {
  if (running.has(current)) return;
  editIndex = index;
  input.value = chat().messages[index].content;
  // Its images and sounds go with the edited message unless removed (attach.js).
  attachments = (chat().messages[index].media || []).filter(ref => mediaData.has(ref.id)).map(ref => Object.assign({}, ref));
  showAttachments();
  $("editing").hidden = false;
  grow(); input.focus();
}
function cancelEdit() {
  if (editIndex === null) return;
  editIndex = null; $("editing").hidden = true; input.value = ""; grow();
  attachments = []; showAttachments();
}

function submit() {
  // Raw mode keeps the text as typed (a trailing space or line matters to what comes next), and an empty
  // input with text already there asks the model to go on.
  const raw = !!settings.raw, text = raw ? input.value : input.value.trim();
  const started = chat() && chat().messages.length;
  if (running.has(current) || (raw ? !text && !attachments.length && !started : !text && !attachments.some(a => a.kind))) return;
  if (raw && !text && !attachments.length) { generate(); return; }
  if (!chat()) newChat();
  const c = chat();
  let fork = null;  // an edit starts another version from the message edited; the old one stays (branches.js)
  if (editIndex !== null) { fork = forkAt(c, editIndex); editIndex = null; $("editing").hidden = true; }
  const last = c.messages[c.messages.length - 1];
  if (!fork && !raw && !attachments.length && last && last.role === "user" && !last.context && last.content === text) {
    input.value = ""; grow();  // the unanswered question typed again: retried, not asked twice
    generate(c);
    return;
  }
  const fresh = {text: input.value, attachments: attachments.slice()};
  const message = fresh.message = {role: "user", content: text};
  if (fork) message.fork = fork;
  const texts = attachments.filter(a => !a.kind), media = attachments.filter(a => a.kind);  // attach.js's
  if (texts.length) {
    message.files = texts.map(a => a.name);
    message.context = texts.map(a => `File ${a.name}:\n\`\`\`\n${a.text}\n\`\`\``).join("\n\n");
  }
  if (media.length) message.media = keepMedia(media);
  attachments = []; showAttachments();
  c.messages.push(message);
  if (!c.title) c.title = text.trim().split("\n")[0].slice(0, 60) || [...(message.files || []), ...(message.media || []).map(m => m.name)].join(", ");
  c.updated = Date.now();
  input.value = ""; grow();
  save();  // the question is kept from the moment it is sent, answered or not
  render();
  generate(c, {fresh});
}

// --- files, settings, export ------------------------------------------------------------------------
function showAttachments() {
  const box = $("attachments");
  box.replaceChildren(...attachments.map((a, i) => {
    if (a.kind) return mediaChip(a, i);  // attach.js: a thumbnail
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
stopButton.addEventListener("click", () => running.has(current) && running.get(current).abort());
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
