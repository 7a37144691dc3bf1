"""Runs every frame analyzer on a sampled frame, off the event loop.

Analyzers are shared by all streams. Each analyzer call is its own job on a pool
sized to the machine, so one stream's models run side by side and many streams
queue fairly. ONNX Runtime sessions are thread-safe for ``run``.

With ``capacity`` (the daemon's default), a sample whose picture did not change reuses
the stream's last fresh scores, and region detectors run second, only when gated in
(:mod:`livemod.pipeline.gating`). The ``always`` analyzers (known-bad matching) run on
every fresh sample, before the models: a match settles the sample (the models do not run;
the stream's last model results stand). On an unchanged sample they too reuse the last
result (``reuse_always``), so a listed picture cut in, a scene cut or reused scores older
than ``max_reuse_s`` are always hashed fresh. Per-stream stages (OCR, with its own gate)
are offered every sample; with ``background_stages`` (the daemon; not a file scan, which
would outrun it) a stage that can work in the background (``BackgroundStage``) never
makes the analysis wait: its reading joins the vote at the stream's next sample. Live
streams also leave to the background the model work nothing on screen asked for: a
refresh due only to age (``capacity.gating.background_refresh``) and a region detector
due only by its schedule (``capacity.cascade.schedule_beside``). Its model calls go to
the same workers behind every call a sample waits on (``PriorityPool``, with a handicap of
``capacity.gating.beside_yield_s``), and its result joins the stream's next samples.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import replace
from typing import Any, Protocol, runtime_checkable

from livemod import metrics
from livemod.config import CapacityConfig
from livemod.messages import Decision, FrameAnalysis, Image, Region, Signal, VideoFrame
from livemod.pipeline.gating import (
    CascadePolicy,
    Fresh,
    GatePolicy,
    Reuse,
    StreamGate,
    Thumb,
    frame_thumbnail,
)
from livemod.pipeline.pool import PriorityPool
from livemod.vision.base import AnalyzerResult, FrameAnalyzer, StageEvidence, StreamStage
from livemod.vision.batching import BatchPolicy, MicroBatcher

log = logging.getLogger(__name__)

ENDED_KEPT = 1024
"""Ended streams whose gate counts stay readable (their summaries outlive them)."""


@runtime_checkable
class BackgroundStage(Protocol):
    """A stage that starts its work as a side task and answers at once."""

    def offer(self, frame: VideoFrame, *, moving: bool = False) -> AnalyzerResult:
        """The stream's latest result; may start a pass whose result a later sample gets
        (never when ``moving``: the picture moved but showed nothing new)."""
        ...


class AnalysisService:
    """Owns the analyzers and their worker threads."""

    def __init__(
        self,
        analyzers: Sequence[FrameAnalyzer],
        *,
        workers: int,
        batch: BatchPolicy | None = None,
        stages: Sequence[StreamStage] = (),
        capacity: CapacityConfig | None = None,
        background_stages: bool = False,
    ) -> None:
        if not analyzers:
            raise ValueError("at least one analyzer is required")
        self._analyzers = list(analyzers)
        # Per-stream stages (OCR) see the whole VideoFrame and schedule their own work.
        self._stages = list(stages)
        # Beside work's handicap comes from ``capacity`` (``_plan``); without it none runs.
        self._pool = PriorityPool(workers, "livemod-infer", 0.0)
        self._pending = 0
        # One batcher per analyzer: frames of every stream share each model call.
        # The default policy (batch of 1, no wait) adds no latency on a CPU.
        policy = batch or BatchPolicy()
        self._calls = [_timed_batch(a) for a in self._analyzers]
        self._batchers: list[MicroBatcher[Image, AnalyzerResult]] = [
            MicroBatcher(a.name, call, self._pool, policy)
            for a, call in zip(self._analyzers, self._calls, strict=True)
        ]
        # Without ``capacity`` every model runs on every sample (the old pipeline).
        self._gate_policy: GatePolicy | None = None
        self._cascade_policy = CascadePolicy(enabled=False)
        self._always: list[int] = []
        self._reuse_always = False
        # Live sessions only: a file scan (backpressure) would outrun a side task.
        self._background = background_stages
        self._classifiers: list[int] = []
        self._detectors: list[int] = []
        self._gates: dict[str, StreamGate] = {}
        # Per stream, the results of the fresh analyses its gate may still reuse (by ref).
        self._kept: dict[str, dict[int, dict[int, AnalyzerResult]]] = {}
        self._ended: OrderedDict[str, dict[str, int]] = OrderedDict()
        # Work beside the streams (background refreshes, scheduled detector runs).
        self._refreshes: set[asyncio.Task[None]] = set()
        # Per stream, its background refresh in flight and why it was asked for.
        self._refresh_of: dict[str, tuple[asyncio.Task[None], str]] = {}
        self._schedule_beside = False
        """A region detector due only by its schedule runs beside its sample."""
        if capacity is not None:
            self._plan(capacity)

    def _plan(self, capacity: CapacityConfig) -> None:
        g, c = capacity.gating, capacity.cascade
        policy = gate_policy(capacity)
        # Live sessions only: a file scan's result must not depend on when a refresh lands.
        self._gate_policy = (
            policy if self._background else replace(policy, background_refresh=False)
        )
        self._cascade_policy = CascadePolicy(
            c.enabled,
            frozenset(c.detectors),
            dict(c.gate_scores),
            c.every_s,
            c.hold_s,
            c.on_cut,
            dict(c.settle_scores),
        )
        self._schedule_beside = self._background and c.enabled and c.schedule_beside
        self._pool.handicap_s = g.beside_yield_s
        self._reuse_always = g.enabled and g.reuse_always
        for i, analyzer in enumerate(self._analyzers):
            name = model_name(analyzer)
            if analyzer.name in g.always or name in g.always:
                self._always.append(i)
            elif c.enabled and name in c.detectors:
                self._detectors.append(i)
            else:
                self._classifiers.append(i)

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

    async def idle(self) -> None:
        """Wait until no background refresh is in flight."""
        while self._refreshes:
            await asyncio.gather(*self._refreshes, return_exceptions=True)

    def close(self) -> None:
        for task in self._refreshes:
            task.cancel()
        for stage in self._stages:
            stage.close()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def forget(self, stream_id: str) -> None:
        """A stream ended: its per-stream stage and gate state goes."""
        for stage in self._stages:
            stage.forget(stream_id)
        gate = self._gates.pop(stream_id, None)
        self._kept.pop(stream_id, None)
        inflight = self._refresh_of.pop(stream_id, None)
        if inflight is not None:
            inflight[0].cancel()
        if gate is not None:
            # An ended stream's summary still reports its counts (bounded memory).
            self._ended[stream_id] = gate.stats()
            while len(self._ended) > ENDED_KEPT:
                self._ended.popitem(last=False)

    def stretch(self, stream_id: str, scale: float) -> None:
        """Scale the reuse ages after which ``stream_id``'s scores are refreshed (1: as
        configured; more under overload, see ``capacity.rates.shed_reuse_scale``)."""
        gate = self._gates.get(stream_id)
        if gate is not None:
            gate.stretch = scale

    def stream_stats(self, stream_id: str) -> dict[str, int] | None:
        """Fresh and reused samples and detector runs of one stream (None: no gating)."""
        gate = self._gates.get(stream_id)
        return gate.stats() if gate is not None else self._ended.get(stream_id)

    def evidence(self, stream_id: str, decision: Decision) -> StageEvidence | None:
        """Annotated evidence from the stage whose signals triggered ``decision``."""
        for stage in self._stages:
            found = stage.evidence(stream_id, decision)
            if found is not None:
                return found
        return None

    async def analyze(self, frame: VideoFrame) -> FrameAnalysis:
        started = time.perf_counter()
        if self._gate_policy is not None:
            results = await self._gated(frame)
            return _merge(frame, results, (time.perf_counter() - started) * 1000.0)
        jobs = [batcher.submit(frame.image) for batcher in self._batchers]
        self._pending += len(jobs)
        try:
            results = await asyncio.gather(*jobs, *(s.analyze(frame) for s in self._stages))
        finally:
            self._pending -= len(jobs)
        return _merge(frame, results, (time.perf_counter() - started) * 1000.0)

    async def _gated(self, frame: VideoFrame) -> list[AnalyzerResult]:
        policy = self._gate_policy
        assert policy is not None
        sid, t = frame.stream_id, frame.media_time_s
        gate = self._gates.get(sid)
        if gate is None:
            gate = self._gates[sid] = StreamGate(policy, self._cascade_policy)
        measured = time.perf_counter()
        thumb = frame_thumbnail(frame) if policy.enabled else None
        before = gate.ref
        decision = gate.decide(t, thumb)
        metrics.STAGE_SECONDS.labels("gate").observe(time.perf_counter() - measured)
        if gate.refreshing is None and sid in self._refresh_of:
            # The reference changed under the refresh in flight: its result would be
            # dropped, so its model calls still queued are cancelled too.
            task, why = self._refresh_of.pop(sid)
            task.cancel()
            metrics.SAMPLES_GATED.labels("refresh_dropped", why).inc()
        outcome = "fresh" if isinstance(decision, Fresh) else "reused"
        metrics.SAMPLES_GATED.labels(outcome, decision.reason).inc()
        kept = self._kept.setdefault(sid, {})
        last = None if isinstance(decision, Fresh) else kept.get(decision.ref)
        if not isinstance(decision, Fresh) and last is not None:
            if decision.refresh is not None and thumb is not None:
                self._refresh_beside(frame, gate, decision, thumb, last)
            gated = (*self._classifiers, *self._detectors)
            moving = decision.reason == "motion"
            if self._reuse_always and all(i in last for i in self._always):
                gate.always_reused += 1
                _, staged = await self._run(frame, (), moving=moving)
                return [*(last[i] for i in (*self._always, *gated)), *staged]
            ran, staged = await self._run(frame, self._always, moving=moving)
            return [*ran, *(last[i] for i in gated), *staged]
        if not isinstance(decision, Fresh) and decision.refresh is not None:
            gate.refresh_failed(decision.ref)  # nothing kept to reuse: it runs here
        fresh = decision if isinstance(decision, Fresh) else Fresh("first", 1.0)
        by_index, staged, deferred = await self._fresh(frame, gate, fresh, kept.get(before, {}))
        results = self._keep(gate, kept, by_index, staged)
        if deferred:
            self._detect_beside(frame, gate, deferred)
        return results

    async def _fresh(
        self,
        frame: VideoFrame,
        gate: StreamGate,
        fresh: Fresh,
        last: dict[int, AnalyzerResult],
        *,
        beside: bool = False,
    ) -> tuple[dict[int, AnalyzerResult], list[AnalyzerResult], list[int]]:
        """A fresh analysis: every analyzer's result by index, the stages' results, and
        the region detectors due only by their schedule that are to run beside.

        Known-bad matching runs first when a match may settle the sample: then the models
        do not run and ``last`` (the stream's last fresh results) stands for them. Region
        detectors run with the classifiers when due regardless of them, else after them
        when a classifier's score opens their gate; one due only by its schedule (with
        ``schedule_beside``) is left to run beside, its result here empty. ``beside``: a
        background refresh, whose model calls yield to the samples' (see ``_run``); no
        stages; every detector due runs in it."""
        by_index: dict[int, AnalyzerResult] = {}
        stage_results: list[AnalyzerResult] | None = [] if beside else None
        t = frame.media_time_s
        cascade = self._cascade_policy
        if self._always and cascade.enabled and cascade.settle_scores:
            # Known-bad matching first: a match settles the sample without the models.
            ran, staged = await self._run(frame, self._always, stages=not beside, beside=beside)
            stage_results = staged
            by_index.update(zip(self._always, ran, strict=True))
            signals = ((sig.category, sig.score) for r in ran for sig in r.signals)
            if cascade.settled_by(signals) is not None:
                gate.settled += 1
                for i in (*self._classifiers, *self._detectors):
                    by_index[i] = last.get(i, AnalyzerResult())
                    metrics.CASCADE_DECISIONS.labels(
                        model_name(self._analyzers[i]), "skipped", "settled"
                    ).inc()
                return by_index, stage_results, []
        names = {i: model_name(self._analyzers[i]) for i in self._detectors}
        # A detector whose reason does not depend on the classifiers starts with them,
        # except one due only by its schedule, which can wait for a gate or go beside.
        later = self._schedule_beside and not beside
        early = [
            i
            for i in self._detectors
            if (why := gate.detector_due(names[i], t, {}, fresh)) is not None
            and not (later and why == "schedule")
        ]
        hashed = bool(by_index)  # known-bad matching (and the stages) ran first
        first = [*([] if hashed else self._always), *self._classifiers, *early]
        ran, more = await self._run(frame, first, stages=stage_results is None, beside=beside)
        by_index.update(zip(first, ran, strict=True))
        scores: dict[str, float] = {}
        for i in self._classifiers:
            scores.update(by_index[i].scores)
        late: list[int] = []
        deferred: list[int] = []
        for i in self._detectors:
            reason = gate.detector_due(names[i], t, scores, fresh)
            if reason is None:
                gate.detector_skipped()
                metrics.CASCADE_DECISIONS.labels(names[i], "skipped", "gate").inc()
                by_index[i] = AnalyzerResult()
                continue
            metrics.CASCADE_DECISIONS.labels(names[i], "run", reason).inc()
            if i in by_index:
                continue
            if later and reason == "schedule":
                gate.detector_started(names[i], t)  # not due again while it runs
                by_index[i] = AnalyzerResult()
                deferred.append(i)
            else:
                late.append(i)
        if late:
            ran_late, _ = await self._run(frame, late, stages=False, beside=beside)
            by_index.update(zip(late, ran_late, strict=True))
        for i in (*early, *late):
            gate.detector_ran(names[i], t, hit=bool(by_index[i].signals))
        return by_index, more if stage_results is None else stage_results, deferred

    def _refresh_beside(
        self,
        frame: VideoFrame,
        gate: StreamGate,
        reuse: Reuse,
        thumb: Thumb,
        last: dict[int, AnalyzerResult],
    ) -> None:
        """Start a background refresh of ``frame``, whose sample reuses ``reuse.ref``."""
        assert reuse.refresh is not None
        metrics.SAMPLES_GATED.labels("refresh", reuse.refresh).inc()
        fresh = Fresh("age" if reuse.refresh == "age" else "change", reuse.change)
        launched = time.perf_counter()

        sid = frame.stream_id

        async def refresh() -> None:
            try:
                by_index, _, _ = await self._fresh(frame, gate, fresh, last, beside=True)
            except asyncio.CancelledError:
                raise  # dropped by the gate, or the stream or the service ended
            except BaseException:
                gate.refresh_failed(reuse.ref)
                raise
            finally:
                if self._refresh_of.get(sid, (None,))[0] is asyncio.current_task():
                    del self._refresh_of[sid]
            metrics.STAGE_SECONDS.labels("beside").observe(time.perf_counter() - launched)
            new = gate.refreshed(reuse.ref, thumb, frame.media_time_s)
            if new is None or self._gates.get(sid) is not gate:
                return  # a later sample ran the models, or the stream ended
            kept = self._kept.setdefault(sid, {})
            kept[new] = by_index
            _forget_unheld(gate, kept)

        self._refresh_of[sid] = (self._start_beside(refresh()), reuse.refresh)

    def _detect_beside(self, frame: VideoFrame, gate: StreamGate, indices: list[int]) -> None:
        """Run region detectors on ``frame`` beside its stream (their schedule was due); a
        result joins the analysis the stream reuses, if that is still ``frame``'s."""
        ref, sid, t = gate.ref, frame.stream_id, frame.media_time_s
        launched = time.perf_counter()

        async def detect() -> None:
            ran, _ = await self._run(frame, indices, stages=False, beside=True)
            metrics.STAGE_SECONDS.labels("beside").observe(time.perf_counter() - launched)
            for i, result in zip(indices, ran, strict=True):
                gate.detector_ran(model_name(self._analyzers[i]), t, hit=bool(result.signals))
                entry = self._kept.get(sid, {}).get(ref)
                if entry is not None and self._gates.get(sid) is gate:
                    entry[i] = result

        self._start_beside(detect())

    def _start_beside(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work)
        self._refreshes.add(task)
        task.add_done_callback(self._refresh_done)
        return task

    def _refresh_done(self, task: asyncio.Task[None]) -> None:
        self._refreshes.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning(
                "work beside a stream failed (a refresh or a scheduled detector); "
                "the stream keeps its last scores",
                extra={"error": str(task.exception())},
            )

    def _keep(
        self,
        gate: StreamGate,
        kept: dict[int, dict[int, AnalyzerResult]],
        by_index: dict[int, AnalyzerResult],
        staged: list[AnalyzerResult],
    ) -> list[AnalyzerResult]:
        """Keep a fresh analysis for the samples that may reuse it; its results in order."""
        kept[gate.ref] = {
            i: by_index[i] for i in (*self._always, *self._classifiers, *self._detectors)
        }
        _forget_unheld(gate, kept)
        return [*(by_index[i] for i in range(len(self._analyzers))), *staged]

    async def _run(
        self,
        frame: VideoFrame,
        indices: Sequence[int],
        *,
        stages: bool = True,
        moving: bool = False,
        beside: bool = False,
    ) -> tuple[list[AnalyzerResult], list[AnalyzerResult]]:
        """The chosen analyzers (and the stages) on one frame, side by side.

        ``beside`` (work beside the streams; no stages): the calls go to the workers'
        ``later`` queue, past the batchers, behind every call a sample waits on."""
        if beside:
            loop = asyncio.get_running_loop()
            calls = [
                loop.run_in_executor(self._pool.later, self._calls[i], [frame.image])
                for i in indices
            ]
            self._pending += len(calls)
            try:
                done = await asyncio.gather(*calls)
            finally:
                self._pending -= len(calls)
            return [results[0] for results in done], []
        jobs = [self._batchers[i].submit(frame.image) for i in indices]
        offered: list[AnalyzerResult] = []
        staged: list[Awaitable[AnalyzerResult]] = []
        for stage in self._stages if stages else ():
            if self._background and isinstance(stage, BackgroundStage):
                offered.append(stage.offer(frame, moving=moving))  # never waits
            else:
                staged.append(stage.analyze(frame))
        self._pending += len(jobs)
        try:
            results = await asyncio.gather(*jobs, *staged)
        finally:
            self._pending -= len(jobs)
        return list(results[: len(jobs)]), [*results[len(jobs) :], *offered]

    def analyze_sync(self, frame: VideoFrame) -> FrameAnalysis:
        """The same analysis on the calling thread (the naive baseline, tools)."""
        started = time.perf_counter()
        results = [_timed(a, frame) for a in self._analyzers]
        return _merge(frame, results, (time.perf_counter() - started) * 1000.0)


def _forget_unheld(gate: StreamGate, kept: dict[int, dict[int, AnalyzerResult]]) -> None:
    """Drop the kept analyses no later sample of ``gate``'s stream can reuse."""
    held = gate.held()
    for ref in [ref for ref in kept if ref not in held]:
        del kept[ref]


def gate_policy(capacity: CapacityConfig) -> GatePolicy:
    """The change gate ``capacity.gating`` configures."""
    g = capacity.gating
    return GatePolicy(
        g.enabled,
        g.change_threshold,
        g.cut_threshold,
        g.max_reuse_s,
        g.motion_reuse,
        g.content_delta,
        g.motion_reuse_s,
        g.return_refs,
        g.background_refresh,
    )


def model_name(analyzer: FrameAnalyzer) -> str:
    """The manifest name of a model's analyzer (``nudenet-320n``), else its own name."""
    spec = getattr(analyzer, "spec", None)
    name = getattr(spec, "name", None)
    return name if isinstance(name, str) else analyzer.name


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
