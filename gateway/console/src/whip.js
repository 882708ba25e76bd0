// A WHIP (RFC 9725) / WHEP client for the browser: one POST with a complete
// offer (candidates gathered first, no trickle), DELETE to leave.

import { Alarm, Backoff } from "./retry.js";

/** A refused WHIP/WHEP request, with the server's explanation. */
export class HttpError extends Error {
  constructor(status, detail, retryAfter) {
    super(detail || `HTTP ${status}`);
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

/** ICE servers the endpoint announces in `Link: <...>; rel="ice-server"` (RFC 9725 §4.4). */
async function iceServers(endpoint, token) {
  try {
    const response = await fetch(endpoint, { method: "OPTIONS", headers: auth(token) });
    const servers = [];
    for (const link of (response.headers.get("link") || "").split(/,(?=\s*<)/)) {
      const match = /<([^>]+)>(.*)/.exec(link.trim());
      if (!match || !/rel="ice-server"/.test(match[2])) continue;
      const param = (name) => new RegExp(`${name}="([^"]*)"`).exec(match[2])?.[1];
      servers.push({ urls: match[1], username: param("username"), credential: param("credential") });
    }
    return servers;
  } catch {
    return [];
  }
}

function auth(token) {
  return token ? { authorization: `Bearer ${token}` } : {};
}

function gathered(pc, timeoutMs = 3000) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      if (pc.iceGatheringState !== "complete") return;
      pc.removeEventListener("icegatheringstatechange", done);
      resolve();
    };
    pc.addEventListener("icegatheringstatechange", done);
    // Send what we have rather than wait on an unreachable STUN server.
    setTimeout(resolve, timeoutMs);
  });
}

/**
 * One WHIP or WHEP session. `setup(pc)` adds tracks or transceivers;
 * `onState` hears the connection state ("connecting", "connected",
 * "failed", "closed").
 */
export class Session {
  constructor(endpoint, token, { onState = () => {} } = {}) {
    this.endpoint = endpoint;
    this.token = token;
    this.onState = onState;
    this.pc = null;
    this.location = null;
  }

  async start(setup) {
    const pc = new RTCPeerConnection({ iceServers: await iceServers(this.endpoint, this.token), bundlePolicy: "max-bundle" });
    this.pc = pc;
    pc.addEventListener("connectionstatechange", () => this.onState(pc.connectionState));
    try {
      setup(pc);
      await pc.setLocalDescription(await pc.createOffer());
      await gathered(pc);
      const response = await fetch(this.endpoint, {
        method: "POST",
        headers: { "content-type": "application/sdp", ...auth(this.token) },
        body: pc.localDescription.sdp,
      });
      if (response.status !== 201) {
        let detail = "";
        try {
          detail = (await response.json()).detail;
        } catch {
          // Not a problem document.
        }
        throw new HttpError(response.status, detail, Number(response.headers.get("retry-after")) || 0);
      }
      this.location = new URL(response.headers.get("location"), this.endpoint).href;
      await pc.setRemoteDescription({ type: "answer", sdp: await response.text() });
    } catch (e) {
      // Unreachable server, refusal or a bad answer: nothing is left open.
      this.close();
      throw e;
    }
    return pc;
  }

  /** Closes the connection when the server has already ended the session. */
  forget() {
    this.location = null;
    this.close();
  }

  /** Ends the session on the server too (sent even while the page unloads). */
  close() {
    if (this.location) {
      fetch(this.location, { method: "DELETE", headers: auth(this.token), keepalive: true }).catch(() => {});
      this.location = null;
    }
    this.pc?.close();
    this.pc = null;
  }
}

/** Publishes `stream`'s tracks to a WHIP endpoint. */
export async function publish(endpoint, token, stream, options) {
  const session = new Session(endpoint, token, options);
  await session.start((pc) => {
    for (const track of stream.getTracks()) pc.addTransceiver(track, { direction: "sendonly", streams: [stream] });
  });
  return session;
}

/**
 * Whether a failed WHIP/WHEP request may succeed later: the stream is not
 * live (409), the server is busy or draining (429, 503) or failing (5xx),
 * or it could not be reached (fetch's TypeError).
 */
export function retriable(e) {
  if (e instanceof HttpError) return e.status === 409 || e.status === 429 || e.status >= 500;
  return e instanceof TypeError;
}

/** How long a connection may stay `disconnected` before it is given up and made anew. */
const DISCONNECTED_MS = 5000;
/** How long without a new video frame makes a connected player "frozen". */
const FROZEN_MS = 3000;

