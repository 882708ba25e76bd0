#!/usr/bin/python3
"""A test IP camera: GStreamer's RTSP server on 127.0.0.1.

Run with Debian's /usr/bin/python3 (the `gi` bindings are Debian packages,
see test.sh). One mount (default /cam), one pipeline shared by every client:

  video  h264: tests/fixtures/video.h264 looped forever at 30 fps (real
               time), SPS/PPS sent before every IDR (config-interval=-1),
               as cameras do
         h265: videotestsrc encoded by x265enc, 320x240, 30 fps, GOP 30
         none
  audio  pcmu | pcma (8 kHz mono) | opus (48 kHz stereo) |
         aac (mpeg4-generic, 16 kHz mono) | none: a 440 Hz tone

Both come from the same pipeline clock, so their RTP timestamps and RTCP
sender reports line up. With --user and --password every request must
authenticate (Digest by default, --auth basic for Basic); anything else
gets 401.

Prints `READY rtsp://127.0.0.1:PORT/cam` on stdout once listening (with
--port 0, the port the kernel chose), then `CLIENT` for each client
connection, and exits on SIGTERM or SIGINT.
"""

import argparse
import os
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "video.h264")

VIDEO = {
    # The fixture's access units, pushed by `feed_h264` with timestamps
    # that keep growing across loops (a raw .h264 file has none, and
    # h264parse only gives DTS, which leaves RTP timestamps frozen).
    "h264": (
        "appsrc name=camsrc format=time is-live=true "
        'caps="video/x-h264,stream-format=byte-stream,alignment=au,framerate=30/1" '
        "! h264parse ! rtph264pay name=pay0 pt=96 config-interval=-1 mtu=1200"
    ),
    "h265": (
        "videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=30/1 "
        "! x265enc speed-preset=ultrafast tune=zerolatency key-int-max=30 bitrate=300 "
        "! h265parse ! rtph265pay name=pay0 pt=96 config-interval=-1 mtu=1200"
    ),
    "none": None,
}

TONE = "audiotestsrc is-live=true wave=sine freq=440 samplesperbuffer={spb} ! audioconvert ! audioresample "
AUDIO = {
    "pcmu": TONE.format(spb=160) + "! audio/x-raw,rate=8000,channels=1 ! mulawenc "
    "! rtppcmupay name={pay} pt=0",
    "pcma": TONE.format(spb=160) + "! audio/x-raw,rate=8000,channels=1 ! alawenc "
    "! rtppcmapay name={pay} pt=8",
    "opus": TONE.format(spb=960) + "! audio/x-raw,rate=48000,channels=2 "
    "! opusenc frame-size=20 ! rtpopuspay name={pay} pt=111",
    "aac": TONE.format(spb=1024) + "! audio/x-raw,rate=16000,channels=1 ! avenc_aac "
    "! aacparse ! rtpmp4gpay name={pay} pt=97",
    "none": None,
}


def access_units(path):
    """The Annex-B file's access units: a new one starts at an SPS, SEI or
    delimiter, or at a slice whose first_mb_in_slice is 0, once the current
    one holds a slice."""
    data = open(path, "rb").read()
    starts = [i for i in range(len(data) - 3) if data[i:i + 3] == b"\x00\x00\x01"]
    units, current, has_slice = [], [], False
    for n, start in enumerate(starts):
        end = starts[n + 1] if n + 1 < len(starts) else len(data)
        nal = data[start + 3:end].rstrip(b"\x00")
        kind = nal[0] & 0x1F
        first_slice = kind in (1, 5) and nal[1] & 0x80
        if has_slice and (kind in (6, 7, 9) or first_slice):
            units.append(b"".join(current))
            current, has_slice = [], False
        current.append(b"\x00\x00\x00\x01" + nal)
        has_slice = has_slice or kind in (1, 5)
    if current:
        units.append(b"".join(current))
    return units


