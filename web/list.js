// The conversation list: search, switching, a new chat, and this chat's Rename, Delete, Export and Import.
// An empty chat that is left goes (only the chat on screen may be empty), and the chat buttons wait for a
// chat with something in it.
function renderList() {
  const list = $("chats"), query = $("search").value.trim().toLowerCase();
  list.replaceChildren();
  const found = chats.filter(c => !query || (c.title || "").toLowerCase().includes(query) ||
                                  c.messages.some(m => m.content.toLowerCase().includes(query)));
  for (const c of found.sort((a, b) => b.updated - a.updated)) {
    const item = document.createElement("li");
    const b = button(c.title || "New chat", () => { switchTo(c.id); closeSidebar(); });
    b.title = c.title || "New chat";
    if (c.id === current) b.setAttribute("aria-current", "true");
    item.appendChild(b);
    list.appendChild(item);
  }
  if (query && !found.length) list.appendChild(label("hint", "no chat holds “" + $("search").value.trim() + "”"));
  const empty = !chat() || !chat().messages.length;
  for (const id of ["rename", "delete", "export-json", "export-md"]) $(id).disabled = empty;
}
$("search").addEventListener("input", renderList);
$("search").addEventListener("keydown", event => {
  if (event.key === "Escape" && $("search").value) { event.stopPropagation(); $("search").value = ""; renderList(); }
  if (event.key === "Enter") { const first = $("chats").querySelector("button"); if (first) first.click(); }
});

// Empty chats nobody is looking at (a "New chat" left unused).
function dropAbandoned(keep) {
  chats = chats.filter(c => c.messages.length || c.id === keep || running.has(c.id));
}

// A reply still streaming in the chat left goes on in the background (stream.js).
function switchTo(id) {
  dropAbandoned(id);
  current = id; cancelEdit(); save(); render(); input.focus();
}

function newChat() {
  const c = chat();
  if (c && !c.messages.length) { input.focus(); return; }  // already on an empty one
  const fresh = {id: newId(), title: "", created: Date.now(), updated: Date.now(), messages: []};
  chats.push(fresh);
  switchTo(fresh.id);
}

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
  for (const m of c.messages) {
    parts.push(`## ${m.role}${m.stopped ? " (stopped)" : ""}\n\n${m.content}`.trimEnd());
    for (const call of m.toolCalls || []) {
      parts.push(`Tool call: \`${call.name}\`\n\n\`\`\`json\n${call.arguments}\n\`\`\`` +
                 (call.result !== undefined ? `\n\nResult:\n\n\`\`\`\n${call.result}\n\`\`\`` : ""));
    }
  }
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
  if (running.has(c.id)) running.get(c.id).abort();
  chats = chats.filter(other => other.id !== c.id);
  current = chats.length ? chats.reduce((a, b) => (a.updated > b.updated ? a : b)).id : null;
  if (!current) localStorage.removeItem(CURRENT);
  save(); render();
});

// --- import: this page's Export JSON (one chat, or a list of them) and llama-server's page's export --
// ({conv, messages}, or a list of them: its messages form a tree; the branch it was showing is taken).
// Whatever the file holds is rebuilt field by field, so nothing but text reaches the page's data.
const ROLES = ["user", "assistant"];

function cleanMessages(list, depth = 0) {
  if (!Array.isArray(list) || depth > 50) return [];
  const kept = [];
  for (const m of list) {
    if (!m || !ROLES.includes(m.role) || typeof m.content !== "string") continue;
    const clean = {role: m.role, content: m.content};
    for (const flag of ["stopped", "dropped"]) if (m[flag] === true) clean[flag] = true;
    for (const text of ["stats", "reasoning", "context"]) if (typeof m[text] === "string") clean[text] = m[text];
    if (Object.hasOwn(CUT_LABELS, m.cut)) clean.cut = m.cut;
    if (Array.isArray(m.toolCalls)) {
      clean.toolCalls = m.toolCalls.filter(t => t && typeof t.name === "string").map(t => Object.assign(
        {id: String(t.id || ""), name: t.name, arguments: String(t.arguments || "{}"),
         status: ["done", "denied", "error", "unknown"].includes(t.status) ? t.status : "interrupted"},
        typeof t.result === "string" ? {result: t.result} : {}));
    }
    if (Array.isArray(m.files)) clean.files = m.files.filter(f => typeof f === "string");
    if (m.fork && Array.isArray(m.fork.tails) && Number.isInteger(m.fork.at)) {
      const tails = m.fork.tails.map(t => (t === null ? null : cleanMessages(t, depth + 1)));
      if (tails[m.fork.at] === null && tails.filter(t => t === null).length === 1 &&
          tails.every(t => t === null || t.length)) clean.fork = {tails, at: m.fork.at};
    }
    kept.push(clean);
  }
  return kept;
}

function fromLlamaServer(item) {
  const byId = new Map(item.messages.map(m => [m.id, m]));
  let node = byId.get(item.conv.currNode) || item.messages[item.messages.length - 1];
  const path = [];
  for (let guard = 0; node && guard < 10000; guard++) { path.unshift(node); node = byId.get(node.parent); }
  return {title: item.conv.name, messages: path};
}

function importChats(data) {
  const items = (Array.isArray(data) ? data : [data]).map(item =>
    item && item.conv && Array.isArray(item.messages) ? fromLlamaServer(item) : item);
  const found = [];
  for (const item of items) {
    const messages = item ? cleanMessages(item.messages) : [];
    if (!messages.length) continue;
    const title = typeof item.title === "string" && item.title.trim() ? item.title.trim().slice(0, 200)
                                                                     : messages[0].content.split("\n")[0].slice(0, 60);
    found.push({id: newId(), title, created: Date.now(), updated: Date.now() + found.length, messages});
  }
  return found;
}

$("import").addEventListener("click", () => $("import-file").click());
$("import-file").addEventListener("change", async event => {
  const file = event.target.files[0];
  event.target.value = "";
  if (!file) return;
  let found = [];
  try { found = importChats(JSON.parse(await file.text())); } catch (e) { /* reported below */ }
  if (!found.length) {
    showBanner(label("", `error: ${file.name} holds no conversation this page can read ` +
                         "(Export JSON's files, or llama-server's page's)"),
               button("OK", () => { hideBanner(); input.focus(); }));
    return;
  }
  chats.push(...found);
  switchTo(found[found.length - 1].id);
  closeSidebar();
});
