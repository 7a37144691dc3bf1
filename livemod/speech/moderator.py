"""Speech moderation of one session: committed transcript → text policy → vote → mute.

The vote needs samples at a steady rate, but words come when Whisper commits
them. ``SpeechTimeline`` (pure) lays the transcript on a clock of ``step_s``
media seconds: each sample scores every category by the policy hits spoken in
it, and silence counts as clean once the transcript is settled past it. A hit
covers at least ``min_span_s`` so a single flagged word can meet the k-of-n vote
that a phrase meets. Decisions get the media span of the words (``span_s``) and
evidence: the transcript snippet and a WAV of what was said.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from livemod import metrics
from livemod.config import Config
from livemod.errors import ConfigError
from livemod.messages import AudioChunk, Decision, Signal
from livemod.policy.taxonomy import Policy
from livemod.policy.vote import SPEECH, VoteEngine
from livemod.speech.reading import HOLD_MAX_S, SpokenHit, TranscriptReader
from livemod.speech.service import AsrService, AsrStream, Transcript
from livemod.speech.transcriber import TranscriberOptions
from livemod.speech.whisper import SileroVad, WhisperEngine
from livemod.speech.words import GuardOptions, Word
from livemod.store import EvidenceInput
from livemod.text.judge import TextPolicy

log = logging.getLogger(__name__)

SOURCE = "asr"
QUEUE_TRANSCRIPTS = 256
SCAN_MAX_UNDECODED_S = 8.0
"""A scan's decoder waits while more speech than this awaits Whisper: well inside the
30 s audio buffer, so no speech is ever trimmed away unheard."""
CUDA_ASR_BATCH = 8
"""Windows per call on a GPU by default: a batch of 8 costs a GPU little more than one."""

Emit = Callable[[Decision, EvidenceInput | None], Awaitable[None]]
Track = Callable[[float, bool], None]


class SpeechTimeline:
    """Committed speech as vote samples every ``step_s`` of media time. Pure."""

    def __init__(self, step_s: float = 0.25, min_span_s: float = 1.0) -> None:
        self.step_s = step_s
        self.min_span_s = min_span_s
        self._next_s: float | None = None
        self._hits: list[SpokenHit] = []

    def add(self, hit: SpokenHit) -> None:
        start = hit.start_s if self._next_s is None else max(hit.start_s, self._next_s)
        end = max(hit.end_s, start + self.min_span_s)
        self._hits.append(replace(hit, start_s=start, end_s=end, said_s=hit.said_from_s))

    def advance(self, settled_s: float) -> list[tuple[float, list[SpokenHit]]]:
        """Samples whose interval is now final, with the hits spoken in each."""
        if self._next_s is None:
            self._next_s = min([settled_s, *(h.start_s for h in self._hits)])
        out: list[tuple[float, list[SpokenHit]]] = []
        while self._next_s + self.step_s <= settled_s:
            t = self._next_s
            t_end = t + self.step_s
            out.append((t, [h for h in self._hits if h.start_s < t_end and h.end_s > t]))
            self._next_s = t_end
        self._hits = [h for h in self._hits if h.end_s > self._next_s]
        return out


@dataclass(frozen=True, slots=True)
class SpeechSetup:
    """What every session's speech moderation shares: the ASR pool and the text policy."""

    asr: AsrService
    policy: TextPolicy
    drain_timeout_s: float = 30.0
    """At the end of a stream, wait at most this long for its last words to be judged."""
    judge_hold_s: float = HOLD_MAX_S
    """How long a judge hit on an unfinished sentence waits for its end (``asr.judge_hold_s``)."""

    def moderator(
        self,
        stream_id: str,
        key: str,
        engine: VoteEngine,
        emit: Emit,
        track: Track,
        *,
        blocking: bool = False,
    ) -> SpeechModerator:
        """A session's moderator; call on the event loop. ``blocking`` (scans): the
        decode thread waits for Whisper instead of letting speech fall behind."""
        return SpeechModerator(
            stream_id,
            key,
            self.asr,
            self.policy,
            engine,
            emit,
            track,
            asyncio.get_running_loop(),
            drain_timeout_s=self.drain_timeout_s,
            judge_hold_s=self.judge_hold_s,
            blocking=blocking,
        )

    def close(self) -> None:
        self.asr.close()


