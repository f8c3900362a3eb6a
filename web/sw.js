// sw.js - the service worker: it shows the server's Web Push
// notifications while no page of Parley is in front of the user, takes
// them away when the chat was read on another device, and opens the
// chat a notification is about when it is clicked.
//
// It owns nothing else: no caching, no fetch handler (the app needs its
// server anyway), so that every page load gets the server's files as
// they are. Served at /sw.js so that its scope is the whole origin.
//
// The server's payloads (see src/push.c), JSON:
//   {"type":"message","conv","seq","title","body","badge","tag":"c<conv>"}
//   {"type":"clear","conv","seq","tag":"c<conv>"}: read up to seq elsewhere.
// Anything else, or a payload that is not JSON, is ignored: a push
// handler that throws would show the browser's generic notification.

const ICON = '/icon.svg';

// The tag of a conversation's notification: one per conversation, each
// replacing the last. The page's in-tab notifications use the same one.
const tagOf = (conv) => `c${conv}`;

const isId = (v) => Number.isSafeInteger(v) && v > 0;

function parse(data) {
  if (!data) return null;
  try {
    const p = JSON.parse(data.text());
    return p && typeof p === 'object' && isId(p.conv) ? p : null;
  } catch (e) {
    return null;
  }
}

async function windows() {
  // Uncontrolled too: a page loaded before this worker first took over.
  return self.clients.matchAll({ type: 'window', includeUncontrolled: true });
}

async function showMessage(p) {
  if (typeof p.title !== 'string' || typeof p.body !== 'string') return;
  if (Number.isSafeInteger(p.badge) && p.badge >= 0 && self.navigator.setAppBadge)
    self.navigator.setAppBadge(p.badge).catch(() => {});
  // A page in front of the user shows the message itself. The server
  // pushes only when no device took the message in time, so this is
  // rare: a page whose connection is not (yet) back.
  if ((await windows()).some((w) => w.focused && w.visibilityState === 'visible')) return;
  await self.registration.showNotification(p.title, {
    body: p.body,
    tag: tagOf(p.conv),
    renotify: true,
    icon: ICON,
    data: { conv: p.conv, seq: isId(p.seq) ? p.seq : 0 },
  });
}

// Read on another device up to seq: its notification goes, unless it is
// about a later message than that.
async function clear(p) {
  const seq = isId(p.seq) ? p.seq : Infinity;
  for (const n of await self.registration.getNotifications({ tag: tagOf(p.conv) }))
    if (!(n.data && n.data.seq > seq)) n.close();
}

self.addEventListener('install', () => self.skipWaiting());

self.addEventListener('activate', (ev) => ev.waitUntil(self.clients.claim()));

self.addEventListener('push', (ev) => {
  const p = parse(ev.data);
  if (!p) return;
  const work = p.type === 'message' ? showMessage(p) : p.type === 'clear' ? clear(p) : null;
  if (work) ev.waitUntil(work.catch(() => {}));
});

// Brings a window of the app forward on a conversation: an open one is
// told to open it (the page listens for {type:'open', conv}), else a new
// one opens at /#conv=ID, which the page reads at start. A property of
// self so that a test can call it: a synthetic click cannot waitUntil.
self.openConversation = async (conv) => {
  if (!isId(conv)) return null;
  const all = await windows();
  const win = all.find((w) => w.focused) || all.find((w) => w.visibilityState === 'visible') || all[0];
  if (!win) return self.clients.openWindow(`/#conv=${conv}`);
  win.postMessage({ type: 'open', conv });
  try {
    await win.focus();
  } catch (e) {
    // Focus is only allowed while handling a click; the chat is open anyway.
  }
  return win;
};

self.addEventListener('notificationclick', (ev) => {
  ev.notification.close();
  const conv = ev.notification.data && ev.notification.data.conv;
  ev.waitUntil(self.openConversation(conv).catch(() => {}));
});
