// Launches Debian's headless Chromium for the browser tests, on a fresh
// temporary profile that Playwright deletes on close, with fake camera and
// microphone that every page may use.

import { chromium } from 'playwright-core';

/** `loopback`: let WebRTC gather loopback candidates (--allow-loopback-in-peer-connection). */
export function launchChromium({ loopback }) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
      ...(loopback ? ['--allow-loopback-in-peer-connection'] : []),
    ],
  });
}
