// helpers.mjs - what the browser tests share: the real server binary on a
// free loopback port with a data directory of its own, Debian's Chromium
// driven by playwright-core, and the steps a user takes in the web client.
// Not a test file itself (node --test picks *.test.mjs).

import { before, after } from 'node:test';
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

export const BIN = process.env.PARLEY_BIN || 'build/parley';
export const SHOTS = 'build/web-test';
export const PASSWORD = 'correct horse battery';
export const WAIT = 10000;

// These tests sign up and log in many users from 127.0.0.1, which the
// production budgets per address (20 sign-ups an hour, 60 logins a
// minute) would refuse: they are off here, for tests not about them.
const NO_ADDRESS_BUDGETS = ['--signup-rate', '0', '--login-rate', '0'];

// Starts build/parley on a free loopback port (or the given one, to come
// back where a stopped server was), ready once it prints its address.
// extra: more flags. Returns { base, port, dataDir, log(), stop() }.
export function startServer(extra = [], { port = 0, dataDir = null } = {}) {
  const dir = dataDir || mkdtempSync(join(tmpdir(), 'parley-web-'));
  const proc = spawn(BIN, ['serve', '--listen', `127.0.0.1:${port}`, '--data', dir, '--web', 'web',
    '--fast-password-hashing', '--presence-grace', '500', ...NO_ADDRESS_BUDGETS, ...extra],
  { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  proc.stderr.on('data', (d) => { log += d; });
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${log}`)), 20000);
    proc.stdout.on('data', (d) => {
      out += d;
      const m = /listening on http:\/\/[^:]+:(\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve({
          base: `http://127.0.0.1:${m[1]}`,
          port: Number(m[1]),
          dataDir: dir,
          log: () => log,
          async stop() {
            if (proc.exitCode !== null || proc.signalCode !== null) return;
            const exited = new Promise((r) => proc.once('exit', r));
            proc.kill('SIGTERM');
            await exited;
          },
        });
      }
    });
    proc.on('exit', (code) => reject(new Error(`server exited (${code}):\n${log}`)));
  });
}

export function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  });
}

// A server and a browser for a test file's tests, started before them and
// stopped after: s.srv and s.browser once they are up.
export function serverAndBrowser(extra = []) {
  const s = { srv: null, browser: null };
  before(async () => {
    mkdirSync(SHOTS, { recursive: true });
    s.srv = await startServer(extra);
    s.browser = await launchBrowser();
  });
  after(async () => {
    if (s.browser) await s.browser.close();
    if (s.srv) {
      await s.srv.stop();
      rmSync(s.srv.dataDir, { recursive: true, force: true });
    }
  });
  return s;
}

// A browser context of its own (options: Playwright's, a viewport of 1100
// by 720 unless given), its page at s's server, the page's errors and
// Content-Security-Policy refusals collected in errors.
export async function person(s, options = {}) {
  const ctx = await s.browser.newContext({ viewport: { width: 1100, height: 720 }, ...options });
  const page = await ctx.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e));
  page.on('console', (m) => { if (/Content Security Policy/i.test(m.text())) errors.push(m.text()); });
  await page.goto(s.srv.base);
  return { ctx, page, errors };
}

export async function signUp(page, name) {
  await page.fill('#auth-username', name);
  await page.fill('#auth-password', PASSWORD);
  await page.click('#signup-button');
  await page.waitForSelector('#app:not([hidden])', { timeout: WAIT });
  await page.waitForFunction(() => !document.querySelector('#banner') || document.querySelector('#banner').hidden);
}

export async function logIn(page, name) {
  await page.fill('#auth-username', name);
  await page.fill('#auth-password', PASSWORD);
  await page.click('#login-button');
  await page.waitForSelector('#app:not([hidden])', { timeout: WAIT });
}

export async function startChat(page, name) {
  await page.click('#new-chat-button');
  await page.fill('#new-chat-username', name);
  await page.click('#new-chat-form button[type=submit]');
  await page.waitForSelector('#chat:not([hidden])', { timeout: WAIT });
}

export async function openConv(page, name) {
  await page.locator('#conv-list button.conv', { hasText: name }).first().click({ timeout: WAIT });
  await page.waitForSelector('#chat:not([hidden])', { timeout: WAIT });
}

export async function say(page, text) {
  await page.fill('#composer-input', text);
  await page.press('#composer-input', 'Enter');
}

export async function waitBodies(page, expected) {
  await page.waitForFunction((exp) => {
    const got = [...document.querySelectorAll('#messages .msg .body')].map((e) => e.textContent);
    return got.length >= exp.length && exp.every((b) => got.includes(b));
  }, expected, { timeout: WAIT });
}
