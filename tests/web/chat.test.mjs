// chat.test.mjs - the web client in a real browser (Debian's Chromium,
// driven by playwright-core) against the real server binary.
//
// Alice and Bob each have a browser context of their own. They sign up,
// Alice starts a chat and her ticks go ✓ -> ✓✓ -> blue ✓✓ as Bob receives
// and then opens it; Bob sees her typing; a message holding <script> shows
// as text; Bob's network is cut and his browser closed while Alice sends,
// and when he comes back he sees everything once, in order. A group is
// made, shows read counts and loses a member. The WebSocket is opened with
// a ticket, never the token, and comes back after the server restarts.
// Strangers' first messages offer Block and Reply; blocks, the privacy
// setting for group adds, the devices list and rate-limited refusals are
// driven as a user would. Screenshots of the screens go to build/web-test/.
//
//   node --test tests/web/           (make test runs it; PARLEY_BIN picks the binary)

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, rmSync } from 'node:fs';
import {
  SHOTS, PASSWORD, WAIT, startServer, launchBrowser, signUp, startChat, openConv, say, waitBodies,
} from './helpers.mjs';

let main;
let base;
let browser;

before(async () => {
  mkdirSync(SHOTS, { recursive: true });
  main = await startServer();
  base = main.base;
  browser = await launchBrowser();
});

after(async () => {
  if (browser) await browser.close();
  if (main) {
    await main.stop();
    rmSync(main.dataDir, { recursive: true, force: true });
  }
});

// Each run has a fresh server and data directory: plain names will do.
const unique = (name) => name;

// A browser context with its own storage, failing the test on page errors.
// at: the server's address (the main one unless a test has its own).
async function person(viewport = { width: 1100, height: 720 }, prepare = null, at = base,
  storageState = undefined) {
  const ctx = await browser.newContext({ viewport, storageState });
  const page = await ctx.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e));
  // The server's Content-Security-Policy must not block anything the client does.
  page.on('console', (m) => { if (/Content Security Policy/i.test(m.text())) errors.push(m.text()); });
  if (prepare) await prepare(page);
  await page.goto(at);
  return { ctx, page, errors };
}

const bodies = (page) => page.$$eval('#messages .msg .body', (els) => els.map((e) => e.textContent));

// Sends n messages ("message 1" ...) into the page's first conversation
// over a WebSocket of its own, quickly: at most 32 awaiting their ack (the
// server refuses more than 128 in flight).
async function bulkSend(page, n, prefix = 'message') {
  await page.evaluate(async ([count, text]) => {
    const s = JSON.parse(localStorage.getItem('parley.session'));
    const conv = Number(document.querySelector('#conv-list button.conv').dataset.conv);
    const t = await (await fetch('/api/v1/ws-tickets', { method: 'POST', headers: { Authorization: `Bearer ${s.token}` } })).json();
    const ws = new WebSocket(`ws://${location.host}/chat/v1/ws?ticket=${t.ticket}`);
    await new Promise((resolve, reject) => {
      let sent = 0;
      let acks = 0;
      const more = () => {
        while (sent < count && sent - acks < 32) {
          sent++;
          ws.send(JSON.stringify({ type: 'send', conv, cmid: `${text}${sent}`, body: `${text} ${sent}` }));
        }
      };
      ws.onmessage = (ev) => {
        const f = JSON.parse(ev.data);
        if (f.type === 'ready') more();
        if (f.type === 'error') reject(new Error(`${f.code}: ${f.message}`));
        if (f.type === 'ack') {
          if (++acks === count) resolve();
          else more();
        }
      };
      setTimeout(() => reject(new Error(`only ${acks} of ${count} acked`)), 30000);
    });
    ws.close();
  }, [n, prefix]);
}

async function register(name, at = base) {
  const r = await fetch(`${at}/api/v1/users`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ username: name, password: PASSWORD }),
  });
  assert.equal(r.status, 201);
  return (await r.json()).user_id;
}

