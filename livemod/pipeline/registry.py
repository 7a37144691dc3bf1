"""The session registry: starts, finds and stops the sessions of one process.

Everything that turns a request or a publish into moderation (the HTTP API, WHIP,
the streaming-server hooks) goes through ``start``; whatever happens inside one
session ends only that session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

from livemod import metrics
from livemod.config import Config
from livemod.errors import RequestError, StoreError
from livemod.events.hub import EventHub
from livemod.ingest.av_source import SourceEnd
from livemod.ingest.source import SourceFactory
from livemod.logs import redact_credentials
from livemod.pipeline.analysis import AnalysisService
from livemod.pipeline.rates import RateLoop
from livemod.pipeline.session import Session, SessionInfo
from livemod.policy.vote import VoteEngine
from livemod.speech.moderator import SpeechSetup
from livemod.store import Store

log = logging.getLogger(__name__)

FINISHED_KEPT_S = 300.0
"""How long a finished session stays visible here (the store keeps it for good)."""


class SessionRegistry(Mapping[str, Session]):
    """Live (and recently finished) sessions by id, and the tasks that run them."""

    def __init__(
        self,
        config: Config,
        analysis: AnalysisService,
        engine: VoteEngine,
        hub: EventHub,
        store: Store,
        speech: SpeechSetup | None,
    ) -> None:
        self._config = config
        self._analysis = analysis
        self._engine = engine
        self._hub = hub
        self._store = store
        self._speech = speech
        self._sessions: dict[str, Session] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        # Adaptive rates and overload shedding (capacity.rates), started with the first session.
        rates = config.capacity.rates
        self._rates = (
            RateLoop(self._sessions, engine, rates, config.sampling) if rates.enabled else None
        )

    def __getitem__(self, session_id: str) -> Session:
        return self._sessions[session_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._sessions)

    def __len__(self) -> int:
        return len(self._sessions)

    @property
    def active(self) -> int:
        """Sessions starting or live (finished ones do not count against the cap)."""
        return sum(1 for s in self._sessions.values() if s.status in ("starting", "live"))

    async def start(
        self,
        url: str,
        user_id: str,
        room_id: str,
        *,
        metadata: dict[str, Any] | None = None,
        realtime: bool = False,
        source: SourceFactory | None = None,
        session_id: str | None = None,
        relay: bool | None = None,
    ) -> Session:
        """Register, announce and start one session; refuse past ``ingest.max_sessions``.

        ``session_id``: keep the id of a session taken over from another instance."""
        active = self.active
        if active >= self._config.ingest.max_sessions:
            raise RequestError(f"at capacity: {active} sessions (ingest.max_sessions)", status=503)
        info = SessionInfo(
            id=session_id or uuid.uuid4().hex[:16],
            user_id=user_id,
            room_id=room_id,
            url=url,
            realtime=realtime,
            metadata=metadata or {},
            relay=relay,
        )
        session = Session(
            info,
            self._config,
            self._analysis,
            self._engine,
            self._hub,
            blocking=info.backpressure,
            source=source,
            speech=self._speech,
        )
        # The session opens the real URL; the store (and GET /v1/streams) keeps it masked.
        stored_url = redact_credentials(url)
        await self._store.add_session(
            info.id, user_id, room_id, stored_url, info.source, info.metadata
        )
        self._sessions[info.id] = session
        await session.announce("started", url=url, source=info.source)
        self._tasks[info.id] = asyncio.create_task(self._run(session))
        if self._rates is not None:
            self._rates.start()
        return session

    def adopt(self, session: Session) -> None:
        """Register a session that its owner drives itself (not run by the registry):
        in-process feeders and benchmarks push samples into its ring by hand."""
        self._sessions[session.info.id] = session

    async def stop(self, session_id: str) -> Session:
        """Stop one session and wait (a bounded time) for it to end."""
        session = self._sessions.get(session_id)
        if session is None:
            raise RequestError(f"no stream with id {session_id}", status=404)
        session.stop()
        task = self._tasks.get(session_id)
        if task is not None:
            await asyncio.wait({task}, timeout=10.0)
        return session

    async def close(self) -> None:
        """Stop every session and wait for all of them."""
        if self._rates is not None:
            await self._rates.aclose()
        for session in list(self._sessions.values()):
            session.stop()
        if self._tasks:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def _record_end(self, sid: str, status: str, error: str | None) -> None:
        try:
            masked = redact_credentials(error) if error is not None else None
            await self._store.end_session(sid, status, masked)
        except StoreError as exc:
            # The ended event is out (spooled if need be); a restart marks the row.
            log.warning(
                "could not record the session's end", extra={"stream_id": sid, "error": str(exc)}
            )

    async def _run(self, session: Session) -> None:
        sid = session.info.id
        try:
            end = await session.run()
            if end.reason == "error":
                log.warning(
                    "session failed",
                    extra={"stream_id": sid, "error": end.error, "cause": end.cause},
                )
                metrics.SESSIONS_ENDED.labels("error").inc()
                await session.announce("error", **_error_fields(end))
            else:
                metrics.SESSIONS_ENDED.labels(end.reason).inc()
                await session.announce(
                    "ended", reason=end.reason, frames=end.frames_decoded, samples=session.samples
                )
            await self._record_end(sid, session.status, end.error)
        except Exception as exc:  # one stream must never take the daemon down
            log.exception("session crashed", extra={"stream_id": sid})
            session.status = "failed"
            session.error = f"internal error: {exc}"
            metrics.SESSIONS_ENDED.labels("crash").inc()
            # Subscribers and the store still learn that this stream is no longer moderated.
            with contextlib.suppress(Exception):
                await session.announce("error", error=session.error)
                await self._record_end(sid, "failed", session.error)
        finally:
            self._tasks.pop(sid, None)
            asyncio.get_running_loop().call_later(FINISHED_KEPT_S, self._sessions.pop, sid, None)


def _error_fields(end: SourceEnd) -> dict[str, Any]:
    """The ``error`` session event's fields: the message, and the cause where known."""
    fields: dict[str, Any] = {"error": end.error}
    if end.cause is not None:
        fields["reason"] = end.cause
    return fields
