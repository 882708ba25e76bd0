// What the console's browser drivers (console_e2e.mjs, console_reconnect.mjs)
// share: pages of their own, decoding measured in the browser, screenshots,
// and the result object each prints as its one JSON line on stdout.

import { join } from 'node:path';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** `node script --name value ...` as { name: value }, over `defaults`. */
export function parseArgs(defaults) {
  const args = { ...defaults };
  for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];
  return args;
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

/** Waits until `selector`'s video shows a picture, then samples decoding for 1.5 s. */
export async function playing(page, selector, timeout) {
  const started = Date.now();
  await page.waitForFunction(
    (s) => {
      const v = document.querySelector(s);
      return v && v.videoWidth > 0 && v.getVideoPlaybackQuality().totalVideoFrames > 0;
    },
    selector,
    { timeout },
  );
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
