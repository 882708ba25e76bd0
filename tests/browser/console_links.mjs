#!/usr/bin/env node
// Reads the links the console hands out for a new token, in headless
// Chromium:
//
//   node console_links.mjs --base URL --key ADMIN_KEY --room ROOM --identity NAME
//
// Signs in with the admin key, opens the token form of ROOM (which must
// exist), creates a token for NAME and reports what the page shows: the join
// link, the OBS server URL and the loopback warning, if any. stdout carries
// one JSON line, {"result": {...}}; console_public_url.rs asserts on it.

import { attempt, emit, launchChromium, runMain } from './chromium.mjs';

const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];
if (!args.base || !args.key || !args.room || !args.identity) {
  console.error('usage: console_links.mjs --base URL --key ADMIN_KEY --room ROOM --identity NAME');
  process.exit(2);
}
const STEP_MS = 20000;
const result = { ok: false, step: 'launch', console: [] };

async function links(browser) {
  const page = await browser.newPage();
  page.on('console', (m) => result.console.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => result.console.push(`pageerror: ${e.message}`));

  result.step = 'sign in';
  await page.goto(`${args.base}/console/#key=${args.key}`);
  await page.waitForSelector(`tr[data-room="${args.room}"]`, { timeout: STEP_MS });

  result.step = 'create a token';
  await page.click(`tr[data-room="${args.room}"] >> text=Token…`);
  await page.fill('[data-testid=token-identity]', args.identity);
  await page.click('[data-testid=create-token]');
  await page.waitForSelector('[data-testid=join-link]', { timeout: STEP_MS });

  result.step = 'read the links';
  result.joinLink = await page.inputValue('[data-testid=join-link]');
  result.obsServer = await page.inputValue('[data-testid=obs-server]');
  const warning = await page.$('[data-testid=link-warning]');
  result.warning = warning ? await warning.textContent() : null;
}

const log = (...parts) => console.error('[console-links]', ...parts);

runMain(async () => {
  // No media here, so no WebRTC flags matter.
  const browser = await launchChromium({ loopback: false });
  result.browserVersion = browser.version();
  await attempt(result, log, () => links(browser));
  await browser.close().catch(() => {});
  emit({ result });
}, log);
