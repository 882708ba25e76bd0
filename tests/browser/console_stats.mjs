#!/usr/bin/env node
// Drives the wall's stream statistics in headless Chromium:
//
//   node console_stats.mjs --base URL --key ADMIN_KEY --room ROOM \
//     --field TOKEN [--artifacts DIR]
//
// A field user goes live from its join link; the dispatcher's wall shows
// its tile with the server's figures (GetStreamStats every 2 s): bitrate,
// picture size, frame rate and loss, and no "poor link" badge. Then the
// driver asks the test to lose one datagram in ten on the way to Vigil
// (event "lose", answered once the rule is in), and waits for the tile's
// "poor link" badge, there and on the rooms page; then asks for the loss
// to end ("heal") and waits for the tile's badge to go. stdout carries one line {"result": {...}};
// console_stats_chromium.rs asserts on it.

import { ask, consoleDriver, goLive, openWall, runDriver, STEP_MS, tile, tilePlays } from './console_common.mjs';

const { args, result, log, shoot, newPage } = consoleDriver('console-stats', ['base', 'key', 'room', 'field']);
const FIELD = JSON.parse(Buffer.from(args.field.split('.')[1], 'base64url')).sub;
const T = tile(FIELD);

/** What the tile shows of the stream's statistics now (run in the page). */
function shown(t) {
  const stats = document.querySelector(`${t} [data-testid=tile-stats]`);
  const video = document.querySelector(`${t} video`);
  return {
    text: stats?.textContent ?? null,
    title: stats?.title ?? null,
    bitrate: Number(stats?.dataset.bitrate ?? -1),
    width: Number(stats?.dataset.width ?? -1),
    height: Number(stats?.dataset.height ?? -1),
    loss: Number(stats?.dataset.loss ?? -1),
    poorBadge: document.querySelector(`${t} [data-testid=poor-link]`)?.textContent ?? null,
    link: document.querySelector(t)?.dataset.link ?? null,
    decoded: video ? [video.videoWidth, video.videoHeight] : null,
  };
}

runDriver({ result, artifacts: args.artifacts, log, shoot }, async (browser) => {
  result.step = 'field user goes live';
  const field = await newPage(browser, 'field', ['camera', 'microphone']);
  await goLive(field, `${args.base}/join/${args.room}#token=${args.field}`);

  result.step = 'the wall plays the tile';
  const wall = await newPage(browser, 'wall');
  await openWall(wall, args.base, args.key, args.room);
  result.steps.plays = await tilePlays(wall, FIELD);

  result.step = 'the tile shows the server figures';
  // Figures with the picture size the wall decodes, and the wall's own
  // player among the stream's viewers.
  await wall.waitForFunction(
    (t) => {
      const s = document.querySelector(`${t} [data-testid=tile-stats]`);
      const v = document.querySelector(`${t} video`);
      return (
        /(kbit|Mbit)\/s .*×.* fps · .* lost/.test(s?.textContent ?? '') &&
        Number(s.dataset.width) === v.videoWidth &&
        Number(s.dataset.height) === v.videoHeight &&
        // The wall's own player is listed among the viewers, with its reports.
        /viewer dispatcher-.*video .* lost/.test(s.title)
      );
    },
    T,
    { timeout: STEP_MS },
  ).catch((e) => log(`figures never matched the decoded size: ${e.message}`));
  result.steps.clean = await wall.evaluate(shown, T);
  await shoot('1-clean', { wall });

  result.step = 'the rooms page shows the stream';
  const rooms = await newPage(browser, 'rooms');
  await rooms.goto(`${args.base}/console/#key=${args.key}`);
  const cell = `[data-room="${args.room}"] [data-testid=room-streams] [data-stream="${FIELD}"]`;
  await rooms.waitForFunction((c) => /(kbit|Mbit)\/s .*×.* lost/.test(document.querySelector(c)?.textContent ?? ''), cell, { timeout: STEP_MS });
  result.steps.rooms = await rooms.textContent(cell);
  await shoot('1-rooms', { rooms });

  result.step = 'forced loss raises the poor-link badge';
  await ask('lose');
  const lossFrom = Date.now();
  await wall.waitForSelector(`${T} [data-testid=poor-link]`, { timeout: STEP_MS });
  result.steps.lossy = { ...(await wall.evaluate(shown, T)), msToBadge: Date.now() - lossFrom };
  await shoot('2-poor-link', { wall });
  // The rooms page says so too (it reads every 3 s).
  await rooms.waitForSelector(`${cell}.poor`, { timeout: STEP_MS });
  result.steps.roomsLossy = await rooms.textContent(cell);

  result.step = 'the badge goes when the loss ends';
  await ask('heal');
  const healFrom = Date.now();
  await wall.waitForFunction((t) => document.querySelector(t)?.dataset.link === 'ok', T, { timeout: STEP_MS });
  result.steps.healed = { ...(await wall.evaluate(shown, T)), msToClear: Date.now() - healFrom };
  await shoot('3-healed', { wall });
  result.ok = true;
});
