"""The shared ASR worker pool: every stream's decodes, one bounded queue.

Decode threads feed audio into each stream's ``StreamTranscriber`` (the VAD runs
there, on the decode thread). When a window becomes due the stream is queued,
at most once: a stream already waiting is coalesced, and its window is cut only
when a worker takes it, so a late stream decodes its newest audio in one call
instead of working through a backlog. Workers run Whisper (blocking, GIL
released in CTranslate2) and hand committed words to the stream's listener.

The listener is called from a worker or decode thread; the session forwards it
to its event loop. Transcript text never goes into log message text.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from livemod import metrics
from livemod.budget import CpuBudget, FairQueue
from livemod.messages import AudioChunk, Samples
from livemod.speech.batch import BatchItem
from livemod.speech.transcriber import Commit, StreamTranscriber, TranscriberOptions, Vad, Window
from livemod.speech.whisper import WhisperEngine
from livemod.speech.words import Decoded, Word

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Transcript:
    """Words of one stream that became final, with the wall-clock facts behind them."""

    stream_id: str
    words: tuple[Word, ...]
    settled_s: float
    """Media time up to which the transcript is final."""
    final: bool
    """The utterance ended (or the stream did)."""
    done: bool
    """The stream's audio has ended and all of it is transcribed: nothing follows."""
    t_committed: float
    lag_s: float
    """Commit time minus the arrival of the newest committed word's audio (0: none)."""


Listener = Callable[[Transcript], None]


class AsrStream:
    """One stream's handle on the service. ``feed`` from its decode thread."""

    def __init__(
        self, service: AsrService, stream_id: str, listener: Listener, *, live: bool = True
    ) -> None:
        self.stream_id = stream_id
        self.live = live
        """Live streams skip speech that waited past ``max_delay_s``; scans never do."""
        self._service = service
        self._listener = listener
        self._lock = threading.Lock()
        self._decoded = threading.Condition(self._lock)
        self._core = StreamTranscriber(service.vad, service.options)
        self._closed = False
        self.decodes = 0
        self.rejected = 0
        self.skipped_windows = 0
        """Decodes given up (wholly or in part) because the speech waited too long."""
        self.skipped_s = 0.0
        """Seconds of voice never transcribed for that reason."""

    def feed(self, chunk: AudioChunk) -> None:
        with self._lock:
            if self._closed:
                return
            before = self._core.settled_s
            self._core.push(chunk)
            due = self._core.due()
            urgent = self._core.final_due()
            settled = self._core.settled_s
        if settled > before:
            # Silence settles the timeline without a decode: the vote counts it clean.
            self._deliver(Commit((), settled, False))
        if due:
            self._service.request(self, urgent=urgent)

    def wait_for_decodes(self, max_undecoded_s: float) -> None:
        """Block the feeding thread while more than ``max_undecoded_s`` of speech waits
        for a decode that is queued or running: backpressure for scans, which read a
        file faster than real time and must not let speech fall out of the buffer."""
        with self._decoded:
            while not self._closed and self._core.undecoded_s > max_undecoded_s:
                if not self._core.busy:
                    if not self._core.due():
                        return  # no decode is coming: waiting would never end
                    self._service.request(self, urgent=self._core.final_due())
                self._decoded.wait(timeout=0.5)

    def finish(self) -> None:
        """End of the stream's audio: decode what is open, then say so with a final."""
        with self._lock:
            self._core.finish()
            due = self._core.due()
        if due:
            self._service.request(self, urgent=True)
        elif self.idle:
            self._deliver(Commit((), self.end_s, True), done=True)
        # else: a decode is in flight; its apply() sees the finish and says done.

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._decoded.notify_all()
        self._service.forget(self)

    @property
    def end_s(self) -> float:
        with self._lock:
            return self._core.ring.end_s

    @property
    def idle(self) -> bool:
        """Nothing open or being decoded."""
        with self._lock:
            return not self._core.busy and not self._core.due()

    def clip(self, start_s: float, end_s: float) -> Samples:
        """Recent audio between two media times (evidence)."""
        with self._lock:
            return self._core.ring.slice(start_s, end_s)

    def arrival(self, media_time_s: float) -> float:
        with self._lock:
            return self._core.ring.arrival(media_time_s)

    # -- worker side -----------------------------------------------------------------

    def flag(self) -> None:
        """The stream had a policy hit: its decodes go first for a while."""
        self._service.flag(self)

    def take(self, max_delay_s: float | None = None) -> Window | None:
        with self._lock:
            if self._closed:
                return None
            skipped = 0.0
            if max_delay_s is not None and self.live:
                skipped = self._core.skip_stale(max_delay_s)
            window = self._core.take()
            settled = self._core.settled_s
            final = not self._core.pending
            done = window is None and self._core.finished and not self._core.busy
        if skipped:
            self.skipped_windows += 1
            self.skipped_s += skipped
            metrics.ASR_SKIPPED.inc()
            metrics.ASR_SKIPPED_SECONDS.inc(skipped)
            if window is None:
                # Everything pending was stale: the timeline moves on without a decode.
                self._deliver(Commit((), settled, final or done), done=done)
        return window

    def apply(self, window: Window, decoded: Decoded) -> None:
        with self._lock:
            commit = self._core.apply(window, decoded.words)
            due = self._core.due()
            urgent = self._core.final_due()
            ring = self._core.ring
            done = self._core.finished and not due
            if done:
                # The stream's last decode: everything it had is now final.
                commit = Commit(commit.words, max(commit.settled_s, ring.end_s), True)
            arrival = ring.arrival(commit.words[-1].end_s) if commit.words else 0.0
            behind = ring.end_s - window.end_s
            self._decoded.notify_all()
        self.decodes += 1
        self.rejected += decoded.rejected
        self._deliver(commit, arrival, done=done)
        metrics.ASR_BEHIND.set(max(0.0, behind))
        if due:
            self._service.request(self, urgent=urgent)

    def _deliver(self, commit: Commit, arrival: float = 0.0, *, done: bool = False) -> None:
        now = time.time()
        lag = now - arrival if arrival else 0.0
        if commit.words:
            metrics.ASR_LAG.observe(lag)
        self._listener(
            Transcript(self.stream_id, commit.words, commit.settled_s, commit.final, done, now, lag)
        )


