from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from livemod.errors import ConfigError
from livemod.messages import FrameAnalysis, Region, Signal, VideoFrame
from livemod.paths import DEFAULT_POLICY
from livemod.policy.taxonomy import load_policy, parse_policy, severity
from livemod.policy.vote import VoteEngine

IMG = np.zeros((4, 4, 3), np.uint8)


def policy_dict(**known_bad: Any) -> dict[str, Any]:
    cats: dict[str, Any] = {
        name: {"actions": {"high": "pause", "medium": "review", "low": "warn"}}
        for name in ("violence", "hate", "self_harm", "drugs", "weapons")
    }
    cats["sexual"] = {
        "floor": 0.6,
        "k": 3,
        "n": 5,
        "clear_after": 3,
        "regional": True,
        "actions": {"high": "pause", "medium": "blur", "low": "warn"},
    }
    cats["known_bad"] = {
        "floor": 0.7,
        "k": 2,
        "n": 3,
        "clear_after": 2,
        "actions": {"high": "pause", "medium": "pause", "low": "review"},
        **known_bad,
    }
    return {"tiers": {"high": 0.95, "medium": 0.7}, "categories": cats}


class Feed:
    """Feeds samples at 4 fps with a fake clock: arrival = media time + 100."""

    def __init__(self, engine: VoteEngine, key: str = "u1:r1") -> None:
        self.engine = engine
        self.key = key
        self.i = 0

    def __call__(self, *signals: Signal) -> list[Any]:
        t = self.i / 4
        frame = VideoFrame("s1", self.i, t, 100.0 + t, IMG)
        self.i += 1
        analysis = FrameAnalysis(frame, signals, {}, 1.0, 100.0 + t)
        return self.engine.update(self.key, analysis)


def sexual(score: float) -> Signal:
    return Signal("sexual", score, "vision:nudenet", "X", (Region(1, 2, 3, 4, "X", score),))


def engine(**kw: Any) -> VoteEngine:
    return VoteEngine(parse_policy(policy_dict(**kw)))


def test_shipped_policy_loads() -> None:
    policy = load_policy(DEFAULT_POLICY)
    assert {"sexual", "violence", "hate", "self_harm", "drugs", "weapons", "known_bad"} <= set(
        policy.categories
    )


def test_k_of_n_vote_then_hysteresis() -> None:
    feed = Feed(engine())
    assert feed(sexual(0.8)) == []
    assert feed(sexual(0.8)) == []
    (start,) = feed(sexual(0.8))
    assert (start.action, start.state, start.tier, start.category) == (
        "blur",
        "start",
        "medium",
        "sexual",
    )
    # The trigger is the first hit of the window: latency counts from it.
    assert start.t_trigger == 100.0 and start.media_time_s == 0.0
    assert start.regions and start.regions[0].label == "X"
    assert start.sources == ("vision:nudenet",)
    assert feed() == [] and feed() == []
    (stop,) = feed()
    assert (stop.action, stop.state) == ("blur", "stop")


def test_hit_during_clean_run_resets_hysteresis() -> None:
    feed = Feed(engine())
    for _ in range(3):
        feed(sexual(0.8))
    feed()
    feed()
    assert feed(sexual(0.8)) == []
    assert feed() == [] and feed() == []
    assert [d.state for d in feed()] == ["stop"]


def test_scores_below_floor_never_act() -> None:
    feed = Feed(engine())
    for _ in range(20):
        assert feed(sexual(0.59)) == []


def test_single_low_tier_hit_never_acts() -> None:
    feed = Feed(engine(k=1, floor=0.3))
    assert feed(Signal("known_bad", 0.5, "hash")) == []
    (d,) = feed(Signal("known_bad", 0.5, "hash"))
    assert d.tier == "low" and d.action == "review"


def test_single_high_tier_hit_may_act_when_k_is_one() -> None:
    feed = Feed(engine(k=1))
    (d,) = feed(Signal("known_bad", 1.0, "hash"))
    assert d.tier == "high" and d.action == "pause"


def test_upgrade_starts_stronger_action_before_stopping_weaker() -> None:
    feed = Feed(engine())
    for _ in range(3):
        feed(sexual(0.8))
    out = []
    for _ in range(5):
        out += feed(sexual(1.0))
    assert [(d.action, d.state) for d in out] == [("pause", "start"), ("blur", "stop")]


def test_state_is_per_key_and_survives_a_new_session() -> None:
    eng = engine()
    a, b = Feed(eng, "u1:r1"), Feed(eng, "u2:r1")
    a(sexual(0.8))
    a(sexual(0.8))
    b(sexual(0.8))
    # The same user and room coming back (a new stream) continues the window.
    rejoin = Feed(eng, "u1:r1")
    assert [d.state for d in rejoin(sexual(0.8))] == ["start"]
    assert eng.standing("u1:r1")[0].action == "blur"
    assert eng.standing("u2:r1") == []


def test_levels_and_suspicion() -> None:
    eng = engine()
    feed = Feed(eng)
    assert not eng.suspicious("u1:r1")
    feed(sexual(0.9))
    assert eng.suspicious("u1:r1")
    feed(sexual(0.7))
    feed(sexual(0.65))
    assert eng.levels("u1:r1")["sexual"] == pytest.approx(0.65)
    assert eng.peak_risk("u1:r1") == pytest.approx(0.65)


def test_key_memory_is_bounded() -> None:
    eng = VoteEngine(parse_policy(policy_dict()), max_keys=2)
    for key in ("a:r", "b:r", "c:r"):
        Feed(eng, key)(sexual(0.9))
    assert not eng.suspicious("a:r") and eng.suspicious("c:r")


@pytest.mark.parametrize(
    ("score", "name"),
    [
        (0.0, "none"),
        (0.29, "none"),
        (0.3, "low"),
        (0.5, "medium"),
        (0.7, "high"),
        (0.9, "critical"),
    ],
)
def test_severity(score: float, name: str) -> None:
    assert severity(score) == name


@pytest.mark.parametrize(
    ("patch", "needle"),
    [
        ({"k": 4, "n": 3}, "k (4) must not exceed n (3)"),
        ({"floor": 1.5}, "known_bad.floor"),
        ({"actions": {"high": "explode"}}, "known_bad.actions.high"),
        ({"bogus": 1}, "unknown field(s) bogus"),
        ({"k": "two"}, "known_bad.k: expected an integer"),
    ],
)
def test_bad_policy_names_the_field(patch: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError, match=None) as err:
        parse_policy(policy_dict(**patch))
    assert needle in str(err.value)


def test_policy_missing_category() -> None:
    data = policy_dict()
    del data["categories"]["hate"]
    with pytest.raises(ConfigError, match="missing hate"):
        parse_policy(data)
