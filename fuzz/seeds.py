#!/usr/bin/env python3
"""Writes fuzz/corpus/<target>/ seed inputs: real shapes of what each parser
meets on the network (an OBS-like and a browser-like offer, RFC 8840's
trickle fragment, tokens signed with the fuzz key, RTP packets cut from the
test fixtures, RTCP feedback, STUN checks). Run once; the corpus is
committed. `python3 fuzz/seeds.py`"""
import base64, hashlib, hmac, json, os, struct

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

def put(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())

FP = ":".join("%02X" % ((i * 37 + 11) % 256) for i in range(32))
def section(kind, pt, rtpmap, direction, mid, extra=""):
    return (f"m={kind} 9 UDP/TLS/RTP/SAVPF {pt}\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n"
            f"a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=ice-options:trickle\r\n"
            f"a=fingerprint:sha-256 {FP}\r\na=setup:actpass\r\na=mid:{mid}\r\na={direction}\r\na=rtcp-mux\r\n"
            f"a=rtpmap:{pt} {rtpmap}\r\n{extra}")
def offer(sections):
    mids = " ".join(str(i) for i in range(len(sections)))
    return ("v=0\r\no=- 4489045141692799359 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
            f"a=group:BUNDLE {mids}\r\na=msid-semantic: WMS obs\r\n" + "".join(sections))
opus = lambda d, m: section("audio", 111, "opus/48000/2", d, m, "a=fmtp:111 minptime=10;useinbandfec=1\r\na=ssrc:1111 cname:x\r\n")
h264 = lambda d, m: section("video", 96, "H264/90000", d, m,
    "a=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\na=rtcp-fb:96 goog-remb\r\n"
    "a=fmtp:96 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n"
    "a=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\na=ssrc-group:FID 2222 3333\r\na=ssrc:2222 cname:x\r\na=ssrc:3333 cname:x\r\n")
vp8 = lambda d, m: section("video", 98, "VP8/90000", d, m, "a=rtcp-fb:98 nack pli\r\na=rid:h send\r\na=rid:l send\r\na=simulcast:send h;l\r\n")
put("sdp_offer", "obs", offer([opus("sendonly", 0), h264("sendonly", 1)]))
put("sdp_offer", "whep", offer([opus("recvonly", 0), h264("recvonly", 1)]))
put("sdp_offer", "simulcast", offer([opus("sendonly", 0), vp8("sendonly", 1)]))
put("sdp_offer", "video-only", offer([h264("sendonly", 0)]))

put("sdpfrag", "rfc8840", "a=ice-options:trickle ice2\r\na=group:BUNDLE sdparta_0 sdparta_1\r\n"
    "m=audio 9 RTP/AVP 0\r\na=mid:sdparta_0\r\na=ice-pwd:asd88fgpdd777uzjYhagZg\r\na=ice-ufrag:8hhY\r\n"
    "a=candidate:1 1 UDP 1658497328 198.51.100.33 5000 typ host\r\nm=video 9 RTP/AVP 0\r\na=mid:sdparta_1\r\n"
    "a=candidate:2 1 UDP 1658497328 198.51.100.33 5002 typ host\r\na=end-of-candidates\r\n")
put("sdpfrag", "restart", "a=ice-ufrag:Zx1y\r\na=ice-pwd:0123456789abcdefghijkl\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n"
    "a=candidate:3 1 udp 2122260223 10.0.0.7 54321 typ host generation 0\r\n")
put("sdpfrag", "tcp", "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=candidate:4 1 tcp 1518280447 10.0.0.7 9 typ host tcptype active\r\n")

SECRET = b"vigil-fuzz-signing-secret-0123456789"
def b64(b): return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
def jwt(claims):
    head = b64(json.dumps({"typ": "JWT", "alg": "HS256"}, separators=(",", ":")).encode())
    body = b64(json.dumps(claims, separators=(",", ":")).encode())
    sig = b64(hmac.new(SECRET, f"{head}.{body}".encode(), hashlib.sha256).digest())
    return f"{head}.{body}.{sig}"
grants = lambda p, s, a: {"publish": p, "subscribe": s, "admin": a}
put("token", "publisher", jwt({"sub": "cam-1", "room": "site-1", "grants": grants(True, False, False), "iat": 1_600_000_000, "exp": 1_900_000_000, "inc": 7, "rgen": 0, "jti": "t-1"}))
put("token", "dispatcher", jwt({"sub": "desk", "room": "site-1", "grants": grants(False, True, True), "iat": 1_600_000_000, "exp": 1_900_000_000}))
put("token", "expired", jwt({"sub": "v", "room": "r", "grants": grants(False, True, False), "iat": 1, "exp": 2}))