test('Alice and Bob chat: ticks, typing, escaping, offline and back', async () => {
  const alice = await person();
  const bob = await person();
  const aliceName = unique('alice');
  const bobName = unique('bob');
  await signUp(alice.page, aliceName);
  await signUp(bob.page, bobName);
  assert.equal(await alice.page.textContent('#me'), aliceName);

  // Record every state Alice's first message's tick goes through.
  await startChat(alice.page, bobName);
  assert.equal(await alice.page.textContent('#chat-name'), bobName);
  await alice.page.evaluate(() => {
    window.tickStates = [];
    const note = () => {
      const t = document.querySelector('#messages .msg.own .tick');
      if (t && window.tickStates[window.tickStates.length - 1] !== t.dataset.state) window.tickStates.push(t.dataset.state);
    };
    new MutationObserver(note).observe(document.querySelector('#messages'), { subtree: true, childList: true, attributes: true });
  });
  await say(alice.page, 'Hello Bob!');
  // ✓ once stored; ✓✓ once Bob's browser has it (his chat is not open).
  await alice.page.waitForSelector('#messages .msg.own .tick[data-state="delivered"]', { timeout: WAIT });
  await bob.page.waitForSelector(`#conv-list button.conv:has-text("${aliceName}") .badge`, { timeout: WAIT });
  assert.equal(await bob.page.textContent('#conv-list .badge'), '1');
  assert.equal(await bob.page.title(), '(1) Parley');
  await alice.page.screenshot({ path: `${SHOTS}/alice-delivered.png` });
  // Blue once Bob opens the chat.
  await openConv(bob.page, aliceName);
  await waitBodies(bob.page, ['Hello Bob!']);
  await alice.page.waitForSelector('#messages .msg.own .tick[data-state="read"]', { timeout: WAIT });
  const states = await alice.page.evaluate(() => window.tickStates);
  assert.deepEqual(states.filter((s) => s !== 'pending'), ['sent', 'delivered', 'read'],
    `tick states seen: ${states.join(' -> ')}`);
  assert.equal(await bob.page.$('#conv-list .badge'), null, 'the badge clears once read');
  await bob.page.waitForFunction(() => document.title === 'Parley', null, { timeout: WAIT });

  // New messages are added to the pane, not redrawn over it: the node of
  // the first one stays the same node.
  await bob.page.evaluate(() => { document.querySelector('#messages .msg').dataset.mark = 'kept'; });

  // Typing: Bob sees it in the chat header, and it ends when Alice sends.
  await alice.page.fill('#composer-input', '');
  await alice.page.type('#composer-input', 'How are');
  await bob.page.waitForFunction(() => document.querySelector('#chat-status').textContent === 'typing…',
    null, { timeout: WAIT });
  await alice.page.type('#composer-input', ' you?');
  await alice.page.press('#composer-input', 'Enter');
  await waitBodies(bob.page, ['How are you?']);
  await bob.page.waitForFunction(() => document.querySelector('#chat-status').textContent !== 'typing…',
    null, { timeout: WAIT });
  assert.equal(await bob.page.$$eval('#messages .msg[data-mark="kept"]', (e) => e.length), 1);

  // Shift+Enter is a new line; Enter sends.
  await bob.page.fill('#composer-input', 'Fine,');
  await bob.page.press('#composer-input', 'Shift+Enter');
  await bob.page.type('#composer-input', 'thanks!');
  await bob.page.press('#composer-input', 'Enter');
  await waitBodies(alice.page, ['Fine,\nthanks!']);

  // Presence is for contacts: once Bob has written to her, Alice sees him
  // online in her chat header.
  await alice.page.waitForFunction(() => document.querySelector('#chat-status').textContent === 'online',
    null, { timeout: WAIT });

  // A body is text, never HTML.
  const evil = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2"><b>bold</b>';
  await say(alice.page, evil);
  await waitBodies(bob.page, [evil]);
  assert.equal(await bob.page.evaluate(() => window.pwned), undefined);
  assert.equal(await bob.page.$$eval('#messages script, #messages img, #messages b', (e) => e.length), 0);
  await bob.page.screenshot({ path: `${SHOTS}/bob-chat.png` });

  // Bob's network is cut: the banner says so; Alice's messages wait for him.
  await bob.ctx.setOffline(true);
  await bob.page.waitForSelector('#banner:not([hidden])', { timeout: WAIT });
  assert.match(await bob.page.textContent('#banner'), /Offline — reconnecting/);
  await say(alice.page, 'one');
  await say(alice.page, 'two');
  await say(alice.page, 'three');
  await alice.page.waitForFunction(() => [...document.querySelectorAll('#messages .msg.own .tick')]
    .slice(-3).every((t) => t.dataset.state !== 'pending'), null, { timeout: WAIT });
  await bob.ctx.setOffline(false);
  await waitBodies(bob.page, ['one', 'two', 'three']);
  await bob.page.waitForSelector('#banner[hidden]', { state: 'attached', timeout: WAIT });
  // Bob's chat is open: Alice sees the three read.
  await alice.page.waitForFunction(() => [...document.querySelectorAll('#messages .msg.own .tick')]
    .slice(-3).every((t) => t.dataset.state === 'read'), null, { timeout: WAIT });

  // Bob's browser closes; Alice sends three more; Bob comes back in a new
  // browser with what it had stored, and resumes from there.
  const saved = await bob.ctx.storageState();
  await bob.ctx.close();
  // Once the grace period has passed, Alice sees when Bob was last here.
  await alice.page.waitForFunction(() => /^last seen /.test(document.querySelector('#chat-status').textContent),
    null, { timeout: WAIT });
  await say(alice.page, 'four');
  await say(alice.page, 'five');
  await say(alice.page, 'six');
  await alice.page.waitForFunction(() => [...document.querySelectorAll('#messages .msg.own .tick')]
    .slice(-3).every((t) => t.dataset.state === 'sent' || t.dataset.state === 'delivered'), null, { timeout: WAIT });
  const bob2ctx = await browser.newContext({ storageState: saved, viewport: { width: 1100, height: 720 } });
  const bob2 = await bob2ctx.newPage();
  const bob2errors = [];
  bob2.on('pageerror', (e) => bob2errors.push(e));
  await bob2.goto(base);
  await bob2.waitForSelector('#app:not([hidden])', { timeout: WAIT });
  await bob2.waitForSelector(`#conv-list button.conv:has-text("${aliceName}") .badge`, { timeout: WAIT });
  assert.equal(await bob2.textContent('#conv-list .badge'), '3');
  await openConv(bob2, aliceName);
  const expected = ['Hello Bob!', 'How are you?', 'Fine,\nthanks!', evil, 'one', 'two', 'three', 'four', 'five', 'six'];
  // The history page joins what the resume brought.
  await waitBodies(bob2, expected);
  assert.deepEqual(await bodies(bob2), expected, 'every message once, in order');
  const seqs = await bob2.$$eval('#messages .msg', (els) => els.map((e) => Number(e.dataset.seq)));
  assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b));
  assert.equal(new Set(seqs).size, seqs.length);
  // Alice's last three turn blue now that Bob has read them.
  await alice.page.waitForFunction(() => [...document.querySelectorAll('#messages .msg.own .tick')]
    .slice(-3).every((t) => t.dataset.state === 'read'), null, { timeout: WAIT });
  await alice.page.screenshot({ path: `${SHOTS}/alice-chat.png` });
  await bob2.screenshot({ path: `${SHOTS}/bob-back.png` });

  // Phone width: one pane at a time, with a way back to the list.
  await bob2.setViewportSize({ width: 390, height: 760 });
  assert.equal(await bob2.isVisible('.sidebar'), false);
  await bob2.screenshot({ path: `${SHOTS}/bob-phone.png` });
  await bob2.click('#back-button');
  assert.equal(await bob2.isVisible('.sidebar'), true);

  assert.deepEqual([...alice.errors, ...bob.errors, ...bob2errors], []);
  await alice.ctx.close();
  await bob2ctx.close();
});

