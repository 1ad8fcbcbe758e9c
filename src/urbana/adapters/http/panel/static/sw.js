// The panel's service worker: it makes the panel installable and shows an offline page
// when the network is gone. Pages and API answers are never cached (they are personal
// and live); only the static files and the offline page are.
const CACHE = "urbana-panel-v1";
const SHELL = [
  "/panel/offline",
  "/panel/static/panel.css",
  "/panel/static/panel.js",
  "/panel/static/htmx.min.js",
  "/panel/static/icon.svg",
];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((c) => c.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches.keys()
      .then((keys) => Promise.all(keys.filter((k) => k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim())
  );
});

self.addEventListener("fetch", (event) => {
  const request = event.request;
  if (request.method !== "GET") return;
  const url = new URL(request.url);
  if (url.pathname.startsWith("/panel/static/")) {
    event.respondWith(caches.match(request).then((hit) => hit || fetch(request)));
  } else if (request.mode === "navigate") {
    event.respondWith(fetch(request).catch(() => caches.match("/panel/offline")));
  }
});
