"""Secrets stay out of log lines: URL credentials in every line, SDP bodies and ICE
passwords in aiortc's and aioice's records at every level (real records, from a real
WebRTC connection on loopback)."""

from __future__ import annotations

import asyncio
import logging
import re

import pytest
from aiortc import RTCPeerConnection, VideoStreamTrack

from livemod import logs
from livemod.ingest.whip.ice import host_addresses, rtc_configuration
from tests.conftest import TIMEOUT_SCALE


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("http://user:pass@host/x", "http://***@host/x"),
        (
            "cannot open rtmp://u:p@ss@h:1935/live/k: refused",
            "cannot open rtmp://***@h:1935/live/k: refused",
        ),
        ("url='HTTPS://u:p@h' error='x'", "url='HTTPS://***@h' error='x'"),
        ("turn:alice:s3cret@turn.example:3478", "turn:***@turn.example:3478"),
        ("http://host/a@b and mail a@b", "http://host/a@b and mail a@b"),
    ],
)
def test_url_credentials_are_masked(text: str, masked: str) -> None:
    assert logs.redact_credentials(text) == masked


def test_every_formatted_line_masks_url_credentials() -> None:
    formatter = logs.KeyValueFormatter("%(levelname)s %(message)s")
    record = logging.LogRecord(
        "livemod.x", logging.WARNING, __file__, 1, "opening %s", ("rtmp://u:pw@h/live",), None
    )
    record.error = "cannot open http://u:pw@h/x: refused"
    line = formatter.format(record)
    assert "pw" not in line and line.count("***@h") == 2, line


def _ice_secrets(sdp: str) -> set[str]:
    return set(re.findall(r"a=ice-(?:pwd|ufrag):(\S+)", sdp))


async def test_aiortc_and_aioice_records_lose_sdp_and_ice_secrets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logs.protect_webrtc_logs()
    caplog.set_level(logging.DEBUG, logger="aiortc")
    caplog.set_level(logging.DEBUG, logger="aioice")
    sender = RTCPeerConnection(rtc_configuration([]))
    receiver = RTCPeerConnection(rtc_configuration([]))
    connected = asyncio.Event()

    @receiver.on("connectionstatechange")
    def _state() -> None:
        if receiver.connectionState == "connected":
            connected.set()

    try:
        sender.addTrack(VideoStreamTrack())
        with host_addresses(["127.0.0.1"]):
            await sender.setLocalDescription(await sender.createOffer())
            await receiver.setRemoteDescription(sender.localDescription)
            await receiver.setLocalDescription(await receiver.createAnswer())
            await sender.setRemoteDescription(receiver.localDescription)
        await asyncio.wait_for(connected.wait(), 20 * TIMEOUT_SCALE)
        secrets = _ice_secrets(sender.localDescription.sdp)
        secrets |= _ice_secrets(receiver.localDescription.sdp)
    finally:
        await sender.close()
        await receiver.close()

    messages = [r.getMessage() for r in caplog.records if r.name.startswith(("aiortc", "aioice"))]
    text = "\n".join(messages)
    # The records are there (aiortc logged both descriptions, aioice the STUN checks) ...
    assert "setRemoteDescription(offer)" in text and "[SDP withheld:" in text
    assert any(r.name.startswith("aioice") and "USERNAME" in r.getMessage() for r in caplog.records)
    # ... without the SDP bodies or any ICE credential of either peer.
    assert len(secrets) == 4
    assert "a=ice-pwd" not in text and "v=0" not in text
    leaked = [s for s in secrets if s in text]
    assert not leaked, [m for m in messages if any(s in m for s in leaked)][:3]
