// notify.js - notifications, the page's half: the service worker
// (web/sw.js), the browser's permission, the Web Push subscription
// registered with the server as this device's push target, and the
// notifications and sound of a message that arrives while the tab is
// hidden.
//
// Permission is asked for only when the user clicks "Enable
// notifications" (browsers penalise sites that ask at load, and users
// rightly say no to them). Once granted, each sign-in subscribes again
// quietly: subscriptions rotate, and the server replaces this device's
// target with the new one. A browser without a push service (headless
// ones, some privacy-minded ones) still gets the in-tab notifications.

import * as api from './api.js';

const supported = typeof Notification !== 'undefined';
const workers = 'serviceWorker' in navigator;
const BEEP_EVERY_MS = 2000;  // a burst of messages beeps once
const PREVIEW_CHARS = 200;

let registration = null;     // the service worker's, once registered
let session = 0;             // bumped at sign-out: late answers of a session left are dropped
let pushState = 'off';       // 'off' | 'on' | 'unavailable' | 'failed'
let pushError = '';
let audio = null;
let lastBeep = 0;
let badge = 0;

export const tagOf = (conv) => `c${conv}`;

// fn(conv): a service worker asks the page to open a conversation (the
// user clicked a notification). Listened to from the start, so that a
// click that lands on the sign-in screen is kept for after it.
export function onOpenRequest(fn) {
  if (!workers) return;
  navigator.serviceWorker.addEventListener('message', (ev) => {
    const m = ev.data;
    if (m && m.type === 'open' && Number.isSafeInteger(m.conv) && m.conv > 0) fn(m.conv);
  });
  navigator.serviceWorker.startMessages();
}

// After sign-in: the service worker, and, if the user said yes before,
// this login's push target. Never asks for anything.
export async function start() {
  const mine = session;
  if (!workers) return;
  try {
    registration = await navigator.serviceWorker.register('/sw.js', { scope: '/' });
  } catch (e) {
    registration = null;
    if (mine === session) pushState = 'unavailable';
    return; // in-tab notifications fall back to new Notification()
  }
  if (mine === session && supported && Notification.permission === 'granted') await subscribe(mine);
}

// The user's click on "Enable notifications". Returns the state to show
// (status()).
export async function enable() {
  if (!supported) return status();
  if (!workers) pushState = 'unavailable';
  // Asked even when already granted: it answers at once then, and it is
  // the one call that may show the browser's prompt.
  const answer = await Notification.requestPermission();
  if (answer === 'default') return { ...status(), error: 'The browser did not allow notifications. Try again.' };
  if (answer !== 'granted') return status();
  const mine = session;
  if (!registration) await start();
  else await subscribe(mine);
  return status();
}

// What the settings say: { text, error, action } (action: the button's
// label, '' for no button).
export function status() {
  if (!supported) return { text: 'This browser cannot show notifications.', error: '', action: '' };
  if (Notification.permission === 'denied')
    return { text: 'Notifications are blocked for Parley in this browser’s site settings.', error: '', action: '' };
  if (Notification.permission !== 'granted')
    return { text: 'Get a notification when a message arrives and Parley is in the background.', error: '',
      action: 'Enable notifications' };
  if (pushState === 'on') return { text: 'Notifications are on, also while Parley is closed.', error: '', action: '' };
  const inTab = 'Notifications are on while Parley is open in a tab.';
  if (pushState === 'unavailable') return { text: inTab, error: 'Push unavailable in this browser.', action: 'Try push again' };
  if (pushState === 'failed') return { text: inTab, error: pushError, action: 'Try push again' };
  return { text: inTab, error: '', action: 'Enable notifications' };
}

const phrase = (e) => String(e.message || e).replace(/\.$/, '');

function keyBytes(b64url) {
  const b64 = b64url.replace(/-/g, '+').replace(/_/g, '/');
  const raw = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
  return Uint8Array.from(raw, (ch) => ch.charCodeAt(0));
}

function sameKey(buf, key) {
  if (!buf) return false;
  const a = new Uint8Array(buf);
  return a.length === key.length && a.every((x, i) => x === key[i]);
}

