// A minimal WHIP (RFC 9725) / WHEP client written for Vigil's interop tests.
// It uses nothing but RTCPeerConnection and fetch, as a web page would:
//
//   POST offer (application/sdp) -> 201 + Location + ETag, apply the answer;
//   optionally trickle candidates with PATCH (application/trickle-ice-sdpfrag,
//   If-Match: <ETag>), restart ICE with PATCH (200 + the server's new
//   ufrag/pwd), DELETE at the end.
//
// Every HTTP exchange is recorded in `session.log` so the test can assert on
// what a real browser saw (statuses, and which headers CORS let it read).

const SDP = 'application/sdp';
const FRAG = 'application/trickle-ice-sdpfrag';

/** Resolves once ICE gathering is complete (candidates are in the SDP). */
function gatheringComplete(pc, timeoutMs = 10000) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`ICE gathering still ${pc.iceGatheringState} after ${timeoutMs} ms`)),
      timeoutMs);
    pc.addEventListener('icegatheringstatechange', function check() {
      if (pc.iceGatheringState === 'complete') {
        clearTimeout(timer);
        pc.removeEventListener('icegatheringstatechange', check);
        resolve();
      }
    });
  });
}

/** The value of the first `a=<name>:` line in an SDP blob. */
export function sdpAttr(sdp, name) {
  const line = sdp.split(/\r?\n/).find((l) => l.startsWith(`a=${name}:`));
  return line ? line.slice(name.length + 3).trim() : null;
}

/** All `a=candidate:` lines of an SDP blob. */
function sdpCandidates(sdp) {
  return sdp.split(/\r?\n/).filter((l) => l.startsWith('a=candidate:'));
}

export class WhipWhepSession {
  /**
   * @param {string} endpoint  the WHIP or WHEP endpoint URL
   * @param {RTCPeerConnection} pc  with its transceivers already added
   * @param {{trickle?: boolean}} options  trickle: POST the offer before
   *   gathering and send candidates with PATCH; otherwise wait for gathering
   *   and POST a complete offer.
   */
  constructor(endpoint, pc, { trickle = false } = {}) {
    this.endpoint = endpoint;
    this.pc = pc;
    this.trickle = trickle;
    this.log = [];          // {method, status, contentType, etag, location, ...}
    this.url = null;        // the session URL (Location, resolved)
    this.etag = null;
    this.answer = null;     // the SDP answer as last applied
    this.pendingCandidates = [];
    this.patchQueue = Promise.resolve();
  }

  /** Records one HTTP exchange with the headers a page can read under CORS. */
  record(method, response, extra = {}) {
    const h = (name) => response.headers.get(name);
    const entry = {
      method, status: response.status, contentType: h('content-type'),
      location: h('location'), etag: h('etag'), acceptPatch: h('accept-patch'), ...extra,
    };
    this.log.push(entry);
    return entry;
  }

  /** POSTs the offer and applies the answer. */
  async start() {
    if (this.trickle) {
      // Queue candidates until the session URL is known, then PATCH them.
      this.pc.addEventListener('icecandidate', (e) => this.onCandidate(e.candidate));
    }
    const offer = await this.pc.createOffer();
    await this.pc.setLocalDescription(offer);
    // Trickle: the offer as created, before any candidate (they all go by
    // PATCH). Otherwise: the local description once it holds every candidate.
    if (!this.trickle) await gatheringComplete(this.pc);
    const sdp = this.trickle ? offer.sdp : this.pc.localDescription.sdp;
    const response = await fetch(this.endpoint, {
      method: 'POST', headers: { 'Content-Type': SDP }, body: sdp,
    });
    const body = await response.text();
    const offered = sdpCandidates(sdp);
    this.record('POST', response, {
      offerCandidates: offered.length,
      offerMdnsCandidates: offered.filter((c) => c.split(' ')[4]?.endsWith('.local')).length,
      answerCandidates: sdpCandidates(body),
    });
    if (response.status !== 201) throw new Error(`POST ${this.endpoint}: ${response.status} ${body}`);
    const location = response.headers.get('location');
    if (!location) throw new Error('201 without a readable Location header (CORS Access-Control-Expose-Headers?)');
    this.url = new URL(location, this.endpoint).href;
    this.etag = response.headers.get('etag');
    this.answer = body;
    await this.pc.setRemoteDescription({ type: 'answer', sdp: body });
    // Candidates gathered while the POST was in flight go out now.
    for (const candidate of this.pendingCandidates.splice(0)) this.onCandidate(candidate);
  }

