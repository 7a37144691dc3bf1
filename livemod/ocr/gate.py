"""Pure cost gate for OCR: its own rate, and only when the picture changed.

OCR costs 100-500 ms a frame on one core, ten times a vision model, and the text on
screen rarely changes between samples. So per stream, OCR runs at most ``fps`` times
a second of media time, and only when a cheap difference says the picture changed
since the last OCR of that stream (or ``refresh_s`` passed). No clock inside: media
time is passed in.

The difference is built to see text appear and to overlook a moving speaker. The
frame is shrunk (area average) to a 128-wide grey thumbnail (5x5-pixel cells at
640x360); a cell has changed when its level falls outside the range of the reference
thumbnail's 3x3 neighbourhood by more than ``CELL_DELTA``, so an edge that moved by a
few pixels (a swaying head, camera shake) does not count, while a caption, whose
cells take levels the picture did not have there, does. Measured on generated
clips: a talking head changes 0.2 % of cells between samples and at most 0.6 % over
a second; a 12-pixel caption 0.8-1.2 %, larger ones 1.1-3.4 %.

Inside the boxes where the last reading found text, that tolerance would hide what
matters (a scrolling ticker is a texture whose neighbourhoods span black to white),
so there any cell that moved by ``CELL_DELTA`` counts.

A stream is re-read when one sample differs from the previous sample by
``change_threshold`` (text pops up), or the picture drifted ``DRIFT_FACTOR`` times
that far from the last one read (a slow fade, a pan), or ``refresh_s`` passed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, cast

import cv2
import numpy as np
import numpy.typing as npt

from livemod.messages import CONVERSION_BIAS, Image, VideoFrame

THUMB_WIDTH = 128
CELL_DELTA = 12
"""Grey levels (of 255) a cell must fall outside its old neighbourhood to count."""
DRIFT_FACTOR = 3.0
_NEIGHBOURS = np.ones((3, 3), dtype=np.uint8)
_MINUS_DELTA = np.clip(np.arange(256) - CELL_DELTA, 0, 255).astype(np.uint8)
_PLUS_DELTA = np.clip(np.arange(256) + CELL_DELTA, 0, 255).astype(np.uint8)
"""Levels less and more ``CELL_DELTA``, saturated (a lookup table each)."""

GateOutcome = Literal["run", "rate", "unchanged"]

Thumb = npt.NDArray[np.uint8]
Cells = npt.NDArray[np.bool_]


def thumbnail(image: Image) -> Thumb:
    """The grey, 128-wide, area-averaged thumbnail of an RGB frame (about 0.16 ms)."""
    grey = cast(Thumb, cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY))
    return _shrink(grey)


def _shrink(grey: npt.NDArray[np.uint8]) -> Thumb:
    """A grey picture area-averaged to ``THUMB_WIDTH`` wide.

    When the picture is a whole number ``k`` of thumbnails (640x360: k = 5), each cell is
    the mean of its k x k block: a box filter read at the blocks' anchors gives the same
    levels as OpenCV's area resize in 0.16 instead of 0.26 ms."""
    h, w = grey.shape
    size = (THUMB_WIDTH, max(1, round(THUMB_WIDTH * h / max(w, 1))))
    k = w // THUMB_WIDTH
    if k > 1 and w == k * size[0] and h == k * size[1]:
        return cast(Thumb, np.ascontiguousarray(cv2.blur(grey, (k, k))[k // 2 :: k, k // 2 :: k]))
    return cast(Thumb, cv2.resize(grey, size, interpolation=cv2.INTER_AREA))


_LUMA_LEVELS = np.clip(
    np.round((np.arange(256, dtype=np.float32) - 16.0) * (255.0 / 219.0) + CONVERSION_BIAS),
    0,
    255,
).astype(np.uint8)
"""Limited-range luma (16-235) to the grey levels of the converted RGB picture."""


def frame_thumbnail(frame: VideoFrame) -> Thumb:
    """``thumbnail`` of a sample, from its luma plane when the decoder handed its planes
    on (grey is luma: within a few levels of the converted picture's, and the picture is
    never converted)."""
    if frame.planes is None:
        return thumbnail(frame.image)
    levels: Thumb = _LUMA_LEVELS[_shrink(frame.planes.y)]
    return levels


def text_cells(
    boxes: Sequence[tuple[int, int, int, int]], image_size: tuple[int, int], thumb: Thumb
) -> Cells:
    """The thumbnail cells covered by ``boxes`` (x, y, w, h in image pixels of an image
    ``image_size`` = (width, height)), grown by one cell."""
    mask = np.zeros(thumb.shape, dtype=np.bool_)
    th, tw = thumb.shape
    sx, sy = tw / max(image_size[0], 1), th / max(image_size[1], 1)
    for x, y, w, h in boxes:
        x0, y0 = max(0, int(x * sx) - 1), max(0, int(y * sy) - 1)
        x1, y1 = min(tw, int(np.ceil((x + w) * sx)) + 1), min(th, int(np.ceil((y + h) * sy)) + 1)
        mask[y0:y1, x0:x1] = True
    return mask


Limits = tuple[Thumb, Thumb]
"""A thumbnail's per-cell range: the min and max over each cell's 3x3 neighbourhood,
widened by ``CELL_DELTA`` (saturating at 0 and 255, which no level passes anyway)."""


def limits(thumb: Thumb) -> Limits:
    """The range a cell of another thumbnail must stay in to fit ``thumb``."""
    low = cv2.LUT(cv2.erode(thumb, _NEIGHBOURS), _MINUS_DELTA)
    high = cv2.LUT(cv2.dilate(thumb, _NEIGHBOURS), _PLUS_DELTA)
    return cast(Thumb, low), cast(Thumb, high)


def changed_fraction(
    new: Thumb,
    ref: Thumb,
    text: Cells | None = None,
    *,
    new_limits: Limits | None = None,
    ref_limits: Limits | None = None,
) -> float:
    """Fraction of cells that appeared or vanished: outside the other thumbnail's 3x3
    neighbourhood range by more than ``CELL_DELTA``, either way round (1.0 when the frame
    size changed). Both ways, because text leaving shows only the second way: the
    photograph's levels fit inside the range of a black-and-white caption's cells.
    Within ``text`` cells, any move by more than ``CELL_DELTA`` counts. Each thumbnail
    is compared with two others (the next sample, a reading), so a caller may pass the
    ``limits`` it already has."""
    if new.shape != ref.shape:
        return 1.0
    appeared = _outside(new, ref_limits or limits(ref))
    vanished = _outside(ref, new_limits or limits(new))
    if text is not None and text.shape == new.shape:
        moved = text & (cv2.absdiff(new, ref) > CELL_DELTA)
        appeared |= moved
        vanished |= moved
    return max(float(appeared.mean()), float(vanished.mean()))


def _outside(cells: Thumb, ref: Limits) -> Cells:
    # inRange marks the cells within [low, high]: one pass in C.
    return cast(Cells, cv2.inRange(cells, *ref) == 0)


@dataclass(slots=True)
class GateCounts:
    """How the gate decided, sample by sample."""

    run: int = 0
    rate: int = 0
    unchanged: int = 0
    busy: int = 0
    """Due and changed, but every OCR worker was busy (counted by the caller)."""
    inflight: int = 0
    """Not checked: the stream's own background pass was still running (the caller)."""
    budget: int = 0
    """Due and changed, but OCR's CPU budget was spent or a fairer stream waited for it
    (counted by the caller)."""
    motion: int = 0
    """Not checked: the picture moved but showed nothing new (the change gate's ``motion``
    reuse, counted by the caller)."""

    @property
    def gated_fraction(self) -> float:
        total = (
            self.run
            + self.rate
            + self.unchanged
            + self.busy
            + self.inflight
            + self.budget
            + self.motion
        )
        return (total - self.run) / total if total else 0.0


class OcrGate:
    """One stream's gate. ``check`` each sampled frame; call ``ran`` when OCR ran."""

    def __init__(self, fps: float, change_threshold: float, refresh_s: float) -> None:
        if fps <= 0:
            raise ValueError("ocr fps must be positive")
        if not 0.0 <= change_threshold <= 1.0:
            raise ValueError("change_threshold is a fraction from 0 to 1")
        self.interval = 1.0 / fps
        self.change_threshold = change_threshold
        self.refresh_s = refresh_s
        self.counts = GateCounts()
        self._last_t: float | None = None
        self._last_thumb: Thumb | None = None
        self._last_text: Cells | None = None
        self._prev: Thumb | None = None
        self._prev_limits: Limits | None = None
        self._last_limits: Limits | None = None
        self._popped = False
        """A sample differed suddenly from the one before since the last reading."""

    def check(self, media_time_s: float, thumb: Thumb) -> GateOutcome:
        """Whether the frame at ``media_time_s`` should be OCR'd (counted)."""
        outcome = self._decide(media_time_s, thumb)
        if outcome == "rate":
            self.counts.rate += 1
        elif outcome == "unchanged":
            self.counts.unchanged += 1
        return outcome

    def _decide(self, t: float, thumb: Thumb) -> GateOutcome:
        own = limits(thumb)  # this sample's range, for this and the next comparison
        prev, self._prev = self._prev, thumb
        prev_limits, self._prev_limits = self._prev_limits, own
        text = self._last_text
        if (
            prev is not None
            and changed_fraction(thumb, prev, text, new_limits=own, ref_limits=prev_limits)
            >= self.change_threshold
        ):
            self._popped = True
        last_t, last_thumb = self._last_t, self._last_thumb
        if last_t is None or last_thumb is None or t < last_t:
            # First frame, or media time went back (a restarted publisher): read it.
            return "run"
        elapsed = t - last_t
        # The same slack as the sampler: a 4 fps sample may land a hair early.
        if elapsed < self.interval * 0.9:
            return "rate"
        if self._popped or elapsed >= self.refresh_s:
            return "run"
        drift = changed_fraction(
            thumb, last_thumb, text, new_limits=own, ref_limits=self._last_limits
        )
        return "run" if drift >= DRIFT_FACTOR * self.change_threshold else "unchanged"

    def ran(self, media_time_s: float, thumb: Thumb, text: Cells | None = None) -> None:
        """Record that the frame at ``media_time_s`` was OCR'd (``text``: the cells where
        it found text, see ``text_cells``): the next difference is taken against it."""
        self.counts.run += 1
        self._last_t = media_time_s
        self._last_thumb = thumb
        self._last_limits = limits(thumb)
        self._last_text = text
        self._popped = False


class WorkerTurns:
    """Fair turns at a fixed number of OCR workers, with no queue of frames.

    A stream that is due while every worker is busy takes a place in line; when a
    worker frees, only the streams at the head of the line may start (at their next
    sample), so a stream whose samples happen to arrive just after another's cannot
    starve. A place is dropped when its stream stops asking for ``stale_s``.
    """

    def __init__(self, workers: int, stale_s: float = 2.0) -> None:
        if workers < 1:
            raise ValueError("at least one OCR worker")
        self.workers = workers
        self.stale_s = stale_s
        self.busy = 0
        self._line: dict[str, float] = {}  # stream -> last asked; insertion order is the line

    def try_start(self, stream_id: str, now: float) -> bool:
        """Take a worker for ``stream_id`` if one is free and it is its turn."""
        for sid, seen in list(self._line.items()):
            if now - seen > self.stale_s:
                del self._line[sid]
        free = self.workers - self.busy
        if free > 0:
            ahead = list(self._line)[:free]
            if stream_id in ahead or (stream_id not in self._line and len(self._line) < free):
                self._line.pop(stream_id, None)
                self.busy += 1
                return True
        self._line[stream_id] = now
        return False

    def done(self) -> None:
        """A worker finished."""
        self.busy -= 1

    def leave(self, stream_id: str) -> None:
        """The stream no longer waits (its picture settled, or it ended)."""
        self._line.pop(stream_id, None)

    @property
    def waiting(self) -> list[str]:
        return list(self._line)