def build_speech(config: Config, policy: Policy) -> SpeechSetup | None:
    """Load Whisper, the VAD and the text policy when ``asr.enabled``; fail fast."""
    cfg = config.asr
    if not cfg.enabled:
        return None
    text_policy = TextPolicy.load(cfg.text_policy)
    unknown = sorted(text_policy.categories - set(policy.categories))
    if unknown:
        raise ConfigError(
            f"text policy categories {', '.join(unknown)} are missing from {config.policy}"
        )
    guard = GuardOptions(cfg.no_speech_max, cfg.compression_ratio_max, cfg.logprob_min)
    engine = WhisperEngine(
        cfg.model,
        device=cfg.device,
        compute_type=cfg.compute_type,
        threads=cfg.threads,
        workers=cfg.workers,
        language=cfg.language,
        guard=guard,
        sized=cfg.sized_windows,
    )
    options = TranscriberOptions(
        threshold=cfg.vad_threshold,
        min_silence_s=cfg.min_silence_s,
        pad_s=cfg.speech_pad_s,
        interval_s=cfg.decode_interval_s,
        max_buffer_s=cfg.max_buffer_s,
    )
    batch = cfg.batch_size or (CUDA_ASR_BATCH if engine.device == "cuda" else 1)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    max_cpu = cfg.max_cpu * (cores or 1) if cfg.max_cpu > 0 else None
    service = AsrService(
        engine,
        SileroVad(),
        workers=cfg.workers,
        max_streams=config.ingest.max_sessions,
        batch_size=batch,
        options=options,
        max_cpu=max_cpu,
        max_delay_s=cfg.max_delay_s,
        threads=cfg.threads,
    )
    log.info(
        "speech recognition: whisper on %s (%s), up to %d windows per call, %s CPU s/s",
        engine.device,
        engine.compute_type,
        batch,
        "no cap on" if max_cpu is None else f"at most {max_cpu:.2f}",
    )
    metrics.MODELS_LOADED.labels("whisper").set(1)
    return SpeechSetup(service, text_policy, judge_hold_s=cfg.judge_hold_s)


