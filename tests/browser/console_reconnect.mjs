#!/usr/bin/env node
// Drives Vigil's web console in headless Chromium through what goes wrong
// on a monitoring desk, and measures what the pages then show:
//
//   node console_reconnect.mjs --base URL --key ADMIN_KEY --room ROOM \
//     --field1 TOKEN --field2 TOKEN [--artifacts DIR]
//
// The dispatcher's wall and two field users (field-1, field-2, each in a
// browser context of its own) are live. Then:
//
// 1. The dispatcher mutes field-1's video: field-1's page says so.
// 2. field-2's page crashes (no DELETE, no DTLS close: its connection just
//    stops). Its tile says "reconnecting…" over a frozen picture, then
//    "offline" once the republish grace is over, and stays on the wall; a
//    /watch player of field-2 says the same. field-2 comes back from a new
//    page: the tile plays again.
// 3. The wall is reloaded: its event panel lists what happened before.
// 4. The server restarts: the driver prints {"event": "stop-server"} and
//    waits for a line on stdin, checks the pages while it is down, prints
//    {"event": "start-server"} and waits for another line. The wall shows
//    its banner while the server is down and clears it after; the field
//    pages go live again by themselves and the tiles play again.
//
// stdout carries those events and then one line {"result": {...}} with what
// each step measured in the browsers; console_reconnect.rs asserts on it.
// Screenshots go to --artifacts, diagnostics to stderr.

import {
  ask, consoleDriver, decoding, eventLines, goLive as openAndGoLive, openWall, runDriver, sleep, statusOf, STEP_MS, tile, tileIdentities,
  tileIn, tilePlays,
} from './console_common.mjs';

const { args, result, log, shoot, newPage } = consoleDriver('console-reconnect', ['base', 'key', 'room', 'field1', 'field2']);
const ROOM = args.room;
const goLive = (page, token) => openAndGoLive(page, `${args.base}/join/${ROOM}#token=${token}`);

