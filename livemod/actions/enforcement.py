"""Enforcing committed ``end``/``pause`` actions on streaming servers, and recording
every attempt (or refusal, or failure) as an event ``{"type": "enforcement", ...}``.

Driven by :class:`livemod.app.hooks.StreamingServerHooks`, which knows which
publisher a session reads; the server calls themselves are in
:mod:`livemod.actions.enforcers`. Calls for one room run one at a time, in event
order, so a pause's redirect finishes before its lift starts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Coroutine
from typing import TYPE_CHECKING, Any

import aiohttp

from livemod import metrics
from livemod.actions.enforcers import Enforcer, EnforceResult, build_enforcers
from livemod.config import EnforceConfig
from livemod.events.types import EnforcementEvent, EnforceOp
from livemod.ingest.hooks import HookCall, Identity, Server
from livemod.ingest.rooms import Hold, Publisher, RoomTable
from livemod.pipeline.standing import publish_decisions

if TYPE_CHECKING:
    from livemod.pipeline.runtime import Runtime

log = logging.getLogger(__name__)


class Enforcement:
    """Owns the enforcers' HTTP client and the tasks that call them."""

    def __init__(self, config: EnforceConfig, rooms: RoomTable) -> None:
        self._config = config
        self._rooms = rooms
        self._runtime: Runtime | None = None
        self._http: aiohttp.ClientSession | None = None
        self._enforcers: dict[Server, Enforcer] = {}
        self._room_locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, runtime: Runtime) -> None:
        self._runtime = runtime
        c = self._config
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=c.timeout_s))
        self._enforcers = build_enforcers(
            nginx_control_url=c.nginx_control_url,
            mediamtx_api_url=c.mediamtx_api_url,
            srs_api_url=c.srs_api_url,
            http=self._http,
        )

    async def close(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.close()

    @property
    def runtime(self) -> Runtime:
        assert self._runtime is not None, "enforcement not started"
        return self._runtime

    # -- from committed action events ------------------------------------------------

    def on_action(self, event: dict[str, Any], pub: Publisher) -> None:
        """Act on ``pub``'s server for an action event of its session (in the background)."""
        action, state = event.get("action"), event.get("state")
        room = str(event.get("room_id", ""))
        if action == "end" and state == "start":
            drop = self._enforcers[pub.server].drop(pub)
            self.spawn(self._locked(room, self._enforce(pub, "end", drop, event)))
        elif action == "pause" and state == "start" and not pub.held:
            self.spawn(self._locked(room, self._move(pub, "pause", event, hold=True)))
        elif action == "pause" and state == "stop" and pub.held and not self._holding(room):
            self.spawn(self._locked(room, self._move(pub, "resume", event, hold=False)))

    def _holding(self, room: str) -> bool:
        return self._rooms.held(room, "end") or self._rooms.held(room, "pause")

    async def _move(
        self, pub: Publisher, what: EnforceOp, event: dict[str, Any], *, hold: bool
    ) -> None:
        to_name = self._rooms.hold_name(pub.name) if hold else pub.name
        self._rooms.expect_move(pub, to_name)
        move = self._enforcers[pub.server].move(pub, to_name)
        result = await self._enforce(pub, what, move, event)
        if not result.ok:
            self._rooms.cancel_move(pub, to_name)

    async def _enforce(
        self,
        pub: Publisher,
        what: EnforceOp,
        call: Awaitable[EnforceResult],
        event: dict[str, Any] | None,
    ) -> EnforceResult:
        started = time.perf_counter()
        result = await call
        metrics.ENFORCEMENTS.labels(pub.server, what, "ok" if result.ok else "failed").inc()
        if not result.ok:
            extra = {"server": pub.server, "action": what, "detail": result.detail}
            log.warning("enforcement failed", extra=extra)
        await self.record(pub, what, result, event, ms=(time.perf_counter() - started) * 1000)
        return result

    # -- from hooks ----------------------------------------------------------------------

    async def refused(
        self, call: HookCall, who: Identity, reason: str, *, operation: str = "refuse publish"
    ) -> None:
        """A publish was refused: an end stands for its room (``refuse publish``), or
        its pull URL is not one the daemon may open (``refuse pull``)."""
        ids = {"user_id": who.user_id, "room_id": who.room_id, "server": call.server}
        await self.record(None, "refuse", EnforceResult(True, operation, reason), None, ids)
        if call.ready and call.server == "mediamtx":
            # runOnReady comes after MediaMTX accepted the publish: kick it instead.
            pub = Publisher(call.server, call.app, call.name, who, call.client_id, call)
            await self._enforce(pub, "refuse", self._enforcers["mediamtx"].drop(pub), None)

    async def held_on_publish(self, pub: Publisher) -> None:
        """A returning publisher went straight to the holding stream (302)."""
        result = EnforceResult(True, "redirect on publish", f"held on {pub.stream_name}")
        await self.record(pub, "pause", result, None)

    async def lift(self, hold: Hold) -> None:
        """An end's refusal lapsed: lift it, so the vote starts afresh for it."""
        runtime = self.runtime
        stop = runtime.engine.release(hold.key, hold.category, t_now=time.time(), fresh=True)
        if stop is not None:
            await publish_decisions(runtime, [stop], hold.event, origin="expired")

    # -- events ------------------------------------------------------------------------

    async def record(
        self,
        pub: Publisher | None,
        what: EnforceOp,
        result: EnforceResult,
        event: dict[str, Any] | None,
        ids: dict[str, str] | None = None,
        *,
        ms: float | None = None,
    ) -> None:
        """Commit and broadcast one enforcement event."""
        fields: dict[str, Any] = {}
        if pub is not None:
            fields.update(
                server=pub.server,
                stream_id=pub.session_id,
                user_id=pub.who.user_id,
                room_id=pub.who.room_id,
                stream=pub.stream_name,
            )
        fields.update(ids or {})
        if event is not None:
            fields["trigger_seq"] = event.get("seq")
            fields["category"] = event.get("category")
        if ms is not None:
            fields["took_ms"] = round(ms, 1)
        body = EnforcementEvent(
            action=what,
            ok=result.ok,
            operation=result.operation,
            detail=result.detail,
            status=result.status,
            **fields,
        )
        await self.runtime.hub.publish(body)

    async def _locked(self, room: str, work: Awaitable[Any]) -> None:
        lock = self._room_locks.setdefault(room, asyncio.Lock())
        async with lock:
            await work

    def spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run ``work`` in the background; ``close`` waits for it."""
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
