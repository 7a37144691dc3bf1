"""The LLM sweep: a periodic multimodal-LLM look at every stream, for what no edge model
sees (self-harm imagery, hate symbols, any category listed in ``llm.sweep_categories``).

A per-stream analysis stage and a daemon component at once. On each sample it keeps the
stream's recent frames, asks the ``SweepPlan`` whether a look is due (every
``llm.sweep_interval_s``, every ``llm.sweep_suspicious_interval_s`` while the stream's vote
holds a hit or its last verdict was unsure) and, within the global budget, sends one image
(the latest frame, or a grid of up to four recent ones) through the escalator's LLM client,
its retries and its circuit breaker. Nothing waits for the answer: the sample goes on with
the stream's standing sweep signal.

An unsafe verdict for a sweep category becomes a signal (source ``llm:sweep``) that every
sample of the stream carries for ``llm.sweep_hold_s``: it votes k of n like any analyzer,
capped at ``llm.sweep_max_score`` (below the high tier), so a sweep alone reaches a medium
action (``review``) and never ``pause`` or ``end``; that action is escalated like any other.
A safe verdict withdraws the signal. No verdict (timeout, 5xx, open breaker) changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import cv2
import numpy as np
from aiohttp import web

from livemod import metrics
from livemod.config import Config
from livemod.errors import ConfigError
from livemod.escalation.clip import jpeg
from livemod.escalation.guard import GuardedLlm
from livemod.escalation.llm import Clip, LlmError
from livemod.escalation.sweep_plan import SweepPlan
from livemod.escalation.verdict import Verdict
from livemod.messages import Decision, Image, Signal, VideoFrame
from livemod.vision.base import AnalyzerResult, StageEvidence

if TYPE_CHECKING:
    from livemod.pipeline.runtime import Runtime

log = logging.getLogger(__name__)

SOURCE = "llm:sweep"
FRAME_SPACING_S = 1.0
"""Frames of a grid are at least this far apart in media time (the last is the latest)."""
_EMPTY = AnalyzerResult()


@dataclass(frozen=True, slots=True)
class SweepClip(Clip):
    """A sweep's image: no first pass to report, a list of categories to look for."""

    categories: tuple[str, ...] = ()
    frames: int = 1

    def prompt(self) -> str:
        grid = (
            f"one image: a grid of the {self.frames} most recent sampled frames, oldest "
            "top-left, left to right"
            if self.frames > 1
            else "one image: the most recent sampled frame"
        )
        return "\n".join(
            [
                "Routine sweep of a live stream; no automatic detector covers these policy "
                f"categories: {', '.join(self.categories)}.",
                "Look for them only (e.g. self-harm imagery, hate symbols and gestures, "
                "extremist flags). If none is shown, answer unsafe false and label none.",
                f"Media time: {self.media_time_s:.1f} s; {grid}",
            ]
        )


@dataclass(frozen=True, slots=True)
class SweepLook:
    """The image behind a stream's standing sweep signal, for evidence."""

    image: Image = field(repr=False)
    verdict: Verdict
    media_time_s: float


@dataclass(slots=True)
class _Stream:
    spaced: deque[VideoFrame]
    """Recent frames at least ``FRAME_SPACING_S`` apart."""
    latest: VideoFrame
    held: AnalyzerResult = _EMPTY
    held_until: float = 0.0
    unsure_until: float = 0.0
    look: SweepLook | None = None


def grid(images: Sequence[Image]) -> Image:
    """One image of up to four frames: the frame itself, or a 2x2 grid at half size."""
    if len(images) == 1:
        return images[0]
    h, w = images[-1].shape[:2]
    th, tw = h // 2, w // 2
    out = np.zeros((th * 2, tw * 2, 3), dtype=np.uint8)
    for i, image in enumerate(images[-4:]):
        y, x = divmod(i, 2)
        tile = cv2.resize(image, (tw, th), interpolation=cv2.INTER_AREA)
        out[y * th : (y + 1) * th, x * tw : (x + 1) * tw] = tile
    return out


