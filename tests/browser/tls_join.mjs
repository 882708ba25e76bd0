// A field user goes live from the console's join page over https://, on a
// non-loopback address, against Vigil's own TLS (issue 14): browsers give
// the camera to secure contexts only.
//
//   node tls_join.mjs --base https://10.231.0.1:PORT --link BASE/join/ROOM#token=... --spki BASE64
//
// First without trusting anything: the page must not load (the
// certificate is Vigil's own CA's). Then trusting the CA's key only
// (--ignore-certificate-errors-spki-list, which accepts a chain that
// contains that key, nothing else): the page is a secure context, the
// camera opens, and the page goes live. It also fetches /ca.crt. Prints
// one JSON line: {"result": {...}}; the test asserts on it and on the
// media that reached the server.

import { attempt, emit, launchChromium, runMain } from './chromium.mjs';
import { STEP_MS, goLive, parseArgs, statusOf } from './console_common.mjs';

const args = parseArgs({});
const log = (...parts) => console.error('[tls-join]', ...parts);
const result = { ok: false, step: 'launch', steps: {} };

runMain(async () => {
  if (!args.base || !args.link || !args.spki) {
    console.error('usage: node tls_join.mjs --base URL --link JOIN_LINK --spki BASE64');
    process.exit(2);
  }
  await attempt(result, log, async () => {
    result.step = 'untrusted';
    const untrusted = await launchChromium({ loopback: false });
    try {
      const page = await untrusted.newPage();
      // A fresh Chromium in a fresh namespace may still see its network
      // settle (ERR_NETWORK_CHANGED): that is no verdict on the certificate.
      let refused = null;
      for (let attempt = 0; attempt < 5; attempt++) {
        refused = await page.goto(`${args.base}/healthz`).then(() => null, (e) => String(e));
        if (!refused?.includes('ERR_NETWORK_CHANGED')) break;
        await new Promise((r) => setTimeout(r, 500));
      }
      result.steps.untrusted = { refused };
    } finally {
      await untrusted.close().catch(() => {});
    }

    result.step = 'trusted';
    const browser = await launchChromium({
      loopback: false,
      args: [`--ignore-certificate-errors-spki-list=${args.spki}`],
    });
    result.browserVersion = browser.version();
    try {
      const context = await browser.newContext({ permissions: ['camera', 'microphone'] });
      const page = await context.newPage();
      page.on('console', (m) => log('page:', m.type(), m.text()));
      // The same settling as above, now with the CA trusted: /healthz loads.
      result.step = 'trusted healthz';
      for (let attempt = 0; ; attempt++) {
        const failed = await page.goto(`${args.base}/healthz`).then(() => null, (e) => String(e));
        if (!failed) break;
        if (!failed.includes('ERR_NETWORK_CHANGED') || attempt >= 4) throw new Error(failed);
        await new Promise((r) => setTimeout(r, 500));
      }
      result.step = 'go live';
      await goLive(page, args.link, STEP_MS);
      result.steps.secureContext = await page.evaluate(() => window.isSecureContext);
      result.steps.origin = await page.evaluate(() => location.origin);
      result.steps.status = await statusOf(page);
      result.step = 'ca.crt';
      result.steps.ca = await page.evaluate(async (base) => {
        const response = await fetch(`${base}/ca.crt`);
        const bytes = new Uint8Array(await response.arrayBuffer());
        return {
          status: response.status,
          type: response.headers.get('content-type'),
          hex: Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join(''),
        };
      }, args.base);
      // Tell the test the page is live; it checks the media, then answers.
      result.step = 'media checked by the test';
      emit({ event: 'live' });
      await new Promise((resolve) => process.stdin.once('data', resolve));
      result.steps.statusAfter = await statusOf(page);
    } finally {
      await browser.close().catch(() => {});
    }
  });
  emit({ result });
}, log);
