#!/usr/bin/env node
// Drives headless Chromium against a running Vigil: a publisher page (WHIP,
// fake camera + mic) and a player page (WHEP), each in its own browser
// context, both served from a throwaway HTTP server on 127.0.0.1 so that
// every request to Vigil is a real cross-origin fetch (CORS included).
//
//   node interop_whip_whep.mjs --whip URL --whep URL --scenario play|trickle|restart
//        [--codec H264|VP8] [--artifacts DIR] [--name PREFIX] [--wait-ms 15000]
//
// stdout carries JSON lines only: progress events ({"event": ...}) and, last,
// {"result": {...}}. The driver measures; the Rust test (interop_chromium.rs)
// asserts. In the trickle scenario the driver holds the publisher live after
// {"event": "publishing"} until a line arrives on stdin (or --hold-ms passes).
// Diagnostics go to stderr.

import { createServer } from 'node:http';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, extname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { launchChromium } from './chromium.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));

// ---- arguments -------------------------------------------------------------

const args = { scenario: 'play', codec: null, artifacts: null, name: 'chromium', 'wait-ms': '15000', 'hold-ms': '60000' };
for (let i = 2; i < process.argv.length; i += 2) {
  const key = process.argv[i].replace(/^--/, '');
  args[key] = process.argv[i + 1];
}
if (!args.whip || !args.whep) {
  console.error('usage: interop_whip_whep.mjs --whip URL --whep URL [--scenario play|trickle|restart] [--codec H264|VP8]');
  process.exit(2);
}
const WAIT_MS = Number(args['wait-ms']);

const emit = (object) => process.stdout.write(JSON.stringify(object) + '\n');
const log = (...parts) => console.error('[driver]', ...parts);

// ---- the pages' HTTP server ------------------------------------------------

