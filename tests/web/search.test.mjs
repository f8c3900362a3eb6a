// The web client's search in Chromium: the sidebar's box finds a message
// by a word, shows the word marked in the result (as text, never HTML),
// and a click opens the chat at that message, older pages loaded as far
// as it takes; a query with no word says so, one that finds nothing says
// so, and Escape brings the conversation list back.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SHOTS, WAIT, serverAndBrowser, person as personOf, signUp, startChat, say } from './helpers.mjs';

const S = serverAndBrowser();
const person = (options) => personOf(S, options);

// Sends bodies to conv from the page's user on a WebSocket of its own
// (quicker than the composer), 32 in flight (the server takes 128), each
// acked before it resolves; a refusal fails it.
function sendMany(page, conv, bodies) {
  return page.evaluate(async ({ conv, bodies }) => {
    const s = JSON.parse(localStorage.getItem('parley.session'));
    const r = await fetch('/api/v1/ws-tickets', { method: 'POST', headers: { Authorization: `Bearer ${s.token}` } });
    const { ticket } = await r.json();
    const ws = new WebSocket(`ws://${location.host}/chat/v1/ws?ticket=${encodeURIComponent(ticket)}`);
    await new Promise((ok, fail) => { ws.onopen = ok; ws.onerror = fail; });
    let acked = 0;
    let next = 0;
    const more = () => {
      const i = next++;
      if (i < bodies.length) ws.send(JSON.stringify({ type: 'send', conv, cmid: `bulk-${i}`, body: bodies[i] }));
    };
    const done = new Promise((ok, fail) => {
      ws.onmessage = (ev) => {
        const f = JSON.parse(ev.data);
        if (f.type === 'error') fail(new Error(ev.data));
        if (f.type !== 'ack') return;
        if (++acked === bodies.length) ok();
        more();
      };
    });
    for (let i = 0; i < 32; i++) more();
    await done;
    ws.close();
  }, { conv, bodies });
}

test('search finds a message by a word, marks it, and opens the chat at it', async () => {
  const ana = await person();
  const ben = await person();
  await signUp(ana.page, 'ana');
  await signUp(ben.page, 'ben');
  await startChat(ana.page, 'ben');
  await say(ana.page, 'The <b>quarterly</b> report is ready');
  await ben.page.waitForSelector('#conv-list button.conv:has-text("quarterly")', { timeout: WAIT });
  const conv = Number(await ben.page.getAttribute('#conv-list button.conv', 'data-conv'));
  // Far enough back that the chat's first page does not hold it.
  await sendMany(ben.page, conv, Array.from({ length: 260 }, (_, i) => `filler ${i}`));
  await ana.page.waitForFunction(() => document.querySelector('#conv-list').textContent.includes('filler 259'),
    null, { timeout: WAIT });

  await ana.page.fill('#search-input', 'quart');
  await ana.page.waitForSelector('#search-results:not([hidden]) button.result', { timeout: WAIT });
  assert.equal(await ana.page.isHidden('#conv-list'), true);
  assert.equal(await ana.page.locator('#search-results button.result').count(), 1);
  // The word is marked; the rest, markup included, is text.
  assert.equal(await ana.page.textContent('#search-results mark'), 'quarterly');
  assert.equal(await ana.page.locator('#search-results b').count(), 0);
  assert.match(await ana.page.textContent('#search-results .preview'), /You: The <b>quarterly<\/b> report/);
  await ana.page.screenshot({ path: `${SHOTS}/search-results.png` });

  await ana.page.click('#search-results button.result');
  // Scrolled into view (and flashed for 2 s, which a busy machine's test
  // may miss), and kept there.
  const inView = () => {
    const m = document.querySelector('#messages .msg[data-seq="1"]');
    if (!m) return false;
    const box = document.querySelector('#messages').getBoundingClientRect();
    const r = m.getBoundingClientRect();
    return r.top >= box.top && r.bottom <= box.bottom;
  };
  await ana.page.waitForFunction(inView, null, { timeout: WAIT });
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(await ana.page.evaluate(inView), true, 'the message stays in view');
  // Everything from it to the newest is there, in order.
  const seqs = await ana.page.$$eval('#messages .msg[data-seq]', (ns) => ns.map((n) => Number(n.dataset.seq)));
  assert.deepEqual(seqs, Array.from({ length: 261 }, (_, i) => i + 1));
  await ana.page.screenshot({ path: `${SHOTS}/search-opened.png` });

  // No word, nothing found, and Escape.
  await ana.page.fill('#search-input', '**');
  await ana.page.waitForFunction(() => document.querySelector('#search-status').textContent.includes('Type a word'),
    null, { timeout: WAIT });
  await ana.page.fill('#search-input', 'zeppelin');
  await ana.page.waitForFunction(() => document.querySelector('#search-status').textContent.includes('No messages'),
    null, { timeout: WAIT });
  await ana.page.press('#search-input', 'Escape');
  await ana.page.waitForSelector('#conv-list:not([hidden])', { timeout: WAIT });
  assert.equal(await ana.page.isHidden('#search-status'), true);

  // Ben finds it too, from his side; a third user finds nothing.
  await ben.page.fill('#search-input', 'quarterly report');
  await ben.page.waitForSelector('#search-results:not([hidden]) button.result', { timeout: WAIT });
  const cy = await person();
  await signUp(cy.page, 'cyd');
  await cy.page.fill('#search-input', 'quarterly');
  await cy.page.waitForFunction(() => document.querySelector('#search-status').textContent.includes('No messages'),
    null, { timeout: WAIT });

  assert.deepEqual([...ana.errors, ...ben.errors, ...cy.errors], []);
  await ana.ctx.close();
  await ben.ctx.close();
  await cy.ctx.close();
});