// Subscribes with the server's VAPID key and registers the subscription
// as this device's webpush target. Failures are kept for status(), not
// thrown: notifications in the tab work without push.
async function subscribe(mine) {
  if (!registration || !registration.pushManager) {
    pushState = 'unavailable';
    return;
  }
  let sub;
  try {
    const key = keyBytes(await api.vapidKey());
    await navigator.serviceWorker.ready;
    sub = await registration.pushManager.getSubscription();
    // One made with another key (the server's store was replaced) cannot
    // be reused, nor can a new one be made beside it.
    if (sub && !sameKey(sub.options && sub.options.applicationServerKey, key)) {
      await sub.unsubscribe();
      sub = null;
    }
    if (!sub) sub = await registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key });
  } catch (e) {
    if (mine !== session) return;
    // A browser without a push service rejects the subscription with an
    // AbortError or NotAllowedError; our own server's refusals are
    // ApiErrors.
    if (e instanceof api.ApiError) {
      pushState = 'failed';
      pushError = `Push could not be set up: ${phrase(e)}.`;
    } else {
      pushState = 'unavailable';
    }
    return;
  }
  if (mine !== session) {
    sub.unsubscribe().catch(() => {});
    return;
  }
  try {
    await api.addPushTarget(sub.toJSON());
    if (mine === session) pushState = 'on';
  } catch (e) {
    if (mine !== session) return;
    pushState = 'failed';
    pushError = `The server did not take this browser’s push subscription: ${phrase(e)}.`;
  }
}

// At sign-out: this browser stops taking pushes (the server has already
// forgotten the target) and shows nothing of the session left.
export function stop() {
  session++;
  pushState = 'off';
  pushError = '';
  setBadge(0);
  const reg = registration;
  if (!reg) return;
  reg.getNotifications().then((list) => list.forEach((n) => n.close()), () => {});
  if (reg.pushManager)
    reg.pushManager.getSubscription().then((sub) => sub && sub.unsubscribe()).catch(() => {});
}

// The app icon's badge, where the browser has one (installed apps).
export function setBadge(n) {
  if (!navigator.setAppBadge || n === badge) return; // the list redraws often
  badge = n;
  (n > 0 ? navigator.setAppBadge(n) : navigator.clearAppBadge()).catch(() => {});
}

// A message from someone else arrived while the tab is hidden: a
// notification titled as the list names the chat (clicking it opens the
// chat: the service worker's notificationclick, or onclick below), and a
// beep. The caller decides whether it is one to notify of.
export async function notifyMessage({ conv, seq, title, body, onClick }) {
  if (!supported || Notification.permission !== 'granted') return;
  const text = body.length > PREVIEW_CHARS ? `${body.slice(0, PREVIEW_CHARS - 1)}…` : body;
  const options = { body: text, tag: tagOf(conv), renotify: true, icon: '/icon.svg', data: { conv, seq } };
  beep();
  try {
    if (registration && registration.active) {
      await registration.showNotification(title, options);
      return;
    }
    const n = new Notification(title, options);
    n.onclick = () => {
      window.focus();
      n.close();
      onClick();
    };
  } catch (e) {
    // The browser refused (too many, or no notifications here): the
    // list's badge and the tab's title still say it.
  }
}

// The chat was read (here or on another device): its notification goes.
export function clearConv(conv) {
  if (!registration) return;
  registration.getNotifications({ tag: tagOf(conv) }).then((list) => list.forEach((n) => n.close()), () => {});
}

// A short two-tone beep made on the spot: no sound file to fetch.
function beep() {
  const now = Date.now();
  if (now - lastBeep < BEEP_EVERY_MS) return;
  lastBeep = now;
  try {
    const Ctx = window.AudioContext || window.webkitAudioContext;
    if (!Ctx) return;
    if (!audio) audio = new Ctx();
    if (audio.state === 'suspended') audio.resume().catch(() => {});
    const t = audio.currentTime;
    const osc = audio.createOscillator();
    const gain = audio.createGain();
    osc.type = 'sine';
    osc.frequency.setValueAtTime(880, t);
    osc.frequency.setValueAtTime(1320, t + 0.09);
    // A quick fade in and out: a sound that starts or stops abruptly clicks.
    gain.gain.setValueAtTime(0.0001, t);
    gain.gain.exponentialRampToValueAtTime(0.2, t + 0.01);
    gain.gain.exponentialRampToValueAtTime(0.0001, t + 0.2);
    osc.connect(gain).connect(audio.destination);
    osc.start(t);
    osc.stop(t + 0.21);
  } catch (e) {
    // No audio output: the notification still shows.
  }
}
