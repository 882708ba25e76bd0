#!/usr/bin/env node
// Drives headless Chromium against a running Vigil to check simulcast end to
// end: a publisher page (interop-simulcast.html) sends its fake 1280x720
// camera with WHIP as three simulcast layers (rid q = 1/4, h = 1/2, f = full
// size); then two WHEP players (interop-player.html), one asking for
// `?layer=low` and one asking for nothing (the best layer), decode it. Each
// page has a browser context of its own; all are served from a throwaway
// HTTP server on 127.0.0.1, so every request to Vigil is cross-origin.
//
//   node simulcast.mjs --whip URL --whep URL [--codec VP8|H264]
//        [--artifacts DIR] [--name PREFIX] [--wait-ms 25000]
//
// stdout carries JSON lines only: progress events ({"event": ...}) and, last,
// {"result": {...}}. The driver measures (getStats() of every page, sampled
// every 250 ms); the Rust test (interop_chromium_simulcast.rs) asserts.
// Diagnostics go to stderr.

import {
  drive, emit, finish, logger, parseArgs, runMain, sleep,
} from './interop_common.mjs';

// ---- arguments -------------------------------------------------------------

const args = parseArgs(
  { codec: null, artifacts: null, name: 'chromium-simulcast', 'wait-ms': '25000' },
  'simulcast.mjs --whip URL --whep URL [--codec VP8|H264] [--artifacts DIR]');
/** How long the players get to show their layers (the best one: f). */
const WAIT_MS = Number(args['wait-ms']);
/** The decoded width from which a frame is the f layer (1280, or 960 if Chromium shrank it). */
const FULL_WIDTH = 960;
/** Frames of f the best viewer decodes before the driver is satisfied. */
const FULL_FRAMES = 30;
/** Frames the low viewer decodes before the driver is satisfied. */
const LOW_FRAMES = 60;

const log = logger('simulcast');

// ---- measurements ------------------------------------------------------------

/**
 * What one player decoded, sample by sample: `history` rows are [ms since
 * the players started, frameWidth, frameHeight, framesDecoded,
 * keyFramesDecoded, packetsReceived, pliCount, packetsLost, freezeCount];
 * `sizes` splits the decoded frames into runs of one size ({size, fromMs,
 * frames}), attributing the frames decoded between two samples to the later
 * sample's size.
 */
class PlayerTrack {
  constructor(query) {
    this.query = query;
    this.history = [];
    this.sizes = [];
    this.firstDecodedMs = null;
    this.fullAtMs = null;       // first sample with frameWidth >= FULL_WIDTH
    this.fullAtFrames = null;   // framesDecoded then
    this.maxWidth = 0;
    this.last = null;
  }

  add(ms, s) {
    const v = s?.video ?? {};
    const frames = v.framesDecoded ?? 0;
    const prev = this.history.at(-1)?.[3] ?? 0;
    this.history.push([ms, v.frameWidth ?? null, v.frameHeight ?? null, frames,
      v.keyFramesDecoded ?? 0, v.packetsReceived ?? 0, v.pliCount ?? 0, v.packetsLost ?? 0,
      v.freezeCount ?? 0]);
    this.last = s;
    if (frames > 0 && this.firstDecodedMs === null) this.firstDecodedMs = ms;
    if (frames > prev && v.frameWidth) {
      const size = `${v.frameWidth}x${v.frameHeight}`;
      const run = this.sizes.at(-1);
      if (run?.size === size) run.frames += frames - prev;
      else this.sizes.push({ size, fromMs: ms, frames: frames - prev });
      this.maxWidth = Math.max(this.maxWidth, v.frameWidth);
      if (v.frameWidth >= FULL_WIDTH && this.fullAtMs === null) {
        this.fullAtMs = ms;
        this.fullAtFrames = frames;
      }
    }
  }

  frames() { return this.history.at(-1)?.[3] ?? 0; }

  summary() {
    return {
      query: this.query, firstDecodedMs: this.firstDecodedMs, fullAtMs: this.fullAtMs,
      fullAtFrames: this.fullAtFrames, maxWidth: this.maxWidth, framesDecoded: this.frames(),
      sizes: this.sizes, last: this.last, history: this.history,
    };
  }
}

/**
 * The publisher's layers over time: rows of {ms (since the driver started),
 * bwe (kbit/s), layers: {rid: [frameWidth, frameHeight, framesPerSecond,
 * kbit/s of payload and RTP packets (padding included) since the previous
 * row, qualityLimitationReason]}}. A paused layer sends no payload, but
 * Chromium may still send padding-only packets on its SSRC (bandwidth
 * probes). `firstEncodedMs`: per rid, the first sample in which it had
 * encoded a frame.
 */
class PublisherTrack {
  constructor() { this.history = []; this.prev = null; this.prevMs = null; this.firstEncodedMs = {}; }

