"""VoteEngine.release and .upgrade: standing actions changed from outside the vote."""

from __future__ import annotations

from typing import Any

import numpy as np

from livemod.messages import Decision, FrameAnalysis, Signal, VideoFrame
from livemod.paths import DEFAULT_POLICY
from livemod.policy.taxonomy import load_policy
from livemod.policy.vote import VoteEngine

IMG = np.zeros((4, 4, 3), np.uint8)
KEY = "u1:r1"


class Feed:
    def __init__(self, engine: VoteEngine) -> None:
        self.engine = engine
        self.i = 0

    def __call__(self, score: float | None, n: int = 1) -> list[Decision]:
        out: list[Decision] = []
        for _ in range(n):
            t = self.i / 4
            self.i += 1
            signals = (Signal("violence", score, "vision:x"),) if score is not None else ()
            frame = VideoFrame("s1", self.i, t, 100.0 + t, IMG)
            out += self.engine.update(KEY, FrameAnalysis(frame, signals, {}, 1.0, 100.0 + t))
        return out


def states(decisions: list[Decision]) -> list[tuple[str, str]]:
    return [(d.action, d.state) for d in decisions]


def test_release_stops_the_action_and_keeps_it_off_while_the_content_stays() -> None:
    engine = VoteEngine(load_policy(DEFAULT_POLICY))
    feed = Feed(engine)
    assert states(feed(0.97, 3)) == [("pause", "start")]
    stop = engine.release(KEY, "violence", t_now=555.0)
    assert stop is not None and (stop.action, stop.state, stop.t_trigger) == (
        "pause",
        "stop",
        555.0,
    )
    assert stop.media_time_s == 0.5 and engine.standing(KEY) == []
    assert engine.release(KEY, "violence", t_now=556.0) is None  # nothing stands now
    assert engine.release("nobody:here", "violence", t_now=1.0) is None
    # The same violation continues: neither the pause nor a weaker action returns.
    assert feed(0.97, 8) == [] and feed(0.8, 5) == []
    # Clean for clear_after (4) samples: the episode is over; a new one acts again.
    assert feed(None, 4) == []
    assert states(feed(0.97, 3)) == [("pause", "start")]


def test_release_still_lets_a_stronger_action_start() -> None:
    engine = VoteEngine(load_policy(DEFAULT_POLICY))
    feed = Feed(engine)
    assert states(feed(0.8, 3)) == [("review", "start")]
    engine.release(KEY, "violence", t_now=1.0)
    assert feed(0.8, 3) == []
    assert states(feed(0.99, 5)) == [("pause", "start")]


def test_upgrade_starts_the_stronger_action_before_stopping_the_weaker() -> None:
    engine = VoteEngine(load_policy(DEFAULT_POLICY))
    feed = Feed(engine)
    feed(0.8, 3)
    kw: dict[str, Any] = {
        "confidence": 0.9,
        "tier": "medium",
        "sources": ("llm",),
        "t_trigger": 7.0,
    }
    assert engine.upgrade(KEY, "violence", "warn", **kw) == []  # weaker: no change
    decisions = engine.upgrade(KEY, "violence", "pause", **kw)
    assert states(decisions) == [("pause", "start"), ("review", "stop")]
    assert decisions[0].sources == ("llm",) and decisions[0].t_trigger == 7.0
    assert [s.action for s in engine.standing(KEY)] == ["pause"]
    # The vote owns it from here: clean samples lift the upgraded action.
    assert states(feed(None, 4)) == [("pause", "stop")]
    assert engine.upgrade(KEY, "violence", "end", **kw) == []
