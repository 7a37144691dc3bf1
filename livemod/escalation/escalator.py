"""The escalator: sends uncertain or severe clips to the LLM and applies what
comes back, or the category's fallback when nothing usable does.

It follows committed action events like any subscriber, so a slow or dead LLM
never slows the pipeline. Each escalated action gets exactly one ``escalation``
event: a verdict (``confirmed``, ``upgraded``, ``cleared``, ``inconclusive``) or
a fallback (``fail_open``, ``fail_closed``, ``degraded``), whatever happens to
the call, the queue (full: fallback at once) or the daemon (stopping: fallback;
killed: the action is escalated again after the restart, see ``ledger.py``).

Calls run on ``max_concurrency`` workers behind a token bucket and a circuit
breaker; timeouts, 429 and 5xx are retried with jittered exponential backoff
(``Retry-After`` honoured up to ``retry_max_s``; a longer one is not waited for).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from livemod import metrics
from livemod.config import Config
from livemod.errors import ConfigError
from livemod.escalation.breaker import BreakerState, CircuitBreaker
from livemod.escalation.clip import build_clip
from livemod.escalation.desk import ReviewDesk
from livemod.escalation.guard import GuardedLlm
from livemod.escalation.ledger import CursorKeeper, EscalationLedger
from livemod.escalation.llm import Clip, LlmClient, LlmError
from livemod.escalation.triage import (
    Plan,
    escalation_reason,
    fallback_mode,
    for_ended_stream,
    plan_fallback,
    plan_for_verdict,
)
from livemod.escalation.verdict import Verdict
from livemod.events.follow import follow
from livemod.events.types import BreakerEvent, EscalationEvent
from livemod.messages import VideoFrame
from livemod.pipeline.standing import (
    channel_of,
    key_of,
    publish_decisions,
    recent_frames,
    standing_action,
    trigger_time,
)

if TYPE_CHECKING:
    from livemod.pipeline.runtime import Runtime

log = logging.getLogger(__name__)

_METRIC_OUTCOME = {"confirmed": "violation", "upgraded": "violation", "cleared": "benign"}


@dataclass(slots=True)
class _Job:
    event: dict[str, Any]
    reason: str
    frames: list[VideoFrame]
    replayed: bool = False
    """Committed before this process started: a kill left it without an outcome."""
    queued_at: float = field(default_factory=time.perf_counter)

    @property
    def seq(self) -> int:
        return int(self.event["seq"])


class Escalator:
    """A daemon component, enabled by ``llm.base_url``."""

    name = "escalation"

    def __init__(
        self,
        config: Config,
        desk: ReviewDesk,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._cfg = config.llm
        self._desk = desk
        self.llm = GuardedLlm(
            self._cfg, clock=clock, rng=rng or random.Random(), on_change=self._breaker_changed
        )
        self._queue: asyncio.Queue[_Job] = asyncio.Queue(maxsize=self._cfg.queue_size)
        self._runtime: Runtime | None = None
        self._http: aiohttp.ClientSession | None = None
        self._follower: asyncio.Task[None] | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._side: set[asyncio.Task[Any]] = set()
        self._stopping = asyncio.Event()
        self._sources: set[str] = set()
        self._cursor: CursorKeeper | None = None
        self._settled: set[int] = set()
        self._boot_seq = 0
        desk.defer_to(self.wants)

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            raise RuntimeError("escalator is not started")
        return self._runtime

    @property
    def breaker(self) -> CircuitBreaker:
        return self.llm.breaker

    @property
    def client(self) -> LlmClient:
        return self.llm.client

    def wants(self, event: dict[str, Any]) -> bool:
        """Whether this committed event is escalated (and so not queued for review
        by the desk directly)."""
        return escalation_reason(event, self._cfg, self._sources) is not None

    async def start(self, runtime: Runtime) -> None:
        self._check_categories(runtime)
        self._runtime = runtime
        self._sources = set(runtime.analyzers)
        self._http = aiohttp.ClientSession()
        self.llm.attach(
            LlmClient(
                self._http,
                self._cfg,
                categories=list(runtime.policy.categories),
                api_key=os.environ.get(self._cfg.api_key_env) or None,
            )
        )
        metrics.set_breaker_state(self.breaker.state)
        since = await self._resume(runtime)
        self._follower = asyncio.create_task(self._follow(since), name="escalation-follow")
        self._workers = [
            asyncio.create_task(self._work(), name=f"escalation-{i}")
            for i in range(self._cfg.max_concurrency)
        ]
        log.info(
            "escalation on",
            extra={"llm_url": self.client.url, "provider": self._cfg.provider},
        )

    async def _resume(self, runtime: Runtime) -> int:
        """Where to follow from: the durable cursor (see ``ledger.py``)."""
        ledger = EscalationLedger(runtime.store)
        point = await ledger.resume()
        self._boot_seq, self._settled = point.boot_seq, point.settled
        self._cursor = CursorKeeper(ledger, point.cursor)
        self._cursor.start()
        return point.cursor

    def _check_categories(self, runtime: Runtime) -> None:
        known = set(runtime.policy.categories)
        named = [
            ("llm.always_escalate", self._cfg.always_escalate),
            ("llm.fallback", list(self._cfg.fallback)),
            ("llm.cross_check", list(self._cfg.cross_check)),
        ]
        for field_name, categories in named:
            for category in categories:
                if category not in known:
                    raise ConfigError(
                        f"{field_name}: {category!r} is not a policy category"
                        f" (the policy has {', '.join(sorted(known))})"
                    )

    async def stop(self) -> None:
        """Stop taking events; settle every escalation still open with its fallback."""
        if self._follower is not None:
            self._follower.cancel()
            await asyncio.gather(self._follower, return_exceptions=True)
        self._stopping.set()
        await asyncio.gather(*self._workers, return_exceptions=True)
        while not self._queue.empty():
            await self._settle(self._queue.get_nowait(), None, "shutdown")
        if self._side:
            await asyncio.gather(*self._side, return_exceptions=True)
        if self._cursor is not None:
            await self._cursor.close()
        if self._http is not None:
            await self._http.close()
        metrics.QUEUE_DEPTH.labels("escalation").set(0)

    def add_routes(self, app: web.Application) -> None:
        """No routes of its own: reviews are served by the review desk."""

    # -- intake -------------------------------------------------------------------

    async def _follow(self, since: int) -> None:
        cursor = self._cursor
        assert cursor is not None
        # Several instances: the one that decided an action holds its frames.
        async for event in follow(self.runtime.hub, since, local_only=True):
            seq = int(event["seq"])
            reason = escalation_reason(event, self._cfg, self._sources)
            if reason is not None and seq in self._settled:
                self._settled.discard(seq)
                reason = None
            if reason is not None and seq <= self._boot_seq and self._expired(event):
                # A replay after a long outage (or escalation turned back on): a verdict
                # this late serves no live stream; the first-pass action stands.
                metrics.DROPS.labels("escalation", "replay_expired").inc()
                reason = None
            cursor.observe(seq, escalate=reason is not None)
            if reason is None:
                continue
            # The ring moves on with the stream: take the frames now.
            frames = recent_frames(self.runtime, str(event.get("stream_id")), self._cfg.clip_frames)
            job = _Job(event, reason, frames, replayed=seq <= self._boot_seq)
            try:
                self._queue.put_nowait(job)
            except asyncio.QueueFull:
                metrics.DROPS.labels("escalation", "queue_full").inc()
                await self._settle(job, None, "queue_full")
            metrics.QUEUE_DEPTH.labels("escalation").set(self._queue.qsize())

    def _expired(self, event: dict[str, Any]) -> bool:
        committed = float(event.get("ts") or time.time())
        return time.time() - committed > self._cfg.replay_max_age_s

    async def _work(self) -> None:
        while not self._stopping.is_set():
            get = asyncio.ensure_future(self._queue.get())
            stopping = asyncio.ensure_future(self._stopping.wait())
            await asyncio.wait({get, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not get.done():
                get.cancel()
                return
            job = get.result()
            metrics.QUEUE_DEPTH.labels("escalation").set(self._queue.qsize())
            try:
                await self._handle(job)
            except Exception:  # the worker must survive anything one job does
                log.exception("escalation failed", extra={"seq": job.event.get("seq")})
                await self._settle_after_crash(job)

    async def _settle_after_crash(self, job: _Job) -> None:
        """A job that broke before its outcome was committed still gets one (its
        fallback), or the cursor would wait on it for the rest of this process."""
        if self._cursor is None or not self._cursor.mark.is_pending(job.seq):
            return
        try:
            await self._settle(job, None, "internal")
        except Exception:
            log.exception("escalation fallback failed", extra={"seq": job.seq})

    # -- one escalation ---------------------------------------------------------------

    async def _handle(self, job: _Job) -> None:
        clip = await build_clip(self.runtime.store, job.event, job.frames, self._cfg.image_max_side)
        call = asyncio.ensure_future(self.llm.ask(self.client.request_body(clip)))
        stopping = asyncio.ensure_future(self._stopping.wait())
        started = time.perf_counter()
        await asyncio.wait({call, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not call.done():
            call.cancel()
            await asyncio.gather(call, return_exceptions=True)
            await self._settle(job, None, "shutdown", clip=clip)
            return
        metrics.ESCALATION_SECONDS.observe(time.perf_counter() - started)
        try:
            verdict = call.result()
        except LlmError as exc:
            # While the breaker is open every clip would say so: its transition is logged.
            level = logging.DEBUG if exc.kind == "breaker_open" else logging.WARNING
            log.log(level, "LLM gave no verdict: %s", exc, extra={"seq": job.event.get("seq")})
            await self._settle(job, None, exc.kind, clip=clip)
            return
        await self._settle(job, verdict, None, clip=clip)

    async def _settle(
        self,
        job: _Job,
        verdict: Verdict | None,
        error: str | None,
        *,
        clip: Clip | None = None,
    ) -> None:
        """Publish the outcome and apply it to the standing action."""
        runtime = self.runtime
        event = job.event
        key, category = key_of(event), str(event.get("category"))
        standing = standing_action(runtime, key, category, channel_of(event))
        # A replayed clip's stream died with the previous process: nothing of it stands
        # here, and a new session of the same user and room is not this clip's to change.
        ended = job.replayed and event.get("stream_id") not in runtime.sessions
        if ended:
            standing = None
        mode = None
        if verdict is not None:
            plan = plan_for_verdict(verdict, standing, self._cfg)
            metrics.ESCALATIONS.labels(_METRIC_OUTCOME.get(plan.outcome, "uncertain")).inc()
        else:
            mode = fallback_mode(category, self._cfg)
            plan = plan_fallback(
                mode,
                category=category,
                confidence=float(event.get("confidence", 0.0)),
                standing=standing,
                policy=runtime.policy,
                config=self._cfg,
            )
            kind = error if error in ("timeout", "breaker_open") else "error"
            metrics.ESCALATIONS.labels(kind).inc()
            metrics.ESCALATION_FALLBACKS.labels(mode).inc()
        if ended:
            plan = for_ended_stream(plan, str(event.get("action")))
        escalation = await runtime.hub.publish(
            EscalationEvent(
                outcome=plan.outcome,
                stream_id=str(event.get("stream_id")),
                user_id=str(event.get("user_id")),
                room_id=str(event.get("room_id")),
                category=category,
                action=str(event.get("action")),
                action_seq=event.get("seq"),
                evidence_id=event.get("evidence_id"),
                reason=job.reason,
                fallback=mode,
                error=error,
                verdict=verdict.as_json() if verdict is not None else None,
                standing=standing,
                replayed=job.replayed,
                duration_ms=round((time.perf_counter() - job.queued_at) * 1000.0, 1),
            )
        )
        if self._cursor is not None:
            self._cursor.settle(job.seq)
        await self._apply(job, plan, verdict, escalation, clip)

    async def _apply(
        self,
        job: _Job,
        plan: Plan,
        verdict: Verdict | None,
        escalation: dict[str, Any],
        clip: Clip | None,
    ) -> None:
        runtime = self.runtime
        event = job.event
        key, category, channel = key_of(event), str(event.get("category")), channel_of(event)
        origin = "llm" if verdict is not None else "fallback"
        extra = {"escalation_seq": escalation["seq"]}
        if plan.lift:
            stop = runtime.engine.release(key, category, t_now=time.time(), channel=channel)
            if stop is not None:
                await publish_decisions(runtime, [stop], event, origin=origin, extra=extra)
        if plan.start is not None:
            confidence = verdict.confidence if verdict is not None else float(event["confidence"])
            decisions = runtime.engine.upgrade(
                key,
                category,
                plan.start,
                confidence=round(confidence, 4),
                tier=runtime.policy.tier(confidence),
                sources=(*tuple(event.get("sources") or ()), origin),
                t_trigger=trigger_time(event),
                channel=channel,
            )
            await publish_decisions(runtime, decisions, event, origin=origin, extra=extra)
        if plan.review:
            await self._desk.submit(
                event,
                reason=plan.outcome,
                frames=job.frames,
                scores=clip.scores if clip is not None else None,
                verdict=verdict,
                transcript=clip.transcript if clip is not None else "",
                ocr_text=clip.ocr_text if clip is not None else "",
            )

    # -- breaker state ---------------------------------------------------------------

    def _breaker_changed(self, old: BreakerState, new: BreakerState) -> None:
        metrics.set_breaker_state(new)
        log.warning("LLM circuit breaker %s -> %s", old, new)
        if self._runtime is None:
            return
        task = asyncio.get_running_loop().create_task(
            self.runtime.hub.publish(BreakerEvent(component="llm", state=new, previous=old))
        )
        self._side.add(task)
        task.add_done_callback(self._side.discard)
