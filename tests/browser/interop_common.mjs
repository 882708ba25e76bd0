// What the interop drivers (interop_whip_whep.mjs, simulcast.mjs) share:
// arguments, the JSON-lines protocol on stdout, the throwaway page server
// (so every request to Vigil is cross-origin), each side in a browser
// context of its own, and the teardown that stops every session, takes
// screenshots and writes the result file.

import { createServer } from 'node:http';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { attempt, emit, launchChromium, runMain } from './chromium.mjs';

export { emit, runMain };

const HERE = dirname(fileURLToPath(import.meta.url));

/** `--key value` pairs over `defaults`; exits with `usage` without --whip and --whep. */
export function parseArgs(defaults, usage) {
  const args = { ...defaults };
  for (let i = 2; i < process.argv.length; i += 2) {
    args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];
  }
  if (!args.whip || !args.whep) {
    console.error(`usage: ${usage}`);
    process.exit(2);
  }
  return args;
}

/** Diagnostics on stderr, tagged. */
export const logger = (tag) => (...parts) => console.error(`[${tag}]`, ...parts);

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Serves this directory's interop-* files on 127.0.0.1 (a port of its own). */
export async function servePages() {
  const types = { '.html': 'text/html', '.js': 'text/javascript' };
  const server = createServer(async (req, res) => {
    const name = new URL(req.url, 'http://x').pathname.slice(1);
    if (!/^interop-[\w-]+\.(html|js)$/.test(name)) {
      res.writeHead(404).end();
      return;
    }
    try {
      const body = await readFile(join(HERE, name));
      res.writeHead(200, { 'Content-Type': types[extname(name)], 'Cache-Control': 'no-store' }).end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, origin: `http://127.0.0.1:${server.address().port}` };
}

/**
 * Opens `pages` ({side: file}) from `origin`, each in a browser context of
 * its own, like people on separate machines (only the publisher may use the
 * camera, so the players' host candidates are mDNS names, as for any WHEP
 * viewer page), and waits until each says it is ready. Browser console lines
 * go to `consoleLines`. Fills and returns `ctx` ({side: page}) as it goes,
 * so a failure half-way leaves the opened pages for the teardown.
 */
async function openPages(browser, origin, pages, consoleLines, ctx = {}) {
  for (const [side, file] of Object.entries(pages)) {
    const context = await browser.newContext(
      side === 'publisher' ? { permissions: ['camera', 'microphone'] } : {});
    const page = await context.newPage();
    page.on('console', (m) => consoleLines.push(`[${side}] ${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => consoleLines.push(`[${side}] pageerror: ${e.message}`));
    await page.goto(`${origin}/${file}`);
    await page.waitForFunction(() => window.interopReady === true);
    ctx[side] = page;
  }
  return ctx;
}

/**
 * Screenshots of every side into the artifacts directory (if given), then
 * each page stops its session: `into(side)` gets its DELETE status and HTTP
 * log. Failures here are reported, never thrown: screenshots are for people.
 */
async function stopPages(ctx, sides, args, log, into) {
  if (args.artifacts) {
    await mkdir(args.artifacts, { recursive: true }).catch(() => {});
    for (const side of sides) {
      await ctx[side]?.screenshot({ path: join(args.artifacts, `${args.name}-${side}.png`) })
        .catch((e) => log(`screenshot of the ${side}: ${e}`));
    }
  }
  for (const side of sides) {
    const page = ctx[side];
    if (!page) continue;
    const target = into(side);
    target.deleteStatus = await page.evaluate(() => window.interop.stop()).catch((e) => `error: ${e}`);
    target.log = await page.evaluate(() => window.interop.log()).catch(() => null);
  }
}

/**
 * Serves the pages, launches Chromium (allowed loopback candidates), opens
 * `pages` ({side: file}) and calls `run(ctx)` with {side: page}. Marks
 * `result` ok or records the step it failed at and the error; whatever
 * happened, `collect()` runs, then every page stops its session (its DELETE
 * status and HTTP log go into `into(side)`), screenshots are taken and the
 * browser closes.
 */
export async function drive({ args, log, result, pages, into, run, collect = () => {} }) {
  const { server, origin } = await servePages();
  result.pagesOrigin = origin;
  // A fresh temporary profile that Playwright deletes on close.
  const browser = await launchChromium({ loopback: true });
  const ctx = {};
  try {
    await attempt(result, log, async () => {
      result.browserVersion = browser.version();
      await openPages(browser, origin, pages, result.console, ctx);
      result.userAgent = await ctx.publisher.evaluate(() => navigator.userAgent);
      await run(ctx);
    });
  } finally {
    collect();
    await stopPages(ctx, Object.keys(pages), args, log, into);
    await browser.close().catch(() => {});
    server.close();
  }
}

/** Writes the result file (if asked) and prints the final `{"result": ...}` line. */
export async function finish(args, result, log) {
  if (args.artifacts) {
    await writeFile(join(args.artifacts, `${args.name}-result.json`), JSON.stringify(result, null, 2))
      .catch((e) => log(`writing the result file: ${e}`));
  }
  emit({ result });
}