def rtp(pt, seq, ts, ssrc, payload, marker=False):
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq, ts, ssrc) + payload
h264 = open(os.path.join(ROOT, "tests/fixtures/video.h264"), "rb").read()
nals = [n for n in (p.rstrip(b"\x00") for p in h264.split(b"\x00\x00\x01")) if n]
sps = next(n for n in nals if n[0] & 0x1F == 7)
pps = next(n for n in nals if n[0] & 0x1F == 8)
idr = next(n for n in nals if n[0] & 0x1F == 5)
stap = b"\x18" + struct.pack("!H", len(sps)) + sps + struct.pack("!H", len(pps)) + pps
# camera_h264: records of (16-bit length, marker byte, payload) as an
# IP camera sends them: an IDR whole over TCP, then in FU-A fragments.
rec = lambda payload, marker=False: struct.pack("!HB", len(payload), int(marker)) + payload
put("camera_h264", "idr-whole", rec(sps) + rec(pps) + rec(idr, True))
put("camera_h264", "idr-fu-a", rec(stap) + rec(bytes([0x7C, 0x85]) + idr[1:3000]) + rec(bytes([0x7C, 0x45]) + idr[3000:], True))
put("rtp_media", "h264-stap-a", rtp(96, 1, 3000, 0xABCDEF01, stap))
put("rtp_media", "h264-fu-a-start", rtp(96, 2, 3000, 0xABCDEF01, bytes([0x7C, 0x85]) + idr[1:900]))
put("rtp_media", "h264-single", rtp(96, 3, 3000, 0xABCDEF01, idr[:1000], marker=True))
ivf = open(os.path.join(ROOT, "tests/fixtures/video.vp8.ivf"), "rb").read()
frame = ivf[32 + 12: 32 + 12 + struct.unpack("<I", ivf[32:36])[0]]
put("rtp_media", "vp8-keyframe", rtp(98, 10, 9000, 0x11223344, b"\x90\x80\x01" + frame[:1000]))
ivf9 = open(os.path.join(ROOT, "tests/fixtures/video.vp9.ivf"), "rb").read()
frame9 = ivf9[32 + 12: 32 + 12 + struct.unpack("<I", ivf9[32:36])[0]]
put("rtp_media", "vp9-keyframe", rtp(100, 20, 9000, 0x55667788, b"\x8a\x80\x01" + frame9[:1000]))
put("rtp_media", "ext-padding", bytes([0xB0, 0x60]) + struct.pack("!HII", 5, 100, 1) + b"\xbe\xde\x00\x01\x10\xff\x00\x00" + b"\x41\x9a" + b"\x00\x00\x02")

pli = struct.pack("!BBHII", 0x81, 206, 2, 1, 0xABCDEF01)
rr = struct.pack("!BBHI", 0x81, 201, 7, 1) + struct.pack("!IBBHIIII", 0xABCDEF01, 25, 0, 10, 1000, 2, 0, 0)
nack = struct.pack("!BBHII", 0x81, 205, 3, 1, 0xABCDEF01) + struct.pack("!HH", 100, 0x0005)
fir = struct.pack("!BBHII", 0x84, 206, 4, 1, 0) + struct.pack("!IBBH", 0xABCDEF01, 1, 0, 0)
put("rtcp_feedback", "rr-pli", rr + pli)
put("rtcp_feedback", "nack", nack)
put("rtcp_feedback", "fir", fir)

def stun(username, use_candidate=False):
    attrs = b""
    u = username.encode()
    attrs += struct.pack("!HH", 0x0006, len(u)) + u + b"\x00" * ((4 - len(u) % 4) % 4)
    attrs += struct.pack("!HHI", 0x0024, 4, 0x6E7F1EFF)  # PRIORITY
    if use_candidate:
        attrs += struct.pack("!HH", 0x0025, 0)
    return struct.pack("!HHI", 0x0001, len(attrs), 0x2112A442) + b"\x07" * 12 + attrs
def frame(src, datagram):
    return bytes([src]) + struct.pack("!H", len(datagram)) + datagram
put("stun_demux", "check-then-media", frame(0, stun("srv1:cli1", True)) + frame(0, b"\x80\x60" + b"\x00" * 30) + frame(1, b"\x80\x60" + b"\x00" * 30))
put("stun_demux", "two-connections", frame(2, stun("srv2:c")) + frame(3, stun("srv1:c")) + frame(2, b"\x16\xfe\xfd" + b"\x00" * 20))
put("stun_demux", "unknown-ufrag", frame(1, stun("nobody:c", True)))