class SpeechModerator:
    """Feeds one session's audio to the shared ASR and acts on what was said."""

    def __init__(
        self,
        stream_id: str,
        key: str,
        asr: AsrService,
        policy: TextPolicy,
        engine: VoteEngine,
        emit: Emit,
        track: Track,
        loop: asyncio.AbstractEventLoop,
        *,
        drain_timeout_s: float = 30.0,
        judge_hold_s: float = HOLD_MAX_S,
        blocking: bool = False,
    ) -> None:
        self._drain_timeout_s = drain_timeout_s
        self._blocking = blocking
        self._closed = False
        self._key = key
        self._policy = policy
        self._engine = engine
        self._emit = emit
        self._track = track
        self._loop = loop
        self._queue: asyncio.Queue[Transcript] = asyncio.Queue(QUEUE_TRANSCRIPTS)
        self._stream: AsrStream = asr.open(stream_id, self._from_thread, live=not blocking)
        self._timeline = SpeechTimeline()
        self._reader = TranscriptReader(policy.evaluate, hold_max_s=judge_hold_s)
        self._flagged: dict[str, _Flagged] = {}
        """Per category, what was said since its hits began (span, snippet, terms)."""
        self._done = asyncio.Event()
        self._task = loop.create_task(self._consume())
        self.words = 0
        self.hits = 0
        self.lags: deque[float] = deque(maxlen=1000)
        """Recent commit lags (arrival of a word's audio to its commit), seconds."""

    @property
    def decodes(self) -> int:
        """Whisper calls made for this stream so far."""
        return self._stream.decodes

    def transcription(self) -> dict[str, Any]:
        """How much of the stream's speech was transcribed, for its summary: ``partial``
        once a window was skipped (its speech waited past ``asr.max_delay_s``)."""
        stream = self._stream
        return {
            "partial": stream.skipped_windows > 0,
            "skipped_windows": stream.skipped_windows,
            "skipped_s": round(stream.skipped_s, 2),
            "decodes": stream.decodes,
            "words": self.words,
            "hits": self.hits,
        }

    # -- decode and worker threads ------------------------------------------------------

    def feed(self, chunk: AudioChunk) -> None:
        """Called on the decode thread with each audio chunk."""
        self._stream.feed(chunk)
        if self._blocking:
            self._stream.wait_for_decodes(SCAN_MAX_UNDECODED_S)

    def _from_thread(self, transcript: Transcript) -> None:
        self._loop.call_soon_threadsafe(self._offer, transcript)

    def _offer(self, transcript: Transcript) -> None:
        try:
            self._queue.put_nowait(transcript)
        except asyncio.QueueFull:
            metrics.DROPS.labels("asr", "transcript_queue").inc()

    # -- event loop ----------------------------------------------------------------

    def give_up(self) -> None:
        """The audio cannot be moderated (no track, undecodable): nothing to wait for."""
        self._done.set()

    async def finish(self) -> None:
        """End of the stream: wait for its last words to be judged, then stop."""
        if not self._done.is_set():
            await asyncio.to_thread(self._stream.finish)
            try:
                await asyncio.wait_for(self._done.wait(), self._drain_timeout_s)
            except TimeoutError:
                log.warning(
                    "speech moderation did not finish in time",
                    extra={"stream_id": self._stream.stream_id, "timeout": self._drain_timeout_s},
                )
        await self.close()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stream.close()
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _consume(self) -> None:
        while True:
            transcript = await self._queue.get()
            try:
                await self._judge(transcript)
            except Exception:  # a bad transcript must not end speech moderation
                log.exception("speech judgement failed", extra={"stream_id": transcript.stream_id})
            if transcript.done:
                self._done.set()

    async def _judge(self, tr: Transcript) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "transcript committed",
                extra={
                    "stream_id": tr.stream_id,
                    "transcript": " ".join(w.text for w in tr.words),
                    "settled_s": round(tr.settled_s, 2),
                    "final": tr.final,
                    "lag_s": round(tr.lag_s, 2),
                },
            )
        if tr.words:
            self.lags.append(tr.lag_s)
        if tr.words or (tr.final and self._reader.holding):
            await self._read(tr.words, tr.final)
        if tr.final:
            self._reader.end_utterance()
        for t, hits in self._timeline.advance(tr.settled_s):
            signals = [Signal(h.category, h.score, SOURCE, h.term) for h in hits]
            if hits:
                log.debug("speech sample flagged", extra={"media_time_s": t, "hits": len(hits)})
            for h in hits:
                self._flagged.setdefault(
                    h.category, _Flagged(h.said_from_s, h.end_s, h.snippet)
                ).add(h)
            flagged = any(s.score >= self._floor(s.category) for s in signals)
            self._track(t, flagged)
            arrival = self._stream.arrival(t) or tr.t_committed
            decisions = self._engine.update_signals(self._key, signals, t, arrival)
            for decision in decisions:
                await self._act(decision)
            active = {a.category for a in self._engine.standing(self._key) if a.channel == SPEECH}
            for cat in list(self._flagged):
                if cat not in active and not any(h.category == cat for h in hits):
                    del self._flagged[cat]

    def _floor(self, category: str) -> float:
        cat = self._engine.policy.categories.get(category)
        return cat.floor if cat is not None else 1.0

    async def _read(self, words: tuple[Word, ...], final: bool) -> None:
        self.words += len(words)
        started = time.perf_counter()
        # The learned judge runs a sentence encoder (ms per sentence): off the event loop.
        hits = (
            await asyncio.to_thread(self._reader.read, words, final=final)
            if self._policy.judge is not None
            else self._reader.read(words, final=final)
        )
        for hit in hits:
            self.hits += 1
            self._stream.flag()
            self._timeline.add(hit)
        metrics.STAGE_SECONDS.labels("text").observe(time.perf_counter() - started)

    async def _act(self, decision: Decision) -> None:
        flagged = self._flagged.get(decision.category)
        if flagged is None:
            await self._emit(decision, None)
            return
        decision = replace(decision, span_s=(flagged.start_s, flagged.end_s))
        evidence = None
        if decision.state == "start":
            audio = await asyncio.to_thread(
                self._stream.clip, flagged.start_s - 0.3, flagged.end_s + 0.3
            )
            evidence = EvidenceInput(
                stream_id=self._stream.stream_id,
                category=decision.category,
                media_time_s=flagged.start_s,
                scores={f"text:{term}": score for term, score in flagged.terms.items()},
                image=None,
                text=flagged.snippet,
                audio=audio,
            )
        await self._emit(decision, evidence)


@dataclass(slots=True)
class _Flagged:
    start_s: float
    end_s: float
    snippet: str
    terms: dict[str, float] = field(default_factory=dict)

    def add(self, hit: SpokenHit) -> None:
        self.start_s = min(self.start_s, hit.said_from_s)
        self.end_s = max(self.end_s, hit.end_s)
        self.terms[hit.term] = max(self.terms.get(hit.term, 0.0), hit.score)
