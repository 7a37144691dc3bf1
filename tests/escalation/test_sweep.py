"""The LLM sweep: its planner (pure), the stage against the fake LLM on loopback (real
HTTP, the real client, breaker and retries), and a real daemon that reviews a stream no
edge model flags because the sweep's verdict voted."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import websockets

from livemod.config import Config, LlmConfig, load_config
from livemod.errors import ConfigError
from livemod.escalation.guard import GuardedLlm
from livemod.escalation.llm import LlmClient
from livemod.escalation.sweep import SOURCE, LlmSweep
from livemod.escalation.sweep_plan import SweepPlan
from livemod.messages import VideoFrame
from livemod.policy.taxonomy import load_policy
from livemod.testing import media
from livemod.testing.fake_llm import SAFE, FakeLlm, Reply, unsafe
from tests.conftest import TIMEOUT_SCALE, DaemonProcess

# -- the planner --------------------------------------------------------------------------


def plan(**kw: Any) -> SweepPlan:
    args: dict[str, Any] = {
        "interval_s": 30.0,
        "suspicious_s": 5.0,
        "per_minute": 60.0,
        "concurrency": 2,
    }
    args.update(kw)
    return SweepPlan(**args)


def test_a_stream_is_looked_at_every_interval_and_faster_while_suspicious() -> None:
    p = plan()
    assert p.offer("a", 0.0, suspicious=False)
    assert p.next(0.0) == "a"
    assert p.next(0.0) is None  # not due again while in flight
    p.done("a")
    assert not p.offer("a", 29.0, suspicious=False)
    assert p.offer("a", 6.0, suspicious=True)  # suspicious: 5 s is enough
    assert p.next(6.0) == "a"
    p.done("a")
    assert not p.offer("a", 20.0, suspicious=False)
    assert p.offer("a", 36.0, suspicious=False)


def test_the_budget_holds_and_missed_looks_are_counted() -> None:
    skipped: list[str] = []
    p = plan(per_minute=2, concurrency=1, on_skip=skipped.append)
    for sid in "abc":
        p.offer(sid, 0.0, suspicious=False)
    first = p.next(0.0)
    assert first is not None and p.next(0.0) is None  # concurrency 1
    p.done(first)
    second = p.next(1.0)
    assert second is not None and second != first
    p.done(second)
    assert p.next(2.0) is None  # 2 a minute
    # The third stream stays due; a whole interval later it has missed one look.
    for sid in "abc":
        p.offer(sid, 31.0, suspicious=False)
    assert p.skipped["budget"] == 1 and skipped == ["budget"]
    assert p.next(60.5) is not None


def test_a_crowd_of_streams_shares_the_budget_fairly() -> None:
    # 12 streams want a look every 10 s (72 a minute); the budget is 30 a minute.
    p = plan(interval_s=10.0, suspicious_s=10.0, per_minute=30, concurrency=4)
    looks = dict.fromkeys((f"s{i}" for i in range(12)), 0)
    t = 0.0
    while t < 600.0:
        for sid in looks:
            p.offer(sid, t, suspicious=False)
        while (sid := p.next(t)) is not None:
            looks[sid] += 1
            p.done(sid)
        t += 0.25
    assert sum(looks.values()) == 300
    assert max(looks.values()) - min(looks.values()) <= 1, looks


def test_a_stream_that_ends_mid_look_frees_its_slot() -> None:
    p = plan(concurrency=1)
    p.offer("a", 0.0, suspicious=False)
    assert p.next(0.0) == "a"
    p.forget("a")
    p.offer("b", 1.0, suspicious=False)
    assert p.next(1.0) is None  # a's look is still in flight
    p.done("a")
    assert p.next(1.0) == "b" and p.waiting() == 0


# -- the stage against the fake LLM ---------------------------------------------------------


def sweep_config(llm: FakeLlm, **llm_fields: Any) -> Config:
    config = load_config(None)
    fields = {"base_url": llm.base_url, "model": "fake-vlm", "retries": 0, **llm_fields}
    return config.model_copy(update={"llm": LlmConfig(**fields)})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def running(
    config: Config, clock: Callable[[], float] = time.monotonic
) -> AsyncIterator[LlmSweep]:
    policy = load_policy(config.policy)
    async with aiohttp.ClientSession() as http:
        guard = GuardedLlm(
            config.llm, clock=clock, rng=random.Random(0), on_change=lambda old, new: None
        )
        guard.attach(LlmClient(http, config.llm, categories=list(policy.categories)))
        sweep = LlmSweep(config, clock=clock)
        sweep.attach(guard)
        sweep.open(policy.categories, lambda stream_id: False)
        try:
            yield sweep
        finally:
            await sweep.stop()


PICTURE = media.fit(media.photo("astronaut"), (640, 360))


def frame(i: int, t: float, stream: str = "s1") -> VideoFrame:
    return VideoFrame(stream, i, t, time.time(), PICTURE)


async def test_an_unsafe_verdict_votes_capped_and_a_safe_one_withdraws_it() -> None:
    async with FakeLlm(Reply(verdict=unsafe("hate", "pause", 0.99))) as llm:
        clock = Clock()
        async with running(sweep_config(llm, sweep_frames=4), clock) as sweep:
            for i in range(8):  # 2 s at 4 fps: the first sample is due at once
                assert (await sweep.analyze(frame(i, i * 0.25))).signals == ()
            await sweep.settle()
            (seen,) = llm.seen
            assert seen.images == 1 and "self_harm, hate" in seen.prompt
            assert "sweep" in seen.prompt and "the most recent sampled frame" in seen.prompt
            held = await sweep.analyze(frame(8, 2.0))
            (signal,) = held.signals
            # 0.99 is capped below the high tier: a sweep alone never pauses or ends.
            assert (signal.category, signal.source, signal.score) == ("hate", SOURCE, 0.9)
            assert held.scores == {f"{SOURCE}:hate": 0.9}
            # While the signal stands the stream is suspicious: the next look comes in 5 s.
            llm.default = Reply(verdict=dict(SAFE))
            clock.now += 5.0
            await sweep.analyze(frame(9, 7.0))
            await sweep.settle()
            assert len(llm.seen) == 2 and llm.seen[1].images == 1
            # Four frames a second apart (0, 1, 2 s and the latest), as one grid image.
            assert "a grid of the 4 most recent sampled frames" in llm.seen[1].prompt
            assert (await sweep.analyze(frame(10, 7.25))).signals == ()
            assert sweep.results["unsafe"] == 1 and sweep.results["safe"] == 1


async def test_a_verdict_is_held_for_its_hold_time_only() -> None:
    async with FakeLlm(Reply(verdict=unsafe("self_harm", "review", 0.8))) as llm:
        clock = Clock()
        config = sweep_config(llm, sweep_hold_s=3.0, sweep_suspicious_interval_s=30.0)
        async with running(config, clock) as sweep:
            await sweep.analyze(frame(0, 0.0))
            await sweep.settle()
            clock.now += 2.9
            assert [s.category for s in (await sweep.analyze(frame(1, 2.9))).signals] == [
                "self_harm"
            ]
            clock.now += 0.2
            assert (await sweep.analyze(frame(2, 3.1))).signals == ()


async def test_failures_vote_nothing_and_the_open_breaker_stops_the_looks() -> None:
    async with FakeLlm(Reply("status", status=500)) as llm:
        clock = Clock()
        config = sweep_config(
            llm,
            breaker_failures=3,
            breaker_cooldown_s=60.0,
            sweep_interval_s=1.0,
            sweep_suspicious_interval_s=1.0,
            sweep_concurrency=1,
        )
        async with running(config, clock) as sweep:
            llm.then(Reply("bad_json"), Reply("off_schema"))
            for i in range(40):  # 20 s of samples, one look due every second
                clock.now += 0.5
                assert (await sweep.analyze(frame(i, i * 0.5))).signals == ()
                await sweep.settle()
            # Three failures opened the breaker (15 s cooldown): nothing more was sent.
            assert len(llm.seen) == 3
            assert sweep.results["error"] == 3
            assert sweep.plan.skipped["breaker_open"] >= 10


async def test_the_budget_holds_whatever_the_streams_want() -> None:
    async with FakeLlm() as llm:
        clock = Clock()
        config = sweep_config(llm, sweep_per_minute=6.0, sweep_interval_s=5.0)
        async with running(config, clock) as sweep:
            for i in range(4 * 4 * 30):  # 30 s, 4 fps, 4 streams
                clock.now += 0.25 / 4
                await sweep.analyze(frame(i // 4, (i // 4) * 0.25, stream=f"s{i % 4}"))
                await sweep.settle()
            assert len(llm.seen) == 6  # the budget: 6 a minute, whatever the streams want
            assert sweep.plan.skipped["budget"] > 0


# -- a real daemon ---------------------------------------------------------------------------


@pytest.mark.e2e
async def test_the_sweep_puts_a_stream_under_review_through_the_vote(
    tmp_path: Path, known_bad_dir: Path, benign_clip: Path
) -> None:
    """No edge model runs; the fake LLM calls every image hate. The sweep's verdict votes
    (k of n samples) into a ``review``, which is escalated like any action: never a pause."""
    async with FakeLlm(Reply(verdict=unsafe("hate", "review", 0.85))) as llm:
        daemon = DaemonProcess(
            tmp_path,
            known_bad_dir,
            extra_env={
                "LIVEMOD_VISION__MODELS": "[]",
                "LIVEMOD_OCR__ENABLED": "false",
                "LIVEMOD_LLM__BASE_URL": llm.base_url,
                "LIVEMOD_LLM__MODEL": "fake-vlm",
            },
        )
        await asyncio.to_thread(daemon.start)
        try:
            seen: list[dict[str, Any]] = []
            async with websockets.connect(daemon.ws) as ws, aiohttp.ClientSession() as http:
                body = {"url": str(benign_clip), "user_id": "u", "room_id": "r", "realtime": True}
                async with http.post(f"{daemon.base}/v1/streams", json=body) as resp:
                    assert resp.status == 201

                async def collect() -> None:
                    while True:
                        event = json.loads(await ws.recv())
                        seen.append(event)
                        if event["type"] == "session" and event["state"] == "ended":
                            return

                await asyncio.wait_for(collect(), 30 * TIMEOUT_SCALE)
                async with http.get(f"{daemon.base}/metrics") as resp:
                    exposition = await resp.text()
        finally:
            if daemon.proc is not None and daemon.proc.poll() is None:
                daemon.stop()
    actions = [e for e in seen if e["type"] == "action"]
    start = next(e for e in actions if e["state"] == "start")
    assert (start["category"], start["action"], start["sources"]) == ("hate", "review", [SOURCE])
    assert {e["action"] for e in actions} == {"review"}
    escalation = next(e for e in seen if e["type"] == "escalation")
    assert escalation["action_seq"] == start["seq"] and escalation["outcome"] == "confirmed"
    sweeps = [s for s in llm.seen if "Routine sweep" in s.prompt]
    assert sweeps and all(s.images == 1 for s in sweeps)
    assert 'livemod_llm_sweep_requests_total{result="unsafe"}' in exposition


def test_a_sweep_category_missing_from_the_policy_stops_start_up() -> None:
    config = load_config(None)
    llm = config.llm.model_copy(update={"sweep_categories": ["hate", "gore"]})
    sweep = LlmSweep(config.model_copy(update={"llm": llm}))
    with pytest.raises(ConfigError, match=r"llm.sweep_categories: 'gore' not a policy category"):
        sweep.open(load_policy(config.policy).categories, lambda stream_id: False)
