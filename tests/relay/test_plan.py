"""The pure core: where covers begin and end, boxes between samples, the gate."""

from __future__ import annotations

import time

from hypothesis import given
from hypothesis import strategies as st

from livemod.messages import Decision, Region
from livemod.relay.plan import Box, Plan, gate, joined


def d(action: str, state: str, t: float, regions: tuple[Region, ...] = ()) -> Decision:
    return Decision(
        key="u:r",
        category="c",
        action=action,
        state=state,
        confidence=0.9,  # type: ignore[arg-type]
        tier="high",
        sources=(),
        media_time_s=t,
        t_trigger=time.time(),
        regions=regions,
    )


def test_a_cover_starts_after_the_last_clean_sample_and_ends_at_the_stop() -> None:
    plan = Plan()
    for i in range(20):
        plan.sample(i * 0.25, {})
    assert plan.decide(d("blur", "start", 2.0)) == 1.75
    plan.decide(d("blur", "stop", 3.0))
    assert plan.video(1.75).kind == "none"
    assert plan.video(1.76).kind == "whole"
    assert plan.video(3.0).kind == "whole"
    assert plan.video(3.01).kind == "none"


def test_regions_follow_the_samples_and_their_motion() -> None:
    plan = Plan()
    plan.sample(0.0, {})
    plan.sample(0.25, {"c": (Region(0, 0, 10, 10, "x", 1),)})
    plan.sample(0.5, {"c": (Region(40, 0, 10, 10, "x", 1),)})
    plan.decide(d("blur", "start", 0.25, (Region(0, 0, 10, 10, "x", 1),)))
    cover = plan.video(0.4)
    assert cover.kind == "regions"
    assert Box(0, 0, 50, 10) in cover.boxes  # the hull of where it was and went


@given(st.floats(0, 10), st.floats(0, 10), st.floats(0.1, 5), st.floats(0.1, 5))
def test_the_gate_never_lets_an_unsettled_frame_go_early(
    age: float, lag: float, delay: float, extra: float
) -> None:
    verdict = gate(
        now=age,
        arrival=0.0,
        t=5.0,
        horizon_s=5.0 + 1.0 - lag,
        lookahead_s=1.0,
        delay_s=delay,
        max_delay_s=delay + extra,
    )
    if verdict == "go":
        assert age >= delay and lag <= 1e-9
    if verdict == "late":
        assert age >= delay + extra


def test_joined_keeps_unmatched_boxes() -> None:
    a, b = Box(0, 0, 10, 10), Box(100, 100, 110, 110)
    assert set(joined([a], [b])) >= {a, b} or set(joined([a], [b])) == {a.hull(b)}
