"""Escalation, review and webhooks through a real daemon process: a real-time
stream, the event WebSocket, the HTTP API, the fake LLM and a webhook receiver."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import websockets

from livemod.testing import media as testmedia
from livemod.testing.fake_llm import FakeLlm, Reply
from tests.conftest import TIMEOUT_SCALE, DaemonProcess
from tests.receiver import Receiver

pytestmark = pytest.mark.e2e

Event = dict[str, Any]


@pytest.fixture(scope="module")
def long_violation(media_dir: Path) -> Path:
    """12 s: the known-bad picture from 1 s to 11 s, long enough to act on it live."""
    clip = media_dir / "long_violation.mp4"
    if not clip.exists():
        bad = testmedia.photo(testmedia.KNOWN_BAD_PHOTO)
        segments = [testmedia.Segment(1.0, None), testmedia.Segment(10.0, bad)]
        testmedia.make_clip(clip, [*segments, testmedia.Segment(1.0, None)])
    return clip


async def until(
    ws: Any, seen: list[Event], match: Callable[[Event], bool], timeout: float
) -> Event:
    """Read events into ``seen`` until one matches (it may already be there)."""
    for event in seen:
        if match(event):
            return event

    async def run() -> Event:
        while True:
            event: Event = json.loads(await ws.recv())
            seen.append(event)
            if match(event):
                return event

    return await asyncio.wait_for(run(), timeout * TIMEOUT_SCALE)


async def post(http: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, Any]:
    async with http.post(url, json=body) as resp:
        return resp.status, await resp.json()


async def get(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as resp:
        assert resp.status == 200
        return await resp.json()


async def test_review_queue_lifts_a_pause_live_and_survives_a_restart(
    tmp_path: Path, known_bad_dir: Path, long_violation: Path
) -> None:
    async with FakeLlm(Reply("status", status=500)) as llm:
        daemon = DaemonProcess(
            tmp_path,
            known_bad_dir,
            extra_env={
                "LIVEMOD_VISION__MODELS": "[]",
                "LIVEMOD_OCR__ENABLED": "false",
                "LIVEMOD_LLM__BASE_URL": llm.base_url,
                "LIVEMOD_LLM__MODEL": "fake-vlm",
                "LIVEMOD_LLM__RETRIES": "0",
                "LIVEMOD_LLM__ALWAYS_ESCALATE": '["known_bad"]',
                "LIVEMOD_LLM__FALLBACK": '{"known_bad": "fail_closed"}',
                "LIVEMOD_LLM__SWEEP_INTERVAL_S": "0",
            },
        )
        await asyncio.to_thread(daemon.start)
        try:
            await _review_flow(daemon, llm, long_violation)
        finally:
            if daemon.proc is not None and daemon.proc.poll() is None:
                daemon.stop()


async def _review_flow(daemon: DaemonProcess, llm: FakeLlm, clip: Path) -> None:
    seen: list[Event] = []
    reviews = f"{daemon.base}/v1/reviews"
    async with websockets.connect(daemon.ws) as ws, aiohttp.ClientSession() as http:
        sids = {}
        for user, room in (("alice", "room-a"), ("bob", "room-b")):
            body = {"url": str(clip), "user_id": user, "room_id": room, "realtime": True}
            status, created = await post(http, f"{daemon.base}/v1/streams", body)
            assert status == 201, created
            sids[user] = created["id"]
        for user in sids:

            def queued(e: Event, u: str = user) -> bool:
                return e["type"] == "review" and e["state"] == "queued" and e["user_id"] == u

            await until(ws, seen, queued, 30)
        escalations = [e for e in seen if e["type"] == "escalation"]
        assert {(e["outcome"], e["error"]) for e in escalations} == {("fail_closed", "http_500")}
        pause = next(e for e in seen if e["type"] == "action" and e["user_id"] == "alice")
        assert (pause["action"], pause["state"], pause["category"]) == (
            "pause",
            "start",
            "known_bad",
        )
        assert llm.seen and llm.seen[0].images >= 1

        listing = await get(http, reviews)
        items = {r["user_id"]: r for r in listing["reviews"]}
        assert set(items) == {"alice", "bob"}
        item = items["alice"]
        assert item["reason"] == "fail_closed" and item["action_seq"] == pause["seq"]
        assert item["scores"]["hash_distance"] <= 8 and item["severity"] == "critical"
        image = item["evidence"][-1]["image"]
        async with http.get(f"{daemon.base}{image}") as resp:
            assert resp.status == 200 and (await resp.read())[:2] == b"\xff\xd8"

        claim = {"reviewer_id": "rev-1"}
        status, claimed = await post(http, f"{reviews}/{item['id']}/claim", claim)
        assert status == 200 and claimed["claimed_by"] == "rev-1"
        decide = {"reviewer_id": "rev-1", "decision": "overturn", "note": "a rocket launch"}
        status, decided = await post(http, f"{reviews}/{item['id']}/decide", decide)
        assert status == 200 and decided["decision"] == "overturn"

        # The WebSocket client sees the pause lifted while the picture is still on screen.
        stop = await until(
            ws,
            seen,
            lambda e: e["type"] == "action" and e["user_id"] == "alice" and e["state"] == "stop",
            10,
        )
        assert (stop["action"], stop["origin"], stop["review_id"]) == (
            "pause",
            "review",
            item["id"],
        )
        assert stop["evidence_id"] == pause["evidence_id"] and stop["media_time_s"] < 10.5
        for sid in sids.values():

            def ended(e: Event, s: str = sid) -> bool:
                return e["type"] == "session" and e["stream_id"] == s and e["state"] == "ended"

            await until(ws, seen, ended, 40)
        alice = [
            (e["action"], e["state"])
            for e in seen
            if e["type"] == "action" and e["user_id"] == "alice"
        ]
        assert alice == [("pause", "start"), ("pause", "stop")]  # not re-imposed after the overturn

    assert daemon.stop() == 0
    await asyncio.to_thread(daemon.start)
    async with aiohttp.ClientSession() as http:
        pending = (await get(http, reviews))["reviews"]
        assert [(r["user_id"], r["status"]) for r in pending] == [("bob", "pending")]
        (done,) = (await get(http, f"{reviews}?status=decided"))["reviews"]
        assert (done["id"], done["decided_by"], done["note"]) == (
            item["id"],
            "rev-1",
            "a rocket launch",
        )
        async with websockets.connect(f"{daemon.ws}?since=0&user_id=bob") as ws:
            body = {"reviewer_id": "rev-2", "decision": "uphold"}
            status, upheld = await post(http, f"{reviews}/{pending[0]['id']}/decide", body)
            assert status == 200 and upheld["status"] == "decided"
            replay: list[Event] = []
            audit = await until(
                ws, replay, lambda e: e["type"] == "review" and e["state"] == "decided", 10
            )
        assert (audit["decision"], audit["reviewer_id"]) == ("uphold", "rev-2")
        assert [e["state"] for e in replay if e["type"] == "review"] == ["queued", "decided"]


async def test_webhooks_are_signed_retried_and_applied_once(
    tmp_path: Path, known_bad_dir: Path, violation_clip: Path
) -> None:
    secret = "e2e-secret"
    receiver = Receiver(secret.encode())
    receiver.lose_acks = 1
    await receiver.start()
    daemon = DaemonProcess(
        tmp_path,
        known_bad_dir,
        extra_env={
            "LIVEMOD_VISION__MODELS": "[]",
            "LIVEMOD_OCR__ENABLED": "false",
            "LIVEMOD_WEBHOOKS__URLS": json.dumps([receiver.url]),
            "LIVEMOD_WEBHOOKS__BACKOFF_BASE_S": "0.1",
            "LIVEMOD_WEBHOOK_SECRET": secret,
        },
    )
    try:
        await asyncio.to_thread(daemon.start)
        seen: list[Event] = []
        async with websockets.connect(daemon.ws) as ws, aiohttp.ClientSession() as http:
            body = {
                "url": str(violation_clip),
                "user_id": "carol",
                "room_id": "r",
                "realtime": True,
            }
            status, created = await post(http, f"{daemon.base}/v1/streams", body)
            assert status == 201
            sid = created["id"]
            await until(ws, seen, lambda e: e["type"] == "session" and e["state"] == "ended", 40)
        actions = [e for e in seen if e["type"] == "action"]
        assert [(a["action"], a["state"]) for a in actions] == [
            ("pause", "start"),
            ("pause", "stop"),
        ]
        await receiver.wait_effects(2, 15 * TIMEOUT_SCALE)
        assert sorted(receiver.effects.values(), key=lambda e: e["seq"]) == actions
        assert all(e["stream_id"] == sid for e in receiver.effects.values())
        assert all(d.signed for d in receiver.deliveries)
        assert sorted(d.status for d in receiver.deliveries) == [200, 200, 500, 500]
        assert len({d.key for d in receiver.deliveries}) == 2
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.stop()
        await receiver.close()
