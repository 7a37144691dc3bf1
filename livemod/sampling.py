"""Pure sampling: an fps gate over media time, a ring of recent frames, and the bounded
queue of a live stream's sampled frames.

No clock inside: every call is told the media time. The gate runs in the decode
thread, so only admitted frames pay for the RGB conversion.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt

from livemod.messages import VideoFrame


class FrameSampler:
    """Admits frames at ``fps`` (``boost_fps`` while boosted) by media time.

    Boost covers the first ``boost_initial_s`` of a session (from its first analysed
    sample on, with ``initial_after_first``) and the ``boost_suspicious_s`` after the
    policy marks the stream suspicious, so a developing violation is confirmed at a
    higher rate. The base rate may be changed while the stream runs (:meth:`set_fps`,
    the adaptive rate controller).

    The admitted rate never exceeds ``max(fps, boost_fps)`` whatever the decoder's
    lead over analysis: every admission takes a *slot*, slots lie at least one boosted
    interval apart, and a frame is admitted no earlier than a small tolerance before its
    slot. A mark or a rate change can only pull the next slot in to one (new) interval
    after the last slot taken, never before it.
    """

    def __init__(
        self,
        fps: float,
        boost_fps: float,
        *,
        boost_initial_s: float = 0.0,
        boost_suspicious_s: float = 0.0,
        initial_after_first: bool = False,
    ) -> None:
        if fps <= 0 or boost_fps <= 0:
            raise ValueError("fps and boost_fps must be positive")
        self._boost_fps = max(boost_fps, fps)
        self._interval = 1.0 / fps
        self._boost_interval = 1.0 / self._boost_fps
        # A 30 fps source must not miss a slot by a hair (timebase rounding); the
        # tolerance is a tenth of the shortest interval, so it cannot add a sample.
        self._tolerance = 0.1 * self._boost_interval
        self._boost_initial_s = boost_initial_s
        self._boost_suspicious_s = boost_suspicious_s
        self._origin: float | None = None
        self._next_due: float | None = None
        self._slot: float | None = None
        # The boost and the rate are set from the event loop while the decode thread admits.
        self._lock = threading.Lock()
        self._boost_until = 0.0
        self._initial_held = False
        self._awaiting_first = initial_after_first
        """The first-minute boost waits until the first sample is analysed
        (:meth:`first_analysed`): a live stream that starts among many, while its first
        analysis queues, would only queue more samples behind it."""
        self.last_time: float | None = None
        """Media time of the latest frame the decoder offered (admitted or not)."""
        self.admitted = 0
        self.seen = 0

    @property
    def fps(self) -> float:
        """The current base rate (outside any boost)."""
        return 1.0 / self._interval

    @property
    def boost_fps(self) -> float:
        """The highest rate this sampler admits."""
        return self._boost_fps

    def set_fps(self, fps: float) -> None:
        """Change the base rate, clamped to ``(0, boost_fps]``; takes effect at the next slot."""
        if fps <= 0:
            raise ValueError("fps must be positive")
        interval = 1.0 / min(fps, self._boost_fps)
        with self._lock:
            faster = interval < self._interval
            self._interval = interval
            if faster:
                self._pull_in(interval)

    def hold_initial_boost(self, held: bool) -> None:
        """Suspend (or resume) the first-minute boost: overload shedding of a calm stream.
        A suspicious boost still applies."""
        self._initial_held = held

    def first_analysed(self) -> None:
        """The stream's first sample is analysed: the first-minute boost may apply (it still
        ends ``boost_initial_s`` after the first frame). The next slot is pulled in to one
        boosted interval after the last one taken, as if the boost had applied all along."""
        if not self._awaiting_first:
            return
        self._awaiting_first = False
        if self._boost_initial_s > 0 and not self._initial_held:
            with self._lock:
                self._pull_in(self._boost_interval)

    def in_initial_boost(self, media_time_s: float) -> bool:
        """Whether ``media_time_s`` lies in the session's first ``boost_initial_s``."""
        origin = self._origin
        return origin is not None and media_time_s - origin < self._boost_initial_s

    def boosted(self, media_time_s: float) -> bool:
        if not (self._initial_held or self._awaiting_first) and self.in_initial_boost(media_time_s):
            return True
        with self._lock:
            return media_time_s < self._boost_until

    def interval(self, media_time_s: float) -> float:
        return self._boost_interval if self.boosted(media_time_s) else self._interval

    def admit(self, media_time_s: float) -> bool:
        """Whether the frame at ``media_time_s`` should be analyzed."""
        self.seen += 1
        self.last_time = media_time_s
        if self._origin is None:
            self._origin = media_time_s
        step = self.interval(media_time_s)
        with self._lock:
            due = self._next_due
            if due is not None and media_time_s < due - self._tolerance:
                return False
            if due is None or media_time_s - due > step:
                # First frame, or a gap (stall, seek): resynchronise instead of bursting.
                slot = media_time_s
            else:
                # Keep the grid (no drift on a 30 fps source), but a frame later than half
                # the shortest interval moves the grid: a late frame never starts a burst.
                slot = max(due, media_time_s - 0.5 * self._boost_interval)
            self._slot = slot
            self._next_due = slot + step
        self.admitted += 1
        return True

    def mark_suspicious(self, media_time_s: float) -> None:
        """Boost the rate until ``media_time_s + boost_suspicious_s``.

        ``media_time_s`` is the analyzed frame's time, usually behind the decoder: it
        only extends the boost window. The next slot is pulled in from the last slot the
        decoder took, never from the analyzed time, so a lagging analysis cannot make the
        gate re-admit the next decoded frame on every mark.
        """
        if self._boost_suspicious_s <= 0:
            return
        with self._lock:
            self._boost_until = max(self._boost_until, media_time_s + self._boost_suspicious_s)
            self._pull_in(self._boost_interval)

    def _pull_in(self, interval: float) -> None:
        due, slot = self._next_due, self._slot
        if due is not None and slot is not None:
            self._next_due = min(due, slot + interval)


