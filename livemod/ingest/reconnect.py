"""A live pull that reconnects while its publisher is still live.

A streaming-server hook knows what the pull cannot: that the publisher is still
there (no ``publish_done`` yet), that it moved to another stream name (a pause
redirect), or that it came back (a re-publish after a server restart). The hook
side tells a :class:`PullControl`; the decode thread's :class:`ReconnectingSource`
reads it, reopens with exponential backoff, and keeps the media clock running
across attempts so the fps gate and the vote see one continuous stream.

Each attempt runs on its own helper thread. A switch (new URL) abandons the
current attempt at once instead of waiting out its read timeout: a player left on
an idle nginx-rtmp stream gets no end-of-stream, only silence.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from livemod import metrics
from livemod.ingest.audio import AudioSink
from livemod.ingest.av_source import INPUT_LOST, AvSource, SourceEnd, SourceOptions
from livemod.ingest.source import Deliver
from livemod.ingest.tap import FrameTap
from livemod.messages import VideoFrame
from livemod.sampling import FrameSampler

log = logging.getLogger(__name__)

RetryHook = Callable[[int, str], None]
"""Called on the decode thread before each retry with (attempt, why)."""


class PullControl:
    """Thread-safe state shared by the hook side (event loop) and the decode thread."""

    def __init__(
        self,
        url: str,
        *,
        give_up_s: float = 30.0,
        backoff_s: float = 0.2,
        backoff_max_s: float = 2.0,
        on_retry: RetryHook | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._url = url
        self._live = True
        self._generation = 0
        self.wake = threading.Event()
        self.give_up_s = give_up_s
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.on_retry = on_retry

    def snapshot(self) -> tuple[str, bool, int]:
        """(url, publisher live, switch generation)."""
        with self._lock:
            return self._url, self._live, self._generation

    @property
    def url(self) -> str:
        return self.snapshot()[0]

    def switch(self, url: str | None = None) -> None:
        """Reopen now (optionally elsewhere): the publisher moved or came back."""
        with self._lock:
            if url is not None:
                self._url = url
            self._live = True
            self._generation += 1
        self.wake.set()

    def finish(self) -> None:
        """The publisher is gone for good: end the pull as a normal end of stream."""
        with self._lock:
            self._live = False
        self.wake.set()


class ReconnectingSource:
    """A :class:`~livemod.ingest.source.FrameSource` over successive ``AvSource`` runs."""

    def __init__(
        self,
        stream_id: str,
        options: SourceOptions,
        sampler: FrameSampler,
        deliver: Deliver,
        control: PullControl,
        *,
        deliver_audio: AudioSink | None = None,
    ) -> None:
        self.stream_id = stream_id
        self._deliver_audio = deliver_audio
        self._opts = options
        self._sampler = sampler
        self._deliver = deliver
        self._control = control
        self._stop = threading.Event()
        self._current: AvSource | None = None
        self._attempt_token: object | None = None
        self._last_media = 0.0
        self._last_wall: float | None = None
        self._tap: FrameTap | None = None

    def set_tap(self, tap: FrameTap) -> None:
        """Hand every decoded frame of every attempt to ``tap`` (the relay)."""
        self._tap = tap

    def stop(self) -> None:
        self._stop.set()
        current = self._current
        if current is not None:
            current.stop()
        self._control.wake.set()

    def run(self) -> SourceEnd:
        """Blocking: call from the session's decode thread."""
        started = time.monotonic()
        decoded = sampled = 0
        attempt = 0
        failing_since: float | None = None
        last_error = ""
        while True:
            url, live, generation = self._control.snapshot()
            if self._stop.is_set() or not live:
                took = time.monotonic() - started
                if self._stop.is_set():
                    return SourceEnd("stopped", None, decoded, sampled, took)
                return SourceEnd("eof", None, decoded, sampled, took)
            end, switched = self._attempt(url, generation)
            if end is not None:
                decoded += end.frames_decoded
                sampled += end.frames_sampled
                if end.frames_decoded:
                    failing_since, attempt = None, 0
            if self._stop.is_set() or not self._control.snapshot()[1]:
                continue
            if switched:
                attempt, failing_since = 0, None
                continue
            assert end is not None
            if end.reason == "error" and not end.retryable:
                return dataclasses.replace(
                    end, frames_decoded=decoded, frames_sampled=sampled,
                    duration_s=time.monotonic() - started,
                )  # fmt: skip
            last_error = end.error or "the stream ended while its publisher was live"
            now = time.monotonic()
            failing_since = failing_since or now
            if now - failing_since > self._control.give_up_s:
                msg = (
                    f"gave up reconnecting after {self._control.give_up_s:.0f} s "
                    f"while the publisher was live: {last_error}"
                )
                # A pull that had frames and cannot get them back lost its input
                # (the server died, say); one that never worked could not open.
                cause = INPUT_LOST if decoded else None
                return SourceEnd("error", msg, decoded, sampled, now - started, cause=cause)
            attempt += 1
            metrics.RECONNECTS.inc()
            if self._control.on_retry is not None:
                self._control.on_retry(attempt, last_error)
            delay = min(self._control.backoff_max_s, self._control.backoff_s * 2 ** (attempt - 1))
            self._sleep(delay, generation)

    def _sleep(self, delay: float, generation: int) -> None:
        deadline = time.monotonic() + delay
        while True:
            self._control.wake.clear()
            _, live, gen = self._control.snapshot()
            left = deadline - time.monotonic()
            if self._stop.is_set() or not live or gen != generation or left <= 0:
                return
            self._control.wake.wait(left)

    def _attempt(self, url: str, generation: int) -> tuple[SourceEnd | None, bool]:
        """Run one AvSource to its end, or abandon it when switched, stopped or
        finished. Returns (its end if it ended, whether it was switched away)."""
        gap = time.time() - self._last_wall if self._last_wall is not None else 0.0
        offset = self._last_media + gap if self._last_wall is not None else 0.0
        opts = dataclasses.replace(self._opts, url=url, media_offset_s=offset)
        token = object()
        self._attempt_token = token
        source = AvSource(
            self.stream_id,
            opts,
            self._sampler,
            self._gated(token),
            self._deliver_audio,
            tap=_GatedTap(self, token, self._tap) if self._tap is not None else None,
        )
        self._current = source
        result: list[SourceEnd] = []

        def main() -> None:
            try:
                result.append(source.run())
            except Exception as exc:  # a bug ends this attempt, not the session thread
                log.exception("pull attempt crashed", extra={"stream_id": self.stream_id})
                result.append(SourceEnd("error", f"internal decoder error: {exc}", 0, 0, 0.0))
            finally:
                self._control.wake.set()
                metrics.retire_current_thread()

        thread = threading.Thread(target=main, name=f"pull-{self.stream_id}", daemon=True)
        thread.start()
        while True:
            self._control.wake.clear()
            if result:
                return result[0], False
            _, live, gen = self._control.snapshot()
            if self._stop.is_set() or not live or gen != generation:
                source.stop()
                self._current = None
                self._attempt_token = None
                if gen != generation:
                    return None, True  # do not wait: an idle stream may never answer
                # Ending anyway: give the attempt a moment to report its counts.
                thread.join(0.5)
                return (result[0] if result else None), False
            self._control.wake.wait(1.0)

    def current(self, token: object) -> bool:
        return self._attempt_token is token

    def _gated(self, token: object) -> Deliver:
        # Frames of an abandoned attempt (still reading until its timeout) are dropped.
        def deliver(frame: VideoFrame) -> None:
            if self._attempt_token is not token:
                return
            self._last_media = frame.media_time_s
            self._last_wall = frame.t_arrival
            self._deliver(frame)

        return deliver


class _GatedTap:
    """The tap of one attempt: an abandoned attempt's frames go nowhere."""

    def __init__(self, source: ReconnectingSource, token: object, tap: FrameTap) -> None:
        self._source, self._token, self._tap = source, token, tap

    def video(self, frame: Any, media_time_s: float) -> None:
        if self._source.current(self._token):
            self._tap.video(frame, media_time_s)

    def audio(self, frame: Any, media_time_s: float) -> None:
        if self._source.current(self._token):
            self._tap.audio(frame, media_time_s)