test('a group: read counts, adding and removing members', async () => {
  const alice = await person();
  const bob = await person();
  const aliceName = unique('ana');
  const bobName = unique('ben');
  const carolName = unique('cleo');
  const daveName = unique('dan');
  await signUp(alice.page, aliceName);
  await signUp(bob.page, bobName);
  await register(carolName);
  await register(daveName);

  await alice.page.click('#new-group-button');
  await alice.page.fill('#new-group-name', 'Weekend trip');
  await alice.page.fill('#new-group-members', `${bobName}, ${carolName}`);
  await alice.page.click('#new-group-form button[type=submit]');
  await alice.page.waitForSelector('#chat:not([hidden])', { timeout: WAIT });
  assert.equal(await alice.page.textContent('#chat-name'), 'Weekend trip');
  assert.equal(await alice.page.textContent('#chat-status'), '3 members');

  await say(alice.page, 'Who is in?');
  await bob.page.waitForSelector('#conv-list button.conv:has-text("Weekend trip")', { timeout: WAIT });
  await openConv(bob.page, 'Weekend trip');
  await waitBodies(bob.page, ['Who is in?']);
  assert.equal(await bob.page.textContent('#messages .msg .from'), aliceName);
  // Alice's counts: Bob has read it, Carol has not.
  await alice.page.waitForFunction(() => /1\/2 read/.test(document.querySelector('#messages .msg.own .counts')?.textContent || ''),
    null, { timeout: WAIT });

  await alice.page.click('#info-button');
  await alice.page.waitForSelector('#info-dialog[open]');
  await alice.page.waitForFunction(() => /read by 1 of 2/.test(document.querySelector('#info-receipts').textContent),
    null, { timeout: WAIT });
  assert.equal(await alice.page.$$eval('#info-members li', (l) => l.length), 3);
  await alice.page.fill('#add-member-username', daveName);
  await alice.page.click('#add-member-form button[type=submit]');
  await alice.page.waitForFunction(() => document.querySelectorAll('#info-members li').length === 4, null, { timeout: WAIT });
  await alice.page.click(`#info-members button[aria-label="Remove ${carolName}"]`);
  await alice.page.waitForFunction(() => document.querySelectorAll('#info-members li').length === 3, null, { timeout: WAIT });
  await alice.page.screenshot({ path: `${SHOTS}/alice-group-info.png` });
  await alice.page.click('#info-dialog .cancel');
  // Bob sees the membership change in his header.
  await bob.page.waitForFunction(() => document.querySelector('#chat-status').textContent === '3 members', null, { timeout: WAIT });

  // Bob leaves: the group goes from his list.
  await bob.page.click('#info-button');
  await bob.page.click('#leave-button');
  await bob.page.waitForFunction(() => !document.querySelector('#conv-list').textContent.includes('Weekend trip'),
    null, { timeout: WAIT });

  assert.deepEqual([...alice.errors, ...bob.errors], []);
  await alice.ctx.close();
  await bob.ctx.close();
});

