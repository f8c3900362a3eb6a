// push.test.mjs - the web client's notifications in a real browser
// (Debian's Chromium, driven by playwright-core) against the real server
// binary and the fake Web Push service (tests/fakes/webpush_service.mjs).
//
// The permission is asked for only on the user's click, never at load.
// Bob enables notifications: his browser's subscription (made by the test,
// since headless Chromium has no push service, with a real P-256 key pair
// whose private half the fake holds) becomes his device's webpush target;
// with his page closed, Alice's messages reach the fake encrypted, and the
// fake's decrypted payloads, handed to Bob's service worker over CDP, show
// one notification per conversation that the next replaces and a "clear"
// (Bob read the chat on another device) takes away. The worker opens the
// chat a notification is about, as does /#conv=ID. While a tab is hidden,
// a message from someone else shows a notification and beeps; while it is
// visible, or for one's own message, or in a muted chat, nothing does.
//
//   PARLEY_BIN=build/parley node --test tests/web/push.test.mjs

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createECDH, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  SHOTS, WAIT, startServer, launchBrowser, signUp, logIn, startChat, openConv, say,
} from './helpers.mjs';

let srv;
let browser;
let fake;

// The browser's half of the subscription: what PushSubscription.toJSON()
// would give, and the private key only the fake push service holds.
const ua = createECDH('prime256v1');
ua.generateKeys();
const keys = {
  private: ua.getPrivateKey().toString('base64url'),
  p256dh: ua.getPublicKey().toString('base64url'),
  auth: randomBytes(16).toString('base64url'),
};

