// Launches Debian's headless Chromium for the browser tests, on a fresh
// temporary profile that Playwright deletes on close, with fake camera and
// microphone that every page may use; and what every driver does around
// its run: the JSON lines on stdout, the result marked ok or failed, and a
// crash that still ends in a result line.

import { chromium } from 'playwright-core';

/**
 * `loopback`: let WebRTC gather loopback candidates (--allow-loopback-in-peer-connection);
 * `args`: more command-line flags.
 */
export function launchChromium({ loopback, args = [] }) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
      ...(loopback ? ['--allow-loopback-in-peer-connection'] : []),
      ...args,
    ],
  });
}

/** One JSON line on stdout: `{"event": ...}` or, last, `{"result": ...}`. */
export const emit = (object) => process.stdout.write(JSON.stringify(object) + '\n');

/**
 * Awaits `run()`; then `result` is ok at step "done", or holds the error it
 * threw (logged with the step it failed at). Resolves to whether it ran
 * through.
 */
export async function attempt(result, log, run) {
  try {
    await run();
    result.ok = true;
    result.step = 'done';
    return true;
  } catch (e) {
    result.error = String(e?.stack ?? e);
    log('failed at', result.step, e);
    return false;
  }
}

/** Runs `main`, then exits; a crash still ends in a `{"result": {ok: false}}` line. */
export function runMain(main, log) {
  main().then(() => process.exit(0), (e) => {
    log('fatal:', e);
    emit({ result: { ok: false, step: 'driver', error: String(e?.stack ?? e) } });
    process.exit(1);
  });
}
