#!/usr/bin/env node
// Drives Vigil's web console in headless Chromium, as a dispatcher and a
// field user would, each in a browser context of their own:
//
//   node console_e2e.mjs --base URL --key ADMIN_KEY [--artifacts DIR] [--stall-ms 1500]
//
// The dispatcher signs in with the printed link, creates a room and a token
// on the rooms page, and opens the room's wall; the field user opens the join
// link and goes live; the dispatcher sees the tile play, calls back (the
// field user's page plays the dispatcher), sees a stalled badge when the field
// user's media stops, and hangs up (the field user's page says so and stops).
// Then the error paths: a wrong admin key, an expired join link, a room
// deleted under a live field user, and that room's join link opened again.
//
// stdout carries one JSON line, {"result": {...}}: what each step measured
// in the browsers (decoded frames, states, how long things took). The Rust
// test (console_chromium.rs) asserts on it. Screenshots of every step go to
// --artifacts. Diagnostics go to stderr.

import { consoleDriver, playing as decoding, runDriver, sleep } from './console_common.mjs';

const { args, result, log, shoot, newPage } = consoleDriver('console-e2e', ['base', 'key'], { 'stall-ms': '1500' });
const ROOM = 'site-1';
const FIELD = 'field-1';
const STEP_MS = 20000;

const playing = (page, selector) => decoding(page, selector, STEP_MS);

/** Counts the wall's alarm tones and records its desktop notifications
 * (granted), in place of the real ones. */
function instrumentAlerts() {
  window.__alerts = { oscillators: 0, notifications: [] };
  const create = AudioContext.prototype.createOscillator;
  AudioContext.prototype.createOscillator = function () {
    window.__alerts.oscillators += 1;
    return create.call(this);
  };
  window.Notification = class {
    static permission = 'granted';
    static requestPermission() {
      return Promise.resolve('granted');
    }
    constructor(title, options) {
      window.__alerts.notifications.push({ title, body: options?.body });
    }
  };
}

