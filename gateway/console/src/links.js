// Links for other people and devices (join pages, OBS) start with the URL
// they reach Vigil at: `--public-url`, which the server hands the console in
// /console/config.json, or else this page's own origin. A link on a
// loopback address is flagged: only this computer can open it.

let base;

/** The base of links for others: the public URL, else this page's origin. */
export function publicBase() {
  base ??= fetch("/console/config.json", { cache: "no-cache" })
    .then((response) => (response.ok ? response.json() : {}))
    .then((config) => config.publicUrl || location.origin)
    .catch(() => location.origin);
  return base;
}

/** Whether `url` names this computer only (localhost, 127.0.0.0/8, ::1). */
export function isLoopback(url) {
  const host = new URL(url).hostname;
  return host === "localhost" || host.endsWith(".localhost") || host === "[::1]" || /^127\./.test(host);
}
