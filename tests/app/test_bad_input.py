"""Bad input ends one session with a clear error; the daemon and others go on."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
import pytest
import websockets

from tests.app.test_e2e import collect_until_end, post_stream
from tests.conftest import TIMEOUT_SCALE, DaemonProcess, free_port

pytestmark = pytest.mark.e2e


def audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=16000)
        stream.layout = "mono"
        for i in range(20):
            samples = np.zeros((1, 1024), np.float32)
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate = 16000
            frame.pts = i * 1024
            frame.time_base = Fraction(1, 16000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


async def error_of(ws: Any, http: aiohttp.ClientSession, base: str, url: str) -> str:
    created = await post_stream(http, base, url=url, user_id="eve", room_id="bad")
    events = await collect_until_end(ws, created["id"], 30)
    last = events[-1]
    assert last["state"] == "error", events
    return str(last["error"])


async def test_bad_sources_fail_alone(
    daemon: DaemonProcess, tmp_path: Path, benign_clip: Path
) -> None:
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(1).integers(0, 256, 200_000, np.uint8).tobytes())
    truncated = tmp_path / "truncated.mp4"
    data = benign_clip.read_bytes()  # noqa: ASYNC240 - small test fixture
    truncated.write_bytes(data[: len(data) // 2])
    no_video = audio_only(tmp_path / "audio.m4a")
    refused = f"rtmp://127.0.0.1:{free_port()}/live/nobody"

    async with (
        websockets.connect(daemon.ws) as ws_bad,
        websockets.connect(f"{daemon.ws}?room_id=good") as ws_good,
        aiohttp.ClientSession() as http,
    ):
        good = await post_stream(
            http, daemon.base, url=str(benign_clip), user_id="gus", room_id="good", realtime=True
        )
        bad_ws = ws_bad
        for url, needle in (
            (str(corrupt), "not a media file or corrupt"),
            (str(truncated), "corrupt"),
            (str(no_video), "no video stream"),
            (refused, "connection refused"),
        ):
            # Each bad session's events arrive on the unfiltered socket.
            err = await error_of(bad_ws, http, daemon.base, url)
            assert needle in err, err
        good_events = await collect_until_end(ws_good, good["id"], 30)
        assert good_events[-1]["state"] == "ended"
        async with http.get(f"{daemon.base}/healthz") as resp:
            assert resp.status == 200
    assert "session failed" in daemon.log()


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"user_id": "u", "room_id": "r"}, 422, "url: required"),
        ({"url": "gopher://x/y", "user_id": "u", "room_id": "r"}, 422, "scheme 'gopher'"),
        ({"url": "/does/not/exist.mp4", "user_id": "u", "room_id": "r"}, 422, "not allowed or not"),
        ({"url": "rtmp:///nohost", "user_id": "u", "room_id": "r"}, 422, "has no host"),
        ({"url": "rtmp://h/a/b", "room_id": "r"}, 422, "user_id: required"),
        ({"url": "rtmp://h/a/b", "user_id": "u:x", "room_id": "r"}, 422, "user_id"),
        ({"url": "rtmp://h/a/b", "user_id": "u", "room_id": "r", "x": 1}, 422, "unknown field"),
        ({"url": "rtmp://h/a/b", "user_id": "u", "room_id": "r", "realtime": "y"}, 422, "realtime"),
    ],
)
async def test_stream_requests_are_validated(
    daemon: DaemonProcess, body: dict[str, Any], status: int, needle: str
) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{daemon.base}/v1/streams", json=body) as resp:
            data = await resp.json()
            assert resp.status == status and needle in data["error"], data


async def test_malformed_and_oversized_requests(daemon: DaemonProcess) -> None:
    async with aiohttp.ClientSession() as http:
        url = f"{daemon.base}/v1/streams"
        headers = {"Content-Type": "application/json"}
        async with http.post(url, data=b"{not json", headers=headers) as resp:
            assert resp.status == 400 and "not valid JSON" in (await resp.json())["error"]
        async with http.post(url, data=b"x" * 200_000, headers=headers) as resp:
            assert resp.status == 413 and "too large" in (await resp.json())["error"]
        async with http.post(url, data=b"{}", headers={"Content-Type": "text/plain"}) as resp:
            assert resp.status == 415
        async with http.get(f"{daemon.base}/v1/streams/nope") as resp:
            assert resp.status == 404 and "no stream" in (await resp.json())["error"]
        async with http.delete(f"{daemon.base}/v1/streams/nope") as resp:
            assert resp.status == 404
        async with http.get(f"{daemon.base}/v1/evidence/nope") as resp:
            assert resp.status == 404
    with pytest.raises(websockets.InvalidStatus):
        async with websockets.connect(f"{daemon.ws}?since=abc"):
            pass
    with pytest.raises(websockets.InvalidStatus):
        async with websockets.connect(daemon.ws.replace("/v1/events", "/other")):
            pass


def test_bad_config_field_stops_startup_with_its_name(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("sampling:\n  fsp: 4\n")
    proc = subprocess.run(
        [sys.executable, "-m", "livemod", "serve", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60 * TIMEOUT_SCALE,
    )
    assert proc.returncode == 2
    assert "sampling.fsp: unknown field" in proc.stderr


async def test_delete_stops_a_live_session(daemon: DaemonProcess, benign_clip: Path) -> None:
    async with (
        websockets.connect(f"{daemon.ws}?room_id=del") as ws,
        aiohttp.ClientSession() as http,
    ):
        created = await post_stream(
            http, daemon.base, url=str(benign_clip), user_id="dee", room_id="del", realtime=True
        )
        await asyncio.sleep(1.0)
        async with http.delete(f"{daemon.base}/v1/streams/{created['id']}") as resp:
            assert resp.status == 200
        events = await collect_until_end(ws, created["id"], 15)
    assert events[-1]["state"] == "ended" and events[-1]["reason"] == "stopped"
    assert json.dumps(events)  # serialisable as sent