test('refusals are shown; a send whose ack is lost offers a retry with the same cmid', async () => {
  // Frames from the server can be withheld from this page, as a lossy
  // network (or a buggy proxy) would.
  let dropAcks = false;
  let holdNextMsg = false;
  let held = null;
  const resumesSent = [];
  const p = await person(undefined, (page) => page.routeWebSocket(/\/chat\/v1\/ws/, (ws) => {
    const server = ws.connectToServer();
    ws.onMessage((m) => {
      if (typeof m === 'string' && m.includes('"type":"resume"')) resumesSent.push(Date.now());
      server.send(m);
    });
    server.onMessage((m) => {
      if (dropAcks && typeof m === 'string' && m.includes('"type":"ack"')) return;
      if (typeof m === 'string' && m.includes('"type":"msg"')) {
        if (holdNextMsg) {
          holdNextMsg = false;
          held = m;
          return;
        }
        if (held) {
          // Overtaken: the later message first, the held one a moment after.
          const late = held;
          held = null;
          ws.send(m);
          setTimeout(() => ws.send(late), 300);
          return;
        }
      }
      ws.send(m);
    });
  }));
  const name = unique('carl');
  const friend = unique('dora');
  const dora = await person();
  await signUp(dora.page, friend);
  await p.page.fill('#auth-username', 'A!');
  await p.page.fill('#auth-password', PASSWORD);
  await p.page.click('#signup-button');
  assert.match(await p.page.textContent('#auth-error'), /3 to 32 characters/);
  // Keyboard only: Tab from the name to the password, Enter logs in.
  await p.page.fill('#auth-username', '');
  await p.page.focus('#auth-username');
  await p.page.keyboard.type(name);
  await p.page.keyboard.press('Tab');
  assert.equal(await p.page.evaluate(() => document.activeElement.id), 'auth-password');
  await p.page.keyboard.type('wrong password');
  await p.page.keyboard.press('Enter');
  await p.page.waitForFunction(() => /Wrong username or password/.test(document.querySelector('#auth-error').textContent),
    null, { timeout: WAIT });
  await signUp(p.page, name);
  // Starting a chat with nobody says so.
  await p.page.click('#new-chat-button');
  await p.page.fill('#new-chat-username', 'nobody-by-this-name');
  await p.page.click('#new-chat-form button[type=submit]');
  await p.page.waitForFunction(() => /no user called/.test(document.querySelector('#new-chat-error').textContent),
    null, { timeout: WAIT });
  await p.page.click('#new-chat-dialog .cancel');

  // The ack never comes: a clock, then a retry; the retry is stored once.
  await startChat(p.page, friend);
  dropAcks = true;
  await say(p.page, 'are you there?');
  await p.page.waitForSelector('#messages .msg.own .tick[data-state="pending"]', { timeout: WAIT });
  const cmid = await p.page.getAttribute('#messages .msg.own', 'data-cmid');
  await p.page.waitForSelector('#messages .msg.own .retry', { timeout: 15000 });
  assert.equal(await p.page.getAttribute('#messages .msg.own .tick', 'data-state'), 'failed');
  dropAcks = false;
  await p.page.click('#messages .msg.own .retry');
  // Stored at the first try (only its ack was lost), so Dora may have it already.
  await p.page.waitForSelector('#messages .msg.own .tick:is([data-state="sent"], [data-state="delivered"])',
    { timeout: WAIT });
  assert.equal(await p.page.getAttribute('#messages .msg.own', 'data-cmid'), cmid);
  const token = await p.page.evaluate(() => JSON.parse(localStorage.getItem('parley.session')).token);
  const auth = { headers: { Authorization: `Bearer ${token}` } };
  const list = await (await fetch(`${base}/api/v1/conversations`, auth)).json();
  const conv = list.conversations[0].conversation_id;
  const hist = await (await fetch(`${base}/api/v1/conversations/${conv}/messages`, auth)).json();
  assert.deepEqual(hist.messages.map((m) => [m.body, m.cmid]), [['are you there?', cmid]]);

  // One of Dora's messages is overtaken on the way: the next one's seq
  // jumps, the client asks for what it missed, and shows both in order.
  holdNextMsg = true;
  const resumesBefore = resumesSent.length;
  await openConv(dora.page, name);
  await say(dora.page, 'first (overtaken)');
  await dora.page.waitForSelector('#messages .msg.own .tick:not([data-state="pending"])', { timeout: WAIT });
  await say(dora.page, 'second');
  await waitBodies(p.page, ['first (overtaken)', 'second']);
  assert.deepEqual((await bodies(p.page)).slice(-2), ['first (overtaken)', 'second']);
  assert.equal(holdNextMsg, false, 'a msg frame was held back');
  assert.ok(resumesSent.length > resumesBefore, 'the gap asked for a resume');

  // Logging out returns to the sign-in screen, and the token stops working.
  await p.page.click('#logout-button');
  await p.page.waitForSelector('#auth:not([hidden])', { timeout: WAIT });
  const r = await fetch(`${base}/api/v1/conversations`, auth);
  assert.equal(r.status, 401);
  assert.deepEqual([...p.errors, ...dora.errors], []);
  await p.ctx.close();
  await dora.ctx.close();
});

test('history loads older pages as the reader scrolls up', async () => {
  const eve = await person();
  const fay = await person();
  await signUp(eve.page, unique('eve'));
  await signUp(fay.page, unique('fay'));
  await startChat(eve.page, 'fay');
  await bulkSend(eve.page, 130);
  await fay.page.waitForSelector('#conv-list button.conv:has-text("eve")', { timeout: WAIT });
  await openConv(fay.page, 'eve');
  await waitBodies(fay.page, ['message 130']);
  // The newest page first; scrolling up brings the rest, in order, once each.
  for (let i = 0; i < 5; i++) {
    const n = await fay.page.$$eval('#messages .msg', (e) => e.length);
    if (n >= 130) break;
    await fay.page.$eval('#messages', (box) => { box.scrollTop = 0; box.dispatchEvent(new Event('scroll')); });
    await fay.page.waitForFunction((before) => document.querySelectorAll('#messages .msg').length > before, n, { timeout: WAIT });
  }
  const got = await bodies(fay.page);
  assert.deepEqual(got, Array.from({ length: 130 }, (_, i) => `message ${i + 1}`));
  assert.deepEqual([...eve.errors, ...fay.errors], []);
  await eve.ctx.close();
  await fay.ctx.close();
});

test('after a long absence (over 1,000 missed) the client catches up once, without resume storms', async () => {
  const gus = await person();
  await signUp(gus.page, unique('gus'));
  const resumes = [];
  const route = (page) => page.routeWebSocket(/\/chat\/v1\/ws/, (ws) => {
    const server = ws.connectToServer();
    ws.onMessage((m) => {
      if (typeof m === 'string' && m.includes('"type":"resume"')) resumes.push(m);
      server.send(m);
    });
    server.onMessage((m) => ws.send(m));
  });
  const hal = await person(undefined, route);
  await signUp(hal.page, unique('hal'));
  await startChat(gus.page, 'hal');
  await say(gus.page, 'before you go');
  await hal.page.waitForSelector('#conv-list button.conv:has-text("gus")', { timeout: WAIT });
  await hal.page.waitForTimeout(700); // the cursor is written at most every 500 ms
  const saved = await hal.ctx.storageState();
  await hal.ctx.close();
  await bulkSend(gus.page, 1100, 'missed');

  const ctx = await browser.newContext({ storageState: saved });
  const page = await ctx.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e));
  await route(page);
  resumes.length = 0;
  await page.goto(base);
  await page.waitForSelector('#conv-list button.conv:has-text("gus")', { timeout: WAIT });
  await page.waitForFunction(() => /missed 1100/.test(document.querySelector('#conv-list').textContent), null, { timeout: WAIT });
  // Live messages after the catch-up are no gap: no further resume.
  await say(gus.page, 'welcome back');
  await say(gus.page, 'again');
  await openConv(page, 'gus');
  await waitBodies(page, ['missed 1100', 'welcome back', 'again']);
  await page.waitForTimeout(2500);
  assert.equal(resumes.length, 1, `resumes sent: ${resumes.length}`);
  const got = await bodies(page);
  assert.deepEqual(got.slice(-3), ['missed 1100', 'welcome back', 'again']);
  assert.equal(new Set(got).size, got.length);
  assert.deepEqual([...gus.errors, ...errors], []);
  await gus.ctx.close();
  await ctx.close();
});

