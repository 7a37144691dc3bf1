"""Audio side of the decode thread: packets in, 16 kHz mono float32 chunks out.

The source demuxes audio with the video and hands every audio packet here. Audio
is best effort: a missing or undecodable track is reported once, as an
``AudioUnavailable`` message, and video moderation goes on untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import av
import av.error
import numpy as np

from livemod import metrics
from livemod.messages import AUDIO_RATE, AudioChunk, AudioUnavailable, Samples

log = logging.getLogger(__name__)

MAX_CONSECUTIVE_AUDIO_ERRORS = 20
CHUNK_S = 0.1
"""Samples are handed on in chunks of about this length (fewer thread hops)."""
RESYNC_S = 0.2
"""A jump in packet timestamps beyond this restarts the sample clock (lost packets)."""

AudioSink = Callable[[AudioChunk | AudioUnavailable], None]
SessionClock = Callable[[float], float]
"""Maps a source timestamp (seconds) onto the session timeline the video shares."""


class AudioDecoder:
    """Decodes and resamples one audio stream. Runs on the decode thread only."""

    def __init__(
        self,
        stream_id: str,
        stream: Any,
        clock: SessionClock,
        deliver: AudioSink,
        *,
        tap: Callable[[Any, float], None] | None = None,
    ) -> None:
        self._stream_id = stream_id
        self._tap = tap
        """Also hands every decoded frame on, as decoded, with its session time."""
        self.stream = stream
        self._to_session = clock
        self._deliver = deliver
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE)
        self._errors = 0
        self._next_in_s: float | None = None
        self._pending: list[Samples] = []
        self._pending_n = 0
        self._pending_t = 0.0
        self._pending_arrival = 0.0
        self._clock_s = 0.0
        self.off = False
        self.samples = 0

    def unavailable(self, reason: str) -> None:
        """Report once that audio is not moderated, then ignore audio packets."""
        if not self.off:
            self.off = True
            self._pending.clear()
            log.warning("audio not moderated", extra={"stream_id": self._stream_id})
            metrics.DROPS.labels("audio", "unavailable").inc()
            self._deliver(AudioUnavailable(self._stream_id, reason))

    def packet(self, packet: Any, t_arrival: float) -> None:
        if self.off:
            return
        try:
            frames = packet.decode()
            self._errors = 0
        except (av.error.FFmpegError, ValueError) as exc:
            self._errors += 1
            metrics.DROPS.labels("audio", "corrupt_packet").inc()
            if self._errors >= MAX_CONSECUTIVE_AUDIO_ERRORS:
                self.unavailable(f"audio track undecodable ({self._errors} bad packets: {exc})")
            return
        for frame in frames:
            self._frame(frame, t_arrival)

    def _frame(self, frame: Any, t_arrival: float) -> None:
        t_in = self._time(frame)
        if self._tap is not None and t_in is not None:
            self._tap(frame, t_in)
        if t_in is not None and (self._next_in_s is None or abs(t_in - self._next_in_s) > RESYNC_S):
            self._flush()
            self._clock_s = t_in
        if t_in is not None and frame.sample_rate:
            self._next_in_s = t_in + frame.samples / frame.sample_rate
        try:
            out = self._resampler.resample(frame)
        except (av.error.FFmpegError, ValueError) as exc:
            self.unavailable(f"audio cannot be resampled: {exc}")
            return
        for res in out:
            data = np.asarray(res.to_ndarray(), dtype=np.float32).reshape(-1)
            self._append(data, t_arrival)

    def _time(self, frame: Any) -> float | None:
        if frame.pts is None or frame.time_base is None:
            return None
        return max(0.0, self._to_session(float(frame.pts * frame.time_base)))

    def _append(self, data: Samples, t_arrival: float) -> None:
        if not len(data):
            return
        if not self._pending:
            self._pending_t = self._clock_s
            self._pending_arrival = t_arrival
        self._pending.append(data)
        self._pending_n += len(data)
        self._clock_s += len(data) / AUDIO_RATE
        if self._pending_n >= CHUNK_S * AUDIO_RATE:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        samples = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
        self._pending = []
        self._pending_n = 0
        self.samples += len(samples)
        self._deliver(AudioChunk(self._stream_id, self._pending_t, self._pending_arrival, samples))

    def close(self) -> None:
        """End of stream: hand on what is buffered."""
        if not self.off:
            self._flush()


def stream_origin(stream: Any) -> float:
    """The start time of a stream in seconds (0 when unknown)."""
    if stream.start_time is None or stream.time_base is None:
        return 0.0
    return float(stream.start_time * stream.time_base)
