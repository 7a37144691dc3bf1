"""Frames from a WebRTC video track, fed to a Session like any other source.

aiortc decodes on its own thread and hands frames to the event loop; the loop
side (:meth:`WhipSource.offer`) stamps ``t_arrival`` as the frame leaves the
jitter buffer and runs the fps gate. Admitted frames wait in a one-slot mailbox
for this source's thread, which converts them to RGB off the loop. When that
thread lags, a newer frame replaces the waiting one and the drop is counted:
for live moderation the latest picture matters, not a backlog.

A tap (the moderated relay, :mod:`livemod.ingest.tap`) sees every received picture
and audio frame on the loop, before the fps gate. The audio's media time is its own
clock shifted by how much later than the first picture its first frame arrived
(RTP clocks of two tracks are unrelated), so the relayed output stays in sync.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from livemod import metrics
from livemod.ingest.av_source import Converter, SourceEnd
from livemod.ingest.av_source import to_video_frame as convert
from livemod.ingest.source import Deliver
from livemod.ingest.tap import FrameTap
from livemod.messages import VideoFrame
from livemod.sampling import FrameSampler

MAX_SIDE = 640
"""Admitted frames are scaled so their longer side is at most this (as AvSource)."""
REBASE_S = 5.0
BACKWARD_S = 0.5
"""Media clock jumps forward beyond REBASE_S or back beyond BACKWARD_S (new SSRC,
encoder restart) continue the clock from the arrival times instead."""


@dataclass(frozen=True, slots=True)
class _Pending:
    frame: Any
    media_time_s: float
    t_arrival: float


class MediaClock:
    """Media time from 0 for a track's frames. Pure: arrival time is passed in.

    aiortc already unwraps RTP timestamps into ``pts``. A jump (new SSRC, encoder
    restart) or a frame without ``pts`` continues from the last time plus the wall
    time elapsed, so media time never runs backwards.
    """

    def __init__(self) -> None:
        self._base: float | None = None
        self._offset = 0.0
        self._last = 0.0
        self._last_arrival: float | None = None

    def media_time(self, pts_s: float | None, t_arrival: float) -> float:
        elapsed = 0.0 if self._last_arrival is None else max(0.0, t_arrival - self._last_arrival)
        self._last_arrival = t_arrival
        if pts_s is None:
            t = self._last + elapsed
        else:
            if self._base is None:
                self._base = pts_s
            t = self._offset + pts_s - self._base
            if t < self._last - BACKWARD_S or t > self._last + REBASE_S:
                self._base, self._offset = pts_s, self._last + elapsed
                t = self._offset
        self._last = max(self._last, t)
        return self._last


class WhipSource:
    """A :class:`~livemod.ingest.source.FrameSource` fed by a WHIP peer connection.

    ``offer`` and ``finish`` are called on the event loop; ``run`` on the session's
    source thread. ``on_end`` is scheduled on the loop once, when the source ends.
    """

    def __init__(
        self,
        stream_id: str,
        sampler: FrameSampler,
        deliver: Deliver,
        *,
        loop: asyncio.AbstractEventLoop,
        on_end: Callable[[], None] | None = None,
    ) -> None:
        self._stream_id = stream_id
        self._sampler = sampler
        self._deliver = deliver
        self._loop = loop
        self._converter = Converter()
        self._on_end = on_end
        self._cond = threading.Condition()
        self._mailbox: _Pending | None = None
        self._end: tuple[Literal["eof", "stopped", "error"], str | None] | None = None
        self._clock = MediaClock()
        self._counter = metrics.FRAMES_DECODED.labels("whip")
        self._started = time.monotonic()
        self.received = 0
        self.sampled = 0
        self.dropped = 0
        self.held_frames = 0
        self.held = False
        """While a ``pause`` stands: frames are still analyzed (so the policy can
        lift it) but counted as held."""
        self.last_frame_at: float | None = None
        """``time.monotonic()`` of the newest frame, for the idle timeout."""
        self._tap: FrameTap | None = None
        self._audio_clock = MediaClock()
        self._first_arrival: float | None = None
        self._audio_offset: float | None = None

    def set_tap(self, tap: FrameTap) -> None:
        """Hand every received picture and audio frame to ``tap`` (the relay)."""
        self._tap = tap

    # -- event loop side ---------------------------------------------------------

    def offer(self, frame: Any, t_arrival: float) -> None:
        """One decoded ``av.VideoFrame`` out of the jitter buffer."""
        self.received += 1
        self._counter.inc()
        self.last_frame_at = time.monotonic()
        if self.held:
            self.held_frames += 1
        pts_s = float(frame.pts * frame.time_base) if frame.pts is not None else None
        media_time = self._clock.media_time(pts_s, t_arrival)
        if self._first_arrival is None:
            self._first_arrival = t_arrival
        if self._tap is not None and self._end is None:
            self._tap.video(frame, media_time)
        if not self._sampler.admit(media_time):
            return
        with self._cond:
            if self._end is not None:
                return
            if self._mailbox is not None:
                self.dropped += 1
                metrics.DROPS.labels("whip", "stale_frame").inc()
            self._mailbox = _Pending(frame, media_time, t_arrival)
            self._cond.notify()

    def offer_audio(self, frame: Any, t_arrival: float) -> None:
        """One decoded ``av.AudioFrame``: to the tap, if any (video must have begun)."""
        tap, first = self._tap, self._first_arrival
        if tap is None or first is None or self._end is not None:
            return
        if self._audio_offset is None:
            self._audio_offset = t_arrival - first
        pts_s = float(frame.time) if frame.time is not None else None
        tap.audio(frame, self._audio_clock.media_time(pts_s, t_arrival) + self._audio_offset)

    def finish(self, reason: Literal["eof", "stopped", "error"], error: str | None = None) -> bool:
        """End the source (first call wins); returns whether this call ended it."""
        with self._cond:
            if self._end is not None:
                return False
            self._end = (reason, error)
            self._mailbox = None
            self._cond.notify()
        if self._on_end is not None:
            self._loop.call_soon_threadsafe(self._on_end)
        return True

    @property
    def ended(self) -> bool:
        return self._end is not None

    # -- FrameSource -------------------------------------------------------------

    def stop(self) -> None:
        self.finish("stopped")

    def run(self) -> SourceEnd:
        """Blocking: convert admitted frames until the source ends."""
        while True:
            with self._cond:
                while self._mailbox is None and self._end is None:
                    self._cond.wait()
                if self._end is not None:
                    reason, error = self._end
                    break
                item, self._mailbox = self._mailbox, None
            if item is not None:
                self.sampled += 1
                index = self.sampled - 1
                self._deliver(to_video_frame(self._stream_id, item, index, self._converter))
        return SourceEnd(
            reason, error, self.received, self.sampled, time.monotonic() - self._started
        )


def to_video_frame(stream_id: str, item: _Pending, index: int, converter: Converter) -> VideoFrame:
    return convert(
        item.frame,
        stream_id,
        index,
        item.media_time_s,
        item.t_arrival,
        MAX_SIDE,
        converter=converter,
    )