  add(ms, s) {
    const layers = {};
    for (const [rid, l] of Object.entries(s.layers)) {
      if (l.framesEncoded > 0) this.firstEncodedMs[rid] ??= ms;
      const before = this.prev?.layers?.[rid];
      const kbps = before === undefined ? null
        : Math.round(((l.bytesSent - before.bytesSent) * 8) / (ms - this.prevMs));
      const packets = before === undefined ? null : l.packetsSent - before.packetsSent;
      layers[rid] = [l.frameWidth, l.frameHeight, l.framesPerSecond, kbps, packets,
        l.qualityLimitationReason];
    }
    const bwe = s.availableOutgoingBitrate == null ? null : Math.round(s.availableOutgoingBitrate / 1000);
    this.history.push({ ms, bwe, layers });
    this.prev = s;
    this.prevMs = ms;
  }
}

// ---- the run -----------------------------------------------------------------

async function run(ctx, result, t0) {
  const since = () => Date.now() - t0;
  const publisher = ctx.publisher;
  const pubTrack = new PublisherTrack();
  result.publisher.track = pubTrack;

  result.step = 'publish';
  result.publisher.publish = await publisher.evaluate(
    (o) => window.interop.publish(o), { endpoint: args.whip, codec: args.codec });
  result.timing.publishedMs = since();
  emit({ event: 'publishing', answer: result.publisher.publish.answer });
  if (!result.publisher.publish.connected) throw new Error('the publisher did not connect');

  // Let two layers start and Vigil measure their rates before any viewer
  // asks for one by rank (at most 10 s; Chromium starts with f paused).
  result.step = 'layers start';
  const settleStart = Date.now();
  let started = 0;
  for (;;) {
    const s = await publisher.evaluate(() => window.interop.stats());
    pubTrack.add(since(), s);
    started = Object.values(s.layers).filter((l) => l.framesEncoded > 0).length;
    if ((started >= 2 && Date.now() - settleStart >= 2000) || Date.now() - settleStart >= 10000) break;
    await sleep(250);
  }
  result.publisher.atPlay = await publisher.evaluate(() => window.interop.stats());

  result.step = 'play';
  const tracks = {};
  for (const [side, query] of [['low', '?layer=low'], ['best', '']]) {
    tracks[side] = new PlayerTrack(query);
    result.players[side].play = await ctx[side].evaluate(
      (o) => window.interop.play(o), { endpoint: `${args.whep}${query}`, trickle: false });
  }
  const playStart = Date.now();
  result.timing.playersStartedMs = since();
  emit({ event: 'playing' });

  // Sample every page until the low viewer has decoded LOW_FRAMES frames and
  // the best viewer FULL_FRAMES frames of f, or WAIT_MS pass.
  result.step = 'decode';
  let announced = false;
  for (;;) {
    const ms = Date.now() - playStart;
    const [low, best, pub] = await Promise.all([
      ctx.low.evaluate(() => window.interop.stats()),
      ctx.best.evaluate(() => window.interop.stats()),
      publisher.evaluate(() => window.interop.stats()),
    ]);
    tracks.low.add(ms, low);
    tracks.best.add(ms, best);
    pubTrack.add(since(), pub);
    const b = tracks.best;
    if (b.fullAtMs !== null && !announced) {
      announced = true;
      emit({ event: 'best viewer on f', ms: b.fullAtMs });
    }
    const lowDone = tracks.low.frames() >= LOW_FRAMES;
    const bestDone = b.fullAtMs !== null && b.frames() >= b.fullAtFrames + FULL_FRAMES
      && (b.last?.video?.frameWidth ?? 0) >= FULL_WIDTH;
    if ((lowDone && bestDone) || ms >= WAIT_MS) break;
    await sleep(250);
  }
  result.measuredMs = Date.now() - playStart;
  result.publisher.last = await publisher.evaluate(() => window.interop.stats());
  for (const side of ['low', 'best']) Object.assign(result.players[side], tracks[side].summary());
  result.timing.bestOnFullSincePublishMs = tracks.best.fullAtMs === null ? null
    : result.timing.playersStartedMs - result.timing.publishedMs + tracks.best.fullAtMs;
}

// ---- main --------------------------------------------------------------------

const SIDES = { publisher: 'interop-simulcast.html', low: 'interop-player.html', best: 'interop-player.html' };

async function main() {
  const t0 = Date.now();
  const result = {
    ok: false, codec: args.codec, step: 'launch', publisher: {}, players: { low: {}, best: {} },
    timing: {}, console: [],
  };
  await drive({
    args, log, result,
    pages: SIDES,
    into: (side) => (side === 'publisher' ? result.publisher : result.players[side]),
    run: (ctx) => run(ctx, result, t0),
    collect: () => {
      const track = result.publisher.track;
      result.publisher.history = track?.history ?? [];
      result.timing.layersFirstEncodedMs = track?.firstEncodedMs ?? {};
      delete result.publisher.track;
    },
  });
  result.totalMs = Date.now() - t0;
  await finish(args, result, log);
}

runMain(main, log);