def feed_h264(appsrc, units):
    """Pushes `units` in a loop, 30 a second of stream time, for ever; the
    pipeline's sinks pace them to the clock."""
    frame = [0]

    def need_data(src, _length):
        for _ in range(30):
            n = frame[0]
            buf = Gst.Buffer.new_wrapped(units[n % len(units)])
            buf.pts = buf.dts = n * Gst.SECOND // 30
            buf.duration = Gst.SECOND // 30
            frame[0] += 1
            if src.emit("push-buffer", buf) != Gst.FlowReturn.OK:
                return

    appsrc.connect("need-data", need_data)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=0, help="TCP port (0: any free one)")
    p.add_argument("--path", default="/cam", help="the mount point")
    p.add_argument("--video", choices=sorted(VIDEO), default="h264")
    p.add_argument("--audio", choices=sorted(AUDIO), default="pcmu")
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--auth", choices=["digest", "basic"], default="digest")
    p.add_argument("--protocols", choices=["tcp", "udp", "both"], default="both",
                   help="RTP transports offered to clients")
    args = p.parse_args()
    if (args.user is None) != (args.password is None):
        p.error("--user and --password go together")
    if args.video == "none" and args.audio == "none":
        p.error("nothing to serve: --video none and --audio none")
    if not args.path.startswith("/"):
        p.error("--path starts with /")
    return args


def launch_line(args):
    parts = []
    pay = 0
    video = VIDEO[args.video]
    if video:
        parts.append(video.format(fixture=FIXTURE))
        pay += 1
    audio = AUDIO[args.audio]
    if audio:
        parts.append(audio.format(pay=f"pay{pay}"))
    return "( " + " ".join(parts) + " )"


def main():
    args = parse_args()
    Gst.init(None)
    if args.video == "h264" and not os.path.exists(FIXTURE):
        sys.exit(f"missing {FIXTURE}")

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))

    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch_line(args))
    # One pipeline for all clients, as a camera has one encoder.
    factory.set_shared(True)
    # A camera is live: a client's `Range: npt=0-` in PLAY must not seek
    # the shared pipeline (that restarts its timestamps under the clients
    # already playing, and fails with 503 for a live one). rtsp-media
    # never seeks a media whose streams publish their clock and offset
    # (RFC 7273 attributes in the SDP, ignored by clients that don't know
    # them).
    factory.set_publish_clock_mode(GstRtspServer.RTSPPublishClockMode.CLOCK_AND_OFFSET)
    factory.set_protocols({
        "tcp": GstRtsp.RTSPLowerTrans.TCP,
        "udp": GstRtsp.RTSPLowerTrans.UDP,
        "both": GstRtsp.RTSPLowerTrans.TCP | GstRtsp.RTSPLowerTrans.UDP,
    }[args.protocols])

    if args.user is not None:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", "camera-user")
        if args.auth == "basic":
            auth.set_supported_methods(GstRtsp.RTSPAuthMethod.BASIC)
            auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password), token)
        else:
            auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
            auth.add_digest(args.user, args.password, token)
        server.set_auth(auth)
        # Only that role may see and build the mount: no credentials, or
        # wrong ones, get 401.
        factory.add_role_from_structure(Gst.Structure.from_string(
            "camera-user, media.factory.access=(boolean)true, "
            "media.factory.construct=(boolean)true")[0])

    if args.video == "h264":
        units = access_units(FIXTURE)
        factory.connect(
            "media-configure",
            lambda _f, media: feed_h264(media.get_element().get_by_name("camsrc"), units))

    # One line per client connection, so a test can count the attempts
    # (a retry storm, an on-demand camera that should not be pulled).
    server.connect("client-connected", lambda _s, _c: print("CLIENT", flush=True))

    server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on 127.0.0.1:{args.port}")

    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print(f"READY rtsp://127.0.0.1:{server.get_bound_port()}{args.path}", flush=True)
    loop.run()


if __name__ == "__main__":
    main()
