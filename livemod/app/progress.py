"""A one-line progress bar for ``livemod scan`` on a terminal.

It writes to stderr, and only when stderr is a terminal: a pipe, a log file and
the ``--json`` report on stdout never see it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

from livemod.messages import FrameAnalysis

BAR_WIDTH = 28


def probe_duration(target: str, timeout_s: float = 5.0) -> float | None:
    """Duration in seconds of a local file, or None (a URL, or not known)."""
    if "://" in target and not target.startswith("file://"):
        return None  # a live URL has no end, and opening it twice is rude
    import av
    import av.error

    path = target[len("file://") :] if target.startswith("file://") else target
    try:
        with av.open(path, timeout=timeout_s) as container:
            if container.duration:
                return float(container.duration) / 1_000_000.0
            for stream in container.streams.video:
                if stream.duration and stream.time_base:
                    return float(stream.duration * stream.time_base)
    except (av.error.FFmpegError, OSError):
        return None  # the scan itself reports what is wrong with the file
    return None


def render(
    media_s: float, total_s: float | None, samples: int, elapsed_s: float, width: int = BAR_WIDTH
) -> str:
    """The bar's text (pure): position in the media, samples, speed."""
    speed = f"{media_s / elapsed_s:.1f}x" if elapsed_s > 0 else "-"
    tail = f"{samples} samples  {elapsed_s:.1f} s  {speed}"
    if not total_s or total_s <= 0:
        return f"scan {media_s:7.1f} s of media  {tail}"
    frac = min(1.0, max(0.0, media_s / total_s))
    filled = round(frac * width)
    bar = "#" * filled + "-" * (width - filled)
    return f"scan [{bar}] {frac * 100:3.0f}%  {media_s:.1f}/{total_s:.1f} s  {tail}"


class ProgressBar:
    """Redraws one stderr line as samples are analyzed, at most every ``interval_s``."""

    def __init__(
        self,
        stream: TextIO,
        total_s: float | None,
        *,
        interval_s: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        self._total_s = total_s
        self._interval_s = interval_s
        self._clock = clock
        self._started = clock()
        self._last_draw = float("-inf")
        self._media_s = 0.0
        self.samples = 0

    @classmethod
    def for_terminal(cls, stream: TextIO, target: str) -> ProgressBar | None:
        """A bar on ``stream`` when it is a terminal, else None."""
        try:
            tty = stream.isatty()
        except (AttributeError, ValueError):
            tty = False
        return cls(stream, probe_duration(target)) if tty else None

    def update(self, analysis: FrameAnalysis) -> None:
        """Count one analyzed sample (the session's ``on_analysis`` callback)."""
        self.samples += 1
        self._media_s = max(self._media_s, analysis.frame.media_time_s)
        now = self._clock()
        if now - self._last_draw >= self._interval_s:
            self._last_draw = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        line = render(self._media_s, self._total_s, self.samples, now - self._started)
        # \r back to the start, \x1b[K clears what a longer previous line left.
        self._stream.write(f"\r{line}\x1b[K")
        self._stream.flush()

    def close(self, *, complete: bool = True) -> None:
        """Draw the final state and end the line, so later output starts clean."""
        if complete and self._total_s:
            self._media_s = max(self._media_s, self._total_s)
        self._draw(self._clock())
        self._stream.write("\n")
        self._stream.flush()
