#!/usr/bin/env node
// Drives Vigil's web console in headless Chromium through three things that
// happen at a dispatcher's desk, and measures what the pages then show:
//
//   node console_desk.mjs --base URL --key ADMIN_KEY --room ROOM \
//     --field TOKEN --publish-only TOKEN [--artifacts DIR]
//
// `--field` grants publish and subscribe, `--publish-only` publish alone;
// each names its field user (the token's `sub`). The dispatcher's wall is
// open throughout, recording what each tile shows whenever it changes.
//
// 1. Takeover: the field user is live from its join page; the same link
//    (same token) opens in a fresh browser context, as a phone back from a
//    network drop in a new tab would, and goes live. The server takes the
//    stream over (the first session ends as REPLACED): the second page is
//    live at once and stays live, the first says it was replaced and stops,
//    and the wall's one tile of the stream plays on.
// 2. Wall reload mid-call: the dispatcher calls that field user back, whose
//    page plays the dispatcher; then the wall is reloaded. Leaving the page
//    DELETEs the dispatcher's camera session, so the server ends the call
//    (CALLER_LEFT): the field page stops playing and says so, and the
//    reloaded wall shows no call and its camera off. It can call again.
// 3. Publish-only callee: the second field user's token grants publish
//    only. The dispatcher calls them: the call is their grant, so their
//    page plays the dispatcher.
//
// stdout carries one line {"result": {...}} with what each step measured
// (and when, in Unix ms, so the test can line it up with the server's
// events); console_desk.rs asserts on it. Screenshots go to --artifacts,
// diagnostics to stderr.

import {
  consoleDriver, decoding, eventLines, goLive as openAndGoLive, openWall, playing, runDriver, sleep, statusOf, STEP_MS, tile,
  tileIdentities, tilePlays,
} from './console_common.mjs';

const { args, result, log, shoot, newPage } = consoleDriver('console-desk', ['base', 'key', 'room', 'field', 'publish-only']);
const ROOM = args.room;
/** A token's identity (its `sub`). */
const identityOf = (token) => JSON.parse(Buffer.from(token.split('.')[1], 'base64url')).sub;
const FIELD = identityOf(args.field);
const PUBLISH_ONLY = identityOf(args['publish-only']);
const CAMERA = ['camera', 'microphone'];
/** How late the second page of the takeover hears its events. */
const FEED_LAG_MS = 500;

const joinLink = (token) => `${args.base}/join/${ROOM}#token=${token}`;

/**
 * Installed in every wall page (reloads included): `window.__wall` lists,
 * each time it changes, what the wall shows of each identity: how many
 * tiles, the tile's state, its call badge and its call button.
 */
function recordWall() {
  const log = [];
  const last = new Map();
  window.__wall = { log };
  const note = () => {
    const shown = new Map();
    for (const t of document.querySelectorAll('[data-testid=tile]')) {
      const seen = shown.get(t.dataset.identity);
      if (seen) {
        seen.count += 1;
        continue;
      }
      const badge = t.querySelector('[data-testid=in-call]') ? 'in call' : t.querySelector('[data-testid=ringing]') ? 'ringing' : null;
      shown.set(t.dataset.identity, { count: 1, state: t.dataset.state, call: badge, button: t.querySelector('[data-action=call], [data-action=end-call]')?.textContent });
    }
    for (const identity of new Set([...last.keys(), ...shown.keys()])) {
      const now = shown.get(identity) ?? { count: 0, state: null, call: null, button: null };
      const key = JSON.stringify(now);
      if (last.get(identity) === key) continue;
      last.set(identity, key);
      log.push({ at: Date.now(), identity, ...now });
    }
  };
  new MutationObserver(note).observe(document, { subtree: true, childList: true, attributes: true, attributeFilter: ['data-state'] });
}

/**
 * Installed in a page: its event feed (the gRPC-web Watch stream) reaches
 * it `delayMs` late, every message in order, as on a phone whose feed lags
 * behind its WHIP exchange. The takeover's `REPLACED` leave then comes
 * after the new page's 201, not before it.
 */
function slowFeed(delayMs) {
  const fetch = window.fetch;
  window.fetch = async (input, init) => {
    const response = await fetch(input, init);
    const url = typeof input === 'string' ? input : input.url;
    if (!url.includes('/vigil.v1.EventService/Watch') || !response.body) return response;
    const reader = response.body.getReader();
    const later = (f) => setTimeout(f, delayMs);
    const pump = async (controller) => {
      try {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) return later(() => controller.close());
          later(() => controller.enqueue(value));
        }
      } catch (e) {
        later(() => controller.error(e));
      }
    };
    const body = new ReadableStream({
      start(controller) {
        pump(controller);
      },
      cancel: (reason) => reader.cancel(reason),
    });
    return new Response(body, { status: response.status, statusText: response.statusText, headers: response.headers });
  };
}

