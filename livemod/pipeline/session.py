"""One moderated stream: a decode thread feeding the shared analysis, the vote and
the event hub.

Live sessions keep only the newest ``queue_frames`` sampled frames, arrived within
``queue_max_s`` of the newest, when analysis lags (older ones are dropped and counted):
for live moderation a fresh frame is worth more than a backlog, while a burst of fresh
analyses (many streams cut at once) should be waited out, not dropped. Scans and files
read without pacing (``blocking=True``, see :attr:`SessionInfo.backpressure`) never drop:
the decoder waits for the analysis instead.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from livemod import metrics
from livemod.config import Config
from livemod.events.hub import EventHub
from livemod.events.types import ActionEvent, SessionEvent, SessionState
from livemod.ingest.av_source import AvSource, SourceEnd, SourceOptions, source_kind
from livemod.ingest.source import FrameSource, SourceFactory
from livemod.ingest.tap import Tappable
from livemod.messages import AudioChunk, AudioUnavailable, Decision, FrameAnalysis, VideoFrame
from livemod.pipeline.analysis import AnalysisService
from livemod.policy.taxonomy import severity
from livemod.policy.vote import VoteEngine
from livemod.relay.link import RelayLink
from livemod.relay.link import wanted as relay_wanted
from livemod.sampling import FrameRing, FrameSampler, push_live
from livemod.speech.moderator import SpeechModerator, SpeechSetup
from livemod.store import EvidenceInput

log = logging.getLogger(__name__)

MAX_FLAGGED = 1000
MAX_ACTIONS_KEPT = 200


@dataclass(frozen=True, slots=True)
class SessionInfo:
    id: str
    user_id: str
    room_id: str
    url: str
    realtime: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)
    relay: bool | None = None
    """Relay a moderated, delayed copy (None: as ``relay.enabled`` says)."""

    @property
    def key(self) -> str:
        return f"{self.user_id}:{self.room_id}"

    @property
    def source(self) -> str:
        return source_kind(self.url)

    @property
    def backpressure(self) -> bool:
        """Whether the decoder should wait for analysis instead of dropping stale
        samples: a file read without pacing has nothing live to fall behind, and
        reads as fast as analysis goes (as ``livemod scan``)."""
        return self.source == "file" and not self.realtime


class Session:
    """Runs one stream from open to end. ``run`` returns how the source ended."""

    def __init__(
        self,
        info: SessionInfo,
        config: Config,
        analysis: AnalysisService,
        engine: VoteEngine,
        hub: EventHub,
        *,
        blocking: bool = False,
        on_analysis: Callable[[FrameAnalysis], None] | None = None,
        source: SourceFactory | None = None,
        speech: SpeechSetup | None = None,
    ) -> None:
        self.info = info
        self._speech_setup = speech
        self._speech: SpeechModerator | None = None
        self.audio = "moderated" if speech is not None else "off"
        """Speech moderation: off, moderated, or why the audio is not moderated."""
        self._config = config
        self._analysis = analysis
        self._engine = engine
        self._hub = hub
        self._blocking = blocking
        self._on_analysis = on_analysis
        s = config.sampling
        self.sampler = FrameSampler(
            s.fps,
            s.boost_fps,
            boost_initial_s=s.boost_initial_s,
            boost_suspicious_s=s.boost_suspicious_s,
            # Live: a stream started among many boosts once its analysis has begun (a
            # file read with backpressure waits for analysis anyway).
            initial_after_first=not blocking,
        )
        self.ring = FrameRing(s.ring_frames)
        self._queue: deque[VideoFrame] = deque()
        self._maxlen = config.ingest.queue_frames
        self._max_age_s = config.ingest.queue_max_s
        self._wakeup = asyncio.Event()
        self._slots = threading.Semaphore(self._maxlen)
        self._source: FrameSource
        # The moderated relay taps the decoder (or a push source that can be tapped).
        self.relay: RelayLink | None = None
        if relay_wanted(config, info.relay):
            self.relay = RelayLink(
                config,
                engine.policy,
                hub,
                stream_id=info.id,
                user_id=info.user_id,
                room_id=info.room_id,
                speech=speech is not None,
            )
        if source is not None:
            self._source = source(
                info.id,
                self.sampler,
                self._deliver,
                self._deliver_audio if speech is not None else None,
            )
            if self.relay is not None and isinstance(self._source, Tappable):
                self._source.set_tap(self.relay.relay)
            else:
                self.relay = None
        else:
            self._source = AvSource(
                info.id,
                SourceOptions(
                    url=info.url,
                    realtime=info.realtime,
                    open_timeout_s=config.ingest.open_timeout_s,
                    read_timeout_s=config.ingest.read_timeout_s,
                    hwaccel=None if config.ingest.hwaccel == "none" else config.ingest.hwaccel,
                    max_ts_jump_s=config.ingest.max_ts_jump_s,
                    max_pixels=config.ingest.max_pixels,
                    threaded_pixels=config.ingest.threaded_pixels,
                    fast_decode=config.ingest.fast_decode,
                    # Yielding to the analysis only helps what is live: a file read with
                    # backpressure waits for the analysis anyway, and its ASR windows
                    # (what audio has arrived when Whisper is free) stay as they were.
                    nice=0 if blocking else config.ingest.nice,
                ),
                self.sampler,
                self._deliver,
                self._deliver_audio if speech is not None else None,
                tap=self.relay.relay if self.relay is not None else None,
            )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._source_done = False
        self.status = "starting"
        self.error: str | None = None
        self.started_at = time.time()
        self.first_frame_at: float | None = None
        self.samples = 0
        self.drops = 0
        self.peak_risk = 0.0
        self.flagged: list[float] = []
        self.actions: list[dict[str, Any]] = []
        self.last_lag_s = 0.0
        self._evidence_ids: dict[tuple[str, str], str] = {}
        self._side_tasks: set[asyncio.Future[Any]] = set()

    # -- decode thread side ----------------------------------------------------

    def _deliver(self, frame: VideoFrame) -> None:
        loop = self._loop
        assert loop is not None
        if self._blocking:
            # Backpressure: wait for a free slot; give up only when stopping.
            while not self._slots.acquire(timeout=0.5):
                if self._source_done:
                    return
        loop.call_soon_threadsafe(self._offer, frame)

    @property
    def moderates_speech(self) -> bool:
        """Whether this session transcribes and judges its audio (``asr.enabled``)."""
        return self._speech_setup is not None

    def speech_stats(self) -> dict[str, int] | None:
        """Words transcribed, policy hits and Whisper windows so far (None: speech off)."""
        speech = self._speech
        if speech is None:
            return None
        return {"words": speech.words, "hits": speech.hits, "decodes": speech.decodes}

    def deliver_audio(self, item: AudioChunk | AudioUnavailable) -> None:
        """Audio from a push source (WHIP), from any thread but the event loop's."""
        self._deliver_audio(item)

    def _deliver_audio(self, item: AudioChunk | AudioUnavailable) -> None:
        speech = self._speech
        if isinstance(item, AudioChunk):
            if speech is not None:
                speech.feed(item)
            return
        loop = self._loop
        assert loop is not None
        loop.call_soon_threadsafe(self._audio_unavailable, item.reason)

    def _audio_unavailable(self, reason: str) -> None:
        self.audio = f"not moderated: {reason}"
        if self.relay is not None:
            self.relay.speech_off()
        if self._speech is not None:
            self._speech.give_up()
        task = asyncio.ensure_future(self.announce("audio_unmoderated", reason=reason))
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    def _offer(self, frame: VideoFrame) -> None:
        if self._blocking:
            self._queue.append(frame)
        else:
            dropped = push_live(self._queue, frame, self._maxlen, self._max_age_s)
            if dropped:
                self.drops += dropped
                metrics.DROPS.labels("analysis_queue", "stale_frame").inc(dropped)
        metrics.FRAMES_SAMPLED.inc()
        self._wakeup.set()

    # -- event loop side ---------------------------------------------------------

    @property
    def queued(self) -> int:
        """Sampled frames waiting for analysis."""
        return len(self._queue)

    def stretch_reuse(self, scale: float) -> None:
        """Refresh reused scores ``scale`` times less often (a stream shed under overload)."""
        self._analysis.stretch(self.info.id, scale)

    def stop(self) -> None:
        self._source.stop()

    async def run(self) -> SourceEnd:
        self._loop = asyncio.get_running_loop()
        done: asyncio.Future[SourceEnd] = self._loop.create_future()
        if self.relay is not None:
            self.relay.start()
        if self._speech_setup is not None:
            self._speech = self._speech_setup.moderator(
                self.info.id,
                self.info.key,
                self._engine,
                self._emit_spoken,
                self._track_speech,
                blocking=self._blocking,
            )

        def thread_main() -> None:
            try:
                end = self._source.run()
            except Exception as exc:  # a bug must end this session, not the daemon
                log.exception("decoder crashed", extra={"stream_id": self.info.id})
                end = SourceEnd("error", f"internal decoder error: {exc}", 0, 0, 0.0)
            loop = self._loop
            assert loop is not None
            loop.call_soon_threadsafe(_resolve, done, end)
            loop.call_soon_threadsafe(self._wakeup.set)
            metrics.retire_current_thread()

        thread = threading.Thread(target=thread_main, name=f"decode-{self.info.id}", daemon=True)
        metrics.SESSIONS_ACTIVE.labels(self.info.source).inc()
        thread.start()
        try:
            await self._consume(done)
            end = await done
            if self._speech is not None:
                # The last words of the stream are still judged before it ends.
                await self._speech.finish()
        finally:
            if self._speech is not None:
                await self._speech.close()
            if self._side_tasks:
                await asyncio.gather(*self._side_tasks, return_exceptions=True)
            self._source.stop()
            self._source_done = True
            if self.relay is not None:
                await self.relay.close()
            self._analysis.forget(self.info.id)
            metrics.SESSIONS_ACTIVE.labels(self.info.source).dec()
        self.status = "failed" if end.reason == "error" else "ended"
        self.error = end.error
        return end

    async def _consume(self, done: asyncio.Future[SourceEnd]) -> None:
        while True:
            if not self._queue:
                if done.done():
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            frame = self._queue.popleft()
            if self._blocking:
                self._slots.release()
            await self._process(frame)

    async def _process(self, frame: VideoFrame) -> None:
        if self.first_frame_at is None:
            self.first_frame_at = time.time()
            self.status = "live"
        self.ring.push(frame)
        analysis = await self._analysis.analyze(frame)
        self.samples += 1
        if self.samples == 1:
            self.sampler.first_analysed()
        self.last_lag_s = analysis.t_analyzed - frame.t_arrival
        metrics.SAMPLE_LATENCY.observe(self.last_lag_s)
        started = time.perf_counter()
        decisions = self._engine.update(self.info.key, analysis)
        if self.relay is not None:
            self.relay.analyzed(analysis, decisions)
        metrics.STAGE_SECONDS.labels("policy").observe(time.perf_counter() - started)
        self._track(analysis)
        if self._engine.suspicious(self.info.key):
            self.sampler.mark_suspicious(frame.media_time_s)
        if self._on_analysis is not None:
            self._on_analysis(analysis)
        for decision in decisions:
            await self._emit(decision)

    def _track(self, analysis: FrameAnalysis) -> None:
        levels = self._engine.levels(self.info.key)
        self.peak_risk = max(self.peak_risk, max(levels.values(), default=0.0))
        cats = self._engine.policy.categories
        flagged = any(
            s.category in cats and s.score >= cats[s.category].floor for s in analysis.signals
        )
        if flagged and len(self.flagged) < MAX_FLAGGED:
            self.flagged.append(round(analysis.frame.media_time_s, 3))

    def _track_speech(self, media_time_s: float, flagged: bool) -> None:
        if self.relay is not None:
            self.relay.speech_judged(media_time_s)  # every earlier speech sample is decided
        levels = self._engine.levels(self.info.key)
        self.peak_risk = max(self.peak_risk, max(levels.values(), default=0.0))
        if flagged and len(self.flagged) < MAX_FLAGGED:
            self.flagged.append(round(media_time_s, 3))

    async def _emit_spoken(self, decision: Decision, speech: EvidenceInput | None = None) -> None:
        """A decision of the speech vote: the relay hears it here (vision decisions reach
        it with their sample, in ``_process``, before the sample lets frames go)."""
        if self.relay is not None:
            self.relay.decided(decision)
        await self._emit(decision, speech)

    async def _emit(self, decision: Decision, speech: EvidenceInput | None = None) -> None:
        started = time.perf_counter()
        info = self.info
        body = ActionEvent.of(
            decision, stream_id=info.id, user_id=info.user_id, room_id=info.room_id
        )
        evidence = None
        standing = (decision.category, decision.action)
        if decision.state == "stop" and standing in self._evidence_ids:
            # A stop points at the evidence of the action it ends.
            body = replace(body, evidence_id=self._evidence_ids.pop(standing))
        if decision.state == "start" and speech is not None:
            evidence = speech  # what was said: transcript snippet and a WAV
        elif decision.state == "start":
            frame = decision.evidence_frame
            # A stage (OCR) may keep better evidence: the frame with its boxes drawn, the text.
            staged = self._analysis.evidence(info.id, decision)
            evidence = EvidenceInput(
                stream_id=info.id,
                category=decision.category,
                media_time_s=frame.media_time_s if frame else decision.media_time_s,
                scores=decision.evidence_scores,
                image=frame.image if frame is not None else None,
            )
            if staged is not None:
                evidence = replace(evidence, image=staged.image, text=staged.text)
        event = await self._hub.publish(body, evidence=evidence, t_trigger=decision.t_trigger)
        if decision.state == "start" and event.get("evidence_id"):
            self._evidence_ids[standing] = event["evidence_id"]
        metrics.STAGE_SECONDS.labels("emit").observe(time.perf_counter() - started)
        metrics.ACTIONS.labels(decision.action, decision.category, decision.state).inc()
        if "latency_ms" in event:
            metrics.EVENT_LATENCY.labels(decision.action).observe(event["latency_ms"] / 1000.0)
        if len(self.actions) < MAX_ACTIONS_KEPT:
            self.actions.append(event)

    async def announce(self, state: SessionState, **extra: Any) -> dict[str, Any]:
        info = self.info
        body = SessionEvent(
            state=state, stream_id=info.id, user_id=info.user_id, room_id=info.room_id, **extra
        )
        return await self._hub.publish(body)

    def summary(self) -> dict[str, Any]:
        """Status and the running summary of ``GET /v1/streams/{id}``."""
        info = self.info
        risk = round(self.peak_risk, 4)
        return {
            "id": info.id,
            "user_id": info.user_id,
            "room_id": info.room_id,
            "url": info.url,
            "source": info.source,
            "metadata": info.metadata,
            "status": self.status,
            "error": self.error,
            "started_at": round(self.started_at, 3),
            "first_frame_ms": (
                round((self.first_frame_at - self.started_at) * 1000.0, 1)
                if self.first_frame_at
                else None
            ),
            "samples": self.samples,
            "drops": self.drops,
            "lag_s": round(self.last_lag_s, 3),
            "risk_score": risk,
            "severity": severity(risk),
            "flagged_media_times": self.flagged,
            "audio": self.audio,
            # capacity: the sampler's current base rate, fresh / reused samples (gating).
            "fps": round(self.sampler.fps, 3),
            "gating": self._analysis.stream_stats(info.id),
            "relay": self.relay.relay.status() if self.relay is not None else None,
            "transcription": self._speech.transcription() if self._speech is not None else None,
            "standing_actions": [
                {"category": a.category, "action": a.action, "tier": a.tier}
                for a in self._engine.standing(info.key)
            ],
            "actions": [
                {
                    k: e.get(k)
                    for k in ("seq", "action", "state", "category", "media_time_s", "latency_ms")
                }
                for e in self.actions
            ],
        }


def _resolve(fut: asyncio.Future[SourceEnd], end: SourceEnd) -> None:
    if not fut.done():
        fut.set_result(end)
