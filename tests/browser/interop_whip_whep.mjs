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

import { createInterface } from 'node:readline';
import {
  drive, emit, finish, logger, parseArgs, runMain, sleep,
} from './interop_common.mjs';

// ---- arguments -------------------------------------------------------------

const args = parseArgs(
  { scenario: 'play', codec: null, artifacts: null, name: 'chromium', 'wait-ms': '15000', 'hold-ms': '60000' },
  'interop_whip_whep.mjs --whip URL --whep URL [--scenario play|trickle|restart] [--codec H264|VP8]');
const WAIT_MS = Number(args['wait-ms']);

const log = logger('driver');

// ---- helpers -----------------------------------------------------------------

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
  // The trickle scenario's viewer is the Rust test's own webrtc-rs peer.
  const sides = args.scenario === 'trickle' ? ['publisher'] : ['publisher', 'player'];
  await drive({
    args, log, result,
    pages: Object.fromEntries(sides.map((side) => [side, `interop-${side}.html`])),
    into: (side) => result[side],
    run: (ctx) => scenario(ctx, result),
  });
  await finish(args, result, log);
}

runMain(main, log);
