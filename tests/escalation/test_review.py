"""The human review queue through the HTTP API of an in-process daemon: serving
order, claims, decisions applied live, audit events, and persistence."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from livemod.app.daemon import Daemon
from livemod.escalation.desk import ReviewDesk
from livemod.escalation.review import CLAIM_TTL_S, NewReview, ReviewQueue
from livemod.escalation.verdict import Verdict
from tests.inproc import Feeder, Watcher, start_daemon


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    d = await start_daemon(tmp_path)
    try:
        yield d
    finally:
        await d.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def base(daemon: Daemon) -> str:
    return f"http://127.0.0.1:{daemon.http_port}/v1/reviews"


async def call(
    http: aiohttp.ClientSession, method: str, url: str, body: Any = None
) -> tuple[int, Any]:
    async with http.request(method, url, json=body) as resp:
        return resp.status, await resp.json()


async def test_policy_review_is_queued_and_an_overturn_lifts_it_live(
    daemon: Daemon, http: aiohttp.ClientSession
) -> None:
    watch = Watcher(daemon)
    feed = Feeder(daemon)
    feed.attach_session()
    (start,) = await feed.hits("violence", 0.8, 3)
    assert start["action"] == "review"
    await watch.wait_for(lambda e: e["type"] == "review" and e["state"] == "queued")

    status, listing = await call(http, "GET", base(daemon))
    assert status == 200
    (item,) = listing["reviews"]
    assert item["status"] == "pending" and item["reason"] == "policy_review"
    assert item["action_seq"] == start["seq"] and item["severity"] == "high"
    assert item["scores"]["first_pass"] == 0.8 and item["category"] == "violence"
    # The action's own evidence first, then the session's recent frames.
    assert item["evidence"][0]["id"] == start["evidence_id"] and len(item["evidence"]) == 4
    async with http.get(f"http://127.0.0.1:{daemon.http_port}{item['evidence'][1]['image']}") as r:
        assert r.status == 200 and (await r.read())[:2] == b"\xff\xd8"

    rid = item["id"]
    status, claimed = await call(
        http, "POST", f"{base(daemon)}/{rid}/claim", {"reviewer_id": "ann"}
    )
    assert status == 200 and claimed["status"] == "claimed" and claimed["claimed_by"] == "ann"
    status, err = await call(http, "POST", f"{base(daemon)}/{rid}/claim", {"reviewer_id": "bob"})
    assert status == 409 and "claimed by ann" in err["error"]
    status, err = await call(
        http, "POST", f"{base(daemon)}/{rid}/decide", {"reviewer_id": "bob", "decision": "uphold"}
    )
    assert status == 409

    body = {"reviewer_id": "ann", "decision": "overturn", "note": "a news clip"}
    status, decided = await call(http, "POST", f"{base(daemon)}/{rid}/decide", body)
    assert status == 200 and decided["status"] == "decided" and decided["decision"] == "overturn"
    (stop,) = await watch.wait_for(lambda e: e.get("origin") == "review")
    assert (stop["action"], stop["state"], stop["review_id"]) == ("review", "stop", rid)
    assert stop["evidence_id"] == start["evidence_id"]
    assert daemon.engine.standing("u1:r1") == []
    (audit,) = await watch.wait_for(lambda e: e["type"] == "review" and e["state"] == "decided")
    assert (audit["decision"], audit["reviewer_id"], audit["note"]) == (
        "overturn",
        "ann",
        "a news clip",
    )
    assert audit["lifted_seq"] == stop["seq"] and audit["standing"] is None

    status, err = await call(
        http, "POST", f"{base(daemon)}/{rid}/decide", {"reviewer_id": "ann", "decision": "uphold"}
    )
    assert status == 409 and "already decided" in err["error"]
    status, listing = await call(http, "GET", base(daemon))
    assert listing["reviews"] == []
    status, listing = await call(http, "GET", f"{base(daemon)}?status=decided")
    assert [r["id"] for r in listing["reviews"]] == [rid]
    assert [h["event"] for h in listing["reviews"][0]["history"]] == [
        "queued",
        "claimed",
        "overturn",
    ]


async def test_uphold_keeps_the_action_and_escalate_goes_up_a_level(
    daemon: Daemon, http: aiohttp.ClientSession
) -> None:
    watch = Watcher(daemon)
    await Feeder(daemon, user="a").hits("violence", 0.8, 3)
    await Feeder(daemon, user="b").hits("violence", 0.8, 3)
    await watch.wait_for(lambda e: e["type"] == "review", count=2)
    _, listing = await call(http, "GET", base(daemon))
    first, second = listing["reviews"]
    body = {"reviewer_id": "ann", "decision": "uphold"}
    status, _ = await call(http, "POST", f"{base(daemon)}/{first['id']}/decide", body)
    assert status == 200
    assert [s.action for s in daemon.engine.standing(f"{first['user_id']}:r1")] == ["review"]

    body = {"reviewer_id": "ann", "decision": "escalate"}
    status, up = await call(http, "POST", f"{base(daemon)}/{second['id']}/decide", body)
    assert status == 200 and up["status"] == "pending" and up["level"] == 1
    _, senior = await call(http, "GET", f"{base(daemon)}?level=1")
    assert [r["id"] for r in senior["reviews"]] == [second["id"]]
    body = {"reviewer_id": "senior-1", "decision": "uphold"}
    status, done = await call(http, "POST", f"{base(daemon)}/{second['id']}/decide", body)
    assert status == 200 and done["decided_by"] == "senior-1"


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "needle"),
    [
        ("GET", "?status=lost", None, 422, "status"),
        ("GET", "?limit=0", None, 422, "limit"),
        ("GET", "/nope", None, 404, "no review"),
        ("POST", "/nope/claim", {"reviewer_id": "ann"}, 404, "no review"),
        ("POST", "/nope/claim", {"reviewer_id": "a b"}, 422, "reviewer_id"),
        ("POST", "/nope/claim", {"reviewer_id": "ann", "x": 1}, 422, "unknown field"),
        ("POST", "/nope/decide", {"reviewer_id": "ann", "decision": "ban"}, 422, "decision"),
        ("POST", "/nope/decide", [1], 400, "JSON object"),
    ],
)
async def test_bad_requests_say_what_is_wrong(
    daemon: Daemon,
    http: aiohttp.ClientSession,
    method: str,
    path: str,
    body: Any,
    status: int,
    needle: str,
) -> None:
    got, data = await call(http, method, base(daemon) + path, body)
    assert got == status and needle in data["error"]


async def test_possible_minors_first_then_severity_and_claims_lapse(daemon: Daemon) -> None:
    now = [1000.0]
    queue = ReviewQueue(daemon.store, clock=lambda: now[0])

    def new(severity: str, minor: bool = False) -> NewReview:
        return NewReview("s", "u", "r", "violence", severity, "test", possible_minor=minor)

    low = await queue.add(new("low"))
    now[0] += 1
    critical = await queue.add(new("critical"))
    now[0] += 1
    minor = await queue.add(new("medium", minor=True))
    now[0] += 1
    high = await queue.add(new("high"))
    order = [r["id"] for r in await queue.list()]
    assert order == [minor["id"], critical["id"], high["id"], low["id"]]

    await queue.claim(minor["id"], "ann")
    assert [r["id"] for r in await queue.list(status="claimed")] == [minor["id"]]
    now[0] += CLAIM_TTL_S + 1
    assert minor["id"] in [r["id"] for r in await queue.list(status="pending")]
    taken = await queue.claim(minor["id"], "bob")
    assert taken["claimed_by"] == "bob"


async def test_minor_flag_from_the_verdict_and_restart(tmp_path: Path) -> None:
    daemon = await start_daemon(tmp_path)
    try:
        desk = next(c for c in daemon.components if isinstance(c, ReviewDesk))
        event: dict[str, Any] = {
            "seq": 7,
            "stream_id": "s9",
            "user_id": "u9",
            "room_id": "r9",
            "category": "sexual",
            "action": "blur",
            "confidence": 0.55,
        }
        verdict = Verdict(True, 0.92, "sexual", "explicit", "pause", possible_minor=True)
        item = await desk.submit(event, reason="inconclusive", verdict=verdict)
        assert item["possible_minor"] and item["severity"] == "critical"
        assert item["verdict"]["rationale"] == "explicit"
    finally:
        await daemon.stop()
    again = await start_daemon(tmp_path)
    try:
        desk = next(c for c in again.components if isinstance(c, ReviewDesk))
        (kept,) = await desk.queue.list()
        assert kept["id"] == item["id"] and kept["verdict"] == item["verdict"]
        decided = await desk.decide(kept["id"], "ann", "overturn")
        assert decided["status"] == "decided" and decided["lifted_seq"] is None
    finally:
        await again.stop()


def _reviews(db_path: Path) -> list[tuple[str, int]]:
    db = sqlite3.connect(db_path)
    try:
        rows = db.execute("SELECT reason, detail FROM reviews").fetchall()
    finally:
        db.close()
    return [(reason, int(json.loads(detail)["action_seq"])) for reason, detail in rows]


async def test_a_review_a_kill_left_unqueued_is_queued_once_after_restart(tmp_path: Path) -> None:
    daemon = await start_daemon(tmp_path)
    try:
        watch = Watcher(daemon)
        (start,) = await Feeder(daemon, user="u1", stream="s1").hits("violence", 0.8, 3)
        await watch.wait_for(lambda e: e["type"] == "review" and e["state"] == "queued")
    finally:
        await daemon.stop()
    db_path = tmp_path / "livemod.db"
    assert _reviews(db_path) == [("policy_review", start["seq"])]
    # What a kill between the commit and the queue item leaves: the action without its
    # item, the desk's cursor before it.
    db = sqlite3.connect(db_path)
    with db:
        (cursor,) = db.execute("SELECT seq FROM review_cursor").fetchone()
        assert cursor >= start["seq"]  # a graceful stop wrote the cursor past it
        db.execute("DELETE FROM reviews")
        db.execute("UPDATE review_cursor SET seq = ?", (start["seq"] - 1,))
    db.close()
    db = sqlite3.connect(db_path)
    (before,) = db.execute("SELECT MAX(seq) FROM events").fetchone()
    db.close()

    daemon = await start_daemon(tmp_path)
    try:
        # The desk replays at start-up, possibly before a subscriber could attach:
        # read the store.
        queued: list[dict[str, Any]] = []
        for _ in range(300):
            later = await daemon.store.events_since(before)
            queued = [e for e in later if e["type"] == "review" and e["state"] == "queued"]
            if queued:
                break
            await asyncio.sleep(0.05)
        assert [q["action_seq"] for q in queued] == [start["seq"]]
    finally:
        await daemon.stop()
    assert _reviews(db_path) == [("policy_review", start["seq"])]

    # Once only: with the cursor moved back again, the item is found and not queued twice.
    db = sqlite3.connect(db_path)
    with db:
        db.execute("UPDATE review_cursor SET seq = ?", (start["seq"] - 1,))
        (before,) = db.execute("SELECT MAX(seq) FROM events").fetchone()
    db.close()
    daemon = await start_daemon(tmp_path)
    try:
        await asyncio.sleep(1.0)  # the replay of one event takes milliseconds
        later = await daemon.store.events_since(before)
    finally:
        await daemon.stop()
    assert [e for e in later if e["type"] == "review"] == []
    assert _reviews(db_path) == [("policy_review", start["seq"])]
