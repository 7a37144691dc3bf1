"""Text-line geometry for OCR: crops, reading order, word gaps, and the memory of a
stream's previous reading that lets unchanged boxes keep their text.

Pure numpy/OpenCV helpers of ``livemod.ocr.engine``; nothing here runs a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import cv2
import numpy as np
import numpy.typing as npt

Quad = npt.NDArray[np.float32]
"""Four corners (top-left, top-right, bottom-right, bottom-left), shape (4, 2)."""

# A word gap in rendered Latin text is about a third of the text height; letter gaps
# are a tenth or less. The line box is taller than the letters, hence 0.22.
_SPACE_GAP = 0.22
# A box is the "same" as one of the previous reading when it overlaps it this much
# and its crop, shrunk to 8x32 grey, differs by at most this mean level.
_REUSE_IOU = 0.6
_REUSE_DELTA = 8.0
_SIG_SIZE = (32, 8)


@dataclass(frozen=True, slots=True)
class Remembered:
    """One box of a previous reading: where it was, what its crop looked like, its text."""

    box: tuple[int, int, int, int]
    signature: npt.NDArray[np.uint8]
    text: str
    score: float


class LineMemory:
    """The boxes of one stream's previous reading, for reuse. Not thread-safe: a
    stream has at most one OCR pass in flight."""

    def __init__(self) -> None:
        self._lines: list[Remembered] = []

    def find(self, box: tuple[int, int, int, int], sig: npt.NDArray[np.uint8]) -> Remembered | None:
        for old in self._lines:
            if _iou(old.box, box) >= _REUSE_IOU and _delta(old.signature, sig) <= _REUSE_DELTA:
                return old
        return None

    def replace(self, lines: list[Remembered]) -> None:
        self._lines = lines

    def __len__(self) -> int:
        return len(self._lines)


def reading_order(quads: list[Quad]) -> list[Quad]:
    """Top to bottom; boxes whose tops lie within half a line of each other form a row,
    read left to right."""
    if not quads:
        return []
    quads = sorted(quads, key=lambda q: (float(q[0, 1]), float(q[0, 0])))
    heights = sorted(float(q[3, 1] - q[0, 1]) for q in quads)
    tolerance = max(4.0, heights[len(heights) // 2] / 2)
    rows: list[list[Quad]] = []
    for q in quads:
        if rows and abs(float(q[0, 1]) - float(rows[-1][0][0, 1])) <= tolerance:
            rows[-1].append(q)
        else:
            rows.append([q])
    return [q for row in rows for q in sorted(row, key=lambda q: float(q[0, 0]))]


def crop(bgr: npt.NDArray[np.uint8], quad: Quad) -> npt.NDArray[np.uint8]:
    """The box straightened (perspective warp) into an upright line image."""
    width = int(max(np.linalg.norm(quad[0] - quad[1]), np.linalg.norm(quad[2] - quad[3])))
    height = int(max(np.linalg.norm(quad[0] - quad[3]), np.linalg.norm(quad[1] - quad[2])))
    width, height = max(width, 1), max(height, 1)
    target = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float32)
    matrix = cv2.getPerspectiveTransform(quad.astype(np.float32), target)
    crop = cv2.warpPerspective(
        bgr, matrix, (width, height), borderMode=cv2.BORDER_REPLICATE, flags=cv2.INTER_CUBIC
    )
    if height / width >= 1.5:
        # A tall box is vertical text: read it lying down, as PaddleOCR does.
        crop = np.rot90(crop)
    return cast("npt.NDArray[np.uint8]", np.ascontiguousarray(crop))


def bbox(quad: Quad) -> tuple[int, int, int, int]:
    """Axis-aligned bounds (x0, y0, x1, y1), rounded outwards."""
    x0, y0 = np.floor(quad.min(axis=0)).astype(int)
    x1, y1 = np.ceil(quad.max(axis=0)).astype(int)
    return int(x0), int(y0), int(x1), int(y1)


def signature(crop: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """What a line crop looks like, in 8x32 grey levels, to tell whether it changed."""
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    return cast("npt.NDArray[np.uint8]", cv2.resize(grey, _SIG_SIZE, interpolation=cv2.INTER_AREA))


def _delta(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8]) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def ink_gaps(crop: npt.NDArray[np.uint8]) -> list[tuple[int, int]]:
    """Column runs without ink, at least a word gap wide (Otsu split; ink is the minority)."""
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    _, binary = cv2.threshold(grey, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    if binary.mean() > 0.5:
        binary = 1 - binary
    h = binary.shape[0]
    # The box's top and bottom margins may hold other lines' ascenders: skip them.
    ink: npt.NDArray[np.bool_] = np.asarray(binary[h // 6 : h - h // 6].any(axis=0))
    width = int(ink.shape[0])
    padded = np.concatenate(([True], ink, [True]))
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    gaps = edges.reshape(-1, 2)
    min_gap = _SPACE_GAP * h
    return [(int(a), int(b)) for a, b in gaps if a > 0 and b < width and b - a >= min_gap]


def gap_between(gaps: list[tuple[int, int]], x0: float, x1: float) -> bool:
    """Whether a word gap lies between two character positions."""
    return any(x0 < (a + b) / 2 < x1 for a, b in gaps)