// ---- this week: tickets, strangers, blocks, privacy, devices, budgets ----

const tokenOf = (page) => page.evaluate(() => JSON.parse(localStorage.getItem('parley.session')).token);

async function logIn(page, name) {
  await page.fill('#auth-username', name);
  await page.fill('#auth-password', PASSWORD);
  await page.click('#login-button');
  await page.waitForSelector('#app:not([hidden])', { timeout: WAIT });
}

async function newGroup(page, title, members) {
  await page.click('#new-group-button');
  await page.fill('#new-group-name', title);
  await page.fill('#new-group-members', members.join(', '));
  await page.click('#new-group-form button[type=submit]');
}

async function openSettings(page) {
  await page.click('#settings-button');
  await page.waitForSelector('#settings-dialog[open]', { timeout: WAIT });
}

const visible = (page, sel) => page.waitForSelector(sel, { state: 'visible', timeout: WAIT });
const gone = (page, sel) => page.waitForSelector(sel, { state: 'hidden', timeout: WAIT });

test('the WebSocket opens with a ticket, never the token, and comes back after the server restarts', async () => {
  // A server of its own, since it is stopped and started again.
  let srv = await startServer();
  const urls = { alice: [], bob: [] };
  const watchUrls = (who) => (page) => { page.on('websocket', (ws) => urls[who].push(ws.url())); };
  const alice = await person(undefined, watchUrls('alice'), srv.base);
  const bob = await person(undefined, watchUrls('bob'), srv.base);
  try {
    await signUp(alice.page, 'tess');
    await signUp(bob.page, 'uri');
    await startChat(alice.page, 'uri');
    await say(alice.page, 'before the restart');
    await waitBodies(alice.page, ['before the restart']);
    await bob.page.waitForSelector('#conv-list button.conv:has-text("tess")', { timeout: WAIT });
    assert.equal(urls.alice.length, 1);
    assert.equal(urls.bob.length, 1);

    // The server goes away and comes back on the same port and data: each
    // browser notices, asks for a new ticket and reconnects.
    await srv.stop();
    await alice.page.waitForSelector('#banner:not([hidden])', { timeout: WAIT });
    assert.match(await alice.page.textContent('#banner'), /Offline — reconnecting/);
    srv = await startServer([], { port: srv.port, dataDir: srv.dataDir });
    await alice.page.waitForSelector('#banner[hidden]', { state: 'attached', timeout: 30000 });
    await bob.page.waitForSelector('#banner[hidden]', { state: 'attached', timeout: 30000 });
    await say(alice.page, 'after the restart');
    await openConv(bob.page, 'tess');
    await waitBodies(bob.page, ['before the restart', 'after the restart']);

    for (const [who, p] of [['alice', alice.page], ['bob', bob.page]]) {
      const token = await tokenOf(p);
      assert.ok(urls[who].length >= 2, `${who} reconnected: ${urls[who].length} sockets`);
      for (const u of urls[who]) {
        assert.ok(!u.includes(token), `${who}'s token is in a WebSocket URL: ${u}`);
        assert.ok(!/[?&]token=/.test(u), u);
        // The ticket, and the user for a load balancer's routing: nothing else.
        assert.match(u, /\/chat\/v1\/ws\?ticket=[^&]+&user=\d+$/);
      }
      const me = await p.evaluate(() => JSON.parse(localStorage.getItem('parley.session')));
      for (const u of urls[who]) assert.equal(new URL(u).searchParams.get('user'), String(me.user_id));
      const tickets = urls[who].map((u) => new URL(u).searchParams.get('ticket'));
      assert.equal(new Set(tickets).size, tickets.length, 'a new ticket for each connect');
    }
    assert.deepEqual([...alice.errors, ...bob.errors], []);
  } finally {
    await alice.ctx.close();
    await bob.ctx.close();
    await srv.stop();
    rmSync(srv.dataDir, { recursive: true, force: true });
  }
});