/**
 * A WHEP player that keeps playing `endpoint` into `video`. It connects
 * again, with backoff, while nobody publishes the stream (409), while the
 * server is draining or unreachable, and after its session ended (the
 * connection failed or closed, or stayed disconnected for 5 s, or `lost()`
 * said the server closed it). `wake()` tries at once (the stream is back).
 * The last picture stays in `video` meanwhile. `onState(state, error)`:
 *
 * - "connecting": a WHEP request is under way
 * - "playing": connected, and decoding (or no video to decode)
 * - "frozen": connected, but no new video frame for 3 s
 * - "waiting": nobody publishes the stream (409); trying again
 * - "retrying": no session (server unreachable or session ended); trying again
 * - "failed": refused for good (token, room): `error` says why
 */
export class Player {
  constructor(endpoint, token, video, { onState = () => {} } = {}) {
    this.endpoint = endpoint;
    this.token = token;
    this.video = video;
    this.onState = onState;
    this.state = null;
    this.session = null;
    this.closed = false;
    this.alarm = new Alarm();
    this.endSession = null;
    this.run();
  }

  /** The current connection, if any (for statistics). */
  get pc() {
    return this.session?.pc ?? null;
  }

  /** Try again now: the stream is said to be back. */
  wake() {
    this.alarm.wake();
  }

  /** The server closed this player's session (its events said so). */
  lost() {
    this.session?.forget();
    this.endSession?.();
  }

  close() {
    this.closed = true;
    this.session?.close();
    this.endSession?.();
    this.alarm.wake();
  }

  setState(state, error = null) {
    if (this.closed || (state === this.state && !error)) return;
    this.state = state;
    this.onState(state, error);
  }

  async run() {
    const backoff = new Backoff();
    while (!this.closed) {
      this.setState("connecting");
      let session;
      try {
        session = await this.connect();
      } catch (e) {
        if (this.closed) return;
        if (!retriable(e)) return this.setState("failed", e);
        this.setState(e.status === 409 ? "waiting" : "retrying", e);
        await this.alarm.sleep(backoff.next((e.retryAfter || 0) * 1000));
        continue;
      }
      if (this.closed) return session.close();
      this.session = session;
      if (await this.untilEnded(session.pc)) backoff.reset();
      session.close();
      this.session = null;
      if (this.closed) return;
      this.setState("retrying");
      await this.alarm.sleep(backoff.next());
    }
  }

  async connect() {
    const session = new Session(this.endpoint, this.token);
    const stream = new MediaStream();
    await session.start((pc) => {
      pc.addTransceiver("video", { direction: "recvonly" });
      pc.addTransceiver("audio", { direction: "recvonly" });
      pc.addEventListener("track", (event) => {
        stream.addTrack(event.track);
        // Only now: until the new session has media, the old picture stays.
        this.video.srcObject = stream;
      });
    });
    return session;
  }

  /**
   * Watches a session until it ends; says "playing" or "frozen" meanwhile.
   * Resolves to whether it ever connected.
   */
  untilEnded(pc) {
    return new Promise((resolve) => {
      let connected = false;
      let done = false;
      let disconnectedAt = 0;
      let frames = 0;
      let framesAt = Date.now();
      const end = () => {
        if (done) return;
        done = true;
        clearInterval(timer);
        pc.removeEventListener("connectionstatechange", check);
        this.endSession = null;
        resolve(connected);
      };
      const check = async () => {
        const state = pc.connectionState;
        if (state === "failed" || state === "closed") return end();
        if (state === "disconnected") {
          disconnectedAt ||= Date.now();
          if (Date.now() - disconnectedAt > DISCONNECTED_MS) return end();
          return this.setState("retrying");
        }
        disconnectedAt = 0;
        if (state !== "connected") return;
        if (!connected) {
          connected = true;
          framesAt = Date.now();
        }
        const decoded = await framesDecoded(pc);
        if (done) return;
        if (decoded === null || decoded > frames) {
          frames = decoded ?? frames;
          framesAt = Date.now();
          this.setState("playing");
        } else if (frames > 0 && Date.now() - framesAt >= FROZEN_MS) {
          this.setState("frozen");
        } else if (this.state !== "frozen") {
          this.setState("playing");
        }
      };
      this.endSession = end;
      pc.addEventListener("connectionstatechange", check);
      const timer = setInterval(check, 1000);
      check();
    });
  }
}

/** Video frames a connection has decoded, or null if it receives no video. */
async function framesDecoded(pc) {
  let frames = null;
  try {
    (await pc.getStats()).forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "video") frames = s.framesDecoded ?? 0;
    });
  } catch {
    // Closed meanwhile.
  }
  return frames;
}
