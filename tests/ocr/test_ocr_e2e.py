"""On-screen text end to end: ffmpeg drawtext clips, played in real time into the daemon.

One clip carries a benign caption, a solicitation with a phone number, a hate term
from the shipped text policy and a QR code, each at a known time; a second clip (a
talking-head-like scene with benign captions) runs at the same time and must give
nothing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import websockets

from livemod.testing.text import Caption, QrOverlay, make_text_clip
from tests.conftest import TIMEOUT_SCALE, DaemonProcess

pytestmark = pytest.mark.e2e

PHONE = (3.5, 7.0)
HATE = (9.0, 12.0)
QR = (14.0, 17.0)
DURATION = 19.0


@pytest.fixture(scope="module")
def text_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ocr-media")
    return make_text_clip(
        folder / "violations.mp4",
        DURATION,
        [
            Caption("Welcome to my stream, have fun!", 0.0, 3.0),
            Caption("Call me tonight 555-867-5309", *PHONE, y="h-th-60"),
            Caption("they are all subhuman", *HATE, y="60"),
        ],
        qr=[QrOverlay("https://example.com/dm-me", *QR, x=900, y=200)],
    )


@pytest.fixture(scope="module")
def benign_text_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ocr-media")
    return make_text_clip(
        folder / "benign.mp4",
        12.0,
        [
            Caption("Welcome back everyone", 0.5, 4.0),
            Caption("Today we are baking sourdough bread", 4.5, 8.0),
            Caption("Thanks for watching, see you tomorrow", 8.5, 12.0, y="40"),
        ],
        background="talking_head",
    )


@pytest.fixture
def ocr_daemon(tmp_path: Path, known_bad_dir: Path) -> Iterator[DaemonProcess]:
    proc = DaemonProcess(
        tmp_path, known_bad_dir, extra_env={"LIVEMOD_OCR__ENABLED": "true", "LIVEMOD_OCR__FPS": "1"}
    )
    proc.start()
    try:
        yield proc
    finally:
        if proc.proc is not None and proc.proc.poll() is None:
            proc.stop()


async def collect(ws: Any, stream_ids: set[str], timeout: float) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    open_streams = set(stream_ids)

    async def run() -> None:
        async for raw in ws:
            event = json.loads(raw)
            events.append(event)
            if event["type"] == "session" and event["state"] in ("ended", "error"):
                open_streams.discard(event["stream_id"])
                if not open_streams:
                    return

    await asyncio.wait_for(run(), timeout * TIMEOUT_SCALE)
    return events


async def start(http: aiohttp.ClientSession, base: str, clip: Path, user: str) -> str:
    body = {"url": str(clip), "user_id": user, "room_id": "ocr-room", "realtime": True}
    async with http.post(f"{base}/v1/streams", json=body) as resp:
        data = await resp.json()
        assert resp.status == 201, data
        return str(data["id"])


def centre_x(region: dict[str, Any]) -> float:
    return float(region["x"] + region["w"] / 2)


async def test_text_on_screen_acts_with_regions_at_the_right_time(
    ocr_daemon: DaemonProcess, text_clip: Path, benign_text_clip: Path
) -> None:
    async with (
        websockets.connect(f"{ocr_daemon.ws}?room_id=ocr-room") as ws,
        aiohttp.ClientSession() as http,
    ):
        bad = await start(http, ocr_daemon.base, text_clip, "texter")
        benign = await start(http, ocr_daemon.base, benign_text_clip, "baker")
        events = await collect(ws, {bad, benign}, DURATION + 40)

        assert not [e for e in events if e["type"] == "action" and e["stream_id"] == benign]
        ended = [e for e in events if e["type"] == "session" and e["state"] == "ended"]
        assert {e["stream_id"] for e in ended} == {bad, benign}

        actions = [e for e in events if e["type"] == "action" and e["stream_id"] == bad]
        starts = [a for a in actions if a["state"] == "start"]
        stops = [a for a in actions if a["state"] == "stop"]
        assert [(a["category"], a["action"], a["sources"]) for a in starts] == [
            ("contact", "blur", ["ocr"]),
            ("hate", "review", ["ocr"]),
            ("contact", "blur", ["ocr:qr"]),
        ]
        assert [(a["category"], a["action"]) for a in stops] == [
            ("contact", "blur"),
            ("hate", "review"),
            ("contact", "blur"),
        ]
        phone, hate, qr = starts
        # Text is read within about a second (ocr.fps; a second stream may hold the one
        # OCR worker for a turn), then confirmed by the vote over the next samples.
        assert PHONE[0] <= phone["media_time_s"] <= PHONE[0] + 2.5
        assert HATE[0] <= hate["media_time_s"] <= HATE[0] + 2.5
        assert QR[0] <= qr["media_time_s"] <= QR[0] + 2.5
        for start_event, stop_event, (_, end) in zip(starts, stops, (PHONE, HATE, QR), strict=True):
            assert end <= stop_event["media_time_s"] <= end + 3.0
            assert stop_event["evidence_id"] == start_event["evidence_id"]
            assert start_event["latency_ms"] > 0

        # Regions are the text's boxes in source pixels (the clip is 1280x720, analysis
        # runs on 640x360): the caption centred at the bottom, the other at the top.
        (box,) = phone["regions"]
        assert abs(centre_x(box) - 640) < 30 and 590 <= box["y"] <= 640 and box["w"] > 500
        assert box["label"] == "text"
        (box,) = hate["regions"]
        assert abs(centre_x(box) - 640) < 30 and 40 <= box["y"] <= 80 and box["w"] > 300
        (box,) = qr["regions"]
        assert 900 <= box["x"] <= 940 and 200 <= box["y"] <= 240 and 150 <= box["w"] <= 240

        # Evidence: the frame with the boxes drawn, and the text read.
        async with http.get(f"{ocr_daemon.base}/v1/evidence/{phone['evidence_id']}") as resp:
            evidence = await resp.json()
        assert evidence["category"] == "contact" and "555-867-5309" in evidence["text"]
        async with http.get(f"{ocr_daemon.base}/v1/evidence/{qr['evidence_id']}") as resp:
            assert "[QR] https://example.com/dm-me" in (await resp.json())["text"]
        async with http.get(f"{ocr_daemon.base}/v1/evidence/{hate['evidence_id']}/image") as resp:
            assert resp.status == 200 and (await resp.read())[:2] == b"\xff\xd8"

        async with http.get(f"{ocr_daemon.base}/metrics") as resp:
            text = await resp.text()
        runs = _metric(text, "livemod_ocr_runs_total")
        gated = sum(
            _metric(text, f'livemod_ocr_gated_total{{reason="{r}"}}')
            for r in ("rate", "unchanged", "busy", "budget")
        )
        # Two streams at 8 samples a second, OCR at 1 per second at most.
        assert runs > 0 and gated > 4 * runs


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not exported")