async function mainScenario(browser) {
  const s = result.steps;
  const dispatcher = await newPage(browser, 'dispatcher', ['camera', 'microphone', 'clipboard-read', 'clipboard-write']);
  const field = await newPage(browser, 'field', ['camera', 'microphone']);
  await dispatcher.context().addInitScript(instrumentAlerts);

  result.step = 'sign in with the printed link';
  await dispatcher.goto(`${args.base}/console/#key=${args.key}`);
  await dispatcher.waitForSelector('[data-testid=rooms]', { timeout: STEP_MS });
  s.signedIn = { url: dispatcher.url() };

  result.step = 'create a room';
  await dispatcher.fill('[data-testid=room-name]', ROOM);
  await dispatcher.fill('[data-testid=stall-after]', args['stall-ms']);
  await dispatcher.click('[data-testid=create-room]');
  await dispatcher.waitForSelector(`tr[data-room="${ROOM}"]`, { timeout: STEP_MS });
  s.roomListed = true;

  result.step = 'create a token';
  await dispatcher.click(`tr[data-room="${ROOM}"] >> text=Token…`);
  await dispatcher.fill('[data-testid=token-identity]', FIELD);
  await dispatcher.click('[data-testid=create-token]');
  await dispatcher.waitForSelector('[data-testid=join-link]', { timeout: STEP_MS });
  const joinLink = await dispatcher.inputValue('[data-testid=join-link]');
  s.token = {
    obsServer: await dispatcher.inputValue('[data-testid=obs-server]'),
    tokenId: await dispatcher.inputValue('[data-testid=token-id]'),
    joinLinkShape: joinLink.replace(/#token=.*/, '#token=…'),
  };
  await shoot('01-rooms', { dispatcher });

  result.step = 'open the wall';
  await dispatcher.click(`tr[data-room="${ROOM}"] >> text=Open wall`);
  await dispatcher.waitForSelector('[data-testid=wall]', { state: 'attached', timeout: STEP_MS });

  result.step = 'field user goes live';
  await field.goto(joinLink);
  await field.waitForFunction(() => document.querySelector('[data-testid=own-video]')?.videoWidth > 0, null, { timeout: STEP_MS });
  s.fieldName = await field.inputValue('[data-testid=name]');
  const goLive = Date.now();
  await field.click('[data-testid=go-live]');
  await field.waitForSelector('[data-testid=status][data-state=live]', { timeout: STEP_MS });
  s.fieldLiveMs = Date.now() - goLive;

  result.step = 'the tile appears';
  // Driven by the event feed: the tile appears when the publisher's tracks do.
  const tile = `[data-testid=tile][data-identity="${FIELD}"]`;
  await dispatcher.waitForSelector(tile, { timeout: STEP_MS });
  const tileSeen = Date.now();
  s.tileAppearedMs = tileSeen - goLive;

  result.step = 'a second camera from the wall';
  // "Add a camera" asks for a name, creates a token and opens the join page
  // in a new tab (of the dispatcher's browser, as for a person trying it out).
  const [second] = await Promise.all([
    dispatcher.context().waitForEvent('page', { timeout: STEP_MS }),
    dispatcher.click('[data-testid=add-camera]'),
  ]);
  await second.waitForLoadState();
  await second.waitForFunction(() => document.querySelector('[data-testid=own-video]')?.videoWidth > 0, null, { timeout: STEP_MS });
  s.secondName = await second.inputValue('[data-testid=name]');
  await second.click('[data-testid=go-live]');
  await second.waitForSelector('[data-testid=status][data-state=live]', { timeout: STEP_MS });

  result.step = 'the tiles play';
  s.tile = await playing(dispatcher, `${tile} video`);
  await dispatcher.waitForFunction((t) => /kbit|Mbit/.test(document.querySelector(`${t} [data-testid=tile-stats]`)?.textContent), tile, { timeout: STEP_MS });
  s.tile.stats = await dispatcher.textContent(`${tile} [data-testid=tile-stats]`);
  s.tile.status = await dispatcher.textContent(`${tile} [data-testid=tile-status]`);
  s.secondTile = await playing(dispatcher, `[data-testid=tile][data-identity="${s.secondName}"] video`);
  s.tiles = await dispatcher.$$eval('[data-testid=tile]', (tiles) => tiles.map((t) => t.dataset.identity));
  await shoot('02-wall', { dispatcher, field });

  result.step = 'a second dispatcher';
  // Another dispatcher opens the same wall and starts its camera: on the
  // first wall it is listed as present, not shown as a camera tile.
  const other = await newPage(browser, 'dispatcher-2', ['camera', 'microphone']);
  await other.goto(`${args.base}/console/#key=${args.key}`);
  await other.click(`tr[data-room="${ROOM}"] >> text=Open wall`);
  await other.waitForSelector('[data-testid=wall]', { state: 'attached', timeout: STEP_MS });
  await other.click('[data-testid=my-camera]');
  await other.waitForFunction(() => /^live as /.test(document.querySelector('[data-testid=my-camera-state]')?.textContent), null, { timeout: STEP_MS });
  const otherName = (await other.textContent('[data-testid=my-camera-state]')).replace('live as ', '');
  await dispatcher.waitForFunction((n) => document.querySelector('[data-testid=dispatchers]')?.textContent.includes(n), otherName, { timeout: STEP_MS });
  // Its camera's join event has come and gone: still no tile for it.
  await sleep(1000);
  s.otherDispatcher = {
    presence: await dispatcher.textContent('[data-testid=dispatchers]'),
    tiles: await dispatcher.$$eval('[data-testid=tile]', (tiles) => tiles.map((t) => t.dataset.identity)),
    name: otherName,
  };
  await other.context().close();
  await dispatcher.waitForFunction(() => document.querySelector('[data-testid=dispatchers]')?.textContent === '', null, { timeout: STEP_MS });

  result.step = 'standalone player';
  // /watch/{room}/{stream} with a subscribe token (the field user's own).
  const token = joinLink.split('#token=')[1];
  const viewer = await newPage(browser, 'player', []);
  await viewer.goto(`${args.base}/watch/${ROOM}/${FIELD}#token=${token}`);
  s.player = await playing(viewer, '[data-testid=player]');
  await shoot('02-player', { viewer });
  await viewer.context().close();

  result.step = 'call back';
  const call = Date.now();
  await dispatcher.click(`${tile} [data-action=call]`);
  s.call = await playing(field, '[data-testid=call-video]');
  s.call.msFromClick = Date.now() - call;
  s.call.note = await field.textContent('[data-testid=call-note]');
  s.call.dispatcherCamera = await dispatcher.textContent('[data-testid=my-camera-state]');
  await dispatcher.waitForSelector(`${tile} [data-testid=in-call]`, { timeout: STEP_MS });
  s.call.tileBadge = true;
  await shoot('03-call', { dispatcher, field });

  result.step = 'end the call';
  // The server ends it: the field page stops playing the dispatcher, and
  // the dispatcher's camera and microphone go off (nobody else is called).
  const endCall = Date.now();
  await dispatcher.click(`${tile} [data-action=end-call]`);
  await field.waitForSelector('[data-testid=call-video]', { state: 'hidden', timeout: STEP_MS });
  await dispatcher.waitForSelector(`${tile} [data-testid=in-call]`, { state: 'detached', timeout: STEP_MS });
  await dispatcher.waitForFunction(() => document.querySelector('[data-testid=my-camera-state]')?.textContent === 'camera off', null, { timeout: STEP_MS });
  s.callEnded = {
    ms: Date.now() - endCall,
    note: await field.textContent('[data-testid=call-note]'),
    // Live capture tracks left on the dispatcher's page after the call.
    dispatcherLiveTracks: await dispatcher.evaluate(() => (document.querySelector('video.mine')?.srcObject?.getTracks() ?? []).filter((t) => t.readyState === 'live').length),
    callButton: await dispatcher.textContent(`${tile} [data-action=call]`),
  };

  result.step = 'stalled alarm';
  // Desktop notifications are opt-in; the tone is on by default.
  await dispatcher.check('[data-testid=alarm-notify]');
  // The field user's camera and microphone stop (as if unplugged): the
  // connection stays up, but no media reaches the server.
  const stopped = Date.now();
  await field.evaluate(() => {
    for (const track of document.querySelector('[data-testid=own-video]').srcObject.getTracks()) track.stop();
  });
  await dispatcher.waitForSelector(`${tile} .badge[data-alarm=stalled]`, { timeout: STEP_MS });
  s.stalledBadgeMs = Date.now() - stopped;
  // The field user's own alarm: other cameras' alarms may be newer.
  s.alarmLogged = await dispatcher.locator('[data-testid=events] li.alarm')
    .filter({ hasText: `${FIELD}:` }).filter({ hasText: 'stalled' }).first()
    .textContent({ timeout: STEP_MS });
  // The alarm panel lists it, the wall announced it, and one click
  // acknowledges it: the row says who, and it stays until the cause ends.
  const alarmRow = `[data-testid=alarms] li[data-stream="${FIELD}"][data-alarm=stalled]`;
  await dispatcher.waitForSelector(`${alarmRow}[data-state=active]`, { timeout: STEP_MS });
  s.alarmPanel = { alerts: await dispatcher.evaluate(() => window.__alerts) };
  await shoot('04-stalled', { dispatcher });
  await dispatcher.click(`${alarmRow} [data-testid=acknowledge]`);
  await dispatcher.waitForSelector(`${alarmRow}[data-acknowledged][data-state=active]`, { timeout: STEP_MS });
  s.alarmPanel.acknowledgedBy = await dispatcher.getAttribute(alarmRow, 'data-acknowledged');
  s.alarmPanel.row = await dispatcher.textContent(alarmRow);
  s.alarmPanel.logged = await dispatcher.locator('[data-testid=events] li')
    .filter({ hasText: `acknowledged ${FIELD}: stalled` }).first()
    .textContent({ timeout: STEP_MS });

  result.step = 'hang up';
  const hangUp = Date.now();
  await dispatcher.click(`${tile} [data-action=hangup]`);
  await field.waitForSelector('[data-testid=status][data-state=hung-up]', { timeout: STEP_MS });
  s.hungUp = { ms: Date.now() - hangUp, text: await field.textContent('[data-testid=status]') };
  await dispatcher.waitForSelector(tile, { state: 'detached', timeout: STEP_MS });
  s.hungUp.tileRemovedMs = Date.now() - hangUp;
  // The publisher left, so its alarm ended; the panel keeps it, greyed.
  await dispatcher.waitForSelector(`${alarmRow}[data-state=cleared]`, { timeout: STEP_MS });
  s.alarmPanel.clearedRow = await dispatcher.textContent(alarmRow);
  // No reconnect loop: a while later the page has still stopped.
  await sleep(3000);
  s.hungUp.after3s = await field.evaluate(() => ({
    state: document.querySelector('[data-testid=status]').dataset.state,
    ownVideo: Boolean(document.querySelector('[data-testid=own-video]').srcObject),
    callVisible: !document.querySelector('[data-testid=call-video]').hidden,
  }));
  // A kick that sticks: reloading the join page and going live is refused.
  await field.reload();
  await field.waitForFunction(() => document.querySelector('[data-testid=own-video]')?.videoWidth > 0, null, { timeout: STEP_MS });
  await field.click('[data-testid=go-live]');
  await field.waitForSelector('[data-testid=join-error]:not(:empty)', { timeout: STEP_MS });
  s.hungUp.reloaded = await field.textContent('[data-testid=join-error]');
  // The wall lists who is kept out, and lets them back in at once.
  const keptOut = `[data-testid=bans] .ban[data-identity="${FIELD}"]`;
  await dispatcher.waitForSelector(keptOut, { timeout: STEP_MS });
  s.hungUp.keptOut = await dispatcher.textContent('[data-testid=bans]');
  await shoot('05-hung-up', { dispatcher, field });
  await dispatcher.click(`${keptOut} [data-testid=lift-ban]`);
  await dispatcher.waitForSelector('[data-testid=bans]', { state: 'hidden', timeout: STEP_MS });
  await field.click('[data-testid=go-live]');
  await field.waitForSelector('[data-testid=status][data-state=live]', { timeout: STEP_MS });
  s.hungUp.backIn = await field.textContent('[data-testid=status]');
  await field.context().close();
  await second.close();
  return dispatcher;
}

async function errorScenarios(browser, dispatcher) {
  const e = (result.errors = {});

  result.step = 'wrong admin key';
  const stranger = await newPage(browser, 'stranger', []);
  await stranger.goto(`${args.base}/console/#key=not-the-key`);
  await stranger.waitForSelector('[data-testid=signin-error]:not(:empty)', { timeout: STEP_MS });
  e.wrongKey = await stranger.textContent('[data-testid=signin-error]');
  await shoot('06-wrong-key', { stranger });
  await stranger.context().close();

  result.step = 'expired join link';
  // A token whose claims say it expired (its signature does not matter: the
  // page reads `exp` before it calls the server).
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const expired = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub: 'late', room: ROOM, grants: { publish: true }, iat: 1, exp: 2 })}.x`;
  const late = await newPage(browser, 'late', ['camera', 'microphone']);
  await late.goto(`${args.base}/join/${ROOM}#token=${expired}`);
  await late.waitForSelector('[data-testid=join-error]:not(:empty)', { timeout: STEP_MS });
  e.expiredLink = await late.textContent('[data-testid=join-error]');
  await late.context().close();

  result.step = 'camera denied';
  const denied = await newPage(browser, 'denied', []);
  // --use-fake-ui-for-media-stream grants every request browser-wide, so the
  // person's "Block" is stood in for by what the page then gets from
  // getUserMedia: a NotAllowedError.
  await denied.addInitScript(() => {
    navigator.mediaDevices.getUserMedia = () =>
      Promise.reject(new DOMException('Permission denied', 'NotAllowedError'));
  });
  await denied.goto(`${args.base}/join/${ROOM}?name=nocam`);
  await denied.waitForSelector('[data-testid=join-error]:not(:empty)', { timeout: STEP_MS });
  e.cameraDenied = await denied.textContent('[data-testid=join-error]');
  await shoot('06-camera-denied', { denied });
  await denied.context().close();

  result.step = 'room deleted under a live field user';
  await dispatcher.goto(`${args.base}/console/`);
  await dispatcher.waitForSelector(`tr[data-room="${ROOM}"]`, { timeout: STEP_MS });
  await dispatcher.click(`tr[data-room="${ROOM}"] >> text=Token…`);
  await dispatcher.fill('[data-testid=token-identity]', 'field-3');
  await dispatcher.click('[data-testid=create-token]');
  await dispatcher.waitForSelector('[data-testid=join-link]', { timeout: STEP_MS });
  const joinLink = await dispatcher.inputValue('[data-testid=join-link]');
  const field = await newPage(browser, 'field-3', ['camera', 'microphone']);
  await field.goto(joinLink);
  await field.waitForFunction(() => document.querySelector('[data-testid=own-video]')?.videoWidth > 0, null, { timeout: STEP_MS });
  await field.click('[data-testid=go-live]');
  await field.waitForSelector('[data-testid=status][data-state=live]', { timeout: STEP_MS });
  await dispatcher.click(`tr[data-room="${ROOM}"] >> text=Delete`);
  await field.waitForSelector('[data-testid=status][data-state=room-closed]', { timeout: STEP_MS });
  e.roomDeleted = await field.textContent('[data-testid=status]');
  await shoot('07-room-deleted', { field });
  await field.context().close();

  result.step = 'join link of a deleted room';
  // The same link opened afresh: the page says the room is closed before
  // anyone tries to go live, and offers no Go live.
  const late2 = await newPage(browser, 'field-3-again', ['camera', 'microphone']);
  await late2.goto(joinLink);
  await late2.waitForSelector('[data-testid=status][data-state=room-closed]', { timeout: STEP_MS });
  e.deletedRoomLink = {
    text: await late2.textContent('[data-testid=status]'),
    goLiveVisible: await late2.isVisible('[data-testid=go-live]'),
  };
  await shoot('07-deleted-room-link', { late2 });
  await late2.context().close();
}

runDriver({ result, artifacts: args.artifacts, log, shoot }, async (browser) => {
  const dispatcher = await mainScenario(browser);
  await errorScenarios(browser, dispatcher);
});
