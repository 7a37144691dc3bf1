"""A WHIP publisher is relayed too: a real aiortc publisher sends a clip (VP8 + Opus)
to a real daemon with ``relay.enabled``; the HLS output is read back as a viewer
would. The known-bad window is the slate and silent, the rest passes, with sound."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from aiortc.contrib.media import MediaPlayer

from livemod.ingest.whip.client import WhipClient
from livemod.relay.picture import slate
from tests.conftest import TIMEOUT_SCALE, DaemonProcess
from tests.ingest.test_whip import LOOPBACK, start_daemon
from tests.relay import marked

pytestmark = pytest.mark.e2e

BAD_S = (3.0, 5.5)
DURATION_S = 8.5


def get(base: str, path: str) -> dict[str, object]:
    with urllib.request.urlopen(base + path, timeout=10) as resp:
        return dict(json.loads(resp.read()))


async def test_a_whip_publish_with_relay_on_gets_a_safe_output(
    tmp_path: Path, known_bad_dir: Path
) -> None:
    clip = tmp_path / "flagged.mp4"
    marked.make(clip, DURATION_S, BAD_S, full=True)
    hls = tmp_path / "hls"
    daemon: DaemonProcess = start_daemon(
        tmp_path,
        known_bad_dir,
        LIVEMOD_RELAY__ENABLED="true",
        LIVEMOD_RELAY__OUTPUT=f"{hls}/{{room_id}}",
        LIVEMOD_ASR__ENABLED="false",
    )
    try:
        client = WhipClient(f"{daemon.base}/whip/cam?user_id=ivy", ice_addresses=LOOPBACK)
        player = MediaPlayer(str(clip))
        await client.publish(player.video, audio=player.audio, codec="VP8")
        await asyncio.sleep(DURATION_S + 1.0)  # the clip plays out in real time
        streams = get(daemon.base, "/v1/streams")["streams"]
        assert isinstance(streams, list) and streams, streams
        sid = streams[0]["id"]
        await client.delete()
        summary = get(daemon.base, f"/v1/streams/{sid}")
        for _ in range(round(60 * TIMEOUT_SCALE)):
            if summary["status"] != "live":
                break
            await asyncio.sleep(0.5)
            summary = get(daemon.base, f"/v1/streams/{sid}")
        relay = summary["relay"]
        assert isinstance(relay, dict), summary
        for _ in range(round(30 * TIMEOUT_SCALE)):  # the relay drains after the session
            if relay["state"] == "ended":
                break
            await asyncio.sleep(0.5)
            relay = get(daemon.base, f"/v1/streams/{sid}")["relay"]  # type: ignore[assignment]
        await client.close()
    finally:
        daemon.stop()
    actions = [(a["action"], a["state"]) for a in summary["actions"]]  # type: ignore[union-attr]
    assert ("pause", "start") in actions, (actions, daemon.log())
    assert relay["output"] == str(hls / "cam") and relay["frames_treated"] > 0, relay
    assert relay["late_decisions"] == 0 and relay["late_frames"] == 0, relay

    viewed = await asyncio.to_thread(marked.view, str(hls / "cam" / "index.m3u8"))
    assert len(viewed.frames) > (DURATION_S - 1.5) * marked.FPS * 0.8, len(viewed.frames)
    board = slate(marked.W, marked.H, "Stream paused")
    exposed, outside, readable = [], 0, 0
    for (_, img), src_t in zip(viewed.frames, viewed.source_times(), strict=True):
        if BAD_S[0] <= src_t < BAD_S[1] and marked.psnr(img, board) < 30:
            exposed.append(round(src_t, 2))
        elif src_t < BAD_S[0] - 0.5 or src_t > BAD_S[1] + 1.5:
            outside += 1
            readable += marked.read_index(img) is not None
            assert marked.psnr(img, board) < 20, f"{src_t:.2f}s: clean frame treated"
    assert exposed == [], f"flagged frames that reached the viewer: {exposed}"
    assert readable >= 0.8 * outside > 0, (readable, outside)
    off = viewed.offset_s()
    assert viewed.rms(BAD_S[0] - off + 0.1, BAD_S[1] - off - 0.1) < 0.003  # the pause: silent
    assert viewed.rms(1.0 - off, 1.45 - off) > 0.1  # the publisher's sound came through
    # A/V sync: the tone starts on whole seconds of the source.
    errors = [t + off - round(t + off) for t in viewed.onsets()]
    assert errors and float(np.median(np.abs(errors))) <= 0.1, errors