// Polls fn() until it gives something truthy: for files another process
// writes (the fake's port and log), where no event tells us.
async function until(fn, what, ms = WAIT) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function startFakePush() {
  const dir = mkdtempSync(join(tmpdir(), 'parley-webpush-'));
  const portFile = join(dir, 'port');
  const logFile = join(dir, 'log');
  const proc = spawn(process.execPath, ['tests/fakes/webpush_service.mjs', portFile, keys.private, keys.p256dh,
    keys.auth, logFile], { stdio: ['ignore', 'inherit', 'inherit'] });
  const port = await until(() => existsSync(portFile) && Number(readFileSync(portFile, 'utf8')), 'the fake push service');
  return {
    url: `http://127.0.0.1:${port}`,
    dir,
    // What it was sent, decrypted: one entry per request.
    log: () => (existsSync(logFile) ? readFileSync(logFile, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l)) : []),
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) {
        const exited = new Promise((r) => proc.once('exit', r));
        proc.kill('SIGTERM');
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

before(async () => {
  mkdirSync(SHOTS, { recursive: true });
  fake = await startFakePush();
  srv = await startServer(['--push-allow-http-endpoints', '--push-grace-ms', '500', '--push-coalesce-ms', '200']);
  browser = await launchBrowser();
});

after(async () => {
  if (browser) await browser.close();
  if (srv) {
    await srv.stop();
    rmSync(srv.dataDir, { recursive: true, force: true });
  }
  if (fake) await fake.stop();
});

// Counts calls of Notification.requestPermission in every page of a context.
function countPermissionRequests() {
  const real = Notification.requestPermission.bind(Notification);
  window.permissionRequests = 0;
  Notification.requestPermission = (...args) => {
    window.permissionRequests++;
    return real(...args);
  };
}

// A browser context of its own, failing the test on page errors; init:
// init scripts (functions, or [function, argument]) for its pages.
async function person(init = []) {
  const ctx = await browser.newContext({ viewport: { width: 1100, height: 720 } });
  for (const s of init) {
    if (Array.isArray(s)) await ctx.addInitScript(s[0], s[1]);
    else await ctx.addInitScript(s);
  }
  const errors = [];
  const open = async (path = '/') => {
    const page = await ctx.newPage();
    page.on('pageerror', (e) => errors.push(e));
    page.on('console', (m) => { if (/Content Security Policy/i.test(m.text())) errors.push(m.text()); });
    await page.goto(srv.base + path);
    return page;
  };
  return { ctx, errors, open, page: await open() };
}

const grant = (ctx) => ctx.grantPermissions(['notifications'], { origin: srv.base });

// The page's service worker registration is active, or the test fails
// within WAIT (navigator.serviceWorker.ready alone would wait forever).
async function swReady(page) {
  const ok = await page.evaluate((ms) => Promise.race([navigator.serviceWorker.ready.then(() => true),
    new Promise((r) => setTimeout(() => r(false), ms))]), WAIT);
  assert.ok(ok, 'no active service worker');
}

// The app's service worker in a context, started if it is not running
// (a message to it wakes it).
async function serviceWorker(ctx, page) {
  const running = () => ctx.serviceWorkers().find((w) => w.url() === `${srv.base}/sw.js`);
  if (running()) return running();
  const started = ctx.waitForEvent('serviceworker', { timeout: WAIT });
  if (page) {
    await swReady(page);
    await page.evaluate(async () => (await navigator.serviceWorker.ready).active.postMessage('wake'));
  }
  await started;
  return until(running, 'the service worker');
}

const notifications = (worker) => worker.evaluate(async () =>
  (await self.registration.getNotifications()).map((n) => ({ title: n.title, body: n.body, tag: n.tag, data: n.data })));

const session = (page) => page.evaluate(() => JSON.parse(localStorage.getItem('parley.session')));

async function pushTargets(page) {
  return page.evaluate(async () => {
    const s = JSON.parse(localStorage.getItem('parley.session'));
    const r = await fetch('/api/v1/push-targets', { headers: { Authorization: `Bearer ${s.token}` } });
    return (await r.json()).push_targets;
  });
}

async function openSettings(page) {
  await page.click('#settings-button');
  await page.waitForSelector('#settings-dialog[open]', { timeout: WAIT });
}

// The app has signed in and its service worker is in charge.
async function settled(page) {
  await page.waitForSelector('#app:not([hidden])', { timeout: WAIT });
  await page.waitForSelector('#banner[hidden]', { state: 'attached', timeout: WAIT });
  await swReady(page);
}

test('permission is asked for only when the user clicks; without a push service, the tab still notifies', async () => {
  const p = await person([countPermissionRequests]);
  await signUp(p.page, 'ann');
  await settled(p.page);
  // A reload signs in again from what it stored: still no question.
  await p.page.reload();
  await settled(p.page);
  assert.equal(await p.page.evaluate(() => window.permissionRequests), 0, 'asked at page load');
  await openSettings(p.page);
  await p.page.waitForSelector('#notify-button:visible', { timeout: WAIT });
  assert.match(await p.page.textContent('#notify-status'), /Get a notification/);
  await grant(p.ctx);
  await p.page.click('#notify-button');
  await p.page.waitForFunction(() => /Push unavailable in this browser/.test(document.querySelector('#notify-error').textContent),
    null, { timeout: WAIT });
  assert.equal(await p.page.evaluate(() => window.permissionRequests), 1);
  assert.match(await p.page.textContent('#notify-status'), /on while Parley is open in a tab/);
  assert.equal(await p.page.textContent('#notify-button'), 'Try push again');
  await p.page.screenshot({ path: `${SHOTS}/ann-notifications-no-push.png` });
  assert.deepEqual(await pushTargets(p.page), [], 'no target without a subscription');
  assert.deepEqual(p.errors, []);
  await p.ctx.close();
});

// Headless Chromium has no push service: the subscription is the test's,
// with its keys, and records the key the page subscribed with.
function fakeSubscription({ endpoint, p256dh, auth }) {
  let sub = null;
  window.unsubscribed = 0;
  PushManager.prototype.subscribe = async function subscribe(options) {
    const key = new Uint8Array(options.applicationServerKey);
    window.subscribedWith = btoa(String.fromCharCode(...key)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
    sub = {
      endpoint,
      expirationTime: null,
      options: { userVisibleOnly: options.userVisibleOnly, applicationServerKey: key.buffer },
      toJSON: () => ({ endpoint, expirationTime: null, keys: { p256dh, auth } }),
      unsubscribe: async () => {
        window.unsubscribed++;
        sub = null;
        return true;
      },
    };
    return sub;
  };
  PushManager.prototype.getSubscription = async () => sub;
}

test('Web Push: the subscription is registered, pushes reach the service worker, which shows, replaces, clears and opens', async () => {
  const endpoint = `${fake.url}/push/bob-${randomBytes(4).toString('hex')}`;
  const alice = await person();
  const bob = await person([countPermissionRequests, [fakeSubscription, { endpoint, p256dh: keys.p256dh, auth: keys.auth }]]);
  await signUp(alice.page, 'alice');
  await signUp(bob.page, 'bob');
  await startChat(alice.page, 'bob');
  await say(alice.page, 'Hello Bob!');
  await bob.page.waitForSelector('#conv-list button.conv:has-text("alice")', { timeout: WAIT });
  const conv = Number(await bob.page.getAttribute('#conv-list button.conv', 'data-conv'));

  // b. Enabling subscribes with the server's VAPID key and registers the
  // subscription as this device's target.
  await settled(bob.page);
  await grant(bob.ctx);
  await openSettings(bob.page);
  await bob.page.click('#notify-button');
  await bob.page.waitForFunction(() => /also while Parley is closed/.test(document.querySelector('#notify-status').textContent),
    null, { timeout: WAIT });
  assert.equal(await bob.page.textContent('#notify-error'), '');
  assert.equal(await bob.page.isVisible('#notify-button'), false);
  await bob.page.screenshot({ path: `${SHOTS}/bob-notifications-on.png` });
  const vapid = await (await fetch(`${srv.base}/api/v1/push-targets/vapid`)).json();
  assert.equal(await bob.page.evaluate(() => window.subscribedWith), vapid.public_key);
  const bobDevice = (await session(bob.page)).device_id;
  const targets = await pushTargets(bob.page);
  assert.equal(targets.length, 1, JSON.stringify(targets));
  assert.equal(targets[0].platform, 'webpush');
  assert.equal(targets[0].endpoint, endpoint);
  assert.equal(targets[0].device_id, bobDevice);
  assert.equal(await bob.page.evaluate(() => window.permissionRequests), 1);

  // Bob's page closes: Alice's message is pushed to the fake, which
  // decrypts it with the subscription's private key.
  await bob.page.close();
  const pushed = async (pred, what) => until(() => fake.log().find((e) => e.path.startsWith('/push/bob-') && pred(e)), what);
  await say(alice.page, 'Are you there?');
  const first = await pushed((e) => e.payload && e.payload.body === 'Are you there?', 'the first push');
  assert.equal(first.status, 201, first.reason);
  assert.equal(first.payload.type, 'message');
  assert.equal(first.payload.conv, conv);
  assert.equal(first.payload.title, 'alice');
  assert.equal(first.payload.tag, `c${conv}`);
  assert.ok(Number.isInteger(first.payload.seq) && first.payload.seq >= 2, JSON.stringify(first.payload));

  // c. Those payloads, delivered to Bob's service worker as a push
  // service would (no page of the app is open, so it shows them).
  const blank = await bob.ctx.newPage();
  const cdp = await bob.ctx.newCDPSession(blank);
  const registrations = new Map();
  cdp.on('ServiceWorker.workerRegistrationUpdated', (ev) => {
    for (const r of ev.registrations) {
      if (r.isDeleted) registrations.delete(r.scopeURL);
      else registrations.set(r.scopeURL, r.registrationId);
    }
  });
  await cdp.send('ServiceWorker.enable');
  const registrationId = await until(() => registrations.get(`${srv.base}/`), 'the service worker registration');
  const deliver = (payload) => cdp.send('ServiceWorker.deliverPushMessage',
    { origin: srv.base, registrationId, data: typeof payload === 'string' ? payload : JSON.stringify(payload) });
  await deliver(first.payload);
  const worker = await serviceWorker(bob.ctx);
  const shownAre = async (bodies) => {
    await until(async () => JSON.stringify((await notifications(worker)).map((n) => n.body)) === JSON.stringify(bodies),
      `notifications ${JSON.stringify(bodies)}`);
    return notifications(worker);
  };
  let shown = await shownAre(['Are you there?']);
  assert.equal(shown[0].title, 'alice');
  assert.equal(shown[0].tag, `c${conv}`);
  assert.deepEqual(shown[0].data, { conv, seq: first.payload.seq });

  // Garbage is ignored, and throws nothing that would show the browser's
  // own notification.
  await deliver('not json');
  await deliver({ type: 'message', conv });
  await deliver({ type: 'surprise', conv, title: 'x', body: 'y' });
  await say(alice.page, 'Hello?');
  const second = await pushed((e) => e.payload && e.payload.body === 'Hello?', 'the second push');
  await deliver(second.payload);
  shown = await shownAre(['Hello?']);
  assert.equal(shown.length, 1, 'one notification per conversation');
  assert.equal(shown[0].data.seq, second.payload.seq);

  // Bob reads the chat on another device: the server pushes a clear to
  // this one, and the notification goes.
  const phone = await person();
  await logIn(phone.page, 'bob');
  await openConv(phone.page, 'alice');
  const clear = await pushed((e) => e.payload && e.payload.type === 'clear', 'the clear push');
  assert.equal(clear.payload.conv, conv);
  assert.equal(clear.payload.tag, `c${conv}`);
  await deliver(clear.payload);
  await shownAre([]);
  await phone.ctx.close();

  // d. Bob comes back: his page signs in from what it stored and
  // registers the subscription again without asking anything.
  const reRegistered = [];
  bob.ctx.on('request', (r) => { if (r.method() === 'POST' && r.url().endsWith('/api/v1/push-targets')) reRegistered.push(r); });
  const page = await bob.open();
  await settled(page);
  await until(() => reRegistered.length === 1, 'the quiet re-registration');
  assert.equal(await page.evaluate(() => window.permissionRequests), 0);
  assert.equal((await pushTargets(page)).length, 1, 'the target is replaced, not added');
  assert.equal(await page.isVisible('#chat'), false);
  // A click on a notification: the worker tells the page which chat.
  const w = await serviceWorker(bob.ctx, page);
  await w.evaluate((id) => self.openConversation(id), conv);
  await page.waitForSelector('#chat:not([hidden])', { timeout: WAIT });
  assert.equal(await page.textContent('#chat-name'), 'alice');
  await page.waitForFunction(() => /Hello\?/.test(document.querySelector('#messages').textContent), null, { timeout: WAIT });
  await page.screenshot({ path: `${SHOTS}/bob-opened-from-notification.png` });
  // While a page of the app is in front of Bob, a push shows nothing.
  await deliver(second.payload);
  await w.evaluate(() => new Promise((r) => setTimeout(r, 300)));
  assert.deepEqual(await notifications(w), []);
  // A new window at /#conv=ID opens that chat.
  const other = await bob.open(`/#conv=${conv}`);
  await other.waitForSelector('#chat:not([hidden])', { timeout: WAIT });
  assert.equal(await other.textContent('#chat-name'), 'alice');
  assert.equal(await other.evaluate(() => location.hash), '', 'the address forgets it once opened');
  await other.close();

  // Logging out ends this browser's subscription.
  await page.click('#logout-button');
  await page.waitForSelector('#auth:not([hidden])', { timeout: WAIT });
  await until(() => page.evaluate(() => window.unsubscribed === 1), 'the unsubscription');

  await cdp.detach();
  assert.deepEqual([...alice.errors, ...bob.errors], []);
  await alice.ctx.close();
  await bob.ctx.close();
});

// Makes document.visibilityState follow window.hidden (setHidden(page, …)),
// and records the notifications the page shows and the sounds it plays.
function watchNotifications() {
  window.hidden = false;
  Object.defineProperty(Document.prototype, 'visibilityState', { configurable: true, get: () => (window.hidden ? 'hidden' : 'visible') });
  Object.defineProperty(Document.prototype, 'hidden', { configurable: true, get: () => window.hidden });
  window.shown = [];
  window.sounds = 0;
  const show = ServiceWorkerRegistration.prototype.showNotification;
  ServiceWorkerRegistration.prototype.showNotification = function showNotification(title, options) {
    window.shown.push({ title, body: options.body, tag: options.tag });
    return show.call(this, title, options);
  };
  const Real = window.Notification;
  window.Notification = class extends Real {
    constructor(title, options) {
      super(title, options);
      window.shown.push({ title, body: options.body, tag: options.tag });
    }
  };
  const start = OscillatorNode.prototype.start;
  OscillatorNode.prototype.start = function startOscillator(...args) {
    window.sounds++;
    return start.apply(this, args);
  };
}

async function setHidden(page, hidden) {
  await page.evaluate((h) => {
    window.hidden = h;
    document.dispatchEvent(new Event('visibilitychange'));
  }, hidden);
}

test('a hidden tab notifies of messages from others, with a sound; not when visible, not one\'s own, not muted, no text with previews off', async () => {
  const cleo = await person();
  const dora = await person([watchNotifications]);
  await grant(dora.ctx);
  await signUp(cleo.page, 'cleo');
  await signUp(dora.page, 'dora');
  await startChat(cleo.page, 'dora');
  await say(cleo.page, 'first');
  await dora.page.waitForSelector('#conv-list button.conv:has-text("first")', { timeout: WAIT });
  const conv = Number(await dora.page.getAttribute('#conv-list button.conv', 'data-conv'));
  await settled(dora.page);
  const record = () => dora.page.evaluate(() => ({ shown: window.shown, sounds: window.sounds }));
  assert.deepEqual(await record(), { shown: [], sounds: 0 }, 'nothing while visible');
  const arrived = (text) => dora.page.waitForFunction((t) => document.querySelector('#conv-list').textContent.includes(t),
    text, { timeout: WAIT });

  // Hidden: one notification, titled as the list names the chat, and a beep.
  await setHidden(dora.page, true);
  await say(cleo.page, 'are you there?');
  await dora.page.waitForFunction(() => window.shown.length > 0, null, { timeout: WAIT });
  await arrived('are you there?');
  assert.deepEqual(await record(), { shown: [{ title: 'cleo', body: 'are you there?', tag: `c${conv}` }], sounds: 1 });
  const worker = await serviceWorker(dora.ctx, dora.page);
  await until(async () => (await notifications(worker)).length === 1, 'the notification');

  // Visible again: the message shows in the page, nothing else does; the
  // notification of what the open chat now shows goes.
  await setHidden(dora.page, false);
  await say(cleo.page, 'hello again');
  await arrived('hello again');
  assert.equal((await record()).shown.length, 1);
  assert.equal((await record()).sounds, 1);
  await openConv(dora.page, 'cleo');
  await until(async () => (await notifications(worker)).length === 0, 'the notification to go once read');

  // Dora's own message from her other device, while hidden: nothing.
  await setHidden(dora.page, true);
  const phone = await person();
  await logIn(phone.page, 'dora');
  await openConv(phone.page, 'cleo');
  await say(phone.page, 'from my phone');
  await dora.page.waitForFunction(() => document.querySelector('#messages').textContent.includes('from my phone'),
    null, { timeout: WAIT });
  assert.equal((await record()).shown.length, 1);
  assert.equal((await record()).sounds, 1);
  await phone.ctx.close();

  // Muted from the chat's header: the server keeps it (a reload shows
  // it), the list says so, and the chat stays quiet while hidden.
  await setHidden(dora.page, false);
  await dora.page.click('#mute-button');
  await dora.page.waitForSelector('#mute-button[aria-pressed="true"]', { timeout: WAIT });
  assert.equal(await dora.page.textContent('#mute-button'), 'Unmute');
  const entry = () => dora.page.evaluate(async (id) => {
    const s = JSON.parse(localStorage.getItem('parley.session'));
    const r = await fetch(`/api/v1/conversations/${id}`, { headers: { Authorization: `Bearer ${s.token}` } });
    return r.json();
  }, conv);
  assert.equal((await entry()).muted, true);
  await dora.page.reload();
  await settled(dora.page);
  await dora.page.waitForSelector('#conv-list button.conv[aria-label*="muted"]', { timeout: WAIT });
  assert.match(await dora.page.textContent('#conv-list button.conv .tag'), /Muted/);
  await setHidden(dora.page, true);
  await say(cleo.page, 'psst');
  await arrived('psst');
  assert.deepEqual(await record(), { shown: [], sounds: 0 }, 'muted');

  // Unmuted, and previews turned off in the settings: the notification
  // names neither the chat nor the text.
  await setHidden(dora.page, false);
  await openConv(dora.page, 'cleo');
  await dora.page.click('#mute-button');
  await dora.page.waitForSelector('#mute-button[aria-pressed="false"]', { timeout: WAIT });
  assert.equal((await entry()).muted, false);
  await openSettings(dora.page);
  await dora.page.uncheck('#push-previews');
  await dora.page.waitForFunction(() => document.querySelector('#previews-status').textContent.includes('Saved'),
    null, { timeout: WAIT });
  const settings = await dora.page.evaluate(async () => {
    const s = JSON.parse(localStorage.getItem('parley.session'));
    return (await fetch('/api/v1/settings', { headers: { Authorization: `Bearer ${s.token}` } })).json();
  });
  assert.equal(settings.push_previews, false);
  await dora.page.click('#settings-dialog .cancel');
  await setHidden(dora.page, true);
  await say(cleo.page, 'secret plans');
  await dora.page.waitForFunction(() => window.shown.length > 0, null, { timeout: WAIT });
  assert.deepEqual((await record()).shown, [{ title: 'Parley', body: 'New message', tag: `c${conv}` }]);

  assert.deepEqual([...cleo.errors, ...dora.errors], []);
  await cleo.ctx.close();
  await dora.ctx.close();
});
