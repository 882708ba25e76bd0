#!/usr/bin/env node
// An OBS-style WHIP publisher on libdatachannel (OBS Studio's own WebRTC
// stack), through the node-datachannel package.
//
//   node whip_publish.mjs --whip URL --fixture FILE.h264 [--fps 30] [--seconds 60]
//
// It sends H.264 the way OBS does: libdatachannel's H264RtpPacketizer (each
// NAL unit its own packet, FU-A when large, no STAP-A), so SPS and PPS go as
// single-NAL packets before each IDR; the marker bit only on an access
// unit's last packet; an RTCP SR reporter and a NACK responder; and keyframe
// requests (PLI/FIR) ignored: the GOP is the fixture's, whatever viewers ask.
// Video only; the fixture (Annex-B) loops, its timestamps continuing.
//
// stdout carries JSON lines: {"event":"connected"}, then one
// {"event":"keyframe","at_ms":<epoch ms>} each time an IDR access unit is
// handed to the packetizer, and {"error": ...} on failure. It runs until
// --seconds pass or stdin closes, then DELETEs its session.

import nodeDataChannel from 'node-datachannel';
import { readFileSync } from 'node:fs';

const args = { fps: '30', seconds: '60' };
for (let i = 2; i < process.argv.length; i += 2) {
  args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];
}
if (!args.whip || !args.fixture) {
  console.error('usage: whip_publish.mjs --whip URL --fixture FILE.h264 [--fps 30] [--seconds 60]');
  process.exit(2);
}

const emit = (object) => process.stdout.write(JSON.stringify(object) + '\n');
const fail = (what) => {
  emit({ error: `libdatachannel publisher: ${what}` });
  process.exit(1);
};

/** The NAL units of an Annex-B stream (start codes removed). */
function nalUnits(stream) {
  const starts = [];
  for (let i = 0; i + 2 < stream.length; i++) {
    if (stream[i] === 0 && stream[i + 1] === 0 && stream[i + 2] === 1) {
      starts.push(i + 3);
      i += 2;
    }
  }
  return starts.map((start, k) => {
    let end = k + 1 < starts.length ? starts[k + 1] - 3 : stream.length;
    if (k + 1 < starts.length && stream[end - 1] === 0) end -= 1; // 4-byte start code
    return stream.subarray(start, end);
  });
}

/**
 * Access units: SPS/PPS/SEI open one, which its picture's slice closes; each
 * other slice (one slice per picture in the fixture) is a unit of its own.
 */
function accessUnits(nals) {
  const units = [];
  let pending = [];
  for (const nal of nals) {
    const type = nal[0] & 0x1f;
    pending.push(nal);
    if (type === 1 || type === 5) {
      units.push({ keyframe: pending.some((n) => (n[0] & 0x1f) === 5), nals: pending });
      pending = [];
    }
  }
  return units;
}

/** One access unit as the Annex-B buffer OBS hands libdatachannel. */
const annexB = (unit) => Buffer.concat(unit.nals.flatMap((n) => [Buffer.from([0, 0, 0, 1]), n]));

const units = accessUnits(nalUnits(readFileSync(args.fixture))).map((u) => ({ ...u, data: annexB(u) }));
if (!units.length || !units[0].keyframe) fail(`${args.fixture} does not start with a keyframe`);

const ssrc = 0x0b5c0de;
const cname = 'obs-style';
const pc = new nodeDataChannel.PeerConnection('publisher', { iceServers: [] });
const video = new nodeDataChannel.Video('0', 'SendOnly');
video.addH264Codec(96);
video.addSSRC(ssrc, cname, 'obs', 'obs-video');
const track = pc.addTrack(video);
const rtpConfig = new nodeDataChannel.RtpPacketizationConfig(ssrc, cname, 96, 90000);
const packetizer = new nodeDataChannel.H264RtpPacketizer('LongStartSequence', rtpConfig);
packetizer.addToChain(new nodeDataChannel.RtcpSrReporter(rtpConfig));
packetizer.addToChain(new nodeDataChannel.RtcpNackResponder());
track.setMediaHandler(packetizer);

// A complete offer (no trickle), as OBS sends it.
const gathered = new Promise((resolve) => {
  pc.onGatheringStateChange((state) => state === 'complete' && resolve());
});
const connected = new Promise((resolve, reject) => {
  pc.onStateChange((state) => {
    if (state === 'connected') resolve();
    if (state === 'failed' || state === 'closed') reject(new Error(`connection ${state}`));
  });
});
pc.setLocalDescription();
await gathered;

const response = await fetch(args.whip, {
  method: 'POST',
  headers: { 'Content-Type': 'application/sdp' },
  body: pc.localDescription().sdp,
}).catch((e) => fail(`POST: ${e}`));
const answer = await response.text();
if (response.status !== 201) fail(`POST returned ${response.status}: ${answer}`);
const session = new URL(response.headers.get('location'), args.whip).href;
pc.setRemoteDescription(answer, 'answer');

const timeout = setTimeout(() => fail('not connected after 10 s'), 10_000);
await connected.catch((e) => fail(e.message));
clearTimeout(timeout);
emit({ event: 'connected' });

// Paced at --fps, timestamps from the frame count, the fixture looping.
const frameMs = 1000 / Number(args.fps);
const ticks = 90000 / Number(args.fps);
const started = Date.now();
let sent = 0;
let stopping = false;

async function stop() {
  if (stopping) return;
  stopping = true;
  const status = await fetch(session, { method: 'DELETE' }).then((r) => r.status, () => null);
  emit({ event: 'stopped', frames: sent, delete_status: status });
  pc.close();
  nodeDataChannel.cleanup();
  process.exit(0);
}
process.stdin.on('end', stop);
process.stdin.resume();
setTimeout(stop, Number(args.seconds) * 1000);

function sendDue() {
  while (!stopping && sent <= (Date.now() - started) / frameMs) {
    const unit = units[sent % units.length];
    rtpConfig.timestamp = (sent * ticks) >>> 0;
    if (unit.keyframe) emit({ event: 'keyframe', at_ms: Date.now() });
    if (!track.sendMessageBinary(unit.data)) fail('the track refused a frame');
    sent += 1;
  }
}
setInterval(sendDue, 5);