  /** One ICE candidate (null: gathering done) -> a PATCH, in order. */
  onCandidate(candidate) {
    if (!this.url) {
      this.pendingCandidates.push(candidate);
      return;
    }
    let frag = this.fragHeader(candidate?.sdpMid);
    frag += candidate ? `a=${candidate.candidate}\r\n` : 'a=end-of-candidates\r\n';
    this.patchQueue = this.patchQueue.then(() => this.patch(frag, { trickle: true }))
      .catch((e) => console.error(`trickle PATCH failed: ${e}`));
  }

  /**
   * The start of a trickle-ice-sdpfrag (RFC 8840): the current local
   * ufrag/pwd and the m-line of the bundle's first section (or `mid`).
   */
  fragHeader(mid) {
    const local = this.pc.localDescription.sdp;
    const transceiver = this.pc.getTransceivers().find((t) => mid == null || t.mid === mid);
    return `a=ice-ufrag:${sdpAttr(local, 'ice-ufrag')}\r\na=ice-pwd:${sdpAttr(local, 'ice-pwd')}\r\n`
      + `m=${transceiver.receiver.track.kind} 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:${transceiver.mid}\r\n`;
  }

  /** Sends one PATCH with If-Match: <current ETag>. */
  async patch(frag, extra = {}) {
    const response = await fetch(this.url, {
      method: 'PATCH', headers: { 'Content-Type': FRAG, 'If-Match': this.etag }, body: frag,
    });
    const body = await response.text();
    return { entry: this.record('PATCH', response, { ...extra, sent: frag }), body };
  }

  /** Waits until every trickle PATCH queued so far has been answered. */
  async trickled() {
    await this.patchQueue;
  }

  /**
   * ICE restart over PATCH (RFC 9725 §4.4.2): new local ufrag/pwd and
   * candidates go to the server; its 200 carries new ufrag/pwd (and
   * candidates) which replace those of the previous answer.
   */
  async restartIce() {
    const oldEtag = this.etag;
    const oldRemoteUfrag = sdpAttr(this.answer, 'ice-ufrag');
    this.pc.restartIce();
    await this.pc.setLocalDescription(await this.pc.createOffer({ iceRestart: true }));
    await gatheringComplete(this.pc);
    const local = this.pc.localDescription.sdp;
    const mid = this.pc.getTransceivers()[0].mid;
    let frag = this.fragHeader(mid);
    for (const c of sdpCandidates(local)) frag += `${c}\r\n`;
    frag += 'a=end-of-candidates\r\n';
    const { entry, body } = await this.patch(frag, { restart: true });
    if (entry.status !== 200) throw new Error(`ICE restart PATCH: ${entry.status} ${body}`);
    const ufrag = sdpAttr(body, 'ice-ufrag');
    const pwd = sdpAttr(body, 'ice-pwd');
    if (!ufrag || !pwd) throw new Error(`ICE restart answer without ufrag/pwd: ${body}`);
    if (entry.etag) this.etag = entry.etag;
    // The new answer: the old one with the new credentials, the old
    // candidates replaced by those of the restart answer.
    const serverCandidates = sdpCandidates(body);
    const lines = [];
    for (const line of this.answer.split(/\r?\n/)) {
      if (line === '' || line.startsWith('a=candidate:') || line === 'a=end-of-candidates') continue;
      if (line.startsWith('a=ice-ufrag:')) lines.push(`a=ice-ufrag:${ufrag}`);
      else if (line.startsWith('a=ice-pwd:')) lines.push(`a=ice-pwd:${pwd}`);
      else lines.push(line);
      if (line === `a=mid:${mid}`) lines.push(...serverCandidates);
    }
    this.answer = lines.join('\r\n') + '\r\n';
    await this.pc.setRemoteDescription({ type: 'answer', sdp: this.answer });
    return {
      status: entry.status, contentType: entry.contentType,
      etagChanged: entry.etag !== null && entry.etag !== oldEtag,
      serverUfragChanged: ufrag !== oldRemoteUfrag,
      serverCandidates: serverCandidates.length,
      localUfrag: sdpAttr(local, 'ice-ufrag'), answerFragment: body,
    };
  }

