// What the console's browser drivers (console_*.mjs) share: arguments,
// pages of their own, decoding measured in the browser, a wall's tiles and
// a join page's state, screenshots, and the run that prints the result
// object as the driver's one JSON line on stdout.

import { mkdir, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { createInterface } from 'node:readline';
import { attempt, emit, launchChromium, runMain } from './chromium.mjs';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** `node script --name value ...` as { name: value }, over `defaults`. */
export function parseArgs(defaults) {
  const args = { ...defaults };
  for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];
  return args;
}

/**
 * What every console driver starts with: its arguments (`parseArgs` over
 * `defaults` and `{artifacts: null}`; it exits with a usage line unless each
 * of `required` is given), the result it fills, a log prefixed with
 * `[name]`, `shoot` for screenshots into --artifacts, and `newPage(browser,
 * who, permissions)` for a page of its own whose console goes into the
 * result.
 */
export function consoleDriver(name, required, defaults = {}) {
  const args = parseArgs({ artifacts: null, ...defaults });
  if (required.some((arg) => !args[arg])) {
    const usage = required.map((arg) => `--${arg} ${arg.toUpperCase()}`).join(' ');
    console.error(`usage: ${basename(process.argv[1])} ${usage} [--artifacts DIR] (see the file's first lines)`);
    process.exit(2);
  }
  const log = (...parts) => console.error(`[${name}]`, ...parts);
  const result = { ok: false, step: 'launch', steps: {}, console: [], screenshots: [] };
  const shoot = screenshots(args.artifacts, result, log);
  const page = (browser, who, permissions) => newPage(browser, result, who, permissions);
  return { args, result, log, shoot, newPage: page };
}

/** Decoding progress of a <video> (run in the page): size and decoded frame count. */
export function videoState(selector) {
  const video = document.querySelector(selector);
  if (!video) return null;
  return {
    width: video.videoWidth,
    height: video.videoHeight,
    frames: video.getVideoPlaybackQuality().totalVideoFrames,
    hidden: video.hidden,
    hasStream: Boolean(video.srcObject),
  };
}

/** Waits until `selector`'s video shows a picture and has decoded a frame. */
export function untilDecoded(page, selector, timeout) {
  return page.waitForFunction(
    (s) => {
      const v = document.querySelector(s);
      return v && v.videoWidth > 0 && v.getVideoPlaybackQuality().totalVideoFrames > 0;
    },
    selector,
    { timeout },
  );
}

/** Waits until `selector`'s video shows a picture, then samples decoding for 1.5 s. */
export async function playing(page, selector, timeout) {
  const started = Date.now();
  await untilDecoded(page, selector, timeout);
  const first = await page.evaluate(videoState, selector);
  await sleep(1500);
  const second = await page.evaluate(videoState, selector);
  return { msToPicture: Date.now() - started - 1500, first, second };
}

/**
 * A page in a browser context of its own (its own storage, like another
 * person's browser), its console kept in `result.console`.
 */
