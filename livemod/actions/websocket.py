"""The event WebSocket: ``ws://HOST:PORT/v1/events[?room_id=&user_id=&since=SEQ]``.

One JSON object per message. ``since`` replays committed events with a larger
``seq`` from the store before live ones; the switch-over is gap-free because the
live subscription is taken before the replay is read, and duplicates are skipped
by ``seq``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from livemod.events.hub import EventFilter, EventHub

log = logging.getLogger(__name__)

PATH = "/v1/events"


class EventServer:
    """Serves the event stream. ``start`` binds; ``close`` drains and stops."""

    def __init__(self, hub: EventHub, host: str, port: int, token: str | None = None) -> None:
        self._hub = hub
        self._host = host
        self._port = port
        self._token = token
        self._server: Server | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            return self._port
        sock = next(iter(self._server.sockets))
        return int(sock.getsockname()[1])

    async def start(self) -> None:
        self._server = await serve(
            self._handle,
            self._host,
            self._port,
            process_request=self._check_request,
            max_size=4096,
            ping_interval=20,
        )

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def _check_request(self, conn: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        if parts.path != PATH:
            return conn.respond(404, f"unknown path {parts.path}; events are at {PATH}\n")
        if self._token is not None:
            auth = request.headers.get("Authorization", "")
            query_token = parse_qs(parts.query).get("token", [""])[0]
            if auth != f"Bearer {self._token}" and query_token != self._token:
                return conn.respond(401, "missing or wrong bearer token\n")
        try:
            _parse_query(parts.query)
        except ValueError as exc:
            return conn.respond(400, f"{exc}\n")
        return None

    async def _handle(self, conn: ServerConnection) -> None:
        assert conn.request is not None
        flt, since = _parse_query(urlsplit(conn.request.path).query)
        sub = self._hub.subscribe(flt)
        # The loop waits on the queue, so it must also notice the peer leaving;
        # otherwise a gone subscriber's handler would wait forever.
        closed = asyncio.ensure_future(conn.wait_closed())
        overflow = asyncio.ensure_future(sub.overflowed.wait())
        try:
            # Never an event at or before ?since=, even when the replay is empty (an
            # instance still catching up on the cluster's log fans out older events).
            last = since if since is not None else -1
            if since is not None:
                replay = await self._hub.store.events_since(
                    since, room_id=flt.room_id, user_id=flt.user_id, stream_id=flt.stream_id
                )
                for event in replay:
                    await conn.send(json.dumps(event))
                    last = int(event["seq"])
            while True:
                get = asyncio.ensure_future(sub.queue.get())
                done, _ = await asyncio.wait(
                    {get, closed, overflow}, return_when=asyncio.FIRST_COMPLETED
                )
                if get not in done:
                    get.cancel()
                    if overflow in done:
                        await conn.close(1013, "subscriber too slow; reconnect with ?since=")
                    return
                live: dict[str, Any] = get.result()
                if int(live["seq"]) <= last:
                    continue
                await conn.send(json.dumps(live))
                last = int(live["seq"])
        except ConnectionClosed:
            pass
        finally:
            closed.cancel()
            overflow.cancel()
            self._hub.unsubscribe(sub)


MAX_SEQ = 2**63 - 1
_SEQ = re.compile(r"[0-9]{1,19}")


def _parse_query(query: str) -> tuple[EventFilter, int | None]:
    params = parse_qs(query)
    unknown = set(params) - {"room_id", "user_id", "stream_id", "since", "token"}
    if unknown:
        raise ValueError(f"unknown query parameter(s): {', '.join(sorted(unknown))}")

    def one(name: str) -> str | None:
        values = params.get(name)
        return values[-1] if values else None

    since_raw = one("since")
    since: int | None = None
    if since_raw is not None:
        # ASCII digits only (str.isdigit admits "²"), within SQLite's 64-bit integers.
        if not _SEQ.fullmatch(since_raw) or int(since_raw) > MAX_SEQ:
            raise ValueError(f"since must be an integer from 0 to {MAX_SEQ} (the last seq seen)")
        since = int(since_raw)
    flt = EventFilter(room_id=one("room_id"), user_id=one("user_id"), stream_id=one("stream_id"))
    return flt, since
