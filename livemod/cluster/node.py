"""This instance's part in the cluster: Redis clients, heartbeats, leases, failover,
placement of new streams, and ``GET /v1/cluster``.

One heartbeat (every ``cluster.heartbeat_s``) publishes this instance's card, takes
or renews the lease of each pull session it runs, gives up the lease of each that
ended, stops any whose lease another instance took (a split brain after a pause), and
claims orphaned sessions while it is the least-loaded live instance. A ``POST
/v1/streams`` that reaches an instance which is not the least loaded is forwarded to
the one that is, over its HTTP address, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import redis
import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import RedisError

from livemod import metrics
from livemod.cluster.eventlog import RedisEventLog
from livemod.cluster.leases import Card, Leases, Spec
from livemod.cluster.models import ClusterOverview
from livemod.cluster.votes import RedisVoteStore
from livemod.config import ClusterConfig
from livemod.errors import ConfigError
from livemod.events.types import SessionEvent, StandingAction
from livemod.pipeline.runtime import Runtime
from livemod.pipeline.session import Session
from livemod.web import respond

log = logging.getLogger(__name__)

PLACED_HEADER = "X-Livemod-Placed"
HttpUrl = Callable[[], str]


class ClusterNode:
    """A :class:`~livemod.pipeline.runtime.Component` joining this daemon to the cluster."""

    name = "cluster"

    def __init__(self, config: ClusterConfig, http_url: HttpUrl | None = None) -> None:
        self.config = config
        self.instance = config.instance_id or f"{socket.gethostname()}:{os.getpid()}"
        timeout = config.timeout_s
        url = config.redis_url
        self.redis = aioredis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        # XREAD blocks up to a second: its client waits longer than that.
        self.tail_redis = aioredis.Redis.from_url(
            url, socket_timeout=timeout + 2.0, socket_connect_timeout=timeout
        )
        self.votes = RedisVoteStore(
            redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout),
            ttl_s=config.vote_ttl_s,
            retry_s=config.heartbeat_s,
        )
        self.log = RedisEventLog(self.tail_redis)
        self.leases = Leases(self.redis, self.instance, config.lease_ttl_s)
        self.http_url: HttpUrl = http_url or (lambda: "")
        self._runtime: Runtime | None = None
        self._task: asyncio.Task[None] | None = None
        self._held: set[str] = set()
        self._starting: set[str] = set()
        self._lost: set[str] = set()
        """Sessions whose lease another instance took: stopped here, its spec kept."""
        self.failure: str | None = None
        self._ok_since = time.monotonic()
        self.takeovers = 0
        self._http: aiohttp.ClientSession | None = None

    async def check(self) -> None:
        """Fail start-up with the setting's name when Redis does not answer."""
        try:
            await self.redis.ping()
        except (RedisError, OSError) as exc:
            raise ConfigError(
                f"cluster.redis_url={self.config.redis_url!r}: Redis does not answer: {exc}"
            ) from exc

    async def carried_on(self, session_id: str) -> bool:
        """Whether a session this instance ran before a restart is still tracked by the
        cluster (so another instance moderates it, or will)."""
        try:
            return await self.leases.tracked(session_id)
        except (RedisError, OSError):
            return False

    def degraded(self) -> list[str]:
        reasons = []
        if self.failure is not None:
            reasons.append(f"cluster: {self.failure}")
        if self.votes.degraded is not None:
            reasons.append(f"votes: {self.votes.degraded} (moderating with local state)")
        return reasons

    # -- Component ------------------------------------------------------------------

    async def start(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10.0))
        self._task = asyncio.create_task(self._beat_forever(), name="livemod-cluster")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        with contextlib.suppress(RedisError, OSError):
            await self.leases.withdraw_card()
        if self._http is not None:
            await self._http.close()
        # The log's client closes with the hub, after the last event is appended.
        await self.redis.aclose()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/cluster", self._cluster_view)
        app.middlewares.append(self._place)

    # -- heartbeat ------------------------------------------------------------------

    async def _beat_forever(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.beat()
                if self.failure is not None:
                    log.warning("cluster heartbeat back")
                self.failure = None
                metrics.CLUSTER_REDIS_UP.set(1)
            except (RedisError, OSError) as exc:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    # redis-py turned our cancellation into a connection error.
                    raise asyncio.CancelledError() from exc
                if self.failure is None:
                    log.error("cluster heartbeat failed; sessions go on here: %s", exc)
                self.failure = f"redis: {exc}"
                self._ok_since = time.monotonic()
                metrics.CLUSTER_REDIS_UP.set(0)
            except Exception:
                log.exception("cluster heartbeat crashed")
            spent = time.monotonic() - started
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise asyncio.CancelledError()  # swallowed by a Redis call meanwhile
            await asyncio.sleep(max(0.0, self.config.heartbeat_s - spent))

    def _pulls(self) -> dict[str, Session]:
        """Sessions this instance runs: pulls move on failover; a WHIP publisher, bound
        to its peer connection here, is announced ``interrupted`` instead."""
        assert self._runtime is not None
        return {
            sid: s for sid, s in self._runtime.sessions.items() if s.status in ("starting", "live")
        }

    async def beat(self) -> None:
        """One heartbeat (public for tests and benchmarks)."""
        assert self._runtime is not None
        pulls = self._pulls()
        for sid, session in pulls.items():
            if sid in self._lost:
                continue
            info = session.info
            if sid in self._held:
                held = await self.leases.renew(sid)
            else:
                spec = Spec(sid, info.url, info.user_id, info.room_id, info.realtime, info.metadata)
                held = await self.leases.claim_new(spec)
            if held:
                self._held.add(sid)
            else:
                await self._yield(sid, session)
        for sid in list(self._held - set(pulls) - self._starting):
            self._held.discard(sid)
            await self.leases.release(sid)
        cards = await self._publish_card(len(pulls))
        await self._adopt_orphans(cards, len(pulls))

    async def _publish_card(self, load: int) -> list[Card]:
        card = Card(self.instance, self.http_url(), load, tuple(sorted(self._held)), time.time())
        await self.leases.publish_card(card)
        return await self.leases.cards()

    async def _yield(self, sid: str, session: Session) -> None:
        owner = await self.leases.owner(sid)
        log.warning(
            "another instance owns this session now; stopping the copy here",
            extra={"stream_id": sid, "owner": owner},
        )
        self._lost.add(sid)
        self._held.discard(sid)
        metrics.CLUSTER_YIELDED.inc()
        session.stop()

    async def _adopt_orphans(self, cards: list[Card], load: int) -> None:
        # Right after Redis comes back every lease may have lapsed: owners get one lease
        # time to take theirs back before anyone adopts them.
        if time.monotonic() - self._ok_since < self.config.lease_ttl_s:
            return
        orphans = [o for o in await self.leases.orphans() if o.id not in self._pulls()]
        if not orphans:
            return
        others = [(c.load, c.id) for c in cards if c.id != self.instance]
        for spec in orphans:
            if others and min(others) < (load, self.instance):
                return  # a less-loaded instance takes the rest
            if not await self.leases.take(spec.id):
                continue
            if spec.url.startswith("whip:"):
                await self._interrupted(spec)
                continue
            load += 1
            await self._restart(spec)

    async def _interrupted(self, spec: Spec) -> None:
        """A WHIP publisher's instance died: its peer connection died with it. Say so
        (and what stands: the vote state is shared), and forget the session."""
        runtime = self._runtime
        assert runtime is not None
        standing = runtime.engine.standing(f"{spec.user_id}:{spec.room_id}")
        await runtime.hub.publish(
            SessionEvent(
                state="interrupted",
                stream_id=spec.id,
                user_id=spec.user_id,
                room_id=spec.room_id,
                reason="instance_lost",
                source="whip",
                standing_actions=tuple(
                    StandingAction(action=a.action, category=a.category) for a in standing
                ),
            )
        )
        await self.leases.release(spec.id)

    async def _restart(self, spec: Spec) -> None:
        runtime = self._runtime
        assert runtime is not None
        self._held.add(spec.id)
        self._starting.add(spec.id)
        self._lost.discard(spec.id)
        try:
            log.warning(
                "taking over a session of a lost instance",
                extra={"stream_id": spec.id, "room_id": spec.room_id},
            )
            await runtime.sessions.start(
                spec.url,
                spec.user_id,
                spec.room_id,
                metadata=spec.metadata,
                realtime=spec.realtime,
                session_id=spec.id,
            )
            self.takeovers += 1
            metrics.CLUSTER_TAKEOVERS.inc()
        except Exception:
            log.exception("could not take over a session", extra={"stream_id": spec.id})
            self._held.discard(spec.id)
            await self.leases.release(spec.id)
        finally:
            self._starting.discard(spec.id)

    # -- HTTP -----------------------------------------------------------------------

    async def overview(self) -> dict[str, Any]:
        cards = await self.leases.cards()
        return {
            "instance": self.instance,
            "status": "degraded" if self.degraded() else "ok",
            "instances": [
                {
                    "id": c.id,
                    "http": c.http,
                    "load": c.load,
                    "sessions": list(c.sessions),
                    "age_s": round(max(0.0, time.time() - c.ts), 3),
                }
                for c in cards
            ],
            "takeovers": self.takeovers,
        }

    async def _cluster_view(self, request: web.Request) -> web.Response:
        try:
            body = await self.overview()
        except (RedisError, OSError) as exc:
            body = {
                "instance": self.instance,
                "status": "degraded",
                "instances": [],
                "takeovers": self.takeovers,
                "error": f"redis: {exc}",
            }
        return respond(ClusterOverview, body)

    @web.middleware
    async def _place(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Send a new stream to the least-loaded live instance (once)."""
        if request.method != "POST" or request.path != "/v1/streams":
            return await handler(request)
        if request.headers.get(PLACED_HEADER) or self._http is None:
            return await handler(request)
        try:
            cards = await self.leases.cards()
        except (RedisError, OSError):
            return await handler(request)
        mine = len(self._pulls())
        best = min(
            ((c.load if c.id != self.instance else mine, c.id, c.http) for c in cards),
            default=None,
        )
        if best is None or best[1] == self.instance or not best[2]:
            return await handler(request)
        headers = {PLACED_HEADER: self.instance, "Content-Type": "application/json"}
        if "Authorization" in request.headers:
            headers["Authorization"] = request.headers["Authorization"]
        body = await request.read()
        try:
            async with self._http.post(f"{best[2]}/v1/streams", data=body, headers=headers) as resp:
                payload = await resp.read()
                out = web.Response(
                    body=payload, status=resp.status, content_type="application/json"
                )
                if "Location" in resp.headers:
                    out.headers["Location"] = resp.headers["Location"]
                out.headers[PLACED_HEADER] = best[1]
                return out
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("could not place a stream on %s: %s; starting it here", best[1], exc)
            return await handler(request)


class Standalone:
    """``GET /v1/cluster`` of an instance that runs alone (no ``cluster.redis_url``):
    itself, with its sessions, so tools read one shape either way."""

    name = "cluster"

    def __init__(self, http_url: HttpUrl) -> None:
        self.instance = f"{socket.gethostname()}:{os.getpid()}"
        self.http_url = http_url
        self._runtime: Runtime | None = None

    async def start(self, runtime: Runtime) -> None:
        self._runtime = runtime

    async def stop(self) -> None:
        return None

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/cluster", self._view)

    async def _view(self, request: web.Request) -> web.Response:
        sessions = (
            sorted(
                sid for sid, s in self._runtime.sessions.items() if s.status in ("starting", "live")
            )
            if self._runtime is not None
            else []
        )
        me = {
            "id": self.instance,
            "http": self.http_url(),
            "load": len(sessions),
            "sessions": sessions,
            "age_s": 0.0,
        }
        body = {"instance": self.instance, "status": "ok", "instances": [me], "takeovers": 0}
        return respond(ClusterOverview, body)
