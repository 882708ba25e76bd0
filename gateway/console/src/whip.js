// A WHIP (RFC 9725) / WHEP client for the browser: one POST with a complete
// offer (candidates gathered first, no trickle), DELETE to leave.

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
    setup(pc);
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    const response = await fetch(this.endpoint, {
      method: "POST",
      headers: { "content-type": "application/sdp", ...auth(this.token) },
      body: pc.localDescription.sdp,
    });
    if (response.status !== 201) {
      pc.close();
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
 * Plays a WHEP endpoint into `video`. While the stream is not live yet (409
 * with Retry-After), retries until `signal` aborts.
 */
export async function play(endpoint, token, video, { signal, onState } = {}) {
  for (;;) {
    const session = new Session(endpoint, token, { onState });
    const stream = new MediaStream();
    try {
      await session.start((pc) => {
        pc.addTransceiver("video", { direction: "recvonly" });
        pc.addTransceiver("audio", { direction: "recvonly" });
        pc.addEventListener("track", (event) => {
          stream.addTrack(event.track);
          video.srcObject = stream;
        });
      });
      if (signal?.aborted) {
        session.close();
        throw new DOMException("aborted", "AbortError");
      }
      return session;
    } catch (e) {
      if (!(e instanceof HttpError) || e.status !== 409 || signal?.aborted) throw e;
      await new Promise((resolve) => setTimeout(resolve, (e.retryAfter || 2) * 1000));
    }
  }
}

/** Bitrate, resolution and frame rate of a receiving connection, sampled twice. */
export class InboundStats {
  constructor(pc) {
    this.pc = pc;
    this.last = null;
  }

  async sample() {
    const report = await this.pc.getStats();
    let bytes = 0;
    let video = null;
    report.forEach((s) => {
      if (s.type !== "inbound-rtp") return;
      bytes += s.bytesReceived || 0;
      if (s.kind === "video") video = s;
    });
    const now = performance.now();
    const bitrate = this.last ? ((bytes - this.last.bytes) * 8 * 1000) / (now - this.last.at) : 0;
    this.last = { bytes, at: now };
    return {
      bitrate: Math.max(0, bitrate),
      width: video?.frameWidth || 0,
      height: video?.frameHeight || 0,
      fps: video?.framesPerSecond || 0,
    };
  }
}
