"""The daemon end to end: a real process, a real-time clip, a real WebSocket client."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import websockets

from tests.conftest import BAD_END, BAD_START, TIMEOUT_SCALE, DaemonProcess

pytestmark = pytest.mark.e2e


async def collect_until_end(ws: Any, stream_id: str, timeout: float) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []

    async def run() -> None:
        async for raw in ws:
            event = json.loads(raw)
            events.append(event)
            if (
                event["type"] == "session"
                and event["stream_id"] == stream_id
                and event["state"] in ("ended", "error")
            ):
                return

    await asyncio.wait_for(run(), timeout * TIMEOUT_SCALE)
    return events


async def post_stream(http: aiohttp.ClientSession, base: str, **body: Any) -> dict[str, Any]:
    async with http.post(f"{base}/v1/streams", json=body) as resp:
        data: dict[str, Any] = await resp.json()
        assert resp.status == 201, data
        return data


async def test_known_bad_insert_pauses_once_and_survives_restart(
    daemon: DaemonProcess, violation_clip: Path
) -> None:
    async with (
        websockets.connect(f"{daemon.ws}?room_id=room-1") as ws,
        aiohttp.ClientSession() as http,
    ):
        created = await post_stream(
            http,
            daemon.base,
            url=str(violation_clip),
            user_id="alice",
            room_id="room-1",
            realtime=True,
        )
        sid = created["id"]
        async with http.get(f"{daemon.base}/v1/streams") as resp:
            listing = await resp.json()
        assert sid in [s["id"] for s in listing["streams"]]
        events = await collect_until_end(ws, sid, 60)

        actions = [e for e in events if e["type"] == "action"]
        assert [(a["action"], a["state"]) for a in actions] == [
            ("pause", "start"),
            ("pause", "stop"),
        ]
        start, stop = actions
        assert start["category"] == "known_bad" and start["sources"] == ["hash"]
        assert start["user_id"] == "alice" and start["room_id"] == "room-1"
        # Within the vote window after the insert (2 of 3 samples at 4-8 fps).
        assert BAD_START <= start["media_time_s"] <= BAD_START + 1.0
        assert BAD_END <= stop["media_time_s"] <= BAD_END + 1.5
        assert 0 < start["latency_ms"] < 2000
        assert start["tier"] == "high" and start["confidence"] >= 0.95
        assert stop["evidence_id"] == start["evidence_id"]
        seqs = [e["seq"] for e in events]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)

        async with http.get(f"{daemon.base}/v1/evidence/{start['evidence_id']}") as resp:
            evidence = await resp.json()
            assert resp.status == 200 and evidence["category"] == "known_bad"
            assert evidence["scores"]["hash_distance"] <= 8
        async with http.get(f"{daemon.base}/v1/evidence/{start['evidence_id']}/image") as resp:
            assert resp.status == 200
            assert (await resp.read())[:2] == b"\xff\xd8"

        async with http.get(f"{daemon.base}/v1/streams/{sid}") as resp:
            summary = await resp.json()
        assert summary["status"] == "ended"
        assert summary["severity"] in ("high", "critical") and summary["risk_score"] >= 0.7
        assert any(BAD_START <= t <= BAD_END + 0.5 for t in summary["flagged_media_times"])
        assert [a["state"] for a in summary["actions"]] == ["start", "stop"]

    # Restart on the same store: replay returns exactly the committed events.
    assert daemon.stop() == 0
    daemon.start()
    async with websockets.connect(f"{daemon.ws}?since=0&room_id=room-1") as ws:
        replay = [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in events]
    assert replay == events
    last = events[-1]["seq"]
    async with websockets.connect(f"{daemon.ws}?since={last - 1}") as ws:
        assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == events[-1]


async def test_benign_clip_gives_no_action(daemon: DaemonProcess, benign_clip: Path) -> None:
    async with (
        websockets.connect(f"{daemon.ws}?user_id=bob") as ws,
        aiohttp.ClientSession() as http,
    ):
        created = await post_stream(
            http,
            daemon.base,
            url=str(benign_clip),
            user_id="bob",
            room_id="room-2",
            realtime=True,
        )
        events = await collect_until_end(ws, created["id"], 60)
    assert [e["state"] for e in events] == ["started", "ended"]
    # 6 s at the 8 fps boost of a session's first minute is 48 samples; a loaded
    # machine drops stale ones (by design), but most must have been judged.
    assert events[-1]["samples"] >= 24
