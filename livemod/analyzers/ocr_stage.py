"""The OCR stage: per stream, gate -> OCR and QR -> text policy -> signals.

A ``StreamStage`` the ``AnalysisService`` runs beside the frame analyzers. For each
sampled frame it asks the stream's ``OcrGate`` whether to read (about 0.2 ms); when
it does, the pass runs on the stage's own workers, off the event loop.

Between readings the last reading's signals stand for every sample: the gate let
the frame through unread because the text on it is the one already read (or the
next reading is not due yet). So a caption read once keeps voting, and ``k`` of
``n`` confirms that it stays on screen, not that it was read ``k`` times.

OCR never queues frames: when every OCR worker is busy (other streams), a due frame
is skipped (counted ``busy``) and the stream takes its turn in line (``WorkerTurns``):
its next sample reads. So a crowd of streams costs OCR freshness, never video latency,
and no stream starves.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import cv2
import numpy as np

from livemod import metrics
from livemod.analyzers.base import AnalyzerResult, StageEvidence
from livemod.analyzers.ocr import (
    DET_MODEL,
    REC_MODEL,
    LineMemory,
    OcrEngine,
    OcrOptions,
    OcrReading,
    TextLine,
)
from livemod.analyzers.ocr_gate import OcrGate, WorkerTurns, thumbnail
from livemod.config import Config
from livemod.messages import Decision, Image, Region, Signal, VideoFrame
from livemod.policy.text import TextHit, TextPolicy

log = logging.getLogger(__name__)

SOURCE = "ocr"
QR_SOURCE = "ocr:qr"
QR_CATEGORY = "contact"
QR_SCORE = 0.9
"""A decoded QR code on a live stream is a link or contact almost always: medium tier."""
_KEPT_READINGS = 4
_HIT = (255, 0, 0)
_TEXT = (0, 200, 0)
_QR = (0, 80, 255)


@dataclass(frozen=True, slots=True)
class QrCode:
    payload: str
    quad: tuple[tuple[float, float], ...]


@dataclass(frozen=True, slots=True)
class _Kept:
    """A reading kept for evidence; ``image`` only when it produced signals."""

    frame_index: int
    reading: OcrReading
    hit_lines: frozenset[int]
    qr: tuple[QrCode, ...]
    image: Image | None

    @property
    def text(self) -> str:
        qr = "".join(f"\n[QR] {code.payload}" for code in self.qr)
        return self.reading.text + qr


@dataclass(slots=True)
class _Stream:
    gate: OcrGate
    memory: LineMemory
    held: AnalyzerResult = field(default_factory=AnalyzerResult)
    kept: deque[_Kept] = field(default_factory=lambda: deque(maxlen=_KEPT_READINGS))


@dataclass(frozen=True, slots=True)
class StageSettings:
    """The gate and worker settings (``ocr`` config section)."""

    fps: float = 1.0
    change_threshold: float = 0.005
    refresh_s: float = 30.0
    workers: int = 1
    qr: bool = True


class OcrStage:
    """On-screen text and QR codes as policy signals, gated per stream."""

    name = SOURCE

    def __init__(
        self,
        engine: OcrEngine,
        policy: TextPolicy,
        settings: StageSettings = StageSettings(),
    ) -> None:
        self.engine = engine
        self.policy = policy
        self.settings = settings
        self._pool = ThreadPoolExecutor(settings.workers, thread_name_prefix="livemod-ocr")
        self._turns = WorkerTurns(settings.workers)
        self._streams: dict[str, _Stream] = {}
        self._local = threading.local()

    def stream_gate(self, stream_id: str) -> OcrGate | None:
        """The gate of a stream (its counts), while the stream is known."""
        state = self._streams.get(stream_id)
        return state.gate if state is not None else None

    async def analyze(self, frame: VideoFrame) -> AnalyzerResult:
        state = self._streams.get(frame.stream_id)
        if state is None:
            s = self.settings
            state = _Stream(OcrGate(s.fps, s.change_threshold, s.refresh_s), LineMemory())
            self._streams[frame.stream_id] = state
        thumb = thumbnail(frame.image)
        outcome = state.gate.check(frame.media_time_s, thumb)
        if outcome != "run":
            self._turns.leave(frame.stream_id)
            metrics.OCR_GATED.labels(outcome).inc()
            return state.held
        if not self._turns.try_start(frame.stream_id, time.monotonic()):
            state.gate.counts.busy += 1
            metrics.OCR_GATED.labels("busy").inc()
            return state.held
        try:
            loop = asyncio.get_running_loop()
            kept, result = await loop.run_in_executor(self._pool, self._read, frame, state)
        except Exception:  # a bad frame must cost one reading, not the stream
            log.exception("OCR pass failed", extra={"stream_id": frame.stream_id})
            metrics.DROPS.labels("ocr", "error").inc()
            return state.held
        finally:
            self._turns.done()
        state.gate.ran(frame.media_time_s, thumb)
        metrics.OCR_RUNS.inc()
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

    def _read(self, frame: VideoFrame, state: _Stream) -> tuple[_Kept, AnalyzerResult]:
        started = time.perf_counter()
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
            regions = tuple(_region(code.quad, "qr_code", QR_SCORE) for code in qr)
            signals.append(Signal(QR_CATEGORY, QR_SCORE, QR_SOURCE, "qr_code", regions))
            scores["ocr:qr"] = QR_SCORE
        image = frame.image if signals else None
        kept = _Kept(frame.index, reading, hit_lines, qr, image)
        metrics.STAGE_SECONDS.labels("ocr").observe(time.perf_counter() - started)
        return kept, AnalyzerResult(tuple(signals), scores)

    def _find_qr(self, image: Image) -> tuple[QrCode, ...]:
        # OpenCV detectors are not documented thread-safe: one per worker thread.
        detector = getattr(self._local, "qr", None)
        if detector is None:
            detector = cv2.QRCodeDetector()
            self._local.qr = detector
        payload, points, _ = detector.detectAndDecode(np.ascontiguousarray(image[:, :, ::-1]))
        if not payload or points is None:
            # Undecodable "codes" are mostly false finds on busy pictures.
            return ()
        quad = tuple((float(x), float(y)) for x, y in np.asarray(points).reshape(-1, 2))
        return (QrCode(str(payload), quad),)

    def evidence(self, stream_id: str, decision: Decision) -> StageEvidence | None:
        """The frame of the reading behind ``decision`` with its boxes drawn (hits red,
        other text green, QR codes blue), and its text."""
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

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def text_signals(reading: OcrReading, hits: list[TextHit]) -> tuple[list[Signal], frozenset[int]]:
    """One ``ocr`` signal per category hit, with the boxes of the lines the hits fall in."""
    spans: list[tuple[int, int]] = []
    pos = 0
    for line in reading.lines:
        spans.append((pos, pos + len(line.text)))
        pos += len(line.text) + 1  # the "\n" that joins lines
    by_category: dict[str, list[tuple[TextHit, list[int]]]] = {}
    touched: set[int] = set()
    for hit in hits:
        lines = [i for i, (a, b) in enumerate(spans) if hit.start < b and hit.end > a]
        touched.update(lines)
        by_category.setdefault(hit.category, []).append((hit, lines))
    signals: list[Signal] = []
    for category, found in by_category.items():
        best = max(found, key=lambda f: f[0].score)[0]
        line_score: dict[int, float] = {}
        for hit, lines in found:
            for i in lines:
                line_score[i] = max(line_score.get(i, 0.0), hit.score)
        regions = tuple(
            _line_region(reading.lines[i], score) for i, score in sorted(line_score.items())
        )
        signals.append(Signal(category, best.score, SOURCE, best.term, regions))
    return signals, frozenset(touched)


def _line_region(line: TextLine, score: float) -> Region:
    return Region(line.x, line.y, line.w, line.h, "text", score)


def _region(quad: tuple[tuple[float, float], ...], label: str, score: float) -> Region:
    xs = [p[0] for p in quad]
    ys = [p[1] for p in quad]
    x0, y0 = int(np.floor(min(xs))), int(np.floor(min(ys)))
    x1, y1 = int(np.ceil(max(xs))), int(np.ceil(max(ys)))
    return Region(max(0, x0), max(0, y0), x1 - max(0, x0), y1 - max(0, y0), label, score)


def draw_boxes(image: Image, kept: _Kept) -> Image:
    """A copy of ``image`` with the reading's text boxes and QR codes outlined."""
    out = np.ascontiguousarray(image.copy())
    for i, line in enumerate(kept.reading.lines):
        pts = np.asarray(line.quad, dtype=np.int32).reshape(-1, 1, 2)
        colour = _HIT if i in kept.hit_lines else _TEXT
        cv2.polylines(out, [pts], isClosed=True, color=colour, thickness=2)
    for code in kept.qr:
        pts = np.asarray(code.quad, dtype=np.int32).reshape(-1, 1, 2)
        cv2.polylines(out, [pts], isClosed=True, color=_QR, thickness=2)
    return out


def build_ocr_stage(config: Config) -> OcrStage:
    """The OCR stage the ``ocr`` config section describes (models verified, text policy
    loaded). Raises ``ModelError`` or ``ConfigError`` at start-up."""
    from livemod import providers
    from livemod.models import load_manifest

    c = config.ocr
    plan = providers.resolve(config.vision.providers)
    # TensorRT would build an engine for every new text-line width: CUDA or CPU only.
    chosen = [p for p in plan.providers if p != "TensorrtExecutionProvider"]
    options = OcrOptions(c.det_limit_side_len, c.box_thresh, c.min_text_score, c.threads)
    engine = OcrEngine.from_manifest(load_manifest(config.vision.manifest), options, chosen)
    for name in (DET_MODEL, REC_MODEL):
        metrics.MODELS_LOADED.labels(name).set(1)
    settings = StageSettings(c.fps, c.change_threshold, c.refresh_s, c.workers, c.qr)
    return OcrStage(engine, TextPolicy.load(), settings)
