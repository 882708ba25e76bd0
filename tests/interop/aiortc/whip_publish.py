"""Publishes synthetic video and a 440 Hz tone to a WHIP endpoint with aiortc.

    python3 whip_publish.py URL --video {h264,vp8} [--seconds 60] [--label NAME]

Every video frame (320x240, 30 fps) carries its frame number: 16 bits as
black/white blocks across the top quarter, the same bits inverted in the
second quarter (so a reader can tell a clean read), and a bar below that
moves every frame. whep_play.py reads the number back after decoding.

Prints {"event": "published", ...} once connected, then keeps sending until
a line (or EOF) arrives on stdin or --seconds pass; then DELETEs the session,
checks it is gone, and prints {"event": "done", ...}.
"""

import argparse
import asyncio
import fractions
import math
import sys
import time
from array import array

from aiortc import AudioStreamTrack, VideoStreamTrack
from av import AudioFrame, VideoFrame

from common import (
    BAND,
    BIT_WIDTH,
    COUNTER_BITS,
    HEIGHT,
    WIDTH,
    answer_codecs,
    delete_session,
    negotiate,
    peer_connection,
    prefer,
    report,
    run,
    wait_connected,
)

BLACK, WHITE, GREY = 16, 235, 128


def draw(number):
    """A yuv420p frame showing `number` (see the module docstring)."""
    bits = [(number >> (COUNTER_BITS - 1 - i)) & 1 for i in range(COUNTER_BITS)]
    row = bytes(WHITE if bit else BLACK for bit in bits for _ in range(BIT_WIDTH))
    inverted = bytes(BLACK if bit else WHITE for bit in bits for _ in range(BIT_WIDTH))
    bar_x = (number * 8) % (WIDTH - 16)
    bar_row = bytes([GREY] * bar_x + [WHITE] * 16 + [GREY] * (WIDTH - 16 - bar_x))
    luma = row * BAND + inverted * BAND + bar_row * (HEIGHT - 2 * BAND)
    frame = VideoFrame(WIDTH, HEIGHT, "yuv420p")
    frame.planes[0].update(luma)
    for chroma in frame.planes[1:]:
        chroma.update(bytes([128]) * chroma.buffer_size)
    return frame


class CounterVideo(VideoStreamTrack):
    """30 fps of draw(0), draw(1), ..."""

    def __init__(self):
        super().__init__()
        self.frames = 0

    async def recv(self):
        pts, time_base = await self.next_timestamp()  # paces at 30 fps
        frame = draw(self.frames)
        frame.pts, frame.time_base = pts, time_base
        self.frames += 1
        return frame


class SineAudio(AudioStreamTrack):
    """A 440 Hz tone, 20 ms mono frames at 48 kHz, paced in real time."""

    RATE, SAMPLES, HZ = 48000, 960, 440

    def __init__(self):
        super().__init__()
        self.sent = 0  # samples so far
        self.start = None

    async def recv(self):
        if self.start is None:
            self.start = time.time()
        else:
            await asyncio.sleep(self.start + self.sent / self.RATE - time.time())
        step = 2 * math.pi * self.HZ / self.RATE
        samples = array(
            "h",
            (int(12000 * math.sin(step * (self.sent + i))) for i in range(self.SAMPLES)),
        )
        frame = AudioFrame(format="s16", layout="mono", samples=self.SAMPLES)
        frame.planes[0].update(samples.tobytes())
        frame.pts, frame.sample_rate = self.sent, self.RATE
        frame.time_base = fractions.Fraction(1, self.RATE)
        self.sent += self.SAMPLES
        return frame


async def stop_requested(seconds):
    """Returns when stdin has a line or closes, or after `seconds`."""
    loop = asyncio.get_running_loop()
    readable = asyncio.Event()
    loop.add_reader(sys.stdin.fileno(), readable.set)
    try:
        await asyncio.wait_for(readable.wait(), seconds)
    except asyncio.TimeoutError:
        pass
    finally:
        loop.remove_reader(sys.stdin.fileno())


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--video", choices=["h264", "vp8"], required=True)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--label", default="aiortc WHIP publisher")
    args = parser.parse_args()

    pc = peer_connection()
    video, audio = CounterVideo(), SineAudio()
    prefer(pc.addTransceiver(video, direction="sendonly"), f"video/{args.video}")
    prefer(pc.addTransceiver(audio, direction="sendonly"), "audio/opus")
    try:
        session, answer = await negotiate(pc, args.url, args.label)
        await wait_connected(pc, args.label)
        report(
            event="published",
            session=session,
            video_codecs=",".join(answer_codecs(answer, "video")),
            audio_codecs=",".join(answer_codecs(answer, "audio")),
        )
        await stop_requested(args.seconds)
        frames_sent = video.frames
        delete, delete_again = await delete_session(session, args.label)
        report(
            event="done",
            frames_sent=frames_sent,
            delete_status=delete,
            delete_again_status=delete_again,
        )
    finally:
        await pc.close()


if __name__ == "__main__":
    run(main)
