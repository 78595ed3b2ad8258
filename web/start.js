// Last of the page's own files: every name the others declare exists by now.
dropAbandoned(current);
if (!chat()) current = chats.length ? chats[chats.length - 1].id : null;
render();
grow();
for (const server of mcp.servers) connectMcp(server);  // mcp.js
// The PWA's service worker (web/sw.js): the page opens, offline, from its copy. Browsers allow one only on
// https or localhost.
if ("serviceWorker" in navigator && window.isSecureContext) navigator.serviceWorker.register("sw.js").catch(() => {});
// For tests and bookmarks: /?q=hello sends a first message as soon as the page loads.
const first = new URLSearchParams(location.search).get("q");
sweepMedia();  // attach.js
loadModel().then(() => { if (first) { newChat(); input.value = first; submit(); } });
