"""Signed webhooks with a persisted outbox.

Committed events matching ``webhooks.event_types`` (actions at or above
``webhooks.min_severity``) are written to an outbox table in the store, one row
per endpoint, in the same transaction that advances this component's cursor. So
a restart loses nothing: undelivered rows are sent after it, and events
committed while the daemon was going down are picked up by replaying from the
cursor. Each endpoint has its own delivery loop, so a dead endpoint delays only
itself and never the moderation pipeline.

Each request carries::

    X-Livemod-Timestamp: <unix seconds>
    X-Livemod-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>." + body)>
    Idempotency-Key: <stable per event and endpoint, the same on every retry>

Receivers check the signature, reject stale timestamps, and ignore a key they
have already processed. Anything but a 2xx is retried with jittered exponential
backoff until ``webhooks.give_up_after_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import random
import time
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from livemod import __version__, metrics
from livemod.actions.outbox import Outbox, OutboxRow
from livemod.config import WebhooksConfig
from livemod.errors import ConfigError
from livemod.events.groups import follow_group
from livemod.policy.taxonomy import severity

if TYPE_CHECKING:
    from livemod.pipeline.runtime import Runtime

log = logging.getLogger(__name__)

_SEVERITY_RANK = {"none": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}
IDLE_POLL_S = 5.0


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The ``X-Livemod-Signature`` value for one request."""
    mac = hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def verify(
    secret: bytes,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    now: float | None = None,
    tolerance_s: float = 300.0,
) -> bool:
    """What a receiver does: a matching signature on a fresh timestamp."""
    try:
        age = abs((time.time() if now is None else now) - float(timestamp))
    except ValueError:
        return False
    return age <= tolerance_s and hmac.compare_digest(sign(secret, timestamp, body), signature)


def wanted(event: dict[str, Any], config: WebhooksConfig) -> bool:
    """Whether an event goes to the webhooks: its type is configured and, when it
    carries a confidence (actions, escalations), its severity is high enough."""
    if event.get("type") not in config.event_types:
        return False
    confidence = event.get("confidence")
    if event.get("type") != "action" or not isinstance(confidence, int | float):
        return True
    return _SEVERITY_RANK[severity(float(confidence))] >= _SEVERITY_RANK[config.min_severity]


def backoff_s(attempts: int, config: WebhooksConfig, rng: random.Random) -> float:
    """Delay before the next try after ``attempts`` failed ones (half jittered)."""
    ceiling = min(config.backoff_max_s, config.backoff_base_s * (2.0 ** max(0, attempts - 1)))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


class WebhookSender:
    """A daemon component, enabled by a non-empty ``webhooks.urls``."""

    name = "webhooks"

    def __init__(self, config: WebhooksConfig, *, rng: random.Random | None = None) -> None:
        self._cfg = config
        self._rng = rng or random.Random()
        self._secret = b""
        self._outbox: Outbox | None = None
        self._http: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = {url: asyncio.Event() for url in config.urls}

    @property
    def outbox(self) -> Outbox:
        if self._outbox is None:
            raise RuntimeError("webhooks are not started")
        return self._outbox

    async def start(self, runtime: Runtime) -> None:
        secret = os.environ.get(self._cfg.secret_env, "")
        if not secret:
            raise ConfigError(
                f"webhooks.urls is set but the signing secret env var {self._cfg.secret_env}"
                " is empty (webhooks.secret_env)"
            )
        self._secret = secret.encode()
        self._outbox = Outbox(runtime.store)
        await self._outbox.open()
        cursor = await self._outbox.cursor()
        if cursor is None:
            # A new endpoint starts with what happens from now on, not the history.
            cursor = await runtime.store.last_seq()
            await self._outbox.set_cursor(cursor)
        self._http = aiohttp.ClientSession(
            headers={"User-Agent": f"livemod/{__version__}"},
            timeout=aiohttp.ClientTimeout(total=self._cfg.timeout_s),
        )
        await self._update_depth()
        self._tasks = [asyncio.create_task(self._intake(runtime, cursor), name="webhook-intake")]
        self._tasks += [
            asyncio.create_task(self._deliver_loop(url), name=f"webhook-{i}")
            for i, url in enumerate(self._cfg.urls)
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._http is not None:
            await self._http.close()
            self._http = None

    def add_routes(self, app: web.Application) -> None:
        """Webhooks add no routes."""

    async def _intake(self, runtime: Runtime, cursor: int) -> None:
        # Several instances: one consumer group, so each event is sent once per cluster.
        async for event in follow_group(runtime.hub, "webhooks", cursor):
            if not wanted(event, self._cfg):
                continue
            body = json.dumps(event, separators=(",", ":"))
            await self.outbox.enqueue(int(event["seq"]), body, self._cfg.urls, time.time())
            for url in self._cfg.urls:
                self._wake[url].set()
            await self._update_depth()

    async def _update_depth(self) -> None:
        metrics.QUEUE_DEPTH.labels("webhook_outbox").set(await self.outbox.pending_count())

    async def _deliver_loop(self, url: str) -> None:
        wake = self._wake[url]
        limit = asyncio.Semaphore(self._cfg.concurrency)
        while True:
            wake.clear()
            now = time.time()
            rows = await self.outbox.due(url, now, limit=self._cfg.concurrency * 4)
            if rows:

                async def one(row: OutboxRow) -> None:
                    async with limit:
                        await self._deliver(row)

                await asyncio.gather(*(one(r) for r in rows))
                await self._update_depth()
                continue
            next_at = await self.outbox.next_due(url)
            delay = IDLE_POLL_S if next_at is None else min(IDLE_POLL_S, max(0.0, next_at - now))
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a
            # cancellation that lands as the wait completes, and stop() would hang.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await wake.wait()

    async def _deliver(self, row: OutboxRow) -> None:
        assert self._http is not None
        body = row.body.encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "X-Livemod-Timestamp": timestamp,
            "X-Livemod-Signature": sign(self._secret, timestamp, body),
            "Idempotency-Key": row.id,
            "X-Livemod-Event-Seq": str(row.seq),
            "X-Livemod-Attempt": str(row.attempts + 1),
        }
        error: str | None
        try:
            async with self._http.post(
                row.url, data=body, headers=headers, allow_redirects=False
            ) as resp:
                await resp.read()
                error = None if 200 <= resp.status < 300 else f"HTTP {resp.status}"
        except TimeoutError:
            error = f"no answer within {self._cfg.timeout_s} s"
        except aiohttp.ClientError as exc:
            error = f"connection failed: {exc.__class__.__name__}"
        now = time.time()
        if error is None:
            metrics.WEBHOOK_DELIVERIES.labels("delivered").inc()
            await self.outbox.delivered(row.id, now)
            return
        metrics.WEBHOOK_DELIVERIES.labels("failed").inc()
        if now - row.created_at >= self._cfg.give_up_after_s:
            metrics.WEBHOOK_DELIVERIES.labels("dropped").inc()
            log.error("webhook given up", extra={"url": row.url, "seq": row.seq, "error": error})
            await self.outbox.dropped(row.id, error, now)
            return
        retry_at = now + backoff_s(row.attempts + 1, self._cfg, self._rng)
        log.warning("webhook delivery failed", extra={"url": row.url, "error": error})
        await self.outbox.failed(row.id, error, retry_at)
