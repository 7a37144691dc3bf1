"""Background refreshes: a refresh due only to age never holds its stream, and yields to
every sample that waits on a model."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from livemod.config import load_config
from livemod.messages import Image, VideoFrame
from livemod.pipeline.analysis import AnalysisService
from livemod.testing.media import fit, photo
from livemod.vision.base import AnalyzerResult


class Counting:
    """An analyzer whose score is how many calls it has answered (so a reused result
    shows which call it came from); it logs each call's picture level and can be slow."""

    def __init__(
        self,
        name: str,
        log: list[tuple[str, int]],
        delay_s: float = 0.0,
        slow: dict[int, float] | None = None,
    ) -> None:
        self.name = name
        self.calls = 0
        self._log = log
        self._delay_s = delay_s
        self._slow = slow or {}
        """Another delay for pictures of these levels."""
        self._lock = threading.Lock()

    def analyze_batch(self, images: Sequence[Image]) -> list[AnalyzerResult]:
        level = int(images[0][0, 0, 0])
        with self._lock:
            self.calls += 1
            n = self.calls
            self._log.append((self.name, level))
        time.sleep(self._slow.get(level, self._delay_s))
        return [AnalyzerResult(scores={self.name: float(n)}) for _ in images]


def service(
    log: list[tuple[str, int]], *, live: bool, delay_s: float = 0.0, workers: int = 2
) -> AnalysisService:
    config = load_config(None, environ={})
    return AnalysisService(
        [Counting("hash", log, delay_s), Counting("model", log, delay_s)],
        workers=workers,
        capacity=config.capacity,
        background_stages=live,
    )


def still(stream: str, i: int, level: int | None = None) -> VideoFrame:
    """Sample ``i`` (4 a second) of a still camera, or a flat picture at ``level``."""
    if level is None:
        image = fit(photo("astronaut"))
    else:
        image = np.full((360, 640, 3), level, dtype=np.uint8)
    return VideoFrame(stream, i, i / 4, 1000.0 + i / 4, image)


async def test_a_live_stream_reuses_while_its_refresh_runs_then_reuses_the_refresh() -> None:
    log: list[tuple[str, int]] = []
    analysis = service(log, live=True)
    try:
        scores = [(await analysis.analyze(still("s", i))).scores["model"] for i in range(17)]
        # Samples 0-16 (0-4 s): the first analysis; the sample at 4.0 s (max_reuse_s)
        # reused it too and started a refresh beside the stream.
        assert scores == [1.0] * 17
        await analysis.idle()
        after = await analysis.analyze(still("s", 17))
        assert after.scores["model"] == 2.0  # the refresh's result
        stats = analysis.stream_stats("s")
        assert stats is not None and stats["fresh"] == 1 and stats["refreshes"] == 1
    finally:
        analysis.close()


async def test_a_scan_runs_the_models_on_the_sample_itself() -> None:
    log: list[tuple[str, int]] = []
    analysis = service(log, live=False)
    try:
        scores = [(await analysis.analyze(still("s", i))).scores["model"] for i in range(18)]
        assert scores == [1.0] * 16 + [2.0, 2.0]  # 4.0 s: fresh, on the sample itself
        stats = analysis.stream_stats("s")
        assert stats is not None and stats["fresh"] == 2 and stats["refreshes"] == 0
    finally:
        analysis.close()


async def one_worker_with_a_refresh_due(log: list[tuple[str, int]]) -> AnalysisService:
    """A live service with one worker whose stream "a" (level 60) has its age refresh due
    on its next sample; a picture at level 100 holds the worker 0.3 s."""
    config = load_config(None, environ={})
    analysis = AnalysisService(
        [Counting(n, log, slow={100: 0.3}) for n in ("hash", "model")],
        workers=1,
        capacity=config.capacity,
        background_stages=True,
    )
    for i in range(16):
        await analysis.analyze(still("a", i, level=60))
    return analysis


async def refresh_behind_a_busy_worker(analysis: AnalysisService) -> asyncio.Task[Any]:
    """Stream c's first sample (level 100) takes the one worker; then a's next sample asks
    for its refresh, which queues. Returns c's analysis."""
    c = asyncio.create_task(analysis.analyze(still("c", 0, level=100)))
    await asyncio.sleep(0.1)
    await analysis.analyze(still("a", 16, level=60))
    return c


async def test_a_refresh_waits_behind_the_samples_that_wait_on_a_model() -> None:
    log: list[tuple[str, int]] = []
    analysis = await one_worker_with_a_refresh_due(log)
    try:
        # Stream c's first sample holds the one worker; meanwhile a's refresh comes due
        # and then b's first sample arrives: both queue.
        c = await refresh_behind_a_busy_worker(analysis)
        b = asyncio.create_task(analysis.analyze(still("b", 0, level=200)))
        await asyncio.gather(b, c)
        await analysis.idle()
        refresh = log.index(("hash", 60), 1)
        assert log.index(("hash", 200)) < refresh, log  # asked for later, ran first
        stats = analysis.stream_stats("a")
        assert stats is not None and stats["refreshes"] == 1
    finally:
        analysis.close()


async def test_a_refresh_overtaken_by_a_cut_is_cancelled_before_it_runs() -> None:
    log: list[tuple[str, int]] = []
    analysis = await one_worker_with_a_refresh_due(log)
    try:
        # Stream c holds the one worker while a's refresh comes due and queues ...
        c = await refresh_behind_a_busy_worker(analysis)
        asked = analysis.stream_stats("a")
        assert asked is not None and asked["refreshes"] == 1
        # ... then a cuts to something new: the models run on it, the refresh never does.
        cut = await analysis.analyze(still("a", 17, level=200))
        await c
        await analysis.idle()
        assert cut.scores["model"] > 1.0
        assert log.count(("model", 60)) == 1, log  # only a's first sample
        stats = analysis.stream_stats("a")
        assert stats is not None and stats["refreshes_dropped"] == 1 and stats["fresh"] == 2
    finally:
        analysis.close()


def with_detector(log: list[tuple[str, int]], *, live: bool) -> AnalysisService:
    config = load_config(None, environ={})
    analyzers = [Counting(n, log) for n in ("hash", "model", "nudenet-320n")]
    return AnalysisService(analyzers, workers=2, capacity=config.capacity, background_stages=live)


async def test_a_detector_due_only_by_its_schedule_runs_beside_and_joins_the_next_sample() -> None:
    log: list[tuple[str, int]] = []
    analysis = with_detector(log, live=True)
    try:
        first = await analysis.analyze(still("s", 0))
        # The classifiers did not open NudeNet's gate: its scheduled run went beside.
        assert "nudenet-320n" not in first.scores and "model" in first.scores
        await analysis.idle()
        assert [name for name, _ in log] == ["hash", "model", "nudenet-320n"]
        second = await analysis.analyze(still("s", 1))
        assert second.scores["nudenet-320n"] == 1.0  # reused with the first analysis
        stats = analysis.stream_stats("s")
        assert stats is not None and stats["detector_runs"] == 1
    finally:
        analysis.close()


async def test_a_scan_runs_a_scheduled_detector_on_the_sample() -> None:
    log: list[tuple[str, int]] = []
    analysis = with_detector(log, live=False)
    try:
        first = await analysis.analyze(still("s", 0))
        assert first.scores["nudenet-320n"] == 1.0
    finally:
        analysis.close()
