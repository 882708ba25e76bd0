"""Shared pieces of the aiortc WHIP/WHEP scripts (tests/tests/interop_aiortc.rs).

aiortc has no WHIP or WHEP client, so this is the small HTTP part (RFC 9725):
POST the complete offer as application/sdp, expect 201 with a Location, and
DELETE the session at the end. urllib runs in a thread so the event loop
keeps the media flowing meanwhile.

Every script reports on stdout, one JSON object per line; a failure is
reported as {"error": "<client>: <step>: <what happened>"} and exit status 1.
"""

import asyncio
import json
import sys
import traceback
import urllib.error
import urllib.parse
import urllib.request

from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)

# The video the publisher draws and the viewer reads back.
WIDTH, HEIGHT = 320, 240
COUNTER_BITS = 16
BIT_WIDTH = WIDTH // COUNTER_BITS  # 20 px per bit
BAND = HEIGHT // 4  # counter band, then its complement band, then the moving bar


class Failure(Exception):
    """A step failed; the message names the client and the step."""


def report(**fields):
    print(json.dumps(fields), flush=True)


def run(main):
    """Runs `main()` and turns a Failure (or any crash) into an error line."""
    try:
        asyncio.run(main())
    except Failure as failure:
        report(error=str(failure))
        print(failure, file=sys.stderr)
        sys.exit(1)
    except Exception as crash:  # e.g. the HTTP server unreachable
        traceback.print_exc()
        report(error=f"{type(crash).__name__}: {crash}")
        sys.exit(1)


def peer_connection():
    # No STUN or TURN: nothing may leave the test's network namespace.
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


def prefer(transceiver, mime_type):
    """Offers only `mime_type` (and RTX for it) on `transceiver`."""
    capabilities = RTCRtpSender.getCapabilities(transceiver.kind).codecs
    wanted = [c for c in capabilities if c.mimeType.lower() == mime_type.lower()]
    if not wanted:
        raise Failure(f"aiortc has no {mime_type} codec")
    rtx = [c for c in capabilities if c.mimeType.lower().endswith("/rtx")]
    transceiver.setCodecPreferences(wanted + rtx)


def http(method, url, body=None, content_type=None):
    """One blocking HTTP request: (status, headers, body text)."""
    request = urllib.request.Request(url, data=body, method=method)
    if content_type:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read().decode()


async def negotiate(pc, url, client):
    """The WHIP/WHEP exchange: returns the session URL and the answer SDP.

    aiortc does not trickle: setLocalDescription returns once ICE gathering
    is complete, so the offer already holds every candidate.
    """
    await pc.setLocalDescription(await pc.createOffer())
    status, headers, body = await asyncio.to_thread(
        http, "POST", url, pc.localDescription.sdp.encode(), "application/sdp"
    )
    if status != 201:
        raise Failure(f"{client}: POST returned {status}: {body}")
    location = headers.get("Location")
    if not location:
        raise Failure(f"{client}: 201 without a Location header")
    content_type = headers.get("Content-Type", "")
    if not content_type.startswith("application/sdp"):
        raise Failure(f"{client}: answer has Content-Type {content_type!r}")
    await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
    return urllib.parse.urljoin(url, location), body


async def wait_connected(pc, client, seconds=10):
    """Waits until DTLS is up, failing on 'failed' or after `seconds`."""
    connected = asyncio.Event()

    def check():
        if pc.connectionState in ("connected", "failed", "closed"):
            connected.set()

    pc.on("connectionstatechange", check)
    check()
    try:
        await asyncio.wait_for(connected.wait(), seconds)
    except asyncio.TimeoutError:
        raise Failure(f"{client}: still {pc.connectionState} after {seconds} s")
    if pc.connectionState != "connected":
        raise Failure(f"{client}: connection {pc.connectionState}")


async def delete_session(session_url, client):
    """DELETE the session (200), then check it is gone (second DELETE: 404)."""
    status, _, body = await asyncio.to_thread(http, "DELETE", session_url)
    if status != 200:
        raise Failure(f"{client}: DELETE returned {status}: {body}")
    again, _, _ = await asyncio.to_thread(http, "DELETE", session_url)
    if again != 404:
        raise Failure(f"{client}: DELETE after DELETE returned {again}, not 404")
    return status, again


def answer_codecs(answer, kind):
    """The codec names of the first `kind` section of an SDP, in order."""
    names, in_section, seen = [], False, False
    for line in answer.splitlines():
        if line.startswith("m="):
            in_section = line.startswith(f"m={kind} ") and not seen
            seen |= in_section
        elif in_section and line.startswith("a=rtpmap:"):
            names.append(line.split(" ", 1)[1].split("/")[0])
    return names