test('strangers: Block and Reply on a first message; a block refuses sends until Unblock', async () => {
  const bram = await person();
  const cara = await person();
  const dirk = await person();
  await signUp(bram.page, 'bram');
  await signUp(cara.page, 'cara');
  await signUp(dirk.page, 'dirk');

  // Cara writes first: Bram sees who she is not, with Block and Reply.
  await startChat(cara.page, 'bram');
  await say(cara.page, 'Hi Bram, it is Cara from the choir');
  const caraInList = '#conv-list button.conv:has-text("cara")';
  await bram.page.waitForSelector(caraInList, { timeout: WAIT });
  await bram.page.waitForSelector(`${caraInList} .tag:text("New contact request")`, { timeout: WAIT });
  assert.match(await bram.page.getAttribute(caraInList, 'aria-label'), /new contact request/);
  await openConv(bram.page, 'cara');
  await visible(bram.page, '#stranger-bar');
  assert.equal(await bram.page.textContent('#stranger-text'), 'cara is not in your contacts');
  assert.ok(await bram.page.isVisible('#stranger-block'));
  assert.ok(await bram.page.isVisible('#composer'), 'the composer stays for a reply');
  await bram.page.screenshot({ path: `${SHOTS}/bram-stranger.png` });
  // Reply puts the cursor in the composer; once the answer is stored the
  // banner and the list's mark go.
  await bram.page.click('#stranger-reply');
  assert.equal(await bram.page.evaluate(() => document.activeElement.id), 'composer-input');
  await bram.page.keyboard.type('Hello Cara!');
  await bram.page.keyboard.press('Enter');
  await waitBodies(cara.page, ['Hello Cara!']);
  await gone(bram.page, '#stranger-bar');
  await bram.page.waitForSelector(`${caraInList} .tag`, { state: 'detached', timeout: WAIT });
  // Bram has written to Cara: she may see his presence now (the client
  // watches again on his first message).
  await cara.page.waitForFunction(() => document.querySelector('#chat-status').textContent === 'online',
    null, { timeout: WAIT });

  // Dirk writes first too, and Bram blocks him (with a confirmation).
  await startChat(dirk.page, 'bram');
  await say(dirk.page, 'Cheap watches, best prices');
  await waitBodies(dirk.page, ['Cheap watches, best prices']);
  await dirk.page.waitForSelector('#messages .msg.own .tick:not([data-state="pending"])', { timeout: WAIT });
  await bram.page.waitForSelector('#conv-list button.conv:has-text("dirk")', { timeout: WAIT });
  await openConv(bram.page, 'dirk');
  await visible(bram.page, '#stranger-bar');
  await bram.page.click('#stranger-block');
  await visible(bram.page, '#confirm-dialog');
  assert.equal(await bram.page.textContent('#confirm-title'), 'Block dirk?');
  await bram.page.screenshot({ path: `${SHOTS}/bram-block-confirm.png` });
  await bram.page.click('#confirm-ok');
  await gone(bram.page, '#confirm-dialog');
  await visible(bram.page, '#blocked-bar');
  assert.equal(await bram.page.textContent('#blocked-text'), 'You blocked dirk.');
  assert.equal(await bram.page.isVisible('#composer'), false, 'no composer in a blocked chat');
  assert.equal(await bram.page.isVisible('#stranger-bar'), false);
  await bram.page.waitForSelector('#conv-list button.conv:has-text("dirk") .tag.blocked', { timeout: WAIT });
  await bram.page.screenshot({ path: `${SHOTS}/bram-blocked.png` });
  // On a phone: the bar in place of the composer, the header's button.
  await bram.page.setViewportSize({ width: 390, height: 760 });
  assert.ok(await bram.page.isVisible('#unblock-button'));
  assert.ok(await bram.page.isVisible('#block-button'));
  await bram.page.screenshot({ path: `${SHOTS}/bram-blocked-phone.png` });
  await bram.page.click('#back-button');
  await bram.page.setViewportSize({ width: 1100, height: 720 });

  // Dirk's next send is refused with the server's words, once: no loop
  // sends it again.
  // Counted in the page: what the open socket sends from now on.
  await dirk.page.evaluate(() => {
    window.sentFrames = [];
    const orig = WebSocket.prototype.send;
    WebSocket.prototype.send = function send(d) {
      if (typeof d === 'string' && d.includes('"type":"send"')) window.sentFrames.push(JSON.parse(d).cmid);
      return orig.call(this, d);
    };
  });
  await say(dirk.page, 'hello?');
  await dirk.page.waitForSelector('#messages .msg.own .note.failed', { timeout: WAIT });
  assert.match(await dirk.page.textContent('#messages .msg.own .note.failed'), /You cannot send to this conversation/);
  assert.equal(await dirk.page.getAttribute('#messages .msg.own:has(.note.failed) .tick', 'data-state'), 'failed');
  await dirk.page.screenshot({ path: `${SHOTS}/dirk-refused.png` });
  // Nothing to wait for but time: a retry would go within a second.
  await dirk.page.waitForTimeout(2500);
  const failedCmid = await dirk.page.getAttribute('#messages .msg.own:has(.note.failed)', 'data-cmid');
  assert.deepEqual(await dirk.page.evaluate(() => window.sentFrames), [failedCmid], 'sent once, not retried');
  // New chat finds the chat that exists (the server neither makes another
  // nor says who blocked whom); a group with Bram is refused in its dialog.
  await startChat(dirk.page, 'bram');
  await newGroup(dirk.page, 'Deals', ['bram', 'cara']);
  await dirk.page.waitForFunction(() => /cannot be added to groups by you/i.test(document.querySelector('#new-group-error').textContent),
    null, { timeout: WAIT });
  await dirk.page.click('#new-group-dialog .cancel');

  // Erin never wrote; Bram blocks her from Settings, and she cannot open a
  // chat with him: the new-chat dialog says so.
  const erin = await person();
  await signUp(erin.page, 'erin');
  await openSettings(bram.page);
  await bram.page.waitForSelector('#blocked-list li:has-text("dirk")', { timeout: WAIT });
  await bram.page.fill('#block-username', 'erin');
  await bram.page.click('#block-form button[type=submit]');
  await bram.page.waitForSelector('#blocked-list li:has-text("erin")', { timeout: WAIT });
  await bram.page.screenshot({ path: `${SHOTS}/bram-settings-blocked.png` });
  await bram.page.click('#settings-dialog .cancel');
  await erin.page.click('#new-chat-button');
  await erin.page.fill('#new-chat-username', 'bram');
  await erin.page.click('#new-chat-form button[type=submit]');
  await erin.page.waitForFunction(() => /You cannot start a conversation with this user/.test(document.querySelector('#new-chat-error').textContent),
    null, { timeout: WAIT });
  assert.ok(await erin.page.isVisible('#new-chat-dialog'), 'the dialog stays open with the refusal');
  await erin.page.screenshot({ path: `${SHOTS}/erin-new-chat-refused.png` });
  await erin.page.click('#new-chat-dialog .cancel');
  // Bram cannot open one with her either while she is blocked.
  await bram.page.click('#new-chat-button');
  await bram.page.fill('#new-chat-username', 'erin');
  await bram.page.click('#new-chat-form button[type=submit]');
  await bram.page.waitForFunction(() => /You have blocked this user/.test(document.querySelector('#new-chat-error').textContent),
    null, { timeout: WAIT });
  await bram.page.click('#new-chat-dialog .cancel');

  // Unblock (keyboard: the button in place of the composer): Dirk can
  // send again.
  await openConv(bram.page, 'dirk');
  await bram.page.focus('#unblock-button');
  await bram.page.keyboard.press('Enter');
  await visible(bram.page, '#composer');
  assert.equal(await bram.page.isVisible('#blocked-bar'), false);
  await say(dirk.page, 'sorry, no more ads');
  await dirk.page.waitForSelector('#messages .msg.own:has-text("sorry, no more ads") .tick:not([data-state="pending"])', { timeout: WAIT });
  await waitBodies(bram.page, ['Cheap watches, best prices', 'sorry, no more ads']);
  // ... and Erin too, from the settings list.
  await openSettings(bram.page);
  await bram.page.click('#blocked-list button[aria-label="Unblock erin"]');
  await bram.page.waitForFunction(() => /Nobody is blocked/.test(document.querySelector('#blocked-list').textContent),
    null, { timeout: WAIT });
  await bram.page.click('#settings-dialog .cancel');
  await startChat(erin.page, 'bram');
  await say(erin.page, 'Hi Bram, Erin here');
  await bram.page.waitForSelector('#conv-list button.conv:has-text("erin") .tag', { timeout: WAIT });

  // The list is paged: a browser that gets it one entry a page still
  // shows every chat, with its marks.
  const listUrls = [];
  const bram2 = await person(undefined, (page) => page.route(/\/api\/v1\/conversations\?/, (route) => {
    const u = new URL(route.request().url());
    u.searchParams.set('limit', '1');
    listUrls.push(u.search);
    return route.continue({ url: u.toString() });
  }), base, await bram.ctx.storageState());
  await bram2.page.waitForSelector('#app:not([hidden])', { timeout: WAIT });
  for (const who of ['cara', 'dirk', 'erin'])
    await bram2.page.waitForSelector(`#conv-list button.conv:has-text("${who}")`, { timeout: WAIT });
  assert.equal(await bram2.page.$$eval('#conv-list button.conv', (b) => b.length), 3);
  assert.ok(listUrls.length >= 3 && listUrls.slice(1).every((q) => q.includes('cursor=')), listUrls.join(' '));
  await bram2.page.waitForSelector('#conv-list button.conv:has-text("erin") .tag:text("New contact request")', { timeout: WAIT });

  assert.deepEqual([...bram.errors, ...cara.errors, ...dirk.errors, ...erin.errors, ...bram2.errors], []);
  for (const p of [bram, cara, dirk, erin, bram2]) await p.ctx.close();
});