def push_live(
    queue: deque[VideoFrame], frame: VideoFrame, max_frames: int, max_age_s: float
) -> int:
    """Append ``frame`` to a live stream's analysis queue, first dropping from the front
    the frames that would make it longer than ``max_frames`` and those that arrived more
    than ``max_age_s`` before ``frame`` (0: no age limit). Returns how many were dropped:
    a backlog is bounded in memory and in time, and a burst shorter than both waits."""
    dropped = 0
    oldest = frame.t_arrival - max_age_s
    while queue and (len(queue) >= max_frames or (max_age_s > 0 and queue[0].t_arrival < oldest)):
        queue.popleft()
        dropped += 1
    queue.append(frame)
    return dropped


class FrameRing:
    """The last ``capacity`` sampled frames of one stream, oldest first."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self._frames: deque[VideoFrame] = deque(maxlen=capacity)

    def push(self, frame: VideoFrame) -> None:
        self._frames.append(frame)

    def latest(self, n: int | None = None) -> list[VideoFrame]:
        frames = list(self._frames)
        return frames if n is None else frames[-n:]

    def find(self, index: int) -> VideoFrame | None:
        for frame in reversed(self._frames):
            if frame.index == index:
                return frame
        return None

    def __len__(self) -> int:
        return len(self._frames)

    def __iter__(self) -> Iterator[VideoFrame]:
        return iter(list(self._frames))


class AudioRing:
    """The last ``capacity_s`` of one stream's 16 kHz mono audio, by media time.

    Chunks are laid at their own media times; a gap (lost packets) is filled with
    silence so sample positions stay a linear function of time. Also remembers
    when each chunk arrived, so a media time maps back to a wall-clock arrival.
    Storage is one array of twice the capacity, compacted when full: a push costs
    its own length, not the ring's.
    """

    def __init__(self, capacity_s: float, rate: int = 16_000) -> None:
        if capacity_s <= 0:
            raise ValueError("capacity_s must be positive")
        self._rate = rate
        self._cap = int(capacity_s * rate)
        self._data = np.zeros(2 * self._cap, np.float32)
        self._lo = 0
        self._hi = 0
        self._start_s = 0.0
        self._arrivals: deque[tuple[float, float]] = deque()

    @property
    def start_s(self) -> float:
        return self._start_s

    @property
    def end_s(self) -> float:
        return self._start_s + (self._hi - self._lo) / self._rate

    def push(self, media_time_s: float, samples: npt.NDArray[np.float32], t_arrival: float) -> None:
        if self._hi == self._lo and not self._arrivals:
            self._start_s = media_time_s
        gap = round((media_time_s - self.end_s) * self._rate)
        if gap < 0:
            # Overlap (timestamps jitter): keep what we have, append the rest.
            if -gap >= len(samples):
                return
            samples = samples[-gap:]
        elif gap > 0:
            self._write(np.zeros(min(gap, self._cap), np.float32))
        self._write(samples[-self._cap :])
        self._arrivals.append((media_time_s, t_arrival))
        while len(self._arrivals) > 1 and self._arrivals[1][0] <= self._start_s:
            self._arrivals.popleft()

    def _write(self, samples: npt.NDArray[np.float32]) -> None:
        n = len(samples)
        if self._hi + n > len(self._data):
            kept = self._hi - self._lo
            self._data[:kept] = self._data[self._lo : self._hi]
            self._lo, self._hi = 0, kept
        self._data[self._hi : self._hi + n] = samples
        self._hi += n
        excess = self._hi - self._lo - self._cap
        if excess > 0:
            self._lo += excess
            self._start_s += excess / self._rate

    def slice(self, start_s: float, end_s: float) -> npt.NDArray[np.float32]:
        """A copy of the audio between two media times (clipped to what is kept)."""
        size = self._hi - self._lo
        lo = max(0, round((start_s - self._start_s) * self._rate))
        hi = min(size, round((end_s - self._start_s) * self._rate))
        if hi <= lo:
            return np.zeros(0, np.float32)
        return self._data[self._lo + lo : self._lo + hi].copy()

    def arrival(self, media_time_s: float) -> float:
        """Wall clock when the audio at ``media_time_s`` arrived (nearest kept chunk)."""
        if not self._arrivals:
            return 0.0
        best = self._arrivals[0]
        for item in self._arrivals:
            if item[0] > media_time_s:
                break
            best = item
        return best[1]
