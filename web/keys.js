// Keyboard shortcuts, llama-server's page's where it has one (Ctrl/Cmd+Shift+O, Ctrl/Cmd+K, Ctrl/Cmd+B),
// listed in the help dialog (?). The single keys (/ and ?) only act outside a text field, where they
// would otherwise be typed.
function typing(target) {
  return target instanceof HTMLElement && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName));
}

function toggleSidebar() {
  if (narrow.matches) {
    if ($("sidebar").classList.contains("open")) closeSidebar(); else $("menu").click();
  } else {
    document.body.classList.toggle("no-sidebar");
  }
}

function showSidebar() {
  document.body.classList.remove("no-sidebar");
  if (narrow.matches && !$("sidebar").classList.contains("open")) $("menu").click();
}

document.addEventListener("keydown", event => {
  const command = event.ctrlKey || event.metaKey, key = event.key.toLowerCase();
  if (document.querySelector("dialog[open]")) return;  // a dialog's own keys (Esc closes it)
  if (command && event.shiftKey && key === "o") { event.preventDefault(); newChat(); closeSidebar(); }
  else if (command && !event.shiftKey && key === "k") { event.preventDefault(); showSidebar(); $("search").focus(); $("search").select(); }
  else if (command && !event.shiftKey && key === "b") { event.preventDefault(); toggleSidebar(); }
  else if (!command && !event.altKey && !typing(event.target) && event.key === "/") { event.preventDefault(); input.focus(); }
  else if (!command && !event.altKey && !typing(event.target) && event.key === "?") { event.preventDefault(); $("help").showModal(); }
});
$("help-button").addEventListener("click", () => $("help").showModal());