/** Serves this directory's interop-* files on 127.0.0.1 (a port of its own). */
async function servePages() {
  const types = { '.html': 'text/html', '.js': 'text/javascript' };
  const server = createServer(async (req, res) => {
    const name = new URL(req.url, 'http://x').pathname.slice(1);
    if (!/^interop-[\w-]+\.(html|js)$/.test(name)) {
      res.writeHead(404).end();
      return;
    }
    try {
      const body = await readFile(join(HERE, name));
      res.writeHead(200, { 'Content-Type': types[extname(name)], 'Cache-Control': 'no-store' }).end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, origin: `http://127.0.0.1:${server.address().port}` };
}

// ---- helpers -----------------------------------------------------------------

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Polls `sample()` every 250 ms until `done(value)` or `ms` pass. Returns the
 * last sample, whether the condition held, and how long it took.
 */
async function pollUntil(sample, done, ms = WAIT_MS) {
  const start = Date.now();
  // One row per sample, for the result file: [ms since start, video
  // framesDecoded, video packetsReceived, audio packetsReceived, video
  // pliCount, video nackCount, video packetsLost].
  const history = [];
  let value = await sample();
  for (;;) {
    const v = value?.video;
    history.push([Date.now() - start, frames(value), v?.packetsReceived ?? 0, audioPackets(value),
      v?.pliCount ?? null, v?.nackCount ?? null, v?.packetsLost ?? null]);
    if (done(value) || Date.now() - start >= ms) break;
    await sleep(250);
    value = await sample();
  }
  return { ok: done(value), waitedMs: Date.now() - start, last: value, history };
}

const frames = (s) => s?.video?.framesDecoded ?? 0;
const audioPackets = (s) => s?.audio?.packetsReceived ?? 0;

/** Player decoding: at least `minFrames` more frames than `base`, audio, a picture. */
function decodingSince(base, minFrames) {
  return (s) => frames(s) >= frames(base) + minFrames
    && audioPackets(s) > audioPackets(base)
    && (s?.element?.videoWidth ?? 0) > 0;
}

// ---- scenarios ---------------------------------------------------------------

/**
 * play: publish, play, then two player samples: the first once 30 frames
 * are decoded, the second once more frames and audio have arrived.
 */
async function play(ctx, result) {
  await publish(ctx, result, { trickle: false });
  await startPlayer(ctx, result);
  await firstDecodes(ctx, result);
}

/** trickle: publish with trickled candidates and hold it live for the test. */
async function trickle(ctx, result) {
  result.step = 'publish (trickle)';
  result.publisher.publish = await ctx.publisher.evaluate(
    (o) => window.interop.publish(o), { endpoint: args.whip, codec: args.codec, trickle: true });
  result.step = 'trickle PATCHes';
  await ctx.publisher.evaluate(() => window.interop.trickled());
  emit({ event: 'publishing' });
  result.step = 'hold (waiting for the test on stdin)';
  result.held = await waitForStdinLine(Number(args['hold-ms']));
  result.publisher.stats = await ctx.publisher.evaluate(() => window.interop.stats());
}

/**
 * restart: play as above, then restart ICE on the publisher and then on the
 * player; after each, wait for the restarted transport to run on its new
 * ufrag and for the player to decode 30 more frames.
 */
async function restart(ctx, result) {
  await publish(ctx, result, { trickle: false });
  await startPlayer(ctx, result);
  await firstDecodes(ctx, result);
  result.restarts = [];
  for (const side of ['publisher', 'player']) {
    const page = ctx[side];
    result.step = `ICE restart of the ${side}`;
    const before = {
      transport: (await page.evaluate(() => window.interop.stats())).transport,
      player: await ctx.player.evaluate(() => window.interop.stats()),
    };
    const patch = await page.evaluate(() => window.interop.restartIce());
    const onNewUfrag = await pollUntil(
      () => page.evaluate(() => window.interop.stats()),
      (s) => s.transport?.iceLocalUsernameFragment === patch.localUfrag
        && s.transport?.iceState === 'connected' && s.connectionState === 'connected'
        // A pair of the new generation carries the media: checks with the
        // new credentials were answered.
        && s.transport.selectedCandidatePairId !== before.transport?.selectedCandidatePairId
        && s.transport.pair?.state === 'succeeded' && s.transport.pair?.responsesReceived > 0);
    const decoding = await pollUntil(
      () => ctx.player.evaluate(() => window.interop.stats()), decodingSince(before.player, 30));
    const publisherAfter = await ctx.publisher.evaluate(() => window.interop.stats());
    result.restarts.push({ side, patch, before, transport: onNewUfrag, decoding, publisherAfter });
  }
}

async function publish(ctx, result, { trickle }) {
  result.step = 'publish';
  result.publisher.publish = await ctx.publisher.evaluate(
    (o) => window.interop.publish(o), { endpoint: args.whip, codec: args.codec, trickle });
  emit({ event: 'publishing' });
}

async function startPlayer(ctx, result) {
  result.step = 'play';
  result.player.play = await ctx.player.evaluate(
    (o) => window.interop.play(o), { endpoint: args.whep, trickle: false });
}

async function firstDecodes(ctx, result) {
  result.step = 'decode';
  const sample = () => ctx.player.evaluate(() => window.interop.stats());
  result.player.first = await pollUntil(sample, decodingSince(null, 30));
  result.player.second = await pollUntil(sample, decodingSince(result.player.first.last, 10));
  result.publisher.stats = await ctx.publisher.evaluate(() => window.interop.stats());
}

/** Resolves true on the first line on stdin, false after `ms`. */
function waitForStdinLine(ms) {
  return new Promise((resolve) => {
    const lines = createInterface({ input: process.stdin });
    const timer = setTimeout(() => { lines.close(); resolve(false); }, ms);
    lines.once('line', () => { clearTimeout(timer); lines.close(); resolve(true); });
  });
}

// ---- main --------------------------------------------------------------------

const SCENARIOS = { play, trickle, restart };

async function main() {
  const scenario = SCENARIOS[args.scenario];
  if (!scenario) throw new Error(`unknown scenario ${args.scenario}`);
  const result = { ok: false, scenario: args.scenario, codec: args.codec, step: 'launch', publisher: {}, player: {}, console: [] };
  const { server, origin } = await servePages();
  result.pagesOrigin = origin;
  // launch() runs Chromium on a fresh temporary profile that Playwright
  // deletes on close; each page gets a browser context of its own, like two
  // people on two machines (the player has no camera permission, so its host
  // candidates are mDNS names, as for any WHEP viewer page).
  const browser = await launchChromium({ loopback: true });
  const ctx = {};
  // The trickle scenario's viewer is the Rust test's own webrtc-rs peer.
  const sides = args.scenario === 'trickle' ? ['publisher'] : ['publisher', 'player'];
  try {
    result.browserVersion = browser.version();
    for (const side of sides) {
      const context = await browser.newContext(
        side === 'publisher' ? { permissions: ['camera', 'microphone'] } : {});
      const page = await context.newPage();
      page.on('console', (m) => result.console.push(`[${side}] ${m.type()}: ${m.text()}`));
      page.on('pageerror', (e) => result.console.push(`[${side}] pageerror: ${e.message}`));
      await page.goto(`${origin}/interop-${side}.html`);
      await page.waitForFunction(() => window.interopReady === true);
      ctx[side] = page;
    }
    result.userAgent = await ctx.publisher.evaluate(() => navigator.userAgent);
    await scenario(ctx, result);
    result.ok = true;
    result.step = 'done';
  } catch (e) {
    result.error = String(e?.stack ?? e);
    log('failed at', result.step, e);
  } finally {
    // Screenshots are for people; a failure to take one is not the test's.
    if (args.artifacts) {
      await mkdir(args.artifacts, { recursive: true }).catch(() => {});
      for (const side of sides) {
        await ctx[side]?.screenshot({ path: join(args.artifacts, `${args.name}-${side}.png`) })
          .catch((e) => log(`screenshot of the ${side}: ${e}`));
      }
    }
    for (const side of sides) {
      const page = ctx[side];
      if (!page) continue;
      result[side].deleteStatus = await page.evaluate(() => window.interop.stop()).catch((e) => `error: ${e}`);
      result[side].log = await page.evaluate(() => window.interop.log()).catch(() => null);
    }
    await browser.close().catch(() => {});
    server.close();
  }
  if (args.artifacts) {
    await writeFile(join(args.artifacts, `${args.name}-result.json`), JSON.stringify(result, null, 2))
      .catch((e) => log(`writing the result file: ${e}`));
  }
  emit({ result });
}

main().then(() => process.exit(0), (e) => {
  log('fatal:', e);
  emit({ result: { ok: false, step: 'driver', error: String(e?.stack ?? e) } });
  process.exit(1);
});
