"""Times how fast an aiortc WHEP player decodes a stream's first picture.

    python3 first_frame.py URL

aiortc decodes with libavcodec and, like FFmpeg's own H.264 parser, knows a
frame is complete only when a packet of the next frame arrives. Prints
{"event": "ready"}, then for each line read on stdin a new player joins and
reports one JSON line when its first video frame is decoded:

  {"event": "first_frame", "join_at_ms": <epoch ms when it started its
   offer>, "first_frame_at_ms": <epoch ms>, "width": W, "height": H}

or {"error": ...} after 10 s. The player then DELETEs its session and
closes. stdin closing ends the script.
"""

import asyncio
import sys
import time

from common import Failure, delete_session, negotiate, peer_connection, report, run

LABEL = "aiortc first-frame player"


def epoch_ms():
    return round(time.time() * 1000)


async def join(url):
    pc = peer_connection()
    pc.addTransceiver("video", direction="recvonly")
    first = asyncio.get_running_loop().create_future()

    @pc.on("track")
    def on_track(track):
        if track.kind != "video":
            return

        async def first_frame():
            frame = await track.recv()
            if not first.done():
                first.set_result((epoch_ms(), frame.width, frame.height))

        asyncio.ensure_future(first_frame())

    joined = epoch_ms()
    try:
        session, _ = await negotiate(pc, url, LABEL)
        try:
            at, width, height = await asyncio.wait_for(first, 10)
        except asyncio.TimeoutError:
            raise Failure(f"{LABEL}: no frame decoded within 10 s of joining")
        await delete_session(session, LABEL)
    finally:
        await pc.close()
    report(
        event="first_frame",
        join_at_ms=joined,
        first_frame_at_ms=at,
        width=width,
        height=height,
    )


async def main():
    url = sys.argv[1]
    report(event="ready")
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    while await reader.readline():
        try:
            await join(url)
        except Failure as failure:
            report(error=str(failure))


if __name__ == "__main__":
    run(main)