/** What the wall showed of `identity` at `since` (Unix ms) and every change after, from its recording. */
const wallLog = (page, identity, since) =>
  page.evaluate(([who, from]) => {
    const shown = window.__wall.log.filter((e) => e.identity === who);
    const before = shown.filter((e) => e.at < from).slice(-1);
    return [...before, ...shown.filter((e) => e.at >= from)];
  }, [identity, since]);

/** A join page's call: its note, whether it plays the caller, and every word on the page. */
const callOf = (page) => page.evaluate(() => {
  const video = document.querySelector('[data-testid=call-video]');
  return {
    note: document.querySelector('[data-testid=call-note]').textContent,
    noteVisible: !document.querySelector('[data-testid=call-note]').hidden,
    videoVisible: !video.hidden,
    playing: Boolean(video.srcObject),
    error: document.querySelector('[data-testid=join-error]').textContent,
    page: document.body.innerText,
  };
});

/** What the wall's own camera (the caller) is doing: its state line and its live capture tracks. */
const myCamera = (page) => page.evaluate(() => ({
  state: document.querySelector('[data-testid=my-camera-state]').textContent,
  liveTracks: (document.querySelector('video.mine')?.srcObject?.getTracks() ?? []).filter((t) => t.readyState === 'live').length,
}));

/** The call badge and call button of `identity`'s tile. */
const callShown = (page, identity) => page.evaluate((t) => ({
  inCall: Boolean(document.querySelector(`${t} [data-testid=in-call]`)),
  ringing: Boolean(document.querySelector(`${t} [data-testid=ringing]`)),
  button: document.querySelector(`${t} [data-action=call], ${t} [data-action=end-call]`)?.textContent,
}), tile(identity));

/**
 * Clicks "Call back" on `identity`'s tile and waits until `field`'s join
 * page plays the call, or says it cannot; then samples it, and waits for
 * the wall to show the call as connected.
 */
async function call(dispatcher, field, identity) {
  const at = Date.now();
  await dispatcher.click(`${tile(identity)} [data-action=call]`);
  await field.waitForFunction(() => {
    const video = document.querySelector('[data-testid=call-video]');
    const note = document.querySelector('[data-testid=call-note]').textContent;
    return (video.videoWidth > 0 && video.getVideoPlaybackQuality().totalVideoFrames > 0) || note.startsWith('Cannot');
  }, null, { timeout: STEP_MS });
  const shown = await callOf(field);
  if (!shown.playing) throw new Error(`${identity}'s page does not play the call: ${shown.note}`);
  const sampled = await playing(field, '[data-testid=call-video]', STEP_MS);
  await dispatcher.waitForSelector(`${tile(identity)} [data-testid=in-call]`, { timeout: STEP_MS });
  return { at, shown, ...sampled };
}

/** Ends the call from `identity`'s tile; resolves when the join page stopped playing it. */
async function endCall(dispatcher, field, identity) {
  await dispatcher.click(`${tile(identity)} [data-action=end-call]`);
  await field.waitForSelector('[data-testid=call-video]', { state: 'hidden', timeout: STEP_MS });
  await dispatcher.waitForSelector(`${tile(identity)} [data-testid=in-call]`, { state: 'detached', timeout: STEP_MS });
  return callOf(field);
}

