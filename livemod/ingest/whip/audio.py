"""A WHIP publisher's audio (Opus, usually 48 kHz stereo) into the speech path.

aiortc hands decoded audio frames to the event loop every 20 ms. Resampling to
16 kHz mono and the voice-activity detection behind ``deliver`` are blocking work,
so they run on one worker thread per publisher; at most ``max_pending`` frames wait
for it, and any beyond that are dropped and counted rather than queued without end.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import av
import numpy as np

from livemod import metrics
from livemod.ingest.whip.source import MediaClock
from livemod.messages import AUDIO_RATE, AudioChunk, AudioUnavailable, Samples

log = logging.getLogger(__name__)

CHUNK_SAMPLES = AUDIO_RATE // 10
"""Hand audio on in chunks of about 100 ms (fewer hand-offs, as pulled streams do)."""
MAX_FAILURES = 20

AudioDeliver = Callable[[AudioChunk | AudioUnavailable], None]


class WhipAudio:
    """Resamples one publisher's audio and delivers 16 kHz mono chunks."""

    def __init__(self, stream_id: str, deliver: AudioDeliver, *, max_pending: int = 50) -> None:
        self._stream_id = stream_id
        self._deliver = deliver
        self._max_pending = max_pending
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"whip-audio-{stream_id}")
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE)
        self._clock = MediaClock()
        self._lock = threading.Lock()
        self._pending = 0
        self._failures = 0
        self._closed = False
        self._buffer: list[Samples] = []
        self._buffered = 0
        self._buffer_t = 0.0
        self._buffer_arrival = 0.0
        self.chunks = 0

    def offer(self, frame: Any, t_arrival: float) -> None:
        """Event loop: one decoded ``av.AudioFrame`` and when it arrived."""
        if self._closed:
            return
        with self._lock:
            if self._pending >= self._max_pending:
                metrics.DROPS.labels("audio", "backlog").inc()
                return
            self._pending += 1
        pts = float(frame.time) if frame.time is not None else None
        media_time = self._clock.media_time(pts, t_arrival)
        self._pool.submit(self._process, frame, media_time, t_arrival)

    def unavailable(self, reason: str) -> None:
        """The publish carries no usable audio: say so once; video goes on."""
        if not self._closed:
            self._closed = True
            self._deliver(AudioUnavailable(self._stream_id, reason))

    def close(self) -> None:
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _process(self, frame: Any, media_time: float, t_arrival: float) -> None:
        try:
            samples = self._resample(frame)
            self._failures = 0
        except (av.error.FFmpegError, ValueError) as exc:
            self._failures += 1
            metrics.DROPS.labels("audio", "corrupt_packet").inc()
            if self._failures >= MAX_FAILURES:
                self.unavailable(f"WHIP audio undecodable ({exc})")
            return
        finally:
            with self._lock:
                self._pending -= 1
        if samples.size == 0 or self._closed:
            return
        if not self._buffer:
            self._buffer_t, self._buffer_arrival = media_time, t_arrival
        self._buffer.append(samples)
        self._buffered += samples.size
        if self._buffered >= CHUNK_SAMPLES:
            chunk = np.concatenate(self._buffer).astype(np.float32, copy=False)
            self._buffer, self._buffered = [], 0
            self.chunks += 1
            self._deliver(AudioChunk(self._stream_id, self._buffer_t, self._buffer_arrival, chunk))

    def _resample(self, frame: Any) -> Samples:
        frames = self._resampler.resample(frame)
        if not frames:
            return np.zeros(0, np.float32)
        return np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.float32)
