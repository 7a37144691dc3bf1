"""The daemon: wires config, models, store, event hub, servers and sessions.

Start-up fails fast with one clear error (bad config, missing model, unusable
store). Afterwards one misbehaving stream can only end its own session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

from livemod import metrics
from livemod.actions.websocket import EventServer
from livemod.config import Config
from livemod.errors import RequestError
from livemod.events.hub import EventHub, session_event
from livemod.ingest.source import SourceFactory
from livemod.pipeline.analysis import AnalysisService
from livemod.pipeline.runtime import Component
from livemod.pipeline.session import Session, SessionInfo
from livemod.policy.taxonomy import load_policy
from livemod.policy.vote import VoteEngine
from livemod.speech.moderator import build_speech
from livemod.store import Store
from livemod.vision import providers
from livemod.vision.base import FrameAnalyzer, StreamStage
from livemod.vision.batching import BatchPolicy

log = logging.getLogger(__name__)

RETENTION_SWEEP_S = 3600.0


def build_analyzers(config: Config) -> list[FrameAnalyzer]:
    """Load and verify every configured model and the known-bad index."""
    from livemod.vision.analyzers import build_vision_analyzers
    from livemod.vision.hashes import HashAnalyzer, KnownBadIndex
    from livemod.vision.inference import use_io_binding
    from livemod.vision.manifest import load_manifest
    from livemod.vision.precision import PrecisionPlan

    analyzers: list[FrameAnalyzer] = []
    index = KnownBadIndex.load(config.known_bad.paths)
    analyzers.append(HashAnalyzer(index, config.known_bad.max_distance))
    metrics.MODELS_LOADED.labels("hash").set(1)
    if config.vision.models:
        specs = load_manifest(config.vision.manifest)
        plan = providers.resolve(config.vision.providers)
        metrics.INFERENCE_DEVICE.labels(plan.device).set(1)
        vision = build_vision_analyzers(
            specs,
            config.vision.models,
            config.vision.threads,
            plan.providers,
            precision=PrecisionPlan(
                config.vision.precision, plan.device, config.vision.model_cache
            ),
            io_binding=use_io_binding(config.vision.io_binding, plan.device),
        )
        for analyzer in vision:
            metrics.MODELS_LOADED.labels(analyzer.name).set(1)
            precision = getattr(analyzer, "precision", None)
            if precision is not None:
                metrics.MODEL_PRECISION.labels(analyzer.name, precision).set(1)
        analyzers.extend(vision)
    return analyzers


def build_stages(config: Config) -> list[StreamStage]:
    """Per-stream analysis stages the configuration enables (OCR)."""
    if not config.ocr.enabled:
        return []
    from livemod.ocr.stage import build_ocr_stage

    return [build_ocr_stage(config)]


def build_components(config: Config) -> list[Component]:
    """The optional parts this configuration enables, in start order."""
    from livemod.actions.webhooks import WebhookSender
    from livemod.escalation.desk import ReviewDesk
    from livemod.escalation.escalator import Escalator

    components: list[Component] = []
    # The review queue is always on: the policy's ``review`` action feeds it.
    desk = ReviewDesk()
    components.append(desk)
    if config.llm.base_url is not None:
        components.append(Escalator(config, desk))
    if config.webhooks.urls:
        components.append(WebhookSender(config.webhooks))
    if config.hooks.enabled:
        from livemod.app.hooks import StreamingServerHooks

        components.append(StreamingServerHooks(config))
    if config.whip.enabled:
        from livemod.app.whip import WhipIngest

        components.append(WhipIngest(config))
    return components


class Daemon:
    """Owns every long-lived part. ``start`` then ``serve_forever`` or ``stop``."""

    def __init__(self, config: Config, analyzers: list[FrameAnalyzer] | None = None) -> None:
        self.config = config
        self.policy = load_policy(config.policy)
        self.engine = VoteEngine(self.policy)
        self.speech = build_speech(config, self.policy)
        self.analysis = AnalysisService(
            analyzers if analyzers is not None else build_analyzers(config),
            stages=build_stages(config),
            workers=config.vision.workers,
            batch=BatchPolicy(config.vision.batch_size, config.vision.batch_wait_ms / 1000.0),
        )
        self.store = Store(config.store.path, config.evidence_dir)
        self.hub = EventHub(self.store, queue_size=config.websocket.queue_size)
        self.events = EventServer(
            self.hub, config.websocket.host, config.websocket.port, config.http.token
        )
        self.components: list[Component] = build_components(config)
        self.sessions: dict[str, Session] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._http: Any = None
        self._sweeper: asyncio.Task[None] | None = None
        self.started_at = time.time()

    async def start(self) -> None:
        from livemod.app.api import start_http

        await self.store.open()
        orphans = await self.store.close_orphan_sessions()
        if orphans:
            log.warning("marked %d sessions of a previous run as interrupted", len(orphans))
        for orphan in orphans:
            # Subscribers (and enforcers) learn that these sessions ended, and which
            # actions they left standing: nothing in this process will ever stop them.
            await self.hub.publish(
                session_event(
                    "interrupted",
                    stream_id=orphan["id"],
                    user_id=orphan["user_id"],
                    room_id=orphan["room_id"],
                    reason="daemon_restart",
                    source=orphan["source"],
                    standing_actions=orphan["standing_actions"],
                )
            )
        await self.events.start()
        for component in self.components:
            await component.start(self)
        self._http = await start_http(self)
        self._sweeper = asyncio.create_task(self._sweep_evidence())
        self._export_gauges()
        log.info(
            "livemod ready",
            extra={"http_port": self.http_port, "ws_port": self.events.port},
        )

    def _export_gauges(self) -> None:
        """Gauges computed at scrape time from live state, so they are never stale."""

        def sessions() -> list[Session]:
            return list(self.sessions.values())

        metrics.ANALYSIS_LAG.set_function(
            lambda: max((s.last_lag_s for s in sessions() if s.status == "live"), default=0.0)
        )
        metrics.QUEUE_DEPTH.labels("analysis_queue").set_function(
            lambda: sum(s.queued for s in sessions())
        )
        metrics.QUEUE_DEPTH.labels("inference").set_function(lambda: self.analysis.pending)
        metrics.QUEUE_DEPTH.labels("websocket").set_function(lambda: self.hub.backlog)

    @property
    def http_port(self) -> int:
        return int(self._http.port) if self._http is not None else self.config.http.port

    async def stop(self) -> None:
        """Ordered shutdown: stop accepting, end sessions, close servers, store last."""
        if self._http is not None:
            await self._http.close()
            self._http = None
        for session in list(self.sessions.values()):
            session.stop()
        if self._tasks:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        for component in reversed(self.components):
            try:
                await component.stop()
            except Exception:
                log.exception("component failed to stop", extra={"component": component.name})
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        await self.events.close()
        self.analysis.close()
        if self.speech is not None:
            self.speech.close()
        await self.store.close()

    async def start_session(
        self,
        url: str,
        user_id: str,
        room_id: str,
        *,
        metadata: dict[str, Any] | None = None,
        realtime: bool = False,
        source: SourceFactory | None = None,
    ) -> Session:
        active = sum(1 for s in self.sessions.values() if s.status in ("starting", "live"))
        if active >= self.config.ingest.max_sessions:
            raise RequestError(f"at capacity: {active} sessions (ingest.max_sessions)", status=503)
        info = SessionInfo(
            id=uuid.uuid4().hex[:16],
            user_id=user_id,
            room_id=room_id,
            url=url,
            realtime=realtime,
            metadata=metadata or {},
        )
        session = Session(
            info,
            self.config,
            self.analysis,
            self.engine,
            self.hub,
            source=source,
            # Pushed sources (WHIP) hand over video only, so far.
            speech=self.speech,
        )
        await self.store.add_session(info.id, user_id, room_id, url, info.source, info.metadata)
        self.sessions[info.id] = session
        await session.announce("started", url=url, source=info.source)
        self._tasks[info.id] = asyncio.create_task(self._run_session(session))
        return session

    async def _run_session(self, session: Session) -> None:
        sid = session.info.id
        try:
            end = await session.run()
            if end.reason == "error":
                log.warning("session failed", extra={"stream_id": sid, "error": end.error})
                metrics.SESSIONS_ENDED.labels("error").inc()
                await session.announce("error", error=end.error)
            else:
                metrics.SESSIONS_ENDED.labels(end.reason).inc()
                await session.announce(
                    "ended", reason=end.reason, frames=end.frames_decoded, samples=session.samples
                )
            await self.store.end_session(sid, session.status, end.error)
        except Exception as exc:  # one stream must never take the daemon down
            log.exception("session crashed", extra={"stream_id": sid})
            session.status = "failed"
            session.error = f"internal error: {exc}"
            metrics.SESSIONS_ENDED.labels("crash").inc()
            # Subscribers and the store still learn that this stream is no longer moderated.
            with contextlib.suppress(Exception):
                await session.announce("error", error=session.error)
                await self.store.end_session(sid, "failed", session.error)
        finally:
            self._tasks.pop(sid, None)
            # Keep finished sessions visible for a while; the store keeps them for good.
            asyncio.get_running_loop().call_later(300.0, self.sessions.pop, sid, None)

    async def stop_session(self, session_id: str) -> Session:
        session = self.sessions.get(session_id)
        if session is None:
            raise RequestError(f"no stream with id {session_id}", status=404)
        session.stop()
        task = self._tasks.get(session_id)
        if task is not None:
            await asyncio.wait({task}, timeout=10.0)
        return session

    async def _sweep_evidence(self) -> None:
        retention = self.config.store.retention_days * 86400.0
        while True:
            try:
                removed = await self.store.purge_evidence(retention)
                if removed:
                    log.info("evidence retention removed %d files", removed)
            except Exception:
                log.exception("evidence sweep failed")
            await asyncio.sleep(RETENTION_SWEEP_S)
