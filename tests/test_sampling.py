from __future__ import annotations

from collections import deque

import numpy as np
import pytest

from livemod.messages import VideoFrame
from livemod.sampling import FrameRing, FrameSampler, push_live


def admitted(sampler: FrameSampler, fps: float, seconds: float, start: float = 0.0) -> list[float]:
    times = [start + i / fps for i in range(int(seconds * fps))]
    return [t for t in times if sampler.admit(t)]


def test_gate_keeps_the_configured_rate() -> None:
    sampler = FrameSampler(4.0, 8.0)
    got = admitted(sampler, 30.0, 10.0)
    assert 39 <= len(got) <= 41
    gaps = np.diff(got)
    assert gaps.min() >= 0.2 and gaps.max() <= 0.3


@pytest.mark.parametrize("fps", [2.0, 3.0, 5.0])
def test_gate_rates(fps: float) -> None:
    sampler = FrameSampler(fps, fps)
    got = admitted(sampler, 25.0, 20.0)
    assert abs(len(got) - 20 * fps) <= 1


def test_initial_boost_then_normal_rate() -> None:
    sampler = FrameSampler(4.0, 8.0, boost_initial_s=5.0)
    got = admitted(sampler, 30.0, 10.0)
    first = [t for t in got if t < 5.0]
    later = [t for t in got if t >= 5.0]
    assert 38 <= len(first) <= 42
    assert 19 <= len(later) <= 21


def test_initial_boost_waits_for_the_first_analysis() -> None:
    """A live stream started among many: while its first sample waits for analysis it is
    sampled at the base rate; the boost starts with the first result and still ends
    boost_initial_s after the first frame."""
    sampler = FrameSampler(4.0, 8.0, boost_initial_s=5.0, initial_after_first=True)
    waiting = admitted(sampler, 30.0, 2.0)
    assert 7 <= len(waiting) <= 9  # 4 fps
    sampler.first_analysed()
    boosted = admitted(sampler, 30.0, 3.0, start=2.0)
    assert 23 <= len(boosted) <= 25  # 8 fps from the next boosted slot on
    later = admitted(sampler, 30.0, 5.0, start=5.0)
    assert 19 <= len(later) <= 21  # the first minute (here 5 s) still ends on time


def test_suspicious_boost_is_bounded_in_time() -> None:
    sampler = FrameSampler(4.0, 8.0, boost_suspicious_s=2.0)
    admitted(sampler, 30.0, 5.0)
    assert not sampler.boosted(5.0)
    sampler.mark_suspicious(5.0)
    assert sampler.boosted(6.9)
    got = admitted(sampler, 30.0, 2.0, start=5.0)
    assert len(got) >= 15
    assert not sampler.boosted(7.5)


def test_gap_resynchronises_instead_of_bursting() -> None:
    sampler = FrameSampler(4.0, 4.0)
    admitted(sampler, 30.0, 1.0)
    # Ten seconds missing (a stall): the next frames must not all be admitted.
    got = admitted(sampler, 30.0, 1.0, start=11.0)
    assert len(got) <= 5


def test_counts() -> None:
    sampler = FrameSampler(4.0, 4.0)
    got = admitted(sampler, 25.0, 4.0)
    assert sampler.seen == 100 and sampler.admitted == len(got)


def test_ring_keeps_latest() -> None:
    ring = FrameRing(3)
    img = np.zeros((2, 2, 3), np.uint8)
    for i in range(5):
        ring.push(VideoFrame("s", i, i / 4, float(i), img))
    assert [f.index for f in ring.latest()] == [2, 3, 4]
    assert [f.index for f in ring.latest(2)] == [3, 4]
    assert ring.find(3) is not None and ring.find(0) is None
    with pytest.raises(ValueError):
        FrameRing(0)


def test_no_suspicious_boost_when_disabled() -> None:
    sampler = FrameSampler(4.0, 8.0, boost_suspicious_s=0.0)
    admitted(sampler, 30.0, 2.0)
    sampler.mark_suspicious(2.0)
    got = admitted(sampler, 30.0, 2.0, start=2.0)
    assert len(got) <= 9


def test_suspicious_boost_counts_from_the_decoder_not_the_lagging_analysis() -> None:
    """The decoder runs ahead of analysis: marking each analyzed sample suspicious
    must boost to ``boost_fps``, not re-admit every next decoded frame."""
    sampler = FrameSampler(4.0, 8.0, boost_suspicious_s=10.0)
    got: list[float] = []
    for i in range(25 * 6):
        t = i / 25
        if sampler.admit(t):
            got.append(t)
            lagging = [s for s in got if s <= t - 0.5]  # analysis 0.5 s behind
            if lagging:
                sampler.mark_suspicious(lagging[-1])
    gaps = np.diff([t for t in got if t >= 1.0])
    assert gaps.min() >= 0.125 - 0.1 * 0.125 and len(gaps) <= 5 * 8 + 1


def arrivals(queue: deque[VideoFrame]) -> list[float]:
    return [f.t_arrival for f in queue]


def test_live_queue_is_bounded_in_frames_and_in_time() -> None:
    img = np.zeros((4, 4, 3), dtype=np.uint8)
    queue: deque[VideoFrame] = deque()
    # 8 fps: a burst of 1.25 s waits whole within 12 frames and 2 s.
    dropped = [push_live(queue, VideoFrame("s", i, i / 8, i / 8, img), 12, 2.0) for i in range(10)]
    assert sum(dropped) == 0 and len(queue) == 10
    # Past 12 frames, the oldest go.
    for i in range(10, 14):
        push_live(queue, VideoFrame("s", i, i / 8, i / 8, img), 12, 2.0)
    assert len(queue) == 12 and arrivals(queue)[0] == 2 / 8
    # 2 fps: the age bound drops what the count would keep (2 s = 4 frames back).
    slow: deque[VideoFrame] = deque()
    drops = [push_live(slow, VideoFrame("s", i, i / 2, i / 2, img), 12, 2.0) for i in range(9)]
    assert arrivals(slow) == [2.0, 2.5, 3.0, 3.5, 4.0] and sum(drops) == 4
    # No age limit: only the count.
    unbounded: deque[VideoFrame] = deque()
    for i in range(9):
        push_live(unbounded, VideoFrame("s", i, i / 2, i / 2, img), 12, 0.0)
    assert len(unbounded) == 9