  /** DELETE the session and close the connection; returns the status. */
  async stop() {
    let status = null;
    if (this.url) {
      const response = await fetch(this.url, { method: 'DELETE' });
      status = this.record('DELETE', response).status;
    }
    this.pc.close();
    return status;
  }
}

/** Polls `check` every 100 ms until it returns a truthy value or time runs out. */
export async function until(check, timeoutMs) {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value || performance.now() > deadline) return value;
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The getStats() numbers the tests look at, plus the ICE transport's state. */
export async function statsSummary(pc) {
  const report = await pc.getStats();
  const out = { video: null, audio: null, transport: null };
  const codec = (s) => report.get(s.codecId)?.mimeType ?? null;
  const fmtp = (s) => report.get(s.codecId)?.sdpFmtpLine ?? null;
  for (const s of report.values()) {
    if (s.type === 'inbound-rtp') {
      out[s.kind] = {
        direction: 'inbound', codec: codec(s), fmtp: fmtp(s), packetsReceived: s.packetsReceived,
        packetsLost: s.packetsLost, bytesReceived: s.bytesReceived,
        framesDecoded: s.framesDecoded, keyFramesDecoded: s.keyFramesDecoded,
        frameWidth: s.frameWidth, frameHeight: s.frameHeight,
        totalSamplesReceived: s.totalSamplesReceived,
        nackCount: s.nackCount, pliCount: s.pliCount, firCount: s.firCount,
        framesDropped: s.framesDropped, freezeCount: s.freezeCount, totalFreezesDuration: s.totalFreezesDuration,
        decoderImplementation: s.decoderImplementation,
      };
    } else if (s.type === 'outbound-rtp') {
      out[s.kind] = {
        direction: 'outbound', codec: codec(s), fmtp: fmtp(s), packetsSent: s.packetsSent,
        framesEncoded: s.framesEncoded, keyFramesEncoded: s.keyFramesEncoded,
        frameWidth: s.frameWidth, frameHeight: s.frameHeight,
        nackCount: s.nackCount, pliCount: s.pliCount, firCount: s.firCount,
        retransmittedPacketsSent: s.retransmittedPacketsSent,
        encoderImplementation: s.encoderImplementation,
      };
    } else if (s.type === 'transport') {
      const pair = report.get(s.selectedCandidatePairId);
      out.transport = {
        iceState: s.iceState, dtlsState: s.dtlsState,
        iceLocalUsernameFragment: s.iceLocalUsernameFragment,
        selectedCandidatePairId: s.selectedCandidatePairId ?? null,
        selectedCandidatePairChanges: s.selectedCandidatePairChanges,
        pair: pair && {
          state: pair.state, responsesReceived: pair.responsesReceived,
          local: report.get(pair.localCandidateId)?.candidateType,
          localAddress: report.get(pair.localCandidateId)?.address,
          remote: report.get(pair.remoteCandidateId)?.candidateType,
          remoteAddress: report.get(pair.remoteCandidateId)?.address,
          localProtocol: report.get(pair.localCandidateId)?.protocol,
          localTcpType: report.get(pair.localCandidateId)?.tcpType ?? null,
          remoteProtocol: report.get(pair.remoteCandidateId)?.protocol,
        },
      };
    }
  }
  out.connectionState = pc.connectionState;
  return out;
}
