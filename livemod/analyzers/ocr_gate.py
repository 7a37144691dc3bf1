"""Pure cost gate for OCR: its own rate, and only when the picture changed.

OCR costs 100-500 ms a frame on one core, ten times a vision model, and the text on
screen rarely changes between samples. So per stream, OCR runs at most ``fps`` times
a second of media time, and only when a cheap difference says the picture changed
since the last OCR of that stream (or ``refresh_s`` passed). No clock inside: media
time is passed in.

The difference: the frame shrunk (area average) to a 64-wide grey thumbnail, and the
fraction of its cells whose level moved by more than ``CELL_DELTA``. A 640x360 frame
gives 10x10-pixel cells, so a caption of 24-pixel letters changes a few percent of
them, and compression noise on a still picture changes none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, cast

import cv2
import numpy as np
import numpy.typing as npt

from livemod.messages import Image

THUMB_WIDTH = 64
CELL_DELTA = 16
"""Grey levels (of 255) a thumbnail cell must move to count as changed."""

GateOutcome = Literal["run", "rate", "unchanged"]

Thumb = npt.NDArray[np.uint8]


def thumbnail(image: Image) -> Thumb:
    """The grey, 64-wide, area-averaged thumbnail of an RGB frame (about 0.2 ms)."""
    h, w = image.shape[:2]
    size = (THUMB_WIDTH, max(1, round(THUMB_WIDTH * h / max(w, 1))))
    grey = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    return cast(Thumb, cv2.resize(grey, size, interpolation=cv2.INTER_AREA))


def changed_fraction(a: Thumb, b: Thumb) -> float:
    """Fraction of thumbnail cells that moved by more than ``CELL_DELTA`` (1.0 when the
    frame size changed)."""
    if a.shape != b.shape:
        return 1.0
    return float((np.abs(a.astype(np.int16) - b.astype(np.int16)) > CELL_DELTA).mean())


@dataclass(slots=True)
class GateCounts:
    """How the gate decided, sample by sample."""

    run: int = 0
    rate: int = 0
    unchanged: int = 0
    busy: int = 0
    """Due and changed, but every OCR worker was busy (counted by the caller)."""

    @property
    def gated_fraction(self) -> float:
        total = self.run + self.rate + self.unchanged + self.busy
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

    def check(self, media_time_s: float, thumb: Thumb) -> GateOutcome:
        """Whether the frame at ``media_time_s`` should be OCR'd (counted)."""
        outcome = self._decide(media_time_s, thumb)
        if outcome == "rate":
            self.counts.rate += 1
        elif outcome == "unchanged":
            self.counts.unchanged += 1
        return outcome

    def _decide(self, t: float, thumb: Thumb) -> GateOutcome:
        last_t, last_thumb = self._last_t, self._last_thumb
        if last_t is None or last_thumb is None or t < last_t:
            # First frame, or media time went back (a restarted publisher): read it.
            return "run"
        elapsed = t - last_t
        # The same slack as the sampler: a 4 fps sample may land a hair early.
        if elapsed < self.interval * 0.9:
            return "rate"
        if elapsed < self.refresh_s and changed_fraction(thumb, last_thumb) < self.change_threshold:
            return "unchanged"
        return "run"

    def ran(self, media_time_s: float, thumb: Thumb) -> None:
        """Record that the frame at ``media_time_s`` was OCR'd: the next difference is
        taken against it."""
        self.counts.run += 1
        self._last_t = media_time_s
        self._last_thumb = thumb


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