export async function newPage(browser, result, who, permissions) {
  const context = await browser.newContext({ permissions, viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  page.on('console', (m) => result.console.push(`[${who}] ${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => result.console.push(`[${who}] pageerror: ${e.message}`));
  // confirm() says yes; prompt() gets its default (e.g. "Add a camera"'s name).
  page.on('dialog', (d) => d.accept(d.type() === 'prompt' ? d.defaultValue() : undefined));
  return page;
}

/** `shoot(name, { who: page })`: screenshots into `dir` (none without one), listed in `result.screenshots`. */
export function screenshots(dir, result, log) {
  return async (name, pages) => {
    if (!dir) return;
    for (const [who, page] of Object.entries(pages)) {
      const file = `${name}-${who}.png`;
      await page.screenshot({ path: join(dir, file) }).then(
        () => result.screenshots.push(file),
        (e) => log(`screenshot ${file}: ${e}`),
      );
    }
  };
}

/** How long one step of a driver may wait for a page, by default. */
export const STEP_MS = 30000;

/** The selector of `identity`'s tile on a wall. */
export const tile = (identity) => `[data-testid=tile][data-identity="${identity}"]`;

/** Waits for a tile to be in `state` (its data-state); returns how long that took since `since`. */
export async function tileIn(page, identity, state, since = Date.now(), timeout = STEP_MS) {
  await page.waitForSelector(`${tile(identity)}[data-state="${state}"]`, { timeout });
  return Date.now() - since;
}

/** Two samples of a video's decoding, 1.5 s apart, and what the tile (if any) says. */
export async function decoding(page, selector, tileSelector) {
  const first = await page.evaluate(videoState, selector);
  await sleep(1500);
  const second = await page.evaluate(videoState, selector);
  const said = tileSelector
    ? await page.evaluate((t) => ({
        status: document.querySelector(`${t} [data-testid=tile-status]`)?.textContent,
        notice: document.querySelector(`${t} [data-testid=tile-notice]`)?.hidden === false
          ? document.querySelector(`${t} [data-testid=tile-notice]`).textContent
          : null,
      }), tileSelector)
    : {};
  return { first, second, ...said };
}

/** Waits until a tile decodes new frames (a picture, and its count grows), and samples it. */
export async function tilePlays(page, identity, timeout = STEP_MS) {
  const video = `${tile(identity)} video`;
  await untilDecoded(page, video, timeout);
  await tileIn(page, identity, 'playing', Date.now(), timeout);
  return decoding(page, video, tile(identity));
}

/** Signs in with the admin key and opens `room`'s wall. */
export async function openWall(page, base, key, room, timeout = STEP_MS) {
  await page.goto(`${base}/console/#key=${key}`);
  await page.waitForSelector('[data-testid=rooms]', { timeout });
  await page.goto(`${base}/console/rooms/${room}`);
  await page.waitForSelector('[data-testid=wall]', { state: 'attached', timeout });
}

/** Opens a join link (`{base}/join/{room}#token=…`), waits for the preview and goes live. */
export async function goLive(page, link, timeout = STEP_MS) {
  await page.goto(link);
  await page.waitForFunction(() => document.querySelector('[data-testid=own-video]')?.videoWidth > 0, null, { timeout });
  await page.click('[data-testid=go-live]');
  await page.waitForSelector('[data-testid=status][data-state=live]', { timeout });
}

/** What a join page's status line says: its state, text, and whether it says the dispatcher muted it. */
export const statusOf = (page) => page.evaluate(() => {
  const s = document.querySelector('[data-testid=status]');
  return { state: s.dataset.state, text: s.textContent, muted: s.hasAttribute('data-muted') };
});

/** The wall's tiles, by identity, in order. */
export const tileIdentities = (page) => page.$$eval('[data-testid=tile]', (tiles) => tiles.map((t) => t.dataset.identity));

/** Text of the wall's event panel, newest first. */
export const eventLines = (page) => page.$$eval('[data-testid=events] li', (items) => items.map((li) => li.textContent));

let stdin = null;
/** Tells the test `event` (a JSON line on stdout) and waits for its answer on stdin. */
export async function ask(event) {
  stdin ??= createInterface({ input: process.stdin });
  const answered = new Promise((resolve) => stdin.once('line', resolve));
  emit({ event });
  await answered;
}

/**
 * Runs a driver: launches Chromium (no loopback candidates: like a person's
 * browser, it pairs its non-loopback address with Vigil's 127.0.0.1),
 * awaits `run(browser)`, screenshots every page if it throws, writes
 * `result.json` into `artifacts` (if any) and prints `{"result": ...}` as
 * the last line on stdout; then exits.
 */
export function runDriver({ result, artifacts, log, shoot }, run) {
  runMain(async () => {
    if (artifacts) await mkdir(artifacts, { recursive: true });
    const browser = await launchChromium({ loopback: false });
    result.browserVersion = browser.version();
    if (!(await attempt(result, log, () => run(browser)))) {
      for (const context of browser.contexts()) {
        for (const [i, page] of context.pages().entries()) await shoot(`failed-${result.step.replace(/\W+/g, '-')}`, { [`page${i}`]: page });
      }
    }
    await browser.close().catch(() => {});
    if (artifacts) await writeFile(join(artifacts, 'result.json'), JSON.stringify(result, null, 2)).catch(() => {});
    emit({ result });
  }, log);
}
