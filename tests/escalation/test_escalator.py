"""The escalator inside a real (in-process) daemon, against the scripted fake LLM:
verdicts, retries, timeouts, bad answers, each fallback mode, the breaker, and
that no escalated action is ever left without an outcome."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from livemod import metrics
from livemod.app.daemon import Daemon
from livemod.errors import ConfigError
from livemod.escalation.desk import ReviewDesk
from livemod.escalation.escalator import Escalator
from livemod.testing.fake_llm import SAFE, FakeLlm, Reply, unsafe
from tests.inproc import Feeder, Watcher, start_daemon

pytestmark = pytest.mark.usefixtures("fresh_escalation_metrics")


@pytest.fixture
async def llm() -> AsyncIterator[FakeLlm]:
    async with FakeLlm(Reply(verdict=unsafe("violence", "pause"))) as fake:
        yield fake


async def daemon_with(tmp_path: Path, llm: FakeLlm, **llm_cfg: Any) -> Daemon:
    cfg = {
        "base_url": llm.base_url,
        "model": "vlm",
        "timeout_s": 2.0,
        "retries": 0,
        "retry_base_s": 0.05,
        "rate_per_s": 0,
        "sweep_interval_s": 0,  # the sweep has its own tests (test_sweep.py)
        **llm_cfg,
    }
    return await start_daemon(tmp_path, llm=cfg)


def desk(daemon: Daemon) -> ReviewDesk:
    return next(c for c in daemon.components if isinstance(c, ReviewDesk))


def is_escalation(e: dict[str, Any]) -> bool:
    return e["type"] == "escalation"


def by_origin(events: list[dict[str, Any]], origin: str) -> list[tuple[str, str]]:
    return [(e["action"], e["state"]) for e in events if e.get("origin") == origin]


async def test_unsafe_verdict_upgrades_the_action_with_the_ring_frames(
    tmp_path: Path, llm: FakeLlm
) -> None:
    daemon = await daemon_with(tmp_path, llm)
    try:
        watch = Watcher(daemon)
        feed = Feeder(daemon)
        feed.attach_session()
        await feed.clean(2)
        (start,) = await feed.hits("violence", 0.8, 3)
        assert (start["action"], start["tier"]) == ("review", "medium")
        (esc,) = await watch.wait_for(is_escalation)
        assert esc["outcome"] == "upgraded" and esc["action_seq"] == start["seq"]
        assert esc["reason"] == "tier_medium" and esc["verdict"]["action"] == "pause"
        await watch.wait_for(lambda e: e["type"] == "review")
        assert by_origin(watch.events, "llm") == [("pause", "start"), ("review", "stop")]
        pause = next(e for e in watch.events if e.get("origin") == "llm")
        assert pause["evidence_id"] == start["evidence_id"] and "llm" in pause["sources"]
        assert pause["escalation_seq"] == esc["seq"]
        assert [(s.category, s.action) for s in daemon.engine.standing("u1:r1")] == [
            ("violence", "pause")
        ]
        # The clip: the newest clip_frames (4) sampled frames from the session's ring.
        (seen,) = llm.seen
        assert seen.images == 4 and "violence" in seen.prompt
        # The first pass asked for human review, so the item is queued with the verdict.
        (item,) = await desk(daemon).queue.list()
        assert item["reason"] == "upgraded" and item["verdict"]["rationale"]
        assert len(item["evidence"]) == 1 + 4
    finally:
        await daemon.stop()


async def test_safe_verdict_clears_and_the_same_content_does_not_reimpose(
    tmp_path: Path, llm: FakeLlm
) -> None:
    llm.default = Reply(verdict=SAFE)
    daemon = await daemon_with(tmp_path, llm)
    try:
        watch = Watcher(daemon)
        feed = Feeder(daemon)
        await feed.hits("violence", 0.8, 3)
        (esc,) = await watch.wait_for(is_escalation)
        assert esc["outcome"] == "cleared"
        await watch.wait_for(lambda e: e.get("origin") == "llm")
        assert by_origin(watch.events, "llm") == [("review", "stop")]
        assert daemon.engine.standing("u1:r1") == []
        # Same content on screen: no new action; clean for clear_after, then it may act.
        assert await feed.hits("violence", 0.8, 6) == []
        await feed.clean(4)
        (again,) = await feed.hits("violence", 0.8, 3)
        assert again["action"] == "review"
        await watch.wait_for(is_escalation, count=2)
        assert await desk(daemon).queue.list() == []
    finally:
        await daemon.stop()


async def test_429_and_500_are_retried_with_backoff(tmp_path: Path, llm: FakeLlm) -> None:
    llm.then(Reply("status", status=429, retry_after="0.3"), Reply("status", status=500))
    llm.default = Reply(verdict=unsafe("violence", "review"))
    daemon = await daemon_with(tmp_path, llm, retries=2)
    try:
        watch = Watcher(daemon)
        await Feeder(daemon).hits("violence", 0.8, 3)
        (esc,) = await watch.wait_for(is_escalation)
        assert esc["outcome"] == "confirmed" and esc["error"] is None
        assert len(llm.seen) == 3
        assert llm.seen[1].at - llm.seen[0].at >= 0.29  # Retry-After honoured
        escalator = next(c for c in daemon.components if isinstance(c, Escalator))
        assert escalator.breaker.state == "closed"
    finally:
        await daemon.stop()


async def test_retry_after_beyond_the_cap_is_not_waited_for(tmp_path: Path, llm: FakeLlm) -> None:
    llm.default = Reply("status", status=429, retry_after="60")
    daemon = await daemon_with(tmp_path, llm, retries=3, retry_max_s=1.0)
    try:
        watch = Watcher(daemon)
        await Feeder(daemon).hits("violence", 0.8, 3)
        (esc,) = await watch.wait_for(is_escalation, timeout=5)
        assert esc["error"] == "http_429" and esc["fallback"] == "degraded"
        assert len(llm.seen) == 1
    finally:
        await daemon.stop()


async def test_slow_answer_past_the_timeout_takes_the_fallback(
    tmp_path: Path, llm: FakeLlm
) -> None:
    llm.default = Reply(verdict=SAFE, delay_s=3.0)
    daemon = await daemon_with(tmp_path, llm, timeout_s=0.3)
    try:
        watch = Watcher(daemon)
        await Feeder(daemon, user="a").hits("violence", 0.85, 3)
        await Feeder(daemon, user="b").hits("violence", 0.75, 3)
        escs = await watch.wait_for(is_escalation, count=2)
        assert {e["error"] for e in escs} == {"timeout"}
        assert {e["outcome"] for e in escs} == {"degraded"}
        # degraded: first pass alone, stricter: 0.85 >= degraded_confidence takes the
        # high-tier action (pause); 0.75 keeps the first-pass action.
        await watch.wait_for(lambda e: e.get("origin") == "fallback")
        assert [s.action for s in daemon.engine.standing("a:r1")] == ["pause"]
        assert [s.action for s in daemon.engine.standing("b:r1")] == ["review"]
    finally:
        await daemon.stop()


async def test_bad_answers_are_failures_never_safe(tmp_path: Path, llm: FakeLlm) -> None:
    llm.then(Reply("bad_json"), Reply("bad_content"), Reply("off_schema"))
    daemon = await daemon_with(
        tmp_path, llm, retries=2, max_concurrency=1, fallback={"violence": "fail_closed"}
    )
    try:
        watch = Watcher(daemon)
        for user in ("a", "b", "c"):
            await Feeder(daemon, user=user).hits("violence", 0.8, 3)
        escs = await watch.wait_for(is_escalation, count=3)
        assert len(llm.seen) == 3  # not retryable: one call each
        assert {e["error"] for e in escs} == {"invalid_verdict"}
        assert {e["outcome"] for e in escs} == {"fail_closed"}
        await watch.wait_for(lambda e: e["type"] == "review", count=3)
        for user in ("a", "b", "c"):
            assert [s.action for s in daemon.engine.standing(f"{user}:r1")] == ["pause"]
    finally:
        await daemon.stop()


@pytest.mark.parametrize(
    ("mode", "expected", "standing", "reviews"),
    [
        ("fail_open", [("review", "stop")], [], 0),
        ("fail_closed", [("pause", "start"), ("review", "stop")], ["pause"], 1),
        ("degraded", [("pause", "start"), ("review", "stop")], ["pause"], 0),
    ],
)
async def test_each_fallback_mode(
    tmp_path: Path,
    llm: FakeLlm,
    mode: str,
    expected: list[tuple[str, str]],
    standing: list[str],
    reviews: int,
) -> None:
    llm.default = Reply("status", status=500)
    daemon = await daemon_with(tmp_path, llm, fallback={"violence": mode})
    try:
        watch = Watcher(daemon)
        await Feeder(daemon).hits("violence", 0.85, 3)
        (esc,) = await watch.wait_for(is_escalation)
        assert (esc["outcome"], esc["fallback"], esc["error"]) == (mode, mode, "http_500")
        await asyncio.sleep(0.2)
        assert by_origin(watch.drain(), "fallback") == expected
        assert [s.action for s in daemon.engine.standing("u1:r1")] == standing
        items = await desk(daemon).queue.list()
        assert len(items) == reviews
        if reviews:
            assert items[0]["reason"] == "fail_closed" and items[0]["verdict"] is None
    finally:
        await daemon.stop()


async def test_breaker_opens_falls_back_and_recovers_without_losing_an_event(
    tmp_path: Path, llm: FakeLlm
) -> None:
    llm.default = Reply("status", status=500)
    daemon = await daemon_with(
        tmp_path, llm, breaker_failures=3, breaker_cooldown_s=0.5, max_concurrency=1
    )
    try:
        watch = Watcher(daemon)
        escalated = []
        for i in range(10):
            escalated += await Feeder(daemon, user=f"u{i}").hits("violence", 0.8, 3)
        escs = await watch.wait_for(is_escalation, count=10)
        assert sorted(e["action_seq"] for e in escs) == sorted(e["seq"] for e in escalated)
        assert [e["error"] for e in escs].count("http_500") == 3
        assert [e["error"] for e in escs].count("breaker_open") == 7
        assert len(llm.seen) == 3  # while open, nothing reaches the LLM
        (opened,) = await watch.wait_for(lambda e: e["type"] == "breaker")
        assert (opened["previous"], opened["state"]) == ("closed", "open")
        assert metrics.LLM_BREAKER_STATE.labels("open")._value.get() == 1.0
        # Recovery: after the cooldown one probe goes through and closes it.
        llm.default = Reply(verdict=unsafe("violence", "review"))
        await asyncio.sleep(0.6)
        await Feeder(daemon, user="late").hits("violence", 0.8, 3)
        last = await watch.wait_for(is_escalation, count=11)
        assert last[-1]["outcome"] == "confirmed"
        states = [
            e["state"] for e in await watch.wait_for(lambda e: e["type"] == "breaker", count=3)
        ]
        assert states == ["open", "half_open", "closed"]
        assert metrics.LLM_BREAKER_STATE.labels("closed")._value.get() == 1.0
    finally:
        await daemon.stop()


async def test_a_full_queue_and_shutdown_settle_every_escalation(
    tmp_path: Path, llm: FakeLlm
) -> None:
    llm.default = Reply(verdict=SAFE, delay_s=10.0)
    daemon = await daemon_with(
        tmp_path,
        llm,
        timeout_s=20,
        max_concurrency=1,
        queue_size=1,
        fallback={"violence": "fail_closed"},
    )
    watch = Watcher(daemon)
    try:
        for user in ("a", "b", "c"):
            await Feeder(daemon, user=user).hits("violence", 0.8, 3)
        (full,) = await watch.wait_for(is_escalation)
        assert full["error"] == "queue_full" and full["outcome"] == "fail_closed"
        await watch.wait_for(lambda e: e["type"] == "review")
    finally:
        await daemon.stop()
    escs = [e for e in watch.drain() if is_escalation(e)]
    assert sorted(e["error"] for e in escs) == ["queue_full", "shutdown", "shutdown"]
    assert {e["user_id"] for e in escs} == {"a", "b", "c"}


async def test_ollama_provider(tmp_path: Path, llm: FakeLlm) -> None:
    daemon = await daemon_with(tmp_path, llm, provider="ollama", base_url=llm.ollama_url)
    try:
        watch = Watcher(daemon)
        await Feeder(daemon).hits("violence", 0.8, 3)
        (esc,) = await watch.wait_for(is_escalation)
        assert esc["outcome"] == "upgraded" and llm.seen[0].path == "/api/chat"
    finally:
        await daemon.stop()


async def test_unknown_category_in_the_llm_config_stops_start_up(
    tmp_path: Path, llm: FakeLlm
) -> None:
    with pytest.raises(ConfigError, match=r"llm\.always_escalate: 'gore' is not a policy category"):
        await daemon_with(tmp_path, llm, always_escalate=["gore"])
