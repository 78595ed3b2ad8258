// The page's service worker (served at /sw.js by runtime/server/routes_web.py; copied from web/sw.js by
// web/build_page.py). It keeps the last copy of the page and of its manifest and icons, and answers with it
// only when the server does not answer: online, every visit gets the server's own page (and refreshes the
// copy). Offline, the page opens from the copy, shows the conversations kept in the browser, and says the
// server is not running until it is back. API requests are never touched.
const CACHE = "llmpack-page";
const KEPT = ["./", "manifest.webmanifest", "icon.svg", "icon-192.png", "icon-512.png"];
const scope = new URL(self.registration.scope);
const keptPaths = KEPT.map(path => new URL(path, scope).pathname);

self.addEventListener("install", event => {
  event.waitUntil(caches.open(CACHE).then(cache => cache.addAll(KEPT)).then(() => self.skipWaiting()));
});
self.addEventListener("activate", event => event.waitUntil(self.clients.claim()));

self.addEventListener("fetch", event => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || url.origin !== scope.origin || !keptPaths.includes(url.pathname)) return;
  event.respondWith((async () => {
    try {
      const response = await fetch(event.request);
      if (response.ok) {
        const copy = response.clone();
        caches.open(CACHE).then(cache => cache.put(url.pathname, copy));
      }
      return response;
    } catch (error) {  // the server is not running
      const kept = await caches.match(url.pathname, {ignoreSearch: true});
      if (kept) return kept;
      throw error;
    }
  })());
});
