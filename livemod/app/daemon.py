"""The daemon: wires config, models, store, event hub, servers and sessions.

Start-up fails fast with one clear error (bad config, missing model, unusable
store). Afterwards one misbehaving stream can only end its own session.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from livemod import metrics
from livemod.actions.websocket import EventServer
from livemod.app.api import start_http
from livemod.app.build import build_analyzers, build_components, build_stages
from livemod.app.known_bad import reloaders
from livemod.cluster.node import ClusterNode, Standalone
from livemod.cluster.reviews import share_reviews
from livemod.config import Config
from livemod.errors import StoreError
from livemod.events.hub import EventHub
from livemod.events.spool import SpoolLimits
from livemod.events.types import SessionEvent, standing_actions
from livemod.ingest.av_source import keep_heap_small
from livemod.ingest.source import SourceFactory
from livemod.pipeline.analysis import AnalysisService
from livemod.pipeline.registry import SessionRegistry
from livemod.pipeline.runtime import Component, Runtime
from livemod.pipeline.session import Session
from livemod.policy.taxonomy import load_policy
from livemod.policy.vote import VoteEngine
from livemod.relay.link import check_delay as check_relay_delay
from livemod.speech.moderator import build_speech
from livemod.store import Store
from livemod.vision.base import FrameAnalyzer
from livemod.vision.batching import BatchPolicy

log = logging.getLogger(__name__)

RETENTION_SWEEP_S = 3600.0


class Daemon:
    """Owns every long-lived part. ``start`` then ``serve_forever`` or ``stop``."""

    def __init__(self, config: Config, analyzers: list[FrameAnalyzer] | None = None) -> None:
        self.config = config
        self.policy = load_policy(config.policy)
        # Several instances (cluster.redis_url): votes and events live in Redis.
        self.cluster = (
            ClusterNode(config.cluster, self._http_url) if config.cluster.redis_url else None
        )
        self.engine = VoteEngine(
            self.policy, store=self.cluster.votes if self.cluster is not None else None
        )
        if config.relay.enabled:
            check_relay_delay(config, self.policy)  # refuse a delay the vote outruns
        self.speech = build_speech(config, self.policy)
        analyzers = analyzers if analyzers is not None else build_analyzers(config)
        self.analysis = AnalysisService(
            analyzers,
            stages=(stages := build_stages(config)),
            workers=config.vision.workers,
            batch=BatchPolicy(config.vision.batch_size, config.vision.batch_wait_ms / 1000.0),
            capacity=config.capacity,
            background_stages=config.capacity.background_stages,
        )
        self.store = Store(config.store.path, config.evidence_dir)
        self.hub = EventHub(
            self.store,
            queue_size=config.websocket.queue_size,
            spool=SpoolLimits(
                max_events=config.store.spool_events,
                max_evidence_bytes=int(config.store.spool_evidence_mb * 1024 * 1024),
            ),
            retry_s=config.store.retry_s,
            shared_log=self.cluster.log if self.cluster is not None else None,
            origin=self.cluster.instance if self.cluster is not None else "",
        )
        self.events = EventServer(
            self.hub, config.websocket.host, config.websocket.port, config.http.token
        )
        self.sessions = SessionRegistry(
            config, self.analysis, self.engine, self.hub, self.store, self.speech
        )
        self.runtime = Runtime(
            config=config,
            policy=self.policy,
            engine=self.engine,
            store=self.store,
            hub=self.hub,
            sessions=self.sessions,
            analyzers=tuple(self.analysis.names),
        )
        self.components: list[Component] = build_components(config, stages)
        self.known_bad = reloaders(analyzers)
        self.components.extend(self.known_bad)
        self.components.append(self.cluster or Standalone(self._http_url))
        if self.cluster is not None:  # one review queue for the cluster
            share_reviews(self.components, self.cluster)
        self._http: Any = None
        self._sweeper: asyncio.Task[None] | None = None
        self.started_at = time.time()

    async def start(self) -> None:
        # Big pictures (an 8K input) must not stay resident once their session ends.
        keep_heap_small()
        if self.cluster is not None:
            await self.cluster.check()
        await self.store.open()
        await self.hub.open()
        orphans = await self.store.close_orphan_sessions()
        if orphans:
            log.warning("marked %d sessions of a previous run as interrupted", len(orphans))
        for orphan in orphans:
            if self.cluster is not None and await self.cluster.carried_on(orphan["id"]):
                continue  # another instance took it over (or will): it is not interrupted
            # Subscribers (and enforcers) learn that these sessions ended, and which
            # actions they left standing: nothing in this process will ever stop them.
            await self.hub.publish(
                SessionEvent(
                    state="interrupted",
                    stream_id=orphan["id"],
                    user_id=orphan["user_id"],
                    room_id=orphan["room_id"],
                    reason="daemon_restart",
                    source=orphan["source"],
                    standing_actions=standing_actions(orphan["standing_actions"]),
                )
            )
        await self.events.start()
        for component in self.components:
            await component.start(self.runtime)
        self._http = await start_http(self.runtime, self.components, self.health)
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

    async def health(self) -> dict[str, Any]:
        """The live part of ``/healthz``: ``degraded`` with its reasons while storage fails."""
        degraded = self.hub.degraded()
        if self.cluster is not None:
            degraded.extend(self.cluster.degraded())
        try:
            last_seq: int | None = await self.store.last_seq()
        except StoreError as exc:
            last_seq = None
            degraded.append(f"store: {exc}")
        return {
            **({"status": "degraded", "degraded": degraded} if degraded else {}),
            "sessions": self.sessions.active,
            "analyzers": self.analysis.names,
            "inference_providers": self.analysis.providers(),
            "inference_precision": self.analysis.precisions(),
            "websocket_port": self.events.port,
            # Where a client (livemod top) starts ?since= to replay only recent events.
            "last_seq": last_seq,
            "uptime_s": round(time.time() - self.started_at, 1),
        }

    def _http_url(self) -> str:
        return f"http://{self.config.http.host}:{self.http_port}"

    @property
    def http_port(self) -> int:
        return int(self._http.port) if self._http is not None else self.config.http.port

    async def reload_known_bad(self) -> None:
        """Reload the known-bad lists (SIGHUP); a failure is logged, the old lists stay."""
        for reloader in self.known_bad:
            await reloader.reload_logged()

    async def stop(self) -> None:
        """Ordered shutdown: stop accepting, end sessions, close servers, store last."""
        if self._http is not None:
            await self._http.close()
            self._http = None
        await self.sessions.close()
        for component in reversed(self.components):
            try:
                await component.stop()
            except Exception:
                log.exception("component failed to stop", extra={"component": component.name})
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        await self.events.close()
        await self.hub.close()
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
        return await self.sessions.start(
            url, user_id, room_id, metadata=metadata, realtime=realtime, source=source
        )

    async def stop_session(self, session_id: str) -> Session:
        return await self.sessions.stop(session_id)

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