test('privacy: group adds from contacts only', async () => {
  const pia = await person();
  const abe = await person();
  await signUp(pia.page, 'pia');
  await signUp(abe.page, 'abe');
  await register('cyd');
  await register('dov');

  await openSettings(pia.page);
  await pia.page.waitForSelector('#group-adds input[value="everyone"]:checked', { timeout: WAIT });
  await pia.page.check('#group-adds input[value="contacts"]');
  await pia.page.waitForFunction(() => /only your contacts can add you/.test(document.querySelector('#privacy-status').textContent),
    null, { timeout: WAIT });
  await pia.page.screenshot({ path: `${SHOTS}/pia-settings.png` });
  await pia.page.setViewportSize({ width: 390, height: 760 });
  await pia.page.screenshot({ path: `${SHOTS}/pia-settings-phone.png` });
  await pia.page.setViewportSize({ width: 1100, height: 720 });
  await pia.page.click('#settings-dialog .cancel');

  // Pia never wrote to Abe: he cannot make a group with her ...
  await newGroup(abe.page, 'Book club', ['pia', 'cyd']);
  await abe.page.waitForFunction(() => /This user cannot be added to groups by you/.test(document.querySelector('#new-group-error').textContent),
    null, { timeout: WAIT });
  await abe.page.screenshot({ path: `${SHOTS}/abe-group-refused.png` });
  await abe.page.click('#new-group-dialog .cancel');
  // ... nor add her to one: the add dialog says so.
  await newGroup(abe.page, 'Book club', ['cyd', 'dov']);
  await abe.page.waitForSelector('#chat:not([hidden])', { timeout: WAIT });
  await abe.page.click('#info-button');
  await abe.page.fill('#add-member-username', 'pia');
  await abe.page.click('#add-member-form button[type=submit]');
  await abe.page.waitForFunction(() => /This user cannot be added to groups by you/.test(document.querySelector('#info-error').textContent),
    null, { timeout: WAIT });
  assert.equal(await abe.page.$$eval('#info-members li', (l) => l.length), 3);
  await abe.page.click('#info-dialog .cancel');

  // Once Pia has written to Abe, he is her contact and may add her.
  await startChat(pia.page, 'abe');
  await say(pia.page, 'Hi Abe, add me to your reading group');
  await abe.page.waitForSelector('#conv-list button.conv:has-text("pia")', { timeout: WAIT });
  await openConv(abe.page, 'Book club');
  await abe.page.click('#info-button');
  await abe.page.fill('#add-member-username', 'pia');
  await abe.page.click('#add-member-form button[type=submit]');
  await abe.page.waitForFunction(() => document.querySelectorAll('#info-members li').length === 4, null, { timeout: WAIT });
  assert.equal(await abe.page.textContent('#info-error'), '');
  await abe.page.click('#info-dialog .cancel');
  await pia.page.waitForSelector('#conv-list button.conv:has-text("Book club")', { timeout: WAIT });

  assert.deepEqual([...pia.errors, ...abe.errors], []);
  await pia.ctx.close();
  await abe.ctx.close();
});

