#!/usr/bin/env node
// Drives the console's IP cameras in headless Chromium:
//
//   node console_cameras.mjs --base URL --key ADMIN_KEY --room ROOM \
//     --camera IDENTITY --other IDENTITY --password PASSWORD --puller yes|no \
//     [--artifacts DIR]
//
// On the rooms page the admin adds an RTSP camera whose URL is a closed
// port (rtsp://127.0.0.1:9/cam), with a user name and a password: the list
// shows it with the URL the server masks, and the password is nowhere in
// the page. Adding it again is refused by the server, which the form says.
// The room's wall has a tile for it although it is not live, without "Call
// back" or "Hang up", and its "camera offline" alarm (in the list and on
// the tile). With `--puller yes` (the gateway pulls cameras) its state
// reaches "unreachable" in the list and on the tile. The admin edits it
// (another closed port, UDP, the password left empty: kept); while the
// form is open the test adds another camera over gRPC ("add-other"), which
// both pages show at once, and the half-typed form stays, focused. The
// driver asks the test to check the server's copy ("edited"); then removes
// the camera, and it goes from the list and the wall ("removed" lets the
// test check the server); the other one stays. stdout carries one line
// {"result": {...}}; console_cameras_chromium.rs asserts on it.

import { ask, consoleDriver, openWall, runDriver, STEP_MS, tile } from './console_common.mjs';

const { args, result, log, shoot, newPage } = consoleDriver('console-cameras', ['base', 'key', 'room', 'camera', 'other', 'password', 'puller']);
const CAM = args.camera;
const OTHER = args.other;
const PULLER = args.puller === 'yes';
const SECTION = `[data-testid=cameras][data-room="${args.room}"]`;
const ROW = `${SECTION} tr[data-camera="${CAM}"]`;
const T = tile(CAM);

/** The camera's row on the rooms page as shown (run in the page). */
function listed(row) {
  const r = document.querySelector(row);
  if (!r) return null;
  const text = (id) => r.querySelector(`[data-testid=${id}]`)?.textContent ?? null;
  return {
    url: text('camera-url'),
    transport: text('camera-transport'),
    onDemand: text('camera-on-demand'),
    state: r.dataset.cameraState,
    stateText: text('camera-state'),
    detail: text('camera-detail'),
  };
}

/** The camera's tile on the wall (run in the page). */
function tileShown(t) {
  const el = document.querySelector(t);
  if (!el) return null;
  const actions = [...el.querySelectorAll('[data-action]')].filter((b) => !b.hidden).map((b) => b.dataset.action);
  return {
    cameraState: el.dataset.cameraState ?? null,
    isCamera: 'camera' in el.dataset,
    badge: el.querySelector('[data-testid=camera-state]')?.textContent ?? null,
    notice: el.querySelector('[data-testid=tile-notice]')?.hidden === false ? el.querySelector('[data-testid=tile-notice]').textContent : null,
    status: el.querySelector('[data-testid=tile-status]')?.textContent ?? null,
    actions,
  };
}

/** Where `secret` shows in the page: its markup, or an input's value. */
function leaks(secret) {
  const where = [];
  if (document.documentElement.outerHTML.includes(secret)) where.push('markup');
  for (const input of document.querySelectorAll('input')) if (input.value.includes(secret)) where.push(`input ${input.name}`);
  if (document.body.innerText.includes(secret)) where.push('text');
  return where;
}

