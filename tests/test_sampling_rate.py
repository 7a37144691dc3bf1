"""Property: the sampler never admits faster than ``boost_fps``, whatever the decoder's
lead over analysis, the suspicious marks, the rate changes and the gaps in media time."""

from __future__ import annotations

import math
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from livemod.sampling import FrameSampler

WINDOWS = (0.5, 1.0, 2.0, 5.0)


def bound(window: float, boost_fps: float) -> int:
    # Slots lie at least 1/boost_fps apart; a frame is admitted up to a tenth of an
    # interval before its slot and at most half an interval after it.
    return math.floor(window * boost_fps + 0.6) + 1


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, object]:
    return {
        "fps": draw(st.sampled_from([1.0, 2.0, 4.0, 5.0])),
        "boost": draw(st.sampled_from([4.0, 8.0, 10.0, 15.0])),
        "source_fps": draw(st.sampled_from([10.0, 24.0, 25.0, 30.0, 50.0, 60.0])),
        "jitter": draw(st.floats(0.0, 0.9)),
        "lag_s": draw(st.floats(0.0, 3.0)),
        "mark_p": draw(st.floats(0.0, 1.0)),
        "gap_p": draw(st.floats(0.0, 0.02)),
        "rate_p": draw(st.floats(0.0, 0.05)),
        "initial_s": draw(st.sampled_from([0.0, 2.0, 60.0])),
        "suspicious_s": draw(st.sampled_from([0.0, 1.0, 10.0])),
        "after_first": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**32 - 1)),
    }


def simulate(sc: dict[str, object], seconds: float = 20.0) -> tuple[list[float], float]:
    fps, boost = float(sc["fps"]), float(sc["boost"])  # type: ignore[arg-type]
    boost = max(boost, fps)
    rng = random.Random(sc["seed"])  # type: ignore[arg-type]
    sampler = FrameSampler(
        fps,
        boost,
        boost_initial_s=float(sc["initial_s"]),  # type: ignore[arg-type]
        boost_suspicious_s=float(sc["suspicious_s"]),  # type: ignore[arg-type]
        initial_after_first=bool(sc.get("after_first", False)),
    )
    period = 1.0 / float(sc["source_fps"])  # type: ignore[arg-type]
    jitter, lag = float(sc["jitter"]), float(sc["lag_s"])  # type: ignore[arg-type]
    t = rng.uniform(0.0, 100.0)
    end = t + seconds
    admitted: list[float] = []
    pending: list[float] = []
    while t < end:
        if sampler.admit(t):
            admitted.append(t)
            pending.append(t)
        # Analysis finishes ``lag`` behind the decoder and marks the analyzed time.
        while pending and pending[0] <= t - lag:
            done = pending.pop(0)
            sampler.first_analysed()
            if rng.random() < float(sc["mark_p"]):  # type: ignore[arg-type]
                sampler.mark_suspicious(done)
        if rng.random() < float(sc["rate_p"]):  # type: ignore[arg-type]
            sampler.set_fps(rng.choice([0.5, 1.0, 2.0, 4.0, 8.0, 30.0]))
        step = period * (1.0 + rng.uniform(-jitter, jitter))
        if rng.random() < float(sc["gap_p"]):  # type: ignore[arg-type]
            step += rng.uniform(0.1, 5.0)  # a stall
        t += max(step, 1e-4)
    return admitted, boost


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_admitted_rate_never_exceeds_boost_fps(sc: dict[str, object]) -> None:
    admitted, boost = simulate(sc)
    for i, start in enumerate(admitted):
        for window in WINDOWS:
            n = 0
            for later in admitted[i:]:
                if later >= start + window:
                    break
                n += 1
            assert n <= bound(window, boost), (window, n, admitted[i : i + n])


def test_lagging_analysis_marking_every_sample_keeps_the_boost_rate() -> None:
    """The defect: analysis 1 s behind a 30 fps decoder, every sample suspicious."""
    admitted, _ = simulate(
        {
            "fps": 4.0,
            "boost": 8.0,
            "source_fps": 30.0,
            "jitter": 0.0,
            "lag_s": 1.0,
            "mark_p": 1.0,
            "gap_p": 0.0,
            "rate_p": 0.0,
            "initial_s": 0.0,
            "suspicious_s": 10.0,
            "seed": 7,
        },
        seconds=30.0,
    )
    rate = len(admitted) / 30.0
    assert 7.0 <= rate <= 8.1


def test_calm_rate_is_kept_and_speeding_up_takes_effect_at_once() -> None:
    sampler = FrameSampler(4.0, 8.0)
    sampler.set_fps(2.0)
    got = [i / 30 for i in range(300) if sampler.admit(i / 30)]
    assert 19 <= len(got) <= 21
    sampler.set_fps(4.0)
    later = [t for t in (10.0 + i / 30 for i in range(300)) if sampler.admit(t)]
    assert 39 <= len(later) <= 41
    assert later[0] <= 10.0 + 1 / 30
