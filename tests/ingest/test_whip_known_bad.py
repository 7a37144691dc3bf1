"""A live WHIP publish (a real aiortc publisher, a real daemon, loopback only) showing
the listed picture as a phone would: mirrored, pillarboxed, a subtitle across it.
The known-bad matcher finds it and the daemon pauses the publish in time."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import cv2
import numpy as np
import pytest
import websockets
from aiortc.contrib.media import MediaPlayer

from livemod.ingest.whip.client import WhipClient
from livemod.messages import Image
from livemod.testing import media as testmedia
from tests.app.test_known_bad_e2e import BAD_AT, fitted
from tests.conftest import DaemonProcess
from tests.ingest.test_whip import (
    LOOPBACK,
    Event,
    annexb_copy,
    is_action,
    is_session,
    start_daemon,
    wait_event,
)

pytestmark = pytest.mark.e2e


def mirrored_with_subtitle() -> Image:
    frame = fitted(np.ascontiguousarray(testmedia.photo(testmedia.KNOWN_BAD_PHOTO)[:, ::-1]))
    # Across the bottom of the picture and onto the bar, as a caption overlay is.
    cv2.putText(frame, "LIVE NOW  follow me", (24, frame.shape[0] - 14), 0, 0.8, (255,) * 3, 2)
    return frame


async def test_a_captioned_mirrored_picture_is_caught_over_whip(
    tmp_path: Path, known_bad_dir: Path
) -> None:
    mp4 = tmp_path / "captioned.mp4"
    testmedia.make_clip(
        mp4,
        [
            testmedia.Segment(BAD_AT[0], None),
            testmedia.Segment(BAD_AT[1] - BAD_AT[0], mirrored_with_subtitle(), "captioned"),
            testmedia.Segment(2.0, None),
        ],
    )
    clip = annexb_copy(mp4, tmp_path / "captioned.ts")
    daemon: DaemonProcess = start_daemon(tmp_path, known_bad_dir)
    seen: list[Event] = []
    try:
        async with (
            websockets.connect(f"{daemon.ws}?room_id=phone") as ws,
            aiohttp.ClientSession() as http,
        ):
            client = WhipClient(f"{daemon.base}/whip/phone?user_id=hana", ice_addresses=LOOPBACK)
            await client.publish(MediaPlayer(str(clip), decode=False).video, codec="H264")
            started = await wait_event(ws, is_session("started"), seen, 10)
            pause = await wait_event(ws, is_action("pause", "start"), seen, 30)
            assert pause["stream_id"] == started["stream_id"] and pause["user_id"] == "hana"
            assert pause["category"] == "known_bad"
            # Within the vote window of the picture's appearance (and WHIP's jitter).
            assert BAD_AT[0] <= pause["media_time_s"] <= BAD_AT[0] + 2.0
            async with http.get(f"{daemon.base}/v1/evidence/{pause['evidence_id']}") as resp:
                evidence = await resp.json()
            # A subtitle over the rocket's sky moves PDQ ~48 bits: this is the match on
            # the picture with the caption's band cut off (tests/vision/test_known_bad.py).
            assert evidence["category"] == "known_bad"
            assert evidence["scores"]["hash_distance"] <= evidence["scores"]["hash_max_distance"]
            await client.delete()
    finally:
        daemon.stop()
