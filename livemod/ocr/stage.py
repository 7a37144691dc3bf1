"""The OCR stage: per stream, gate -> OCR and QR -> text policy -> signals.

A ``StreamStage`` the ``AnalysisService`` runs beside the frame analyzers. For each
sampled frame it asks the stream's ``OcrGate`` whether to read (about 0.3 ms); when
it does, the pass runs on the stage's own workers, off the event loop.

Between readings the last reading's signals stand for every sample: the gate let
the frame through unread because the text on it is the one already read (or the
next reading is not due yet). So a caption read once keeps voting, and ``k`` of
``n`` confirms that it stays on screen, not that it was read ``k`` times.

OCR never queues frames: when every OCR worker is busy (other streams), a due frame
is skipped (counted ``busy``) and the stream takes its turn in line (``WorkerTurns``):
its next sample reads. So a crowd of streams costs OCR freshness, never video latency,
and no stream starves.

``offer`` (what the gated analysis calls) never waits for a reading either: a due pass
starts as a side task and ``offer`` answers at once with the stream's latest reading;
the new reading joins the vote at the stream's next sample (one sample period later).
While a stream's pass is in flight its samples are not even checked (counted
``inflight``); the gate's next check compares against the frame being read, so text
that appeared meanwhile still counts as a change. ``analyze`` awaits the reading
(tools, tests, the ungated baseline).

The passes ``offer`` starts share one CPU budget, all streams together (``ocr.max_cpu``,
``OcrBudget``): a due pass over budget, or while a fairer stream waits for it, is skipped
(counted ``budget``) and the stream keeps its place in the fair line. ``analyze`` (``livemod
scan``, which awaits every reading) is never capped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import cv2

from livemod import metrics
from livemod.budget import lower_priority
from livemod.config import Config
from livemod.messages import Decision, Image, VideoFrame
from livemod.ocr.budget import OcrBudget
from livemod.ocr.engine import DET_MODEL, REC_MODEL, OcrEngine, OcrOptions
from livemod.ocr.gate import OcrGate, Thumb, WorkerTurns, frame_thumbnail, text_cells
from livemod.ocr.lines import LineMemory
from livemod.ocr.signals import (
    QR_SCORE,
    SOURCE,
    KeptReading,
    QrCode,
    draw_boxes,
    find_qr,
    qr_box,
    qr_signal,
    text_signals,
)
from livemod.text.judge import TextPolicy
from livemod.vision.base import AnalyzerResult, StageEvidence

log = logging.getLogger(__name__)

_KEPT_READINGS = 4


@dataclass(slots=True)
class _Stream:
    gate: OcrGate
    memory: LineMemory
    held: AnalyzerResult = field(default_factory=AnalyzerResult)
    kept: deque[KeptReading] = field(default_factory=lambda: deque(maxlen=_KEPT_READINGS))
    task: asyncio.Task[AnalyzerResult] | None = None


@dataclass(frozen=True, slots=True)
class StageSettings:
    """The gate and worker settings (``ocr`` config section)."""

    fps: float = 1.0
    change_threshold: float = 0.005
    refresh_s: float = 30.0
    workers: int = 1
    qr: bool = True
    max_cpu: float | None = None
    """CPU seconds per second for the passes ``offer`` starts, all streams (None: no cap)."""
    threads: int = 1
    """ONNX Runtime threads per pass: a pass is charged at most wall time x threads."""
    nice: int = 10
    """How far the OCR workers' priority is lowered (``budget.lower_priority``)."""