async function run(browser) {
  const s = result.steps;
  const dispatcher = await newPage(browser, 'dispatcher', ['camera', 'microphone']);
  const field1 = await newPage(browser, 'field-1', ['camera', 'microphone']);
  let field2 = await newPage(browser, 'field-2', ['camera', 'microphone']);

  result.step = 'open the wall';
  await openWall(dispatcher, args.base, args.key, ROOM);

  result.step = 'field users go live';
  await goLive(field1, args.field1);
  await goLive(field2, args.field2);
  s.live = { field1: await tilePlays(dispatcher, 'field-1'), field2: await tilePlays(dispatcher, 'field-2') };

  result.step = 'mute field-1';
  // The dispatcher turns field-1's camera off: field-1's page must not go on
  // saying "the dispatcher can see you".
  await dispatcher.click(`${tile('field-1')} [data-action=mute-video]`);
  await field1.waitForSelector('[data-testid=status][data-muted]', { timeout: STEP_MS });
  s.muted = await statusOf(field1);
  await shoot('01-muted', { field1 });
  await dispatcher.click(`${tile('field-1')} [data-action=mute-video]`);
  await field1.waitForSelector('[data-testid=status][data-state=live]:not([data-muted])', { timeout: STEP_MS });
  s.unmuted = await statusOf(field1);

  result.step = 'a watch page of field-2';
  const watcher = await newPage(browser, 'watch', []);
  await watcher.goto(`${args.base}/watch/${ROOM}/field-2#token=${args.field2}`);
  await watcher.waitForFunction(() => document.querySelector('[data-testid=player]')?.videoWidth > 0, null, { timeout: STEP_MS });
  // The status follows the player's own "playing" a moment after the first
  // frame shows: give it 3 s to get there, then report what it says.
  const watchState = () => document.querySelector('[data-testid=player-status]').dataset.state ?? 'playing';
  await watcher.waitForFunction(`(${watchState})() === 'playing'`, null, { timeout: 3000 }).catch(() => {});
  s.watchBefore = await watcher.evaluate(watchState);

  result.step = 'field-2 drops';
  // A crashed tab: no DELETE, no DTLS close. The server notices when ICE
  // consent expires (TIMED_OUT), then waits the republish grace.
  const crashed = new Promise((resolve) => field2.once('crash', resolve));
  const cdp = await field2.context().newCDPSession(field2);
  const dropped = Date.now();
  cdp.send('Page.crash').catch(() => {});
  await Promise.race([crashed, sleep(5000)]);
  s.drop = { reconnectingMs: await tileIn(dispatcher, 'field-2', 'reconnecting', dropped) };
  s.drop.reconnecting = await decoding(dispatcher, `${tile('field-2')} video`, tile('field-2'));
  await watcher.waitForSelector('[data-testid=player-status][data-state=reconnecting]', { timeout: STEP_MS });
  s.drop.watchReconnecting = await watcher.textContent('[data-testid=player-status]');
  await shoot('02-reconnecting', { dispatcher, watcher });
  s.drop.offlineMs = await tileIn(dispatcher, 'field-2', 'offline', dropped);
  s.drop.offline = await decoding(dispatcher, `${tile('field-2')} video`, tile('field-2'));
  s.drop.removeVisible = await dispatcher.isVisible(`${tile('field-2')} [data-action=remove]`);
  await watcher.waitForSelector('[data-testid=player-status][data-state=offline]', { timeout: STEP_MS });
  s.drop.watchOffline = await watcher.textContent('[data-testid=player-status]');
  s.drop.tilesWhileOffline = await tileIdentities(dispatcher);
  await shoot('03-offline', { dispatcher, watcher });

  result.step = 'field-2 comes back';
  await field2.context().close();
  field2 = await newPage(browser, 'field-2-again', ['camera', 'microphone']);
  const back = Date.now();
  await goLive(field2, args.field2);
  s.back = await tilePlays(dispatcher, 'field-2');
  s.back.ms = Date.now() - back;
  // Playing: the status line is hidden.
  await watcher.waitForSelector('[data-testid=player-status][data-state=playing]', { state: 'attached', timeout: STEP_MS });
  s.back.watch = await decoding(watcher, '[data-testid=player]');

  result.step = 'reload the wall';
  await dispatcher.reload();
  await dispatcher.waitForSelector('[data-testid=events] li', { timeout: STEP_MS });
  // The panel fills from the server's retained history: field-2's drop was
  // before this page existed.
  await dispatcher.locator('[data-testid=events] li').filter({ hasText: 'field-2 stopped publishing (timed out)' }).first()
    .waitFor({ timeout: STEP_MS });
  s.reload = { events: await eventLines(dispatcher) };
  s.reload.field1 = await tilePlays(dispatcher, 'field-1');
  s.reload.field2 = await tilePlays(dispatcher, 'field-2');
  await shoot('04-reloaded', { dispatcher });

  result.step = 'server stops';
  await ask('stop-server');
  const stopped = Date.now();
  await dispatcher.waitForSelector('[data-testid=server-banner]', { state: 'visible', timeout: STEP_MS });
  s.restart = { bannerMs: Date.now() - stopped, banner: await dispatcher.textContent('[data-testid=server-banner]') };
  await field1.waitForSelector('[data-testid=status][data-state=reconnecting]', { timeout: STEP_MS });
  s.restart.fieldWhileDown = await statusOf(field1);
  await field1.waitForSelector('[data-testid=server-banner]', { state: 'visible', timeout: STEP_MS });
  s.restart.fieldBanner = true;
  s.restart.tileReconnectingMs = await tileIn(dispatcher, 'field-1', 'reconnecting', stopped);
  // Down for a while: the pages' tries meet a closed port, and back off.
  await sleep(5000);
  s.restart.fieldAfter5s = await statusOf(field1);
  s.restart.bannerAfter5s = await dispatcher.isVisible('[data-testid=server-banner]');
  await shoot('05-server-down', { dispatcher, field1 });

  result.step = 'server starts again';
  await ask('start-server');
  const started = Date.now();
  await dispatcher.waitForSelector('[data-testid=server-banner]', { state: 'hidden', timeout: STEP_MS });
  s.restart.bannerClearedMs = Date.now() - started;
  await field1.waitForSelector('[data-testid=status][data-state=live]', { timeout: STEP_MS });
  s.restart.field1LiveMs = Date.now() - started;
  await field2.waitForSelector('[data-testid=status][data-state=live]', { timeout: STEP_MS });
  s.restart.field2LiveMs = Date.now() - started;
  s.restart.field1 = await tilePlays(dispatcher, 'field-1');
  s.restart.field1.ms = Date.now() - started;
  s.restart.field2 = await tilePlays(dispatcher, 'field-2');
  s.restart.fieldBannerAfter = await field1.isVisible('[data-testid=server-banner]');
  s.restart.events = (await eventLines(dispatcher)).slice(0, 12);
  await shoot('06-server-back', { dispatcher, field1 });
}

runDriver({ result, artifacts: args.artifacts, log, shoot }, run);
