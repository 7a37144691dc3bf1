"""Escalations survive a daemon kill: the durable cursor (pure watermark and its
SQLite row), a replay after a restart in process, and a real daemon process
SIGKILLed with an escalation in flight and restarted on the same store."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import websockets

from livemod import metrics
from livemod.escalation.ledger import EscalationLedger
from livemod.escalation.triage import Plan, for_ended_stream
from livemod.escalation.watermark import Watermark
from livemod.testing import media as testmedia
from livemod.testing.fake_llm import FakeLlm, Reply, unsafe
from tests.conftest import TIMEOUT_SCALE, DaemonProcess
from tests.escalation.test_escalation_e2e import until
from tests.inproc import Feeder, Watcher, start_daemon

Event = dict[str, Any]


pytestmark = pytest.mark.usefixtures("fresh_escalation_metrics")


# -- the pure watermark -----------------------------------------------------------------


def test_low_water_waits_for_the_oldest_pending_escalation() -> None:
    mark = Watermark(10)
    assert mark.low_water == 10
    mark.observe(11, escalate=False)
    mark.observe(12, escalate=True)
    mark.observe(13, escalate=False)
    mark.observe(15, escalate=True)
    mark.observe(16, escalate=False)
    assert mark.low_water == 11 and mark.pending == 2
    # Settled out of order: the later one does not move the mark past the earlier.
    mark.settle(15)
    assert mark.low_water == 11
    mark.settle(12)
    assert mark.low_water == 16 and mark.pending == 0
    mark.settle(12)  # twice: nothing changes
    assert mark.low_water == 16


def test_events_not_escalated_advance_the_mark_and_order_is_enforced() -> None:
    mark = Watermark(0)
    for seq in (1, 2, 5):
        mark.observe(seq, escalate=False)
    assert mark.low_water == 5
    with pytest.raises(ValueError, match="observed after 5"):
        mark.observe(5, escalate=True)
    with pytest.raises(ValueError):
        Watermark(0, every_settles=0)


def test_the_mark_never_passes_a_pending_seq_whatever_the_order() -> None:
    mark = Watermark(0)
    pending: set[int] = set()
    settle_order = [7, 3, 19, 11, 5, 13, 17, 1, 15, 9]
    for seq in range(1, 21):
        escalate = seq % 2 == 1
        mark.observe(seq, escalate=escalate)
        if escalate:
            pending.add(seq)
    for seq in settle_order:
        assert mark.low_water < min(pending)
        mark.settle(seq)
        pending.discard(seq)
        assert all(p > mark.low_water for p in pending)
    assert mark.low_water == 20


def test_writes_are_batched_by_count_or_time_and_never_go_back() -> None:
    mark = Watermark(0, every_settles=3, every_s=1.0)
    assert mark.due(0.0) is None  # nothing moved
    mark.observe(1, escalate=False)
    assert mark.due(0.0) == 1  # the first write is due at once
    mark.mark_written(1, 0.0)
    for seq in (2, 3, 4):
        mark.observe(seq, escalate=True)
    mark.settle(2)
    mark.settle(3)
    assert mark.low_water == 3 and mark.due(0.1) is None  # 2 settles, 0.1 s: wait
    assert mark.due(1.5) == 3  # the time bound
    mark.settle(4)
    assert mark.due(0.2) == 4  # the count bound (3 settles since the last write)
    mark.mark_written(4, 0.2)
    assert mark.written == 4 and mark.due(9.0) is None
    mark.mark_written(2, 9.0)
    assert mark.written == 4


def test_a_clip_whose_stream_ended_changes_no_action_but_keeps_its_review() -> None:
    upgraded = Plan("upgraded", start="pause", review=True)
    assert for_ended_stream(upgraded, "review") == Plan("upgraded", review=True)
    assert for_ended_stream(Plan("confirmed"), "review") == Plan("confirmed", review=True)
    assert for_ended_stream(Plan("confirmed"), "pause") == Plan("confirmed")
    assert for_ended_stream(Plan("cleared", lift=True), "review") == Plan("cleared")
    assert for_ended_stream(Plan("fail_open", lift=True), "review") == Plan("fail_open")
    assert for_ended_stream(Plan("degraded"), "review") == Plan("degraded", review=True)


# -- in process: the ledger and a replay after a restart ---------------------------------

LLM_CFG: dict[str, Any] = {
    "model": "vlm",
    "timeout_s": 5.0,
    "retries": 0,
    "rate_per_s": 0,
    "sweep_interval_s": 0,  # the sweep has its own tests (test_sweep.py)
}


async def _cursor_and_settled(tmp_path: Path, after: int) -> tuple[int | None, set[int]]:
    daemon = await start_daemon(tmp_path)
    try:
        ledger = EscalationLedger(daemon.store)
        await ledger.open()
        return await ledger.cursor(), await ledger.settled_after(after)
    finally:
        await daemon.stop()


async def test_history_before_escalation_is_not_escalated_but_a_cursor_gap_is(
    tmp_path: Path,
) -> None:
    # Escalation off: a medium-tier action is committed (the desk queues it directly).
    daemon = await start_daemon(tmp_path)
    try:
        (old,) = await Feeder(daemon, user="old", stream="s-old").hits("violence", 0.8, 3)
    finally:
        await daemon.stop()
    async with FakeLlm(Reply(verdict=unsafe("violence", "end"))) as llm:
        # First run with escalation on: the cursor starts at the end of history.
        daemon = await start_daemon(tmp_path, llm={**LLM_CFG, "base_url": llm.base_url})
        try:
            watch = Watcher(daemon)
            feed = Feeder(daemon, user="new", stream="s-new")
            feed.attach_session()
            (new,) = await feed.hits("violence", 0.8, 3)
            (esc,) = await watch.wait_for(lambda e: e["type"] == "escalation")
            assert esc["action_seq"] == new["seq"] and esc["replayed"] is False
            assert esc["outcome"] == "upgraded" and esc["standing"] == "review"
        finally:
            await daemon.stop()
        assert len(llm.seen) == 1  # the old action was not escalated
        cursor, settled = await _cursor_and_settled(tmp_path, old["seq"] - 1)
        assert cursor is not None and cursor >= esc["seq"]
        assert settled == {new["seq"]}

        # A cursor left behind the old action (as a kill would leave it): replayed once,
        # its stream is gone so nothing stands to change, and it says it was replayed.
        db = sqlite3.connect(tmp_path / "livemod.db")
        with db:
            db.execute("UPDATE escalation_cursor SET seq = ?", (old["seq"] - 1,))
        db.close()
        daemon = await start_daemon(tmp_path, llm={**LLM_CFG, "base_url": llm.base_url})
        try:
            esc_old = await _escalation_for(daemon, old["seq"])
            assert esc_old["replayed"] is True and esc_old["standing"] is None
            assert esc_old["outcome"] == "confirmed" and esc_old["verdict"]["action"] == "end"
            later = await daemon.store.events_since(esc["seq"])
        finally:
            await daemon.stop()
        assert len(llm.seen) == 2  # the new action, settled already, was skipped
        escs = [e for e in later if e["type"] == "escalation"]
        assert [e["action_seq"] for e in escs] == [old["seq"]]
        # Nothing stood to change: the verdict started or stopped no action; the
        # first pass asked for a person, so the clip is queued for review with it.
        assert not [e for e in later if e.get("escalation_seq") == esc_old["seq"]]
        db = sqlite3.connect(tmp_path / "livemod.db")
        try:
            reviews = db.execute("SELECT user_id, reason FROM reviews").fetchall()
        finally:
            db.close()
        assert ("old", "confirmed") in reviews


async def _escalation_for(daemon: Any, action_seq: int) -> Event:
    deadline = time.monotonic() + 15 * TIMEOUT_SCALE
    while time.monotonic() < deadline:
        for event in await daemon.store.events_since(action_seq):
            if event["type"] == "escalation" and event["action_seq"] == action_seq:
                return event
        await asyncio.sleep(0.05)
    raise AssertionError(f"no escalation for action {action_seq}")


# -- a real daemon, killed with an escalation in flight ----------------------------------


@pytest.fixture(scope="module")
def bad_clip(media_dir: Path) -> Path:
    """9 s: the known-bad picture from 0.5 s, so a stream acts on it within a second."""
    clip = media_dir / "restart_violation.mp4"
    if not clip.exists():
        bad = testmedia.photo(testmedia.KNOWN_BAD_PHOTO)
        testmedia.make_clip(clip, [testmedia.Segment(0.5, None), testmedia.Segment(8.5, bad)])
    return clip


async def _start_stream(
    http: aiohttp.ClientSession, daemon: DaemonProcess, clip: Path, user: str
) -> str:
    body = {"url": str(clip), "user_id": user, "room_id": "room", "realtime": True}
    async with http.post(f"{daemon.base}/v1/streams", json=body) as resp:
        created = await resp.json()
        assert resp.status == 201, created
        return str(created["id"])


async def _until(predicate: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout * TIMEOUT_SCALE
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.05)


@pytest.mark.e2e
async def test_an_escalation_in_flight_at_a_kill_is_settled_once_after_the_restart(
    tmp_path: Path, known_bad_dir: Path, bad_clip: Path
) -> None:
    # The first call (bob's) hangs; the second (alice's) answers at once.
    async with FakeLlm(Reply(verdict=unsafe("known_bad", "pause"))) as llm:
        llm.then(Reply(verdict=unsafe("known_bad", "pause"), delay_s=300.0))
        daemon = DaemonProcess(
            tmp_path,
            known_bad_dir,
            extra_env={
                "LIVEMOD_VISION__MODELS": "[]",
                "LIVEMOD_OCR__ENABLED": "false",
                "LIVEMOD_WHIP__ENABLED": "false",
                "LIVEMOD_LLM__BASE_URL": llm.base_url,
                "LIVEMOD_LLM__MODEL": "fake-vlm",
                "LIVEMOD_LLM__RETRIES": "0",
                "LIVEMOD_LLM__RATE_PER_S": "0",
                "LIVEMOD_LLM__TIMEOUT_S": "120",
                "LIVEMOD_LLM__SWEEP_INTERVAL_S": "0",
                "LIVEMOD_LLM__ALWAYS_ESCALATE": '["known_bad"]',
            },
        )
        await asyncio.to_thread(daemon.start)
        try:
            bob, alice = await _kill_with_one_in_flight(daemon, llm, bad_clip)
            llm.default = Reply(verdict=unsafe("known_bad", "end", 0.95))
            await asyncio.to_thread(daemon.start)
            async with websockets.connect(f"{daemon.ws}?since={bob['seq']}") as ws:
                seen: list[Event] = []
                replayed = await until(
                    ws,
                    seen,
                    lambda e: e["type"] == "escalation" and e["action_seq"] == bob["seq"],
                    30,
                )
            assert daemon.stop() == 0
        finally:
            if daemon.proc is not None and daemon.proc.poll() is None:
                _sigkill(daemon)
    assert replayed["replayed"] is True and replayed["error"] is None
    assert replayed["outcome"] == "confirmed" and replayed["verdict"]["action"] == "end"
    assert replayed["standing"] is None  # bob's stream died with the killed process
    assert replayed["stream_id"] == bob["stream_id"]
    # Bob's clip was sent twice (the hung call, then the replay), alice's once.
    assert len(llm.seen) == 3 and all(s.images == 1 for s in llm.seen[2:])

    db = sqlite3.connect(tmp_path / "livemod.db")
    try:
        rows = db.execute("SELECT body FROM events WHERE type = 'escalation' ORDER BY seq")
        escalations = [json.loads(body) for (body,) in rows]
        (cursor,) = db.execute("SELECT seq FROM escalation_cursor").fetchone()
        (last,) = db.execute("SELECT MAX(seq) FROM events").fetchone()
        rows = db.execute(
            "SELECT body FROM events WHERE type = 'action' AND stream_id = ?", (bob["stream_id"],)
        )
        bob_actions = [json.loads(body) for (body,) in rows]
    finally:
        db.close()
    by_action = sorted((e["action_seq"], e["replayed"]) for e in escalations)
    assert by_action == sorted([(bob["seq"], True), (alice["seq"], False)])
    # A graceful stop settles everything it followed: the cursor covers both actions,
    # so a further restart escalates nothing again.
    assert cursor >= max(e["seq"] for e in escalations) and cursor <= last
    # Nothing of bob's stands in the new process: the verdict changed no action.
    assert [(e["action"], e["state"]) for e in bob_actions] == [("pause", "start")]


async def _kill_with_one_in_flight(
    daemon: DaemonProcess, llm: FakeLlm, clip: Path
) -> tuple[Event, Event]:
    """Bob's escalation hangs at the LLM, alice's settles; then SIGKILL."""
    seen: list[Event] = []
    async with websockets.connect(daemon.ws) as ws, aiohttp.ClientSession() as http:

        def started(user: str) -> Any:
            return lambda e: (
                e["type"] == "action" and e["user_id"] == user and e["state"] == "start"
            )

        await _start_stream(http, daemon, clip, "bob")
        bob = await until(ws, seen, started("bob"), 30)
        await _until(lambda: len(llm.seen) >= 1, 15)  # bob's call is in flight
        await _start_stream(http, daemon, clip, "alice")
        alice = await until(ws, seen, started("alice"), 30)
        settled = await until(
            ws, seen, lambda e: e["type"] == "escalation" and e["user_id"] == "alice", 15
        )
        assert settled["action_seq"] == alice["seq"] and settled["outcome"] == "confirmed"
        assert bob["seq"] < alice["seq"]
        assert not [e for e in seen if e["type"] == "escalation" and e["user_id"] == "bob"]
        _sigkill(daemon)
    return bob, alice


def _sigkill(daemon: DaemonProcess) -> None:
    assert daemon.proc is not None
    daemon.proc.kill()
    daemon.proc.wait(timeout=20)


async def test_a_replay_older_than_the_limit_is_counted_not_escalated(tmp_path: Path) -> None:
    # An action committed while escalation was off, then escalation on with a cursor
    # behind it (as after a long outage): too old to escalate, so it is skipped and
    # counted, and the cursor moves past it.
    daemon = await start_daemon(tmp_path)
    try:
        (old,) = await Feeder(daemon, user="old", stream="s-old").hits("violence", 0.8, 3)
    finally:
        await daemon.stop()
    async with FakeLlm(Reply(verdict=unsafe("violence", "end"))) as llm:
        cfg = {**LLM_CFG, "base_url": llm.base_url}
        daemon = await start_daemon(tmp_path, llm=cfg)  # first run: the cursor starts here
        await daemon.stop()
        db = sqlite3.connect(tmp_path / "livemod.db")
        with db:
            db.execute("UPDATE escalation_cursor SET seq = ?", (old["seq"] - 1,))
        db.close()
        expired = metrics.DROPS.labels("escalation", "replay_expired")
        before = expired._value.get()
        await asyncio.sleep(0.05)
        daemon = await start_daemon(tmp_path, llm={**cfg, "replay_max_age_s": 0.01})
        try:
            for _ in range(200):
                if expired._value.get() > before:
                    break
                await asyncio.sleep(0.02)
            later = await daemon.store.events_since(old["seq"])
        finally:
            await daemon.stop()
        assert expired._value.get() == before + 1
        assert llm.seen == []
        assert [e for e in later if e["type"] == "escalation"] == []
        cursor, _ = await _cursor_and_settled(tmp_path, old["seq"])
        assert cursor is not None and cursor >= old["seq"]