class OcrStage:
    """On-screen text and QR codes as policy signals, gated per stream."""

    name = SOURCE

    def __init__(
        self,
        engine: OcrEngine,
        policy: TextPolicy,
        settings: StageSettings = StageSettings(),
        budget: OcrBudget | None = None,
    ) -> None:
        self.engine = engine
        self.policy = policy
        self.settings = settings
        # Background work: when a burst of fresh analyses wants every core, OCR waits.
        self._pool = ThreadPoolExecutor(
            settings.workers,
            thread_name_prefix="livemod-ocr",
            initializer=lower_priority,
            initargs=(settings.nice,),
        )
        self._turns = WorkerTurns(settings.workers)
        self.budget = budget if budget is not None else OcrBudget(settings.max_cpu)
        """All live streams' OCR CPU (``offer`` only; ``analyze`` is never capped)."""
        self._streams: dict[str, _Stream] = {}
        self._local = threading.local()
        self._tasks: set[asyncio.Task[AnalyzerResult]] = set()

    def stream_gate(self, stream_id: str) -> OcrGate | None:
        """The gate of a stream (its counts), while the stream is known."""
        state = self._streams.get(stream_id)
        return state.gate if state is not None else None

    def stream_stats(self, stream_id: str) -> dict[str, int] | None:
        """A stream's OCR counts: readings, samples gated off by reason, and ``skipped``:
        due passes not run (``busy`` workers plus ``budget``)."""
        state = self._streams.get(stream_id)
        if state is None:
            return None
        c = state.gate.counts
        return {
            "run": c.run,
            "rate": c.rate,
            "unchanged": c.unchanged,
            "busy": c.busy,
            "budget": c.budget,
            "inflight": c.inflight,
            "motion": c.motion,
            "skipped": c.busy + c.budget,
        }

    async def analyze(self, frame: VideoFrame) -> AnalyzerResult:
        """The stream's signals for this sample: a new reading when the gate lets it
        through and a worker is free, else the stream's latest reading."""
        admitted = self._admit(frame)
        if isinstance(admitted, AnalyzerResult):
            return admitted
        return await self._pass(frame, admitted[0], admitted[1])

    def offer(self, frame: VideoFrame, *, moving: bool = False) -> AnalyzerResult:
        """The stream's latest reading, at once; a due pass starts as a side task whose
        reading the stream's next sample gets. ``moving``: the picture moved but showed
        nothing new since the models' last look, so no pass starts (a moving picture would
        keep the text gate open; its next fresh sample, at most
        ``capacity.gating.motion_reuse_s`` later, is offered as usual). Call on the event
        loop."""
        if moving:
            state = self._streams.get(frame.stream_id)
            if state is not None:
                state.gate.counts.motion += 1
                metrics.OCR_GATED.labels("motion").inc()
                return state.held
        admitted = self._admit(frame, budgeted=True)
        if isinstance(admitted, AnalyzerResult):
            return admitted
        state, thumb = admitted
        task = asyncio.get_running_loop().create_task(self._pass(frame, state, thumb))
        state.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return state.held

    def _admit(
        self, frame: VideoFrame, *, budgeted: bool = False
    ) -> tuple[_Stream, Thumb] | AnalyzerResult:
        """The stream and thumbnail when a pass may start now, else the held result
        (``budgeted``: the pass also needs the CPU budget's turn)."""
        state = self._streams.get(frame.stream_id)
        if state is None:
            s = self.settings
            state = _Stream(OcrGate(s.fps, s.change_threshold, s.refresh_s), LineMemory())
            self._streams[frame.stream_id] = state
        if state.task is not None and not state.task.done():
            state.gate.counts.inflight += 1
            metrics.OCR_GATED.labels("busy").inc()
            return state.held
        thumb = frame_thumbnail(frame)
        outcome = state.gate.check(frame.media_time_s, thumb)
        if outcome != "run":
            self._turns.leave(frame.stream_id)
            self.budget.leave(frame.stream_id)
            metrics.OCR_GATED.labels(outcome).inc()
            return state.held
        if budgeted and not self.budget.try_start(frame.stream_id):
            state.gate.counts.budget += 1
            metrics.OCR_GATED.labels("budget").inc()
            return state.held
        if not self._turns.try_start(frame.stream_id, time.monotonic()):
            state.gate.counts.busy += 1
            metrics.OCR_GATED.labels("busy").inc()
            return state.held
        return state, thumb

    async def _pass(self, frame: VideoFrame, state: _Stream, thumb: Thumb) -> AnalyzerResult:
        """One OCR pass on a worker (the caller holds a worker turn)."""
        try:
            loop = asyncio.get_running_loop()
            kept, result, cpu_s = await loop.run_in_executor(self._pool, self._read, frame, state)
        except Exception:  # a bad frame must cost one reading, not the stream
            log.exception("OCR pass failed", extra={"stream_id": frame.stream_id})
            metrics.DROPS.labels("ocr", "error").inc()
            # Counted as a reading, so a frame that keeps failing is retried at the
            # OCR rate, not at every sample.
            state.gate.ran(frame.media_time_s, thumb)
            return state.held
        finally:
            self._turns.done()
        boxes = [(ln.x, ln.y, ln.w, ln.h) for ln in kept.reading.lines]
        boxes += [qr_box(code) for code in kept.qr]
        size = (frame.width, frame.height)
        state.gate.ran(frame.media_time_s, thumb, text_cells(boxes, size, thumb))
        metrics.OCR_RUNS.inc()
        metrics.OCR_CPU.inc(cpu_s)
        self.budget.charge(frame.stream_id, cpu_s)
        if result.signals:
            self.budget.text_hit(frame.stream_id)
        log.debug(
            "ocr reading",
            extra={
                "stream_id": frame.stream_id,
                "media_time_s": round(frame.media_time_s, 3),
                "lines": len(kept.reading.lines),
                "recognized": kept.reading.recognized,
                "reused": kept.reading.reused,
                "det_ms": round(kept.reading.det_ms, 1),
                "rec_ms": round(kept.reading.rec_ms, 1),
                "categories": sorted({s.category for s in result.signals}),
            },
        )
        state.held = result
        state.kept.append(kept)
        return result

    def _read(self, frame: VideoFrame, state: _Stream) -> tuple[KeptReading, AnalyzerResult, float]:
        """One reading, and the CPU seconds it cost."""
        started, cpu = time.perf_counter(), time.process_time()
        reading = self.engine.read(frame.image, state.memory)
        metrics.OCR_SECONDS.labels("det").observe(reading.det_ms / 1000.0)
        metrics.OCR_SECONDS.labels("rec").observe(reading.rec_ms / 1000.0)
        metrics.OCR_BOXES.labels("recognized").inc(reading.recognized)
        metrics.OCR_BOXES.labels("reused").inc(reading.reused)
        qr: tuple[QrCode, ...] = ()
        if self.settings.qr:
            t_qr = time.perf_counter()
            qr = self._find_qr(frame.image)
            metrics.OCR_SECONDS.labels("qr").observe(time.perf_counter() - t_qr)
        hits = self.policy.evaluate(reading.text) if reading.lines else []
        signals, hit_lines = text_signals(reading, hits)
        scores = {f"ocr:{s.category}": s.score for s in signals}
        if qr:
            signals.append(qr_signal(qr))
            scores["ocr:qr"] = QR_SCORE
        image = frame.image if signals else None
        kept = KeptReading(frame.index, reading, hit_lines, qr, image)
        wall = time.perf_counter() - started
        metrics.STAGE_SECONDS.labels("ocr").observe(wall)
        # Process CPU counts the other threads too (decode, frame models): at most the
        # pass's wall time on its threads.
        cpu_s = min(wall * self.settings.threads, time.process_time() - cpu)
        return kept, AnalyzerResult(tuple(signals), scores), cpu_s

    def _find_qr(self, image: Image) -> tuple[QrCode, ...]:
        # OpenCV detectors are not documented thread-safe: one per worker thread.
        detector = getattr(self._local, "qr", None)
        if detector is None:
            detector = cv2.QRCodeDetector()
            self._local.qr = detector
        return find_qr(detector, image)

    def evidence(self, stream_id: str, decision: Decision) -> StageEvidence | None:
        """The frame of the reading behind ``decision`` with its boxes drawn (hits red,
        other text green, QR codes blue), and its text."""
        if decision.state == "start":
            # An action started on this stream (vision or OCR; the session asks every stage
            # for evidence): its OCR passes go ahead in line.
            self.budget.flag(stream_id)
        if not any(s == SOURCE or s.startswith(SOURCE + ":") for s in decision.sources):
            return None
        state = self._streams.get(stream_id)
        if state is None:
            return None
        index = decision.evidence_frame.index if decision.evidence_frame else None
        candidates = [k for k in state.kept if k.image is not None]
        before = [k for k in candidates if index is None or k.frame_index <= index]
        if not candidates:
            return None
        chosen = (before or candidates)[-1]
        if chosen.image is None:
            return None
        return StageEvidence(draw_boxes(chosen.image, chosen), chosen.text)

    def forget(self, stream_id: str) -> None:
        self._streams.pop(stream_id, None)
        self._turns.leave(stream_id)
        self.budget.forget(stream_id)

    async def idle(self) -> None:
        """Wait for the passes ``offer`` started (shutdown, tests)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def close(self) -> None:
        for task in list(self._tasks):
            with contextlib.suppress(RuntimeError):  # its loop already closed
                task.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)


def build_ocr_stage(config: Config) -> OcrStage:
    """The OCR stage the ``ocr`` config section describes (models verified, text policy
    loaded). Raises ``ModelError`` or ``ConfigError`` at start-up."""
    from livemod.vision import openvino, providers
    from livemod.vision.manifest import load_manifest

    c = config.ocr
    plan = providers.resolve(config.vision.providers)
    # TensorRT would build an engine for every new text-line width: CUDA or CPU only.
    # OpenVINO (vision.providers: openvino) is for the vision models only.
    chosen = [
        p for p in plan.providers if p not in ("TensorrtExecutionProvider", openvino.PROVIDER)
    ] or ["CPUExecutionProvider"]
    options = OcrOptions(c.det_limit_side_len, c.box_thresh, c.min_text_score, c.threads)
    engine = OcrEngine.from_manifest(load_manifest(config.vision.manifest), options, chosen)
    for name in (DET_MODEL, REC_MODEL):
        metrics.MODELS_LOADED.labels(name).set(1)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    max_cpu = c.max_cpu * (cores or 1) if c.max_cpu > 0 else None
    settings = StageSettings(
        c.fps, c.change_threshold, c.refresh_s, c.workers, c.qr, max_cpu, c.threads, c.nice
    )
    cap = "no cap on" if max_cpu is None else f"at most {max_cpu:.2f}"
    log.info("ocr: %s CPU s/s, all live streams", cap)
    return OcrStage(engine, TextPolicy.load(), settings)
