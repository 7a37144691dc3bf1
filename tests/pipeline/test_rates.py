"""The adaptive rate controller: calm streams slow down, the lowest-risk shed first."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np

from livemod.app.build import build_analyzers
from livemod.config import Config, RatesConfig, SamplingConfig, load_config
from livemod.events.hub import EventHub
from livemod.messages import VideoFrame
from livemod.paths import DEFAULT_POLICY
from livemod.pipeline.analysis import AnalysisService
from livemod.pipeline.rates import RateController, RateLoop, RatePolicy, StreamView
from livemod.pipeline.session import Session, SessionInfo
from livemod.policy.taxonomy import load_policy
from livemod.policy.vote import VoteEngine
from livemod.sampling import FrameSampler
from livemod.store import Store

POLICY = RatePolicy(fps=4.0, calm_fps=2.0, calm_after_s=10.0, shed_fps=1.0, overload_lag_s=0.75)


def view(i: int, *, risk: float = 0.0, suspicious: bool = False, initial: bool = False,
         lag: float = 0.1) -> StreamView:  # fmt: skip
    return StreamView(f"s{i}", risk, suspicious, initial, lag)


def test_policy_from_config_never_speeds_a_calm_stream_up() -> None:
    p = RatePolicy.of(RatesConfig(calm_fps=8.0, shed_fps=3.0), SamplingConfig(fps=2.0))
    assert p.calm_fps == 2.0 and p.shed_fps == 2.0


def test_calm_after_quiet_seconds_and_hot_again_on_a_hit() -> None:
    ctl = RateController(POLICY)
    assert ctl.plan([view(0)], now=0.0)["s0"].state == "normal"
    assert ctl.plan([view(0)], now=9.0)["s0"].state == "normal"
    calm = ctl.plan([view(0)], now=10.5)["s0"]
    assert calm.state == "calm" and calm.fps == 2.0
    assert ctl.plan([view(0, suspicious=True)], now=11.0)["s0"].state == "boosted"
    # A hit resets the quiet time.
    assert ctl.plan([view(0)], now=15.0)["s0"].state == "normal"
    assert ctl.plan([view(0)], now=21.5)["s0"].state == "calm"


def test_first_minute_stays_boosted() -> None:
    ctl = RateController(POLICY)
    for now in (0.0, 30.0, 59.0):
        assert ctl.plan([view(0, initial=True)], now=now)["s0"].state == "boosted"


def test_overload_sheds_lowest_risk_first_and_restores_when_it_passes() -> None:
    ctl = RateController(POLICY)
    risks = [0.0, 0.5, 0.1, 0.0, 0.2, 0.05, 0.3, 0.0]
    streams = [view(i, risk=r, initial=True, lag=1.2) for i, r in enumerate(risks)]
    streams.append(view(8, risk=0.9, suspicious=True, lag=1.2))
    plan = ctl.plan(streams, now=0.0)
    shed = {k for k, r in plan.items() if r.shed}
    assert shed == {"s0", "s3"}  # a tranche (a quarter of 8): the zero-risk streams
    assert all(plan[k].fps == 1.0 for k in shed)
    plan = ctl.plan(streams, now=1.0)
    assert {k for k, r in plan.items() if r.shed} == {"s0", "s3", "s7", "s5"}
    for now in (2.0, 3.0, 4.0):
        plan = ctl.plan(streams, now=now)
    # Everything sheddable is shed; the suspicious stream never is.
    assert ctl.shedding == 8 and plan["s8"].state == "boosted"
    # Lag between half the limit and the limit: hold.
    held = [view(i, risk=r, lag=0.5) for i, r in enumerate(risks)]
    assert ctl.plan(held, now=5.0) and ctl.shedding == 8
    calm = [view(i, risk=r, lag=0.1) for i, r in enumerate(risks)]
    ctl.plan(calm, now=6.0)
    assert ctl.shedding == 6
    plan = ctl.plan(calm, now=7.0)
    # The highest-risk streams come back first.
    assert not plan["s1"].shed and not plan["s6"].shed and plan["s0"].shed


def test_new_drops_count_as_overload() -> None:
    ctl = RateController(POLICY)
    streams = [view(i, lag=0.5) for i in range(4)]
    ctl.plan(streams, now=0.0, drops=0)
    assert ctl.shedding == 0
    ctl.plan(streams, now=1.0, drops=3)
    assert ctl.shedding == 1
    ctl.plan(streams, now=2.0, drops=3)
    assert ctl.shedding == 1


def test_a_shed_stream_gives_up_its_first_minute_boost() -> None:
    sampler = FrameSampler(4.0, 8.0, boost_initial_s=60.0, boost_suspicious_s=10.0)
    first = [i / 30 for i in range(150) if sampler.admit(i / 30)]
    assert 39 <= len(first) <= 41  # 8 fps
    sampler.set_fps(1.0)
    sampler.hold_initial_boost(True)
    shed = [t for t in (5 + i / 30 for i in range(300)) if sampler.admit(t)]
    assert 9 <= len(shed) <= 11
    # A suspicious mark still boosts a shed stream.
    sampler.mark_suspicious(15.0)
    hot = [t for t in (15 + i / 30 for i in range(150)) if sampler.admit(t)]
    assert 39 <= len(hot) <= 41


def two_sessions(
    tmp_path: Path, config: Config, analysis: AnalysisService, engine: VoteEngine
) -> dict[str, Session]:
    """Real sessions "a" and "b" (never started) sharing one analysis and vote."""
    hub = EventHub(Store(tmp_path / "db.sqlite", tmp_path / "evidence"))
    return {
        sid: Session(
            SessionInfo(sid, "u", sid, "rtmp://127.0.0.1/live/x"), config, analysis, engine, hub
        )
        for sid in ("a", "b")
    }


def test_the_loop_sets_real_sessions_samplers(tmp_path: Path) -> None:
    """RateLoop.revise over real Session objects: a quiet stream past its first minute
    goes calm, and its sampler admits at calm_fps."""
    config = load_config(
        None,
        environ={
            "LIVEMOD_SAMPLING__BOOST_INITIAL_S": "5",
            "LIVEMOD_CAPACITY__RATES__CALM_AFTER_S": "3",
        },
    )
    analysis = AnalysisService(build_analyzers(config)[:1], workers=1)  # known-bad only
    engine = VoteEngine(load_policy(DEFAULT_POLICY))
    sessions = two_sessions(tmp_path, config, analysis, engine)
    clock = [0.0]
    loop = RateLoop(
        sessions, engine, config.capacity.rates, config.sampling, clock=lambda: clock[0]
    )
    try:
        for s in sessions.values():
            s.status = "live"
            for i in range(6 * 30):  # six seconds of a 30 fps source: past the boost
                s.sampler.admit(i / 30)
        assert all(r.state == "normal" for r in loop.revise().values())
        clock[0] = 4.0
        plan = loop.revise()
        assert {r.state for r in plan.values()} == {"calm"}
        sampler = sessions["a"].sampler
        assert sampler.fps == config.capacity.rates.calm_fps
        got = [t for t in (6 + i / 30 for i in range(300)) if sampler.admit(t)]
        assert 19 <= len(got) <= 21  # 2 fps for 10 s
    finally:
        analysis.close()


def test_a_shed_stream_refreshes_its_reused_scores_less_often(tmp_path: Path) -> None:
    """Under overload (here: new drops) the shed stream's gate waits shed_reuse_scale times
    longer before refreshing: with gating, most model work comes by the clock."""
    config = load_config(None, environ={})
    analysis = AnalysisService(
        build_analyzers(config)[:1], workers=1, capacity=config.capacity, background_stages=True
    )
    engine = VoteEngine(load_policy(DEFAULT_POLICY))
    sessions = two_sessions(tmp_path, config, analysis, engine)
    loop = RateLoop(sessions, engine, config.capacity.rates, config.sampling)
    try:
        image = np.zeros((360, 640, 3), dtype=np.uint8)
        for sid, s in sessions.items():
            s.status = "live"
            s.sampler.admit(0.0)
            asyncio.run(analysis.analyze(VideoFrame(sid, 0, 0.0, time.time(), image)))
        assert all(not r.shed for r in loop.revise().values())
        sessions["a"].drops = 3
        plan = loop.revise()
        assert sum(r.shed for r in plan.values()) == 1
        stretch = {sid: analysis._gates[sid].stretch for sid in plan}
        assert sorted(stretch.values()) == [1.0, config.capacity.rates.shed_reuse_scale]
        sessions["a"].drops = 3  # no new drops, no lag: restored
        assert all(not r.shed for r in loop.revise().values())
        assert {analysis._gates[sid].stretch for sid in plan} == {1.0}
    finally:
        analysis.close()