async function takeover(browser, dispatcher) {
  const s = (result.steps.takeover = {});
  result.step = 'takeover: live from the first page';
  const first = await newPage(browser, 'field-first', CAMERA);
  await openAndGoLive(first, joinLink(args.field));
  s.before = await tilePlays(dispatcher, FIELD);

  result.step = 'takeover: the same link in a fresh context';
  const second = await newPage(browser, 'field-second', CAMERA);
  await second.addInitScript(slowFeed, FEED_LAG_MS);
  await second.goto(joinLink(args.field));
  await second.waitForFunction(() => document.querySelector('[data-testid=own-video]')?.videoWidth > 0, null, { timeout: STEP_MS });
  s.at = Date.now();
  await second.click('[data-testid=go-live]');
  // Live, or refused (said next to the button): either is an answer.
  await second.waitForFunction(() => document.querySelector('[data-testid=status]').dataset.state === 'live'
    || document.querySelector('[data-testid=join-error]').textContent, null, { timeout: STEP_MS });
  s.secondLiveMs = Date.now() - s.at;
  s.second = { ...(await statusOf(second)), error: await second.textContent('[data-testid=join-error]') };

  result.step = 'takeover: the first page stops';
  // Its connection may close a moment before the event saying why arrives
  // ("reconnecting…" meanwhile): wait for what it settles on.
  await first.waitForFunction(() => !['live', 'reconnecting', 'connecting'].includes(document.querySelector('[data-testid=status]').dataset.state), null, { timeout: STEP_MS });
  s.firstStoppedMs = Date.now() - s.at;
  s.first = await statusOf(first);
  // The wall's tile goes on decoding the new session.
  s.tile = await tilePlays(dispatcher, FIELD);
  s.tile.state = await dispatcher.getAttribute(tile(FIELD), 'data-state');
  await shoot('01-takeover', { dispatcher, first, second });

  result.step = 'takeover: a while later';
  // Neither page changes its mind: no reconnect loop, no second takeover.
  await sleep(3000);
  s.later = {
    first: await statusOf(first),
    firstOwnVideo: await first.evaluate(() => Boolean(document.querySelector('[data-testid=own-video]').srcObject)),
    second: await statusOf(second),
    tile: await decoding(dispatcher, `${tile(FIELD)} video`, tile(FIELD)),
    tiles: await tileIdentities(dispatcher),
  };
  s.wall = await wallLog(dispatcher, FIELD, s.at);
  s.doneAt = Date.now();
  await first.context().close();
  // The steps below call this page.
  if (s.later.second.state !== 'live') throw new Error(`the page that took over is not live: ${s.later.second.text}`);
  return second;
}

async function reloadMidCall(dispatcher, field) {
  const s = (result.steps.reload = {});
  result.step = 'reload: call the field user';
  s.call = await call(dispatcher, field, FIELD);
  s.caller = await myCamera(dispatcher);
  s.before = await callShown(dispatcher, FIELD);
  await shoot('02-call', { dispatcher, field });

  result.step = 'reload: the wall reloads';
  s.at = Date.now();
  await dispatcher.reload();
  await dispatcher.waitForSelector('[data-testid=wall]', { state: 'attached', timeout: STEP_MS });
  s.tile = await tilePlays(dispatcher, FIELD);

  result.step = 'reload: the field page';
  // The server ended the call when the old page's camera left: the field
  // page stops playing the dispatcher and says so.
  await field.waitForSelector('[data-testid=call-video]', { state: 'hidden', timeout: STEP_MS });
  s.fieldStoppedMs = Date.now() - s.at;
  // Late events would land meanwhile.
  await sleep(2000);
  s.field = { ...(await callOf(field)), status: await statusOf(field) };
  s.after = { ...(await callShown(dispatcher, FIELD)), camera: await myCamera(dispatcher) };
  s.events = await eventLines(dispatcher);
  await shoot('03-reloaded', { dispatcher, field });

  result.step = 'reload: call again from the reloaded wall';
  s.again = await call(dispatcher, field, FIELD);
  s.againCaller = await myCamera(dispatcher);
  s.againEnded = await endCall(dispatcher, field, FIELD);
  // Everything the reloaded wall showed of the tile, from its first moment.
  s.wall = await wallLog(dispatcher, FIELD, 0);
  s.doneAt = Date.now();
}

async function publishOnly(browser, dispatcher) {
  const s = (result.steps.publishOnly = {});
  result.step = 'publish-only: live';
  const field = await newPage(browser, 'publish-only', CAMERA);
  await openAndGoLive(field, joinLink(args['publish-only']));
  s.tile = await tilePlays(dispatcher, PUBLISH_ONLY);

  result.step = 'publish-only: called';
  s.call = await call(dispatcher, field, PUBLISH_ONLY);
  s.status = await statusOf(field);
  await shoot('04-publish-only-call', { dispatcher, field });
  result.step = 'publish-only: the call ends';
  s.ended = await endCall(dispatcher, field, PUBLISH_ONLY);
  s.doneAt = Date.now();
}

async function run(browser) {
  result.identities = { field: FIELD, publishOnly: PUBLISH_ONLY };
  const dispatcher = await newPage(browser, 'dispatcher', CAMERA);
  await dispatcher.context().addInitScript(recordWall);
  result.step = 'open the wall';
  await openWall(dispatcher, args.base, args.key, ROOM);
  const field = await takeover(browser, dispatcher);
  await reloadMidCall(dispatcher, field);
  await publishOnly(browser, dispatcher);
}

runDriver({ result, artifacts: args.artifacts, log, shoot }, run);
