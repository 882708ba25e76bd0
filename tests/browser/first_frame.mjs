#!/usr/bin/env node
// Times how fast headless Chromium shows a stream's first picture: one WHEP
// player at a time, each in a fresh browser context, joining when told.
//
//   node first_frame.mjs --whep URL
//
// stdout carries JSON lines: {"event":"ready"} once the browser is up; then
// for each line read on stdin, a new player joins and reports
// {"event":"first_frame","join_at_ms":<epoch ms>,"first_frame_at_ms":<epoch ms>,
//  "width":W,"height":H,"delete_status":S} when its first frame is decoded
// (getStats framesDecoded, sampled every 10 ms), or {"error": ...} after 10 s.
// The player then stops (DELETE) and its context closes. stdin closing ends it.

import { createInterface } from 'node:readline';
import { launchChromium } from './chromium.mjs';
import { emit, logger, servePages } from './interop_common.mjs';

const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];
if (!args.whep) {
  console.error('usage: first_frame.mjs --whep URL');
  process.exit(2);
}
const log = logger('first-frame');

const { server, origin } = await servePages();
const browser = await launchChromium({ loopback: true });
emit({ event: 'ready', browser: browser.version() });

async function join() {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on('console', (m) => log(`${m.type()}: ${m.text()}`));
  try {
    await page.goto(`${origin}/interop-player.html`);
    await page.waitForFunction(() => window.interopReady === true);
    const joinAt = Date.now();
    const firstFrame = await page.evaluate(async (endpoint) => {
      const deadline = Date.now() + 10_000;
      const started = window.interop.play({ endpoint });
      let frameAt = null;
      let size = null;
      // The first decoded frame's time; its size, which getStats may
      // report a moment after framesDecoded moves, from the next samples.
      while ((frameAt === null || size === null) && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 10));
        const stats = await window.interop.stats().catch(() => null);
        if (frameAt === null && (stats?.video?.framesDecoded ?? 0) > 0) frameAt = Date.now();
        if (frameAt !== null && Number.isFinite(stats?.video?.frameWidth)) {
          size = [stats.video.frameWidth, stats.video.frameHeight];
        }
      }
      await started;
      return { frameAt, size };
    }, args.whep);
    const deleteStatus = await page.evaluate(() => window.interop.stop()).catch((e) => `error: ${e}`);
    if (firstFrame.frameAt === null) {
      emit({ error: `Chromium player: no frame decoded within 10 s of joining` });
    } else if (firstFrame.size === null) {
      emit({ error: `Chromium player: a frame decoded, but getStats gave no frame size within 10 s` });
    } else {
      emit({
        event: 'first_frame', join_at_ms: joinAt, first_frame_at_ms: firstFrame.frameAt,
        width: firstFrame.size[0], height: firstFrame.size[1], delete_status: deleteStatus,
      });
    }
  } catch (e) {
    emit({ error: `Chromium player: ${e?.message ?? e}` });
  } finally {
    await context.close().catch(() => {});
  }
}

let queue = Promise.resolve();
const lines = createInterface({ input: process.stdin });
lines.on('line', () => { queue = queue.then(join); });
lines.on('close', async () => {
  await queue;
  await browser.close().catch(() => {});
  server.close();
  process.exit(0);
});
