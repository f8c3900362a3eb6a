// The web client's finish, in Chromium: a separator per day, links that
// open elsewhere and tell nothing (and only http(s) ones), who wrote each
// message for screen readers, a sending mark drawn without an emoji font,
// an unread divider and a jump to the newest, dark mode when the system
// is dark, and an offline banner that never covers the chat's header.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SHOTS, WAIT, serverAndBrowser, person as personOf, signUp, startChat, openConv, say, waitBodies } from './helpers.mjs';

const S = serverAndBrowser();
const person = (options) => personOf(S, options);

test('days, links, who wrote, the sending mark, unread divider, jump, dark mode, the banner', async () => {
  const eva = await person();
  const finn = await person({ colorScheme: 'dark' });
  await signUp(eva.page, 'eva');
  await signUp(finn.page, 'finn');
  await startChat(eva.page, 'finn');
  await say(eva.page, 'see https://example.com/a?b=1, and javascript:alert(1) too');
  await waitBodies(eva.page, ['see https://example.com/a?b=1, and javascript:alert(1) too']);

  // One separator for today; the link, without the sentence's comma.
  assert.deepEqual(await eva.page.$$eval('#messages .day', (ds) => ds.map((d) => d.textContent)), ['Today']);
  const links = await eva.page.$$eval('#messages .msg .body a', (as) => as.map((a) => ({
    href: a.getAttribute('href'), rel: a.rel, target: a.target, text: a.textContent })));
  assert.deepEqual(links, [{ href: 'https://example.com/a?b=1', rel: 'noopener noreferrer nofollow', target: '_blank',
    text: 'https://example.com/a?b=1' }]);
  assert.match(await eva.page.textContent('#messages .msg .body'), /javascript:alert\(1\) too$/);
  // Screen readers hear who wrote it.
  assert.equal(await eva.page.textContent('#messages .msg .visually-hidden'), 'You:');

  // Sending, offline: the mark is drawn (no character to need a font),
  // and the banner sits above the header, not over it.
  await eva.ctx.setOffline(true);
  await eva.page.waitForSelector('#banner:not([hidden])', { timeout: WAIT });
  await say(eva.page, 'while away');
  await eva.page.waitForSelector('#messages .tick[data-state="pending"]', { timeout: WAIT });
  assert.equal(await eva.page.textContent('#messages .tick[data-state="pending"]'), '');
  const mark = await eva.page.$eval('#messages .tick[data-state="pending"]', (t) => {
    const r = t.getBoundingClientRect();
    return { w: r.width, h: r.height, border: getComputedStyle(t).borderTopStyle };
  });
  assert.ok(mark.w > 5 && mark.h > 5 && mark.border === 'solid', JSON.stringify(mark));
  const boxes = await eva.page.evaluate(() => ({
    banner: document.querySelector('#banner').getBoundingClientRect().bottom,
    head: document.querySelector('.chat-head').getBoundingClientRect().top,
    side: document.querySelector('.sidebar-head').getBoundingClientRect().top,
  }));
  assert.ok(boxes.banner <= boxes.head + 0.5 && boxes.banner <= boxes.side + 0.5, JSON.stringify(boxes));
  await eva.page.screenshot({ path: `${SHOTS}/offline-banner.png` });
  await eva.ctx.setOffline(false);
  await eva.page.waitForSelector('#banner[hidden]', { state: 'attached', timeout: 30000 });
  await eva.page.waitForSelector('#messages .tick[data-state="pending"]', { state: 'detached', timeout: WAIT });

  // Finn, in dark mode, opens the chat with its unread messages marked;
  // others' messages are named for screen readers.
  for (let i = 0; i < 40; i++) await say(eva.page, `line ${i}`);
  await eva.page.waitForFunction(() => document.querySelectorAll('#messages .tick[data-state="pending"]').length === 0,
    null, { timeout: WAIT });
  await finn.page.waitForSelector('#conv-list button.conv:has-text("line 39")', { timeout: WAIT });
  await openConv(finn.page, 'eva');
  await finn.page.waitForSelector('#messages .unread-divider', { timeout: WAIT });
  assert.equal(await finn.page.textContent('#messages .unread-divider'), '42 unread messages');
  assert.equal(await finn.page.textContent('#messages .msg .visually-hidden'), 'eva:');
  const dark = await finn.page.evaluate(() => {
    const rgb = (c) => c.match(/\d+/g).slice(0, 3).map(Number).reduce((a, b) => a + b, 0);
    return { page: rgb(getComputedStyle(document.querySelector('.sidebar')).backgroundColor),
      text: rgb(getComputedStyle(document.body).color) };
  });
  assert.ok(dark.page < 150 && dark.text > 500, JSON.stringify(dark));
  // Only the messages scrolled to the divider, not the page.
  assert.equal(await finn.page.evaluate(() => document.scrollingElement.scrollTop), 0);
  assert.equal(await finn.page.evaluate(() => document.querySelector('.sidebar-head').getBoundingClientRect().top), 0);
  await finn.page.screenshot({ path: `${SHOTS}/dark-mode.png` });

  // Scrolled up a screen: the jump to the newest shows, and takes him there.
  await finn.page.$eval('#messages', (b) => { b.scrollTop = 0; });
  await finn.page.waitForSelector('#jump-button:not([hidden])', { timeout: WAIT });
  await finn.page.click('#jump-button');
  await finn.page.waitForSelector('#jump-button', { state: 'hidden', timeout: WAIT });
  const atBottom = await finn.page.$eval('#messages', (b) => b.scrollHeight - b.scrollTop - b.clientHeight < 40);
  assert.equal(atBottom, true);
  // He answers: the divider has done its work.
  await say(finn.page, 'read them all');
  await finn.page.waitForSelector('#messages .unread-divider', { state: 'detached', timeout: WAIT });

  assert.deepEqual([...eva.errors, ...finn.errors], []);
  await eva.ctx.close();
  await finn.ctx.close();
});
