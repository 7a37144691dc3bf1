"""Runs every frame analyzer on a sampled frame, off the event loop.

Analyzers are shared by all streams. Each analyzer call is its own job on a pool
sized to the machine, so one stream's models run side by side and many streams
queue fairly. ONNX Runtime sessions are thread-safe for ``run``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from livemod import metrics
from livemod.messages import Decision, FrameAnalysis, Image, Region, Signal, VideoFrame
from livemod.vision.base import AnalyzerResult, FrameAnalyzer, StageEvidence, StreamStage
from livemod.vision.batching import BatchPolicy, MicroBatcher


class AnalysisService:
    """Owns the analyzers and their worker threads."""

    def __init__(
        self,
        analyzers: Sequence[FrameAnalyzer],
        *,
        workers: int,
        batch: BatchPolicy | None = None,
        stages: Sequence[StreamStage] = (),
    ) -> None:
        if not analyzers:
            raise ValueError("at least one analyzer is required")
        self._analyzers = list(analyzers)
        # Per-stream stages (OCR) see the whole VideoFrame and schedule their own work.
        self._stages = list(stages)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="livemod-infer")
        self._pending = 0
        # One batcher per analyzer: frames of every stream share each model call.
        # The default policy (batch of 1, no wait) adds no latency on a CPU.
        policy = batch or BatchPolicy()
        self._batchers: list[MicroBatcher[Image, AnalyzerResult]] = [
            MicroBatcher(a.name, _timed_batch(a), self._pool, policy) for a in self._analyzers
        ]

    @property
    def pending(self) -> int:
        """Analyzer calls submitted and not yet finished (all streams)."""
        return self._pending

    @property
    def names(self) -> list[str]:
        return [a.name for a in self._analyzers]

    def providers(self) -> dict[str, str]:
        """The execution provider each ONNX analyzer actually runs on."""
        out: dict[str, str] = {}
        for analyzer in self._analyzers:
            session = getattr(analyzer, "session", None)
            if session is not None:
                out[analyzer.name] = str(session.get_providers()[0])
        return out

    def precisions(self) -> dict[str, str]:
        """The precision (fp32, fp16) each ONNX analyzer's model runs at."""
        out: dict[str, str] = {}
        for analyzer in self._analyzers:
            precision = getattr(analyzer, "precision", None)
            if precision is not None:
                out[analyzer.name] = str(precision)
        return out

    def close(self) -> None:
        for stage in self._stages:
            stage.close()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def forget(self, stream_id: str) -> None:
        """A stream ended: its per-stream stage state goes."""
        for stage in self._stages:
            stage.forget(stream_id)

    def evidence(self, stream_id: str, decision: Decision) -> StageEvidence | None:
        """Annotated evidence from the stage whose signals triggered ``decision``."""
        for stage in self._stages:
            found = stage.evidence(stream_id, decision)
            if found is not None:
                return found
        return None

    async def analyze(self, frame: VideoFrame) -> FrameAnalysis:
        started = time.perf_counter()
        jobs = [batcher.submit(frame.image) for batcher in self._batchers]
        self._pending += len(jobs)
        try:
            results = await asyncio.gather(*jobs, *(s.analyze(frame) for s in self._stages))
        finally:
            self._pending -= len(jobs)
        return _merge(frame, results, (time.perf_counter() - started) * 1000.0)

    def analyze_sync(self, frame: VideoFrame) -> FrameAnalysis:
        """The same analysis on the calling thread (the naive baseline, tools)."""
        started = time.perf_counter()
        results = [_timed(a, frame) for a in self._analyzers]
        return _merge(frame, results, (time.perf_counter() - started) * 1000.0)


def _timed_batch(
    analyzer: FrameAnalyzer,
) -> Callable[[Sequence[Image]], list[AnalyzerResult]]:
    def run(images: Sequence[Image]) -> list[AnalyzerResult]:
        started = time.perf_counter()
        results = analyzer.analyze_batch(images)
        metrics.MODEL_SECONDS.labels(analyzer.name).observe(time.perf_counter() - started)
        return results

    return run


def _timed(analyzer: FrameAnalyzer, frame: VideoFrame) -> AnalyzerResult:
    started = time.perf_counter()
    (result,) = analyzer.analyze_batch([frame.image])
    metrics.MODEL_SECONDS.labels(analyzer.name).observe(time.perf_counter() - started)
    return result


def _merge(frame: VideoFrame, results: Sequence[AnalyzerResult], ms: float) -> FrameAnalysis:
    sx, sy = frame.scale
    signals: list[Signal] = []
    scores: dict[str, float] = {}
    for result in results:
        scores.update(result.scores)
        for sig in result.signals:
            if sig.regions and (sx != 1.0 or sy != 1.0):
                sig = Signal(
                    category=sig.category,
                    score=sig.score,
                    source=sig.source,
                    label=sig.label,
                    regions=tuple(_scale(r, sx, sy) for r in sig.regions),
                )
            signals.append(sig)
    now = time.time()
    metrics.STAGE_SECONDS.labels("analyze").observe(ms / 1000.0)
    return FrameAnalysis(
        frame=frame, signals=tuple(signals), scores=scores, analysis_ms=ms, t_analyzed=now
    )


def _scale(r: Region, sx: float, sy: float) -> Region:
    return Region(
        x=round(r.x * sx),
        y=round(r.y * sy),
        w=round(r.w * sx),
        h=round(r.h * sy),
        label=r.label,
        score=r.score,
    )