runDriver({ result, artifacts: args.artifacts, log, shoot }, async (browser) => {
  result.step = 'the rooms page lists no camera';
  const rooms = await newPage(browser, 'rooms');
  await rooms.goto(`${args.base}/console/#key=${args.key}`);
  await rooms.waitForSelector(`${SECTION} [data-testid=camera-list]`, { timeout: STEP_MS });
  await rooms.waitForFunction((s) => /No IP cameras/.test(document.querySelector(`${s} [data-testid=camera-list]`)?.textContent ?? ''), SECTION, { timeout: STEP_MS });

  result.step = 'add a camera';
  const addForm = `${SECTION} [data-testid=add-ip-camera]`;
  const fillAdd = async () => {
    await rooms.click(`${addForm} summary`);
    await rooms.fill(`${addForm} [data-testid=camera-identity]`, CAM);
    await rooms.fill(`${addForm} [data-testid=camera-url]`, 'rtsp://127.0.0.1:9/cam');
    await rooms.fill(`${addForm} [data-testid=camera-username]`, 'admin');
    await rooms.fill(`${addForm} [data-testid=camera-password]`, args.password);
    await rooms.click(`${addForm} [data-testid=add-camera-submit]`);
  };
  await fillAdd();
  await rooms.waitForSelector(ROW, { timeout: STEP_MS });
  result.steps.added = await rooms.evaluate(listed, ROW);
  result.steps.addedLeaks = await rooms.evaluate(leaks, args.password);
  await shoot('1-added', { rooms });

  result.step = 'adding it again is refused in place';
  await fillAdd();
  const formError = `${addForm} [data-testid=camera-form-error]`;
  await rooms.waitForFunction((e) => document.querySelector(e)?.textContent, formError, { timeout: STEP_MS });
  result.steps.duplicate = await rooms.textContent(formError);
  await shoot('2-duplicate', { rooms });
  // The refused password stays in the form for a retry; out it goes.
  await rooms.fill(`${addForm} [data-testid=camera-password]`, '');
  await rooms.click(`${addForm} summary`);

  result.step = 'the wall has a tile for the camera';
  const wall = await newPage(browser, 'wall');
  await openWall(wall, args.base, args.key, args.room);
  await wall.waitForSelector(`${T}[data-camera-state]`, { timeout: STEP_MS });
  result.steps.tile = await wall.evaluate(tileShown, T);
  result.steps.wallLeaks = await wall.evaluate(leaks, args.password);

  result.step = 'the wall raises the camera-offline alarm';
  const alarm = `[data-testid=alarms] li[data-alarm="camera offline"][data-stream="${CAM}"]`;
  await wall.waitForSelector(alarm, { timeout: STEP_MS });
  result.steps.alarm = await wall.textContent(alarm);
  // On the tile too, though it may have been raised before the wall's feed.
  const badge = `${T} [data-alarm="camera offline"]`;
  await wall.waitForSelector(badge, { timeout: STEP_MS });
  result.steps.alarmBadge = await wall.textContent(badge);
  await shoot('3-wall', { wall });

  if (PULLER) {
    result.step = 'unreachable in the list and on the tile';
    await rooms.waitForSelector(`${ROW}[data-camera-state=unreachable]`, { timeout: STEP_MS });
    await wall.waitForSelector(`${T}[data-camera-state=unreachable]`, { timeout: STEP_MS });
    result.steps.unreachable = { listed: await rooms.evaluate(listed, ROW), tile: await wall.evaluate(tileShown, T) };
    await shoot('4-unreachable', { rooms, wall });
  }

  result.step = 'edit the camera';
  await rooms.click(`${ROW} [data-action=edit-camera]`);
  const editForm = `${SECTION} tr[data-editing="${CAM}"]`;
  await rooms.waitForSelector(editForm, { timeout: STEP_MS });
  result.steps.editPassword = await rooms.$eval(`${editForm} [data-testid=camera-password]`, (i) => ({ type: i.type, value: i.value, placeholder: i.placeholder }));
  await rooms.fill(`${editForm} [data-testid=camera-url]`, 'rtsp://127.0.0.1:10/cam2');

  result.step = 'a camera added elsewhere shows on both pages';
  await ask('add-other');
  await rooms.waitForSelector(`${SECTION} tr[data-camera="${OTHER}"]`, { timeout: STEP_MS });
  await wall.waitForSelector(`${tile(OTHER)}[data-camera-state]`, { timeout: STEP_MS });
  result.steps.other = { listed: await rooms.evaluate(listed, `${SECTION} tr[data-camera="${OTHER}"]`), tile: await wall.evaluate(tileShown, tile(OTHER)) };
  // The list was read again meanwhile: the form being typed in is still there.
  result.steps.editSurvived = await rooms.evaluate((f) => {
    const url = document.querySelector(`${f} [data-testid=camera-url]`);
    return { value: url?.value ?? null, focused: Boolean(url) && document.activeElement === url };
  }, editForm);
  await shoot('5-other', { rooms, wall });

  result.step = 'save the edit';
  await rooms.selectOption(`${editForm} [data-testid=camera-transport-select]`, { label: 'UDP (less delay on a clean LAN)' });
  await rooms.click(`${editForm} [data-testid=save-camera]`);
  await rooms.waitForSelector(editForm, { state: 'detached', timeout: STEP_MS });
  await rooms.waitForFunction((r) => document.querySelector(`${r} [data-testid=camera-transport]`)?.textContent === 'UDP', ROW, { timeout: STEP_MS });
  result.steps.edited = await rooms.evaluate(listed, ROW);
  await shoot('6-edited', { rooms });
  await ask('edited');
  if (PULLER) {
    // Pulled again from the new URL: connecting, then unreachable again.
    await rooms.waitForSelector(`${ROW}[data-camera-state=unreachable]`, { timeout: STEP_MS });
    await wall.waitForSelector(`${T}[data-camera-state=unreachable]`, { timeout: STEP_MS });
  }
  result.steps.tileAfterEdit = await wall.evaluate(tileShown, T);

  result.step = 'remove the camera';
  // confirm() is accepted (newPage).
  await rooms.click(`${ROW} [data-action=remove-camera]`);
  await rooms.waitForSelector(ROW, { state: 'detached', timeout: STEP_MS });
  await wall.waitForSelector(T, { state: 'detached', timeout: STEP_MS });
  result.steps.removed = {
    list: await rooms.textContent(`${SECTION} [data-testid=camera-list]`),
    tiles: await wall.$$eval('[data-testid=tile]', (tiles) => tiles.map((t) => t.dataset.identity)),
    events: await wall.$$eval('[data-testid=events] li', (items) => items.map((li) => li.textContent)),
  };
  await shoot('7-removed', { rooms, wall });
  await ask('removed');
  result.ok = true;
});
