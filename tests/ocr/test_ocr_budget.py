"""OCR's shared CPU budget: the bound holds, and the grants are fair. Pure, on a clock
the test moves; the stage under the budget runs with the real engine in test_ocr.py."""

from __future__ import annotations

from collections import Counter

import pytest

from livemod.ocr.budget import OcrBudget

PASS_CPU_S = 0.3
"""A gameplay-like stream's pass (170-350 ms measured)."""


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def play(
    budget: OcrBudget,
    clock: Clock,
    asks: dict[str, float],
    seconds: float,
    *,
    step_s: float = 0.25,
    cost_s: float = PASS_CPU_S,
) -> tuple[Counter[str], float]:
    """Streams ask at their own period (``asks``: stream -> seconds between due passes,
    every sample in between asks again while refused); a granted pass is charged at
    once. The grants per stream, and the CPU granted."""
    grants: Counter[str] = Counter()
    next_due = dict.fromkeys(asks, clock.t)
    spent = 0.0
    end = clock.t + seconds
    while clock.t < end:
        for stream, period in asks.items():
            if clock.t >= next_due[stream] and budget.try_start(stream):
                grants[stream] += 1
                budget.charge(stream, cost_s)
                spent += cost_s
                next_due[stream] = clock.t + period
        clock.t += step_s
    return grants, spent


def test_the_bound_holds_whatever_the_crowd() -> None:
    clock = Clock()
    rate = 0.5  # 0.25 of 2 cores
    budget = OcrBudget(rate, burst_s=2.0, clock=clock)
    # Eight gameplay-like streams, each due every second: 2.4 CPU s/s wanted.
    grants, spent = play(budget, clock, {f"g{i}": 1.0 for i in range(8)}, 120.0)
    # The bucket's burst, plus one pass of overdraft, on top of the rate.
    assert spent <= rate * 120.0 + rate * 2.0 + PASS_CPU_S
    assert spent >= rate * 120.0 * 0.9  # and the budget is used, not wasted
    # Shared evenly: no stream got less than 3/4 of the average.
    assert min(grants.values()) >= 0.75 * sum(grants.values()) / 8


def test_a_busy_stream_cannot_starve_a_quiet_one() -> None:
    clock = Clock()
    budget = OcrBudget(0.5, burst_s=2.0, clock=clock)
    # Two gameplay streams take the whole budget for a minute.
    play(budget, clock, {"game1": 1.0, "game2": 1.0}, 60.0)
    # A quiet stream's caption appears: it is served at once (its first ask after the
    # bucket refills), ahead of the busy streams that waited longer.
    waited = 0
    while not budget.try_start("quiet"):
        waited += 1
        for busy in ("game1", "game2"):
            budget.try_start(busy)
        clock.t += 0.25
    assert waited <= 3  # at most one debt repayment (0.3 s / 0.5 per s)
    budget.charge("quiet", PASS_CPU_S)
    # Over time the quiet stream, due every 5 s, gets every pass it needs.
    grants, _ = play(budget, clock, {"game1": 1.0, "game2": 1.0, "quiet": 5.0}, 60.0)
    assert grants["quiet"] >= 11
    assert grants["game1"] > 0 and grants["game2"] > 0


def test_hits_weigh_ahead_but_starve_no_one() -> None:
    clock = Clock()
    budget = OcrBudget(0.5, burst_s=2.0, clock=clock)
    budget.flag("flagged")  # a policy hit: ahead for hit_s
    budget.text_hit("text")  # its last reading had a text hit
    grants, _ = play(budget, clock, {"flagged": 1.0, "text": 1.0, "calm1": 1.0, "calm2": 1.0}, 25.0)
    # Twice the others' share (usage counted at half); the lowest-risk streams last,
    # still served.
    assert grants["flagged"] > 1.5 * grants["calm1"]
    assert grants["text"] > 1.5 * grants["calm2"]
    assert grants["calm1"] > 0 and grants["calm2"] > 0
    # After hit_s the weights lapse: shares even out.
    budget = OcrBudget(0.5, burst_s=2.0, hit_s=1.0, clock=clock)
    budget.flag("flagged")
    clock.t += 2.0
    grants, _ = play(budget, clock, {"flagged": 1.0, "calm1": 1.0}, 60.0)
    assert abs(grants["flagged"] - grants["calm1"]) <= 2


def test_a_stream_that_stops_asking_loses_its_place() -> None:
    clock = Clock()
    budget = OcrBudget(0.5, burst_s=1.0, stale_s=2.0, clock=clock)
    assert budget.try_start("a")
    budget.charge("a", 2.0)  # deep in debt: everyone waits
    assert not budget.try_start("b")  # b (no usage) heads the line
    assert not budget.try_start("a")
    clock.t += 10.0  # debt repaid; b paused and never asked again
    assert budget.try_start("a")
    # A stream whose picture settled gives its place up at once.
    budget.charge("a", 2.0)
    assert not budget.try_start("c")
    budget.leave("c")
    clock.t += 10.0
    assert budget.try_start("a")
    assert budget.waiting == 0


def test_no_cap() -> None:
    budget = OcrBudget(None)
    for _ in range(100):
        assert budget.try_start("s")
        budget.charge("s", 1.0)
    assert budget.rate is None
    with pytest.raises(ValueError):
        OcrBudget(0.0)