test('devices: one browser logs the others out; they land on the login screen', async () => {
  const first = await person();
  await signUp(first.page, 'ida');
  const second = await person();
  await logIn(second.page, 'ida');
  const third = await person();
  await logIn(third.page, 'ida');
  // The third browser is closed, its session kept, as a laptop shut.
  const thirdState = await third.ctx.storageState();
  await third.ctx.close();

  await openSettings(first.page);
  await first.page.waitForFunction(() => document.querySelectorAll('#device-list li').length === 3, null, { timeout: WAIT });
  assert.equal(await first.page.$$eval('#device-list li.current', (l) => l.length), 1);
  assert.match(await first.page.textContent('#device-list li.current'), /This device/);
  assert.match(await first.page.textContent('#device-list li:not(.current)'), /Chrome on Linux \(web\)/);
  assert.equal(await first.page.$$eval('#device-list li:not(.current) button', (b) => b.length), 2);
  await first.page.screenshot({ path: `${SHOTS}/ida-devices.png` });
  // Log out the other two, the second browser's first (its socket closes).
  const secondDevice = await second.page.evaluate(() => JSON.parse(localStorage.getItem('parley.session')).device_id);
  await first.page.click(`#device-list li[data-device="${secondDevice}"] button`);
  await first.page.waitForFunction(() => document.querySelectorAll('#device-list li').length === 2, null, { timeout: WAIT });
  await first.page.click('#device-list li:not(.current) button');
  await first.page.waitForFunction(() => document.querySelectorAll('#device-list li').length === 1, null, { timeout: WAIT });
  await first.page.click('#settings-dialog .cancel');

  // The second was open: its WebSocket closes (1008) and it shows the login.
  await second.page.waitForSelector('#auth:not([hidden])', { timeout: WAIT });
  assert.match(await second.page.textContent('#auth-error'), /logged out/);
  await second.page.screenshot({ path: `${SHOTS}/ida-logged-out.png` });
  // The third comes back later: its first request gets 401, and the same.
  const third2 = await person(undefined, null, base, thirdState);
  await third2.page.waitForSelector('#auth:not([hidden])', { timeout: WAIT });
  assert.match(await third2.page.textContent('#auth-error'), /session has ended/);
  // The first still works.
  assert.ok(await first.page.isVisible('#app'));
  await first.page.click('#settings-button');
  await first.page.waitForSelector('#device-list li.current', { timeout: WAIT });

  assert.deepEqual([...first.errors, ...second.errors, ...third.errors, ...third2.errors], []);
  for (const p of [first, second, third2]) await p.ctx.close();
});

test('rate-limited refusals say when to try again', async () => {
  // A server of its own with tiny budgets: one stranger a day, and sends
  // reaching 2 people at once, 1 more a second.
  const srv = await startServer(['--strangers-per-day', '1', '--rate-limit', '1', '--rate-burst', '2']);
  const rita = await person(undefined, null, srv.base);
  const sam = await person(undefined, null, srv.base);
  try {
    await signUp(rita.page, 'rita');
    await signUp(sam.page, 'sam');
    await register('tom', srv.base);

    // The first stranger of the day is fine; the second is refused, with
    // when the budget has room again.
    await startChat(rita.page, 'sam');
    await rita.page.click('#new-chat-button');
    await rita.page.fill('#new-chat-username', 'tom');
    await rita.page.click('#new-chat-form button[type=submit]');
    await rita.page.waitForFunction(() => /try again in \d+ h/.test(document.querySelector('#new-chat-error').textContent),
      null, { timeout: WAIT });
    assert.match(await rita.page.textContent('#new-chat-error'),
      /^You have started too many conversations with people who have not written to you — try again in 2[34] h/);
    await rita.page.screenshot({ path: `${SHOTS}/rita-strangers-limit.png` });
    await rita.page.click('#new-chat-dialog .cancel');

    // Five quick sends: the budget takes two; the rest say when they go
    // again, and they do, by themselves.
    await rita.page.evaluate(() => {
      window.notes = [];
      new MutationObserver(() => {
        for (const n of document.querySelectorAll('#messages .msg .note'))
          if (!window.notes.includes(n.textContent)) window.notes.push(n.textContent);
      }).observe(document.querySelector('#messages'), { subtree: true, childList: true, characterData: true });
    });
    const sent = ['one', 'two', 'three', 'four', 'five'];
    for (const b of sent) await say(rita.page, b);
    await rita.page.waitForFunction(() => window.notes.length > 0, null, { timeout: WAIT });
    await rita.page.screenshot({ path: `${SHOTS}/rita-sending-too-fast.png` });
    await rita.page.waitForFunction(() => [...document.querySelectorAll('#messages .msg.own .tick')]
      .length === 5 && [...document.querySelectorAll('#messages .msg.own .tick')]
      .every((t) => t.dataset.state === 'sent' || t.dataset.state === 'delivered' || t.dataset.state === 'read'),
    null, { timeout: 20000 });
    const notes = await rita.page.evaluate(() => window.notes);
    assert.ok(notes.every((n) => /^You're sending too fast — trying again in \d+ s\.$/.test(n)), notes.join(' | '));
    assert.equal(await rita.page.$$eval('#messages .msg .note', (n) => n.length), 0, 'the notes go once sent');
    await openConv(sam.page, 'rita');
    await waitBodies(sam.page, sent);
    assert.equal((await bodies(sam.page)).length, 5, 'each once');
    assert.deepEqual([...rita.errors, ...sam.errors], []);
  } finally {
    await rita.ctx.close();
    await sam.ctx.close();
    await srv.stop();
    rmSync(srv.dataDir, { recursive: true, force: true });
  }
});