class AsrService:
    """Owns the Whisper engine and the worker threads shared by all streams."""

    def __init__(
        self,
        engine: WhisperEngine,
        vad: Vad,
        *,
        workers: int = 1,
        max_streams: int = 64,
        batch_size: int = 1,
        options: TranscriberOptions | None = None,
        max_cpu: float | None = None,
        max_delay_s: float | None = None,
        threads: int = 1,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.engine = engine
        self._batch_size = batch_size
        self.vad = vad
        self.options = options or TranscriberOptions()
        self.max_delay_s = max_delay_s
        self._threads_per_call = threads
        self.budget = CpuBudget(max_cpu)
        """Whisper CPU seconds per second, all streams together (``asr.max_cpu``)."""
        self._queue: FairQueue[AsrStream] = FairQueue(max_streams)
        self._cond = threading.Condition()
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._work, name=f"livemod-asr-{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def batch_size(self) -> int:
        """The most windows one Whisper call takes."""
        return self._batch_size

    def open(self, stream_id: str, listener: Listener, *, live: bool = True) -> AsrStream:
        return AsrStream(self, stream_id, listener, live=live)

    def request(self, stream: AsrStream, *, urgent: bool = False) -> None:
        """Queue a stream for decoding; a stream already queued is coalesced.

        ``urgent`` (a segment ended: its words can become final) goes to the front,
        ahead of partial decodes of speech still going on.
        """
        with self._cond:
            coalesced, dropped = self._queue.push(stream, urgent=urgent)
            if coalesced:
                metrics.ASR_COALESCED.inc()
                return
            if dropped is not None:
                # More streams waiting than the bound: the longest-waiting one loses
                # its turn (it is queued again by its next audio).
                metrics.DROPS.labels("asr", "queue_full").inc()
            metrics.QUEUE_DEPTH.labels("asr").set(len(self._queue))
            self._cond.notify()

    def flag(self, stream: AsrStream) -> None:
        with self._cond:
            self._queue.flag(stream)

    def forget(self, stream: AsrStream) -> None:
        with self._cond:
            self._queue.remove(stream)
            metrics.QUEUE_DEPTH.labels("asr").set(len(self._queue))

    def close(self) -> None:
        with self._cond:
            self._stopping = True
            self._queue.clear()
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=10.0)

    def _work(self) -> None:
        while True:
            with self._cond:
                only: Callable[[AsrStream], bool] | None = None
                while not self._stopping:
                    # Past the CPU budget no live stream starts: they wait (each queued
                    # once) and speech that waits past max_delay_s is skipped. A scan
                    # (not live) is not held: it already goes at Whisper's pace.
                    wait = self.budget.wait_s() if self._queue else None
                    if wait == 0.0:
                        break
                    if wait is not None and self._queue.any(_scanning):
                        only = _scanning
                        break
                    self._cond.wait(timeout=wait)
                if self._stopping:
                    return
                # Whatever is queued now, up to the batch size, shares one call: the
                # batch grows with the load and a lone stream never waits for company.
                # The streams with the least recent Whisper time go first.
                streams = self._queue.pop(self._batch_size, only=only)
                metrics.QUEUE_DEPTH.labels("asr").set(len(self._queue))
            taken = [(s, w) for s in streams if (w := s.take(self.max_delay_s)) is not None]
            if not taken:
                continue
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                decoded = self._decode([w for _, w in taken])
            except Exception:  # one bad batch must not stop the pool
                log.exception("asr decode failed", extra={"streams": len(taken)})
                decoded = [Decoded((), 0, 0.0)] * len(taken)
            # Whisper's CPU: at most its wall time on its threads, at most the process's
            # CPU time meanwhile (which includes other work): the smaller bound.
            wall = time.perf_counter() - wall
            cost = min(wall * self._threads_per_call, time.process_time() - cpu)
            audio = sum(len(w.audio) for _, w in taken) or 1
            with self._cond:
                self.budget.charge(cost)
                for stream, window in taken:
                    self._queue.charge(stream, cost * (len(window.audio) or 1) / audio)
            metrics.ASR_CPU_SECONDS.inc(cost)
            for (stream, window), result in zip(taken, decoded, strict=True):
                stream.apply(window, result)

    def _decode(self, windows: list[Window]) -> list[Decoded]:
        live = [w for w in windows if len(w.audio) and np.any(w.audio)]
        results = iter(
            self.engine.transcribe_batch([BatchItem(w.audio, w.start_s, w.prompt) for w in live])
            if live
            else ()
        )
        out = []
        for window in windows:
            if not (len(window.audio) and np.any(window.audio)):
                out.append(Decoded((), 0, 0.0))
                continue
            decoded = next(results)
            metrics.ASR_DECODES.labels("final" if window.final else "partial").inc()
            if decoded.rejected:
                metrics.ASR_REJECTED.inc(decoded.rejected)
            out.append(decoded)
        if live:
            seconds = max(d.seconds for d in out)
            metrics.MODEL_SECONDS.labels("whisper").observe(seconds)
            metrics.STAGE_SECONDS.labels("asr").observe(seconds)
            metrics.BATCH_SIZE.labels("whisper").observe(len(live))
        return out


def _scanning(stream: AsrStream) -> bool:
    return not stream.live
