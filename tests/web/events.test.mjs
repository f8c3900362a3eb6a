// Edits, deletes, reactions and replies in Chromium, two people side by
// side: each is done from the message menu (with the mouse, and with the
// keyboard alone), reaches the other live, and is still there after a
// reload (history gives the state the events left); a refusal is said in
// a notice and changes nothing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SHOTS, WAIT, serverAndBrowser, person as personOf, signUp, startChat, openConv, say, waitBodies } from './helpers.mjs';

const S = serverAndBrowser();
const person = (options) => personOf(S, options);

const msg = (seq) => `#messages .msg[data-seq="${seq}"]`;

async function openMenu(page, seq) {
  await page.click(`${msg(seq)} .menu-button`);
  await page.waitForSelector(`${msg(seq)} .msg-menu`, { timeout: WAIT });
}

test('edit, delete, react and reply reach the other side live and after a reload', async () => {
  const ana = await person();
  const ben = await person();
  await signUp(ana.page, 'ana');
  await signUp(ben.page, 'ben');
  await startChat(ana.page, 'ben');
  await say(ana.page, 'meet at the aquarium');
  await say(ana.page, 'bring snacks');
  await ben.page.waitForSelector('#conv-list button.conv:has-text("snacks")', { timeout: WAIT });
  await openConv(ben.page, 'ana');
  await waitBodies(ben.page, ['meet at the aquarium', 'bring snacks']);
  await ana.page.waitForSelector(`${msg(2)}`, { timeout: WAIT });

  // Ana edits her first message.
  await openMenu(ana.page, 1);
  await ana.page.click(`${msg(1)} .menu-edit`);
  assert.equal(await ana.page.inputValue('#composer-input'), 'meet at the aquarium');
  assert.match(await ana.page.textContent('#compose-context'), /Editing/);
  await ana.page.fill('#composer-input', 'meet at the planetarium');
  await ana.page.press('#composer-input', 'Enter');
  await ana.page.waitForSelector(`${msg(1)} .edited`, { timeout: WAIT });
  await ben.page.waitForFunction((sel) => {
    const m = document.querySelector(sel);
    return m && m.querySelector('.body').textContent === 'meet at the planetarium' && m.querySelector('.edited');
  }, msg(1), { timeout: WAIT });

  // Ben reacts with the keyboard alone: Tab to the menu, arrows, Enter.
  await ben.page.focus(`${msg(1)} .menu-button`);
  await ben.page.keyboard.press('Enter');
  await ben.page.waitForSelector(`${msg(1)} .msg-menu`, { timeout: WAIT });
  assert.equal(await ben.page.evaluate(() => document.activeElement.getAttribute('aria-label')), 'React with \u{1F44D}');
  await ben.page.keyboard.press('ArrowRight');
  await ben.page.keyboard.press('Enter');
  await ben.page.waitForSelector(`${msg(1)} .reaction[aria-pressed="true"]`, { timeout: WAIT });
  await ana.page.waitForFunction((sel) => {
    const r = document.querySelector(`${sel} .reaction`);
    return r && r.textContent === '\u2764\uFE0F 1' && r.getAttribute('aria-pressed') === 'false';
  }, msg(1), { timeout: WAIT });
  // Escape closes a menu and gives the focus back.
  await ben.page.focus(`${msg(2)} .menu-button`);
  await ben.page.keyboard.press('Enter');
  await ben.page.waitForSelector(`${msg(2)} .msg-menu`, { timeout: WAIT });
  await ben.page.keyboard.press('Escape');
  await ben.page.waitForSelector(`${msg(2)} .msg-menu`, { state: 'detached', timeout: WAIT });
  assert.equal(await ben.page.evaluate(() => document.activeElement.classList.contains('menu-button')), true);
  // Not his: no Edit or Delete in the menu of ana's message.
  await openMenu(ben.page, 2);
  assert.equal(await ben.page.locator(`${msg(2)} .menu-edit`).count(), 0);
  assert.equal(await ben.page.locator(`${msg(2)} .menu-delete`).count(), 0);

  // Ben replies to it.
  await ben.page.click(`${msg(2)} .menu-reply`);
  assert.match(await ben.page.textContent('#compose-context'), /Replying to ana: bring snacks/);
  await say(ben.page, 'crisps it is');
  await ana.page.waitForFunction(() => [...document.querySelectorAll('#messages .msg')].some((m) =>
    m.querySelector('.body') && m.querySelector('.body').textContent === 'crisps it is' &&
    m.querySelector('.quote') && m.querySelector('.quote').textContent.includes('bring snacks')), null, { timeout: WAIT });

  // Ana deletes her second message, after confirming.
  await openMenu(ana.page, 2);
  await ana.page.screenshot({ path: `${SHOTS}/events.png` });
  await ana.page.click(`${msg(2)} .menu-delete`);
  await ana.page.waitForSelector('#confirm-dialog[open]', { timeout: WAIT });
  await ana.page.click('#confirm-ok');
  await ana.page.waitForSelector(`${msg(2)} .body.deleted`, { timeout: WAIT });
  await ben.page.waitForSelector(`${msg(2)} .body.deleted`, { timeout: WAIT });
  await ben.page.waitForFunction(() => [...document.querySelectorAll('#messages .quote')]
    .some((q) => q.classList.contains('deleted') && q.textContent.includes('Deleted message')), null, { timeout: WAIT });

  // After a reload, history has it all.
  await ben.page.reload();
  await ben.page.waitForSelector('#app:not([hidden])', { timeout: WAIT });
  await openConv(ben.page, 'ana');
  await ben.page.waitForSelector(`${msg(2)} .body.deleted`, { timeout: WAIT });
  assert.equal(await ben.page.textContent(`${msg(1)} .body`), 'meet at the planetarium');
  assert.equal(await ben.page.locator(`${msg(1)} .edited`).count(), 1);
  assert.equal(await ben.page.textContent(`${msg(1)} .reaction`), '\u2764\uFE0F 1');
  assert.match(await ben.page.textContent('#messages'), /This message was deleted/);
  assert.doesNotMatch(await ben.page.textContent('#messages'), /bring snacks|aquarium/);
  // Events are not messages: nothing unread, no extra bubbles.
  assert.equal(await ben.page.locator('#messages .msg').count(), 3);

  // A refusal is said, and changes nothing: ben cannot delete ana's.
  const conv = Number(await ben.page.getAttribute('#conv-list button.conv', 'data-conv'));
  await ben.page.evaluate(async (conv) => {
    const s = JSON.parse(localStorage.getItem('parley.session'));
    const r = await fetch('/api/v1/ws-tickets', { method: 'POST', headers: { Authorization: `Bearer ${s.token}` } });
    const { ticket } = await r.json();
    const ws = new WebSocket(`ws://${location.host}/chat/v1/ws?ticket=${encodeURIComponent(ticket)}`);
    await new Promise((ok) => { ws.onopen = ok; });
    const answer = new Promise((ok) => { ws.onmessage = (ev) => { const f = JSON.parse(ev.data); if (f.ref === 'x') ok(f); }; });
    ws.send(JSON.stringify({ type: 'delete', conv, cmid: 'x', seq: 1 }));
    const f = await answer;
    ws.close();
    if (f.code !== 'forbidden') throw new Error(JSON.stringify(f));
  }, conv);
  assert.equal(await ana.page.textContent(`${msg(1)} .body`), 'meet at the planetarium');
  for (const p of [ana, ben]) assert.deepEqual(p.errors, []);
});