class LlmSweep:
    """The sweep stage and component (see the module doc). ``attach`` gives it the
    escalator's guarded LLM; until it is attached and started it does nothing."""

    name = "llm-sweep"

    def __init__(self, config: Config, *, clock: Callable[[], float] = time.monotonic) -> None:
        c = config.llm
        self._cfg = c
        self.categories = tuple(c.sweep_categories)
        self._clock = clock
        self.plan = SweepPlan(
            interval_s=c.sweep_interval_s,
            suspicious_s=c.sweep_suspicious_interval_s,
            per_minute=c.sweep_per_minute,
            concurrency=c.sweep_concurrency,
            on_skip=lambda reason: metrics.SWEEP_SKIPPED.labels(reason).inc(),
        )
        self._llm: GuardedLlm | None = None
        self._suspicion: Callable[[str], bool] | None = None
        self._streams: dict[str, _Stream] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.results: dict[str, int] = dict.fromkeys(metrics.SWEEP_RESULTS, 0)
        """Looks by result (``metrics.SWEEP_RESULTS``), for status and benchmarks."""

    def attach(self, llm: GuardedLlm) -> None:
        """Share the escalator's client, breaker, rate limit and retries."""
        self._llm = llm

    # -- component ------------------------------------------------------------------

    async def start(self, runtime: Runtime) -> None:
        def suspicious(stream_id: str) -> bool:
            session = runtime.sessions.get(stream_id)
            return session is not None and runtime.engine.suspicious(session.info.key)

        self.open(runtime.policy.categories, suspicious)

    def open(self, known: Collection[str], suspicious: Callable[[str], bool]) -> None:
        """Start looking: ``known`` are the policy's categories, ``suspicious`` tells
        whether a stream's vote holds a hit now (the daemon's vote engine)."""
        unknown = [c for c in self.categories if c not in known]
        if unknown:
            raise ConfigError(
                f"llm.sweep_categories: {', '.join(map(repr, unknown))} not a policy category"
                f" (the policy has {', '.join(sorted(known))})"
            )
        self._suspicion = suspicious
        log.info(
            "LLM sweep on",
            extra={"categories": list(self.categories), "interval_s": self.plan.interval_s},
        )

    async def stop(self) -> None:
        self._suspicion = None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def add_routes(self, app: web.Application) -> None:
        """No routes of its own."""

    async def settle(self) -> None:
        """Wait for the looks in flight (tests and benchmarks)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- stage ----------------------------------------------------------------------

    async def analyze(self, frame: VideoFrame) -> AnalyzerResult:
        if self._llm is None or self._suspicion is None:
            return _EMPTY
        s = self._streams.get(frame.stream_id)
        if s is None:
            s = _Stream(deque(maxlen=self._cfg.sweep_frames), frame)
            self._streams[frame.stream_id] = s
        s.latest = frame
        if not s.spaced or frame.media_time_s - s.spaced[-1].media_time_s >= FRAME_SPACING_S:
            s.spaced.append(frame)
        now = self._clock()
        if self.plan.offer(frame.stream_id, now, suspicious=self._suspicious(frame, s, now)):
            self._dispatch(now)
        if now >= s.held_until:
            s.held = _EMPTY
        return s.held

    def _suspicious(self, frame: VideoFrame, s: _Stream, now: float) -> bool:
        if now < s.unsure_until or now < s.held_until:
            return True
        return self._suspicion is not None and self._suspicion(frame.stream_id)

    def _dispatch(self, now: float) -> None:
        llm = self._llm
        if llm is None:
            return
        while True:
            if llm.breaker.state == "open":
                self.plan.block("breaker_open")
                return
            stream_id = self.plan.next(now)
            if stream_id is None:
                return
            s = self._streams.get(stream_id)
            if s is None:
                self.plan.done(stream_id)
                continue
            task = asyncio.get_running_loop().create_task(
                self._look(llm, stream_id, _frames(s)), name=f"llm-sweep-{stream_id}"
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _look(self, llm: GuardedLlm, stream_id: str, frames: list[VideoFrame]) -> None:
        started = time.perf_counter()
        result = "error"
        try:
            image = grid([f.image for f in frames])
            data = await asyncio.to_thread(jpeg, image, self._cfg.image_max_side)
            clip = SweepClip(
                stream_id=stream_id,
                category=", ".join(self.categories),
                action="none",
                tier="none",
                confidence=0.0,
                sources=(),
                media_time_s=frames[-1].media_time_s,
                jpegs=(data,),
                categories=self.categories,
                frames=len(frames),
            )
            verdict = await llm.ask(llm.client.request_body(clip))
            result = self._apply(stream_id, image, frames[-1], verdict)
        except LlmError as exc:
            result = exc.kind if exc.kind in ("timeout", "breaker_open") else "error"
            level = logging.DEBUG if exc.kind == "breaker_open" else logging.WARNING
            log.log(level, "LLM sweep gave no verdict: %s", exc, extra={"stream_id": stream_id})
        except asyncio.CancelledError:
            self.plan.done(stream_id)
            raise
        except Exception:  # one bad look must not end the sweep of every stream
            log.exception("LLM sweep failed", extra={"stream_id": stream_id})
        metrics.SWEEP_SECONDS.observe(time.perf_counter() - started)
        metrics.SWEEP_REQUESTS.labels(result).inc()
        self.results[result] += 1
        self.plan.done(stream_id)
        if self._suspicion is not None:
            self._dispatch(self._clock())

    def _apply(self, stream_id: str, image: Image, frame: VideoFrame, verdict: Verdict) -> str:
        s = self._streams.get(stream_id)
        if s is None:
            return "unsafe" if verdict.unsafe else "safe"
        now = self._clock()
        if verdict.confidence < self._cfg.min_confidence:
            # Unsure either way: look again at the suspicious rate; what stands, stands.
            s.unsure_until = now + self._cfg.sweep_interval_s
            return "uncertain"
        s.unsure_until = 0.0
        if not verdict.unsafe or verdict.label not in self.categories:
            # Safe, or unsafe for a category the edge models and escalation cover.
            s.held, s.held_until = _EMPTY, 0.0
            return "safe" if not verdict.unsafe else "unsafe"
        score = round(min(verdict.confidence, self._cfg.sweep_max_score), 4)
        signal = Signal(verdict.label, score, SOURCE, f"llm_sweep:{verdict.action}")
        s.held = AnalyzerResult((signal,), {f"{SOURCE}:{verdict.label}": score})
        s.held_until = now + self._cfg.sweep_hold_s
        s.look = SweepLook(image, verdict, frame.media_time_s)
        log.info(
            "LLM sweep: unsafe",
            extra={
                "stream_id": stream_id,
                "category": verdict.label,
                "confidence": verdict.confidence,
                "media_time_s": round(frame.media_time_s, 3),
            },
        )
        return "unsafe"

    def evidence(self, stream_id: str, decision: Decision) -> StageEvidence | None:
        """The image the LLM judged unsafe, with its rationale."""
        if SOURCE not in decision.sources:
            return None
        s = self._streams.get(stream_id)
        if s is None or s.look is None:
            return None
        v = s.look.verdict
        text = f"LLM sweep: {v.label} ({v.confidence:.2f}, {v.action}): {v.rationale}"
        return StageEvidence(s.look.image, text)

    def forget(self, stream_id: str) -> None:
        self._streams.pop(stream_id, None)
        self.plan.forget(stream_id)

    def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()


def _frames(s: _Stream) -> list[VideoFrame]:
    """The frames of one look: the spaced ones, the latest last."""
    out = list(s.spaced)
    if out[-1] is not s.latest:
        out = [*out[1:], s.latest] if len(out) == s.spaced.maxlen else [*out, s.latest]
    return out


def sweep_enabled(config: Config) -> bool:
    """The sweep runs with escalation on (``llm.base_url``) and a non-zero interval."""
    return config.llm.base_url is not None and config.llm.sweep_interval_s > 0
