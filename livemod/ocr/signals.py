"""OCR readings to policy signals, and the annotated evidence of a reading.

Each text-policy hit is mapped back to the lines its characters came from, so a
signal's regions are the boxes of exactly those lines; a decoded QR code is a
``contact`` signal of its own. Pure apart from OpenCV's QR detector.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from livemod.messages import Image, Region, Signal
from livemod.ocr.engine import OcrReading, TextLine
from livemod.text.judge import TextHit

SOURCE = "ocr"
QR_SOURCE = "ocr:qr"
QR_CATEGORY = "contact"
QR_SCORE = 0.9
"""A decoded QR code on a live stream is a link or contact almost always: medium tier."""
_HIT = (255, 0, 0)
_TEXT = (0, 200, 0)
_QR = (0, 80, 255)


@dataclass(frozen=True, slots=True)
class QrCode:
    """A decoded QR code and its corners in image pixels."""

    payload: str
    quad: tuple[tuple[float, float], ...]


@dataclass(frozen=True, slots=True)
class KeptReading:
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


def find_qr(detector: cv2.QRCodeDetector, image: Image) -> tuple[QrCode, ...]:
    """The decodable QR code in an RGB frame, if any."""
    payload, points, _ = detector.detectAndDecode(np.ascontiguousarray(image[:, :, ::-1]))
    if not payload or points is None:
        # Undecodable "codes" are mostly false finds on busy pictures.
        return ()
    quad = tuple((float(x), float(y)) for x, y in np.asarray(points).reshape(-1, 2))
    return (QrCode(str(payload), quad),)


def qr_box(code: QrCode) -> tuple[int, int, int, int]:
    """The code's bounds (x, y, w, h) in image pixels."""
    r = _region(code.quad, "qr_code", QR_SCORE)
    return r.x, r.y, r.w, r.h


def qr_signal(codes: tuple[QrCode, ...]) -> Signal:
    """One ``contact`` signal with a region per code."""
    regions = tuple(_region(code.quad, "qr_code", QR_SCORE) for code in codes)
    return Signal(QR_CATEGORY, QR_SCORE, QR_SOURCE, "qr_code", regions)


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


def draw_boxes(image: Image, kept: KeptReading) -> Image:
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
