// Keeping conversations in localStorage. A message is saved when it is sent, a reply while it streams
// (at most once a second: each save rewrites every conversation) and when it ends, and everything once
// more when the page is hidden or left, so a reload or a closed tab loses no question and at most a
// moment of a reply. (First of the page's own files, joined into one script by build_page.py.)
const SAVE_EVERY_MS = 1000;
let saveTimer = null;

function load(name, fallback) {
  try { return JSON.parse(localStorage.getItem(name)) || fallback; } catch (e) { return fallback; }
}

function save() {
  clearTimeout(saveTimer);
  saveTimer = null;
  try {
    localStorage.setItem(CHATS, JSON.stringify(chats));
    if (current) localStorage.setItem(CURRENT, current);
  } catch (e) {  // the origin's quota (about 5 MB): the chat goes on, unsaved
    showBanner("error: the browser's storage for this page is full: delete or export some chats");
  }
}

function saveSoon() {
  if (saveTimer === null) saveTimer = setTimeout(save, SAVE_EVERY_MS);
}

// A reload or a closed tab ends the page without a word to its streams: what they have so far is saved.
window.addEventListener("pagehide", () => { if (running.size || saveTimer !== null) save(); });
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "hidden" && (running.size || saveTimer !== null)) save();
});

// Replies that were streaming when their page went away (`pending` is saved with them): one with text is
// kept as stopped, to Continue or Regenerate; an empty one goes, and its question is left unanswered,
// with its Retry.
function recoverInterrupted(list) {
  for (const c of list) {
    c.messages = c.messages.filter(m => !(m.pending && !m.content));
    for (const m of c.messages) {
      if (m.pending) { delete m.pending; m.stopped = true; }
    }
  }
  return list;
}
