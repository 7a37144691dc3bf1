"""``livemod top``: a terminal view of a running daemon.

Reads what any client can: ``GET /healthz``, ``GET /v1/streams``, ``GET /metrics``
and the event WebSocket (recent actions are replayed with ``?since=``). ``--once``
prints one snapshot and exits; otherwise the screen is redrawn every interval and
latency quantiles cover the last interval rather than the daemon's whole life.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import deque
from dataclasses import dataclass
from typing import Any, TextIO
from urllib.parse import urlsplit

import aiohttp
import websockets

from livemod.app.topview import MetricsView, parse_metrics, render
from livemod.errors import LivemodError

RECENT_ACTIONS = 10
REPLAY_EVENTS = 200
"""How far back (in events) the view looks for recent actions when it starts."""


@dataclass(frozen=True, slots=True)
class Target:
    base: str
    token: str | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def events_url(self, ws_port: int, since: int) -> str:
        host = urlsplit(self.base).hostname or "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"ws://{host}:{ws_port}/v1/events?since={since}"


@dataclass(frozen=True, slots=True)
class Poll:
    health: dict[str, Any]
    streams: list[dict[str, Any]]
    metrics: MetricsView


async def poll(http: aiohttp.ClientSession, target: Target) -> Poll:
    """Health, ongoing streams and metrics, fetched side by side."""

    async def get(path: str) -> tuple[int, str]:
        async with http.get(target.base + path, headers=target.headers) as resp:
            return resp.status, await resp.text()

    try:
        (hs, health), (ss, streams), (ms, metrics) = await asyncio.gather(
            get("/healthz"), get("/v1/streams"), get("/metrics")
        )
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise LivemodError(f"cannot reach livemod at {target.base}: {exc}") from exc
    for status, path, body in ((hs, "/healthz", health), (ss, "/v1/streams", streams)):
        if status != 200:
            raise LivemodError(f"{target.base}{path} answered {status}: {body.strip()[:200]}")
    if ms != 200:
        raise LivemodError(f"{target.base}/metrics answered {ms}")
    return Poll(json.loads(health), json.loads(streams)["streams"], parse_metrics(metrics))


async def _follow(
    target: Target, health: dict[str, Any], recent: deque[dict[str, Any]], caught_up: asyncio.Event
) -> None:
    """Keep ``recent`` filled with the latest action events; set ``caught_up`` once the
    replay reached the ``last_seq`` that health reported."""
    last_seq = int(health.get("last_seq", 0))
    since = max(0, last_seq - REPLAY_EVENTS)
    if last_seq <= since:
        caught_up.set()
    url = target.events_url(int(health["websocket_port"]), since)
    # proxy=None: the daemon is reached directly, whatever proxy the shell exports.
    async with websockets.connect(url, additional_headers=target.headers, proxy=None) as ws:
        async for raw in ws:
            event = json.loads(raw)
            if event.get("type") == "action":
                recent.appendleft(event)
            if int(event.get("seq", 0)) >= last_seq:
                caught_up.set()


async def snapshot(target: Target, *, timeout_s: float = 5.0) -> str:
    """One screen: what ``--once`` prints. Quantiles cover the daemon's lifetime."""
    recent: deque[dict[str, Any]] = deque(maxlen=RECENT_ACTIONS)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        state = await poll(http, target)
    caught_up = asyncio.Event()
    follower = asyncio.create_task(_follow(target, state.health, recent, caught_up))
    try:
        await asyncio.wait(
            {follower, asyncio.create_task(caught_up.wait())},
            timeout=timeout_s,
            return_when=asyncio.FIRST_COMPLETED,
        )
    finally:
        follower.cancel()
        (failure,) = await asyncio.gather(follower, return_exceptions=True)
    if isinstance(failure, Exception):
        print(f"livemod top: event stream unavailable: {failure}", file=sys.stderr)
    return render(
        base=target.base,
        health=state.health,
        streams=state.streams,
        metrics=state.metrics,
        previous=None,
        actions=list(recent),
        window="since start",
    )


async def watch(target: Target, interval_s: float, out: TextIO = sys.stdout) -> None:
    """Redraw every ``interval_s`` until interrupted."""
    recent: deque[dict[str, Any]] = deque(maxlen=RECENT_ACTIONS)
    timeout = aiohttp.ClientTimeout(total=max(5.0, interval_s))
    follower: asyncio.Task[None] | None = None
    previous: MetricsView | None = None
    async with aiohttp.ClientSession(timeout=timeout) as http:
        try:
            while True:
                state = await poll(http, target)
                if follower is None or follower.done():
                    # (Re)connect: a restarted daemon or a dropped socket is picked up again.
                    follower = asyncio.create_task(
                        _follow(target, state.health, recent, asyncio.Event())
                    )
                screen = render(
                    base=target.base,
                    health=state.health,
                    streams=state.streams,
                    metrics=state.metrics,
                    previous=previous,
                    actions=list(recent),
                    window=f"last {interval_s:g} s" if previous else "since start",
                )
                out.write("\x1b[H\x1b[2J" + screen)  # home, clear screen
                out.flush()
                previous = state.metrics
                await asyncio.sleep(interval_s)
        finally:
            if follower is not None:
                follower.cancel()
                await asyncio.gather(follower, return_exceptions=True)


def run(base: str, *, token: str | None, once: bool, interval_s: float) -> int:
    """Entry point of ``livemod top``."""
    target = Target(base.rstrip("/"), token)
    if once:
        sys.stdout.write(asyncio.run(snapshot(target)))
        return 0
    asyncio.run(watch(target, interval_s))
    return 0
