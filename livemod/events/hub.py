"""The event hub: commit each event to the store, then fan it out to subscribers.

Subscribers each own a bounded queue. A subscriber that falls behind by more than
its queue is disconnected (its loss is counted), never allowed to grow memory; it
reconnects with ``?since=`` and misses nothing, because every event is committed
before it is published.

The hub numbers events itself (``seq``). When the store cannot take an event (a full
disk, a broken file) the decision is not lost: it is published at once marked
``"stored": false`` and kept in a bounded spool, and every later event joins it in
order until a retry commits them all with the ``seq`` they were published with. A
``store`` event says when storage failed and when it recovered.

With a shared log (several instances, ``cluster.redis_url``) the log numbers the
events instead and the hub publishes what it reads back from it, in the log's order
(:mod:`livemod.events.log`).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from livemod import metrics
from livemod.errors import StoreError
from livemod.events.log import EventLog, LogBridge
from livemod.events.spool import Spool, SpoolLimits
from livemod.events.types import Event, StoreEvent, to_body
from livemod.store import EvidenceInput, Store

log = logging.getLogger(__name__)

FLUSH_BATCH = 200
"""Spooled events committed per turn of the lock, so publishing never waits long."""


@dataclass(frozen=True, slots=True)
class EventFilter:
    room_id: str | None = None
    user_id: str | None = None
    stream_id: str | None = None

    def matches(self, event: dict[str, Any]) -> bool:
        return (
            (self.room_id is None or event.get("room_id") == self.room_id)
            and (self.user_id is None or event.get("user_id") == self.user_id)
            and (self.stream_id is None or event.get("stream_id") == self.stream_id)
        )


@dataclass(eq=False, slots=True)
class Subscription:
    filter: EventFilter
    queue: asyncio.Queue[dict[str, Any]]
    overflowed: asyncio.Event = field(default_factory=asyncio.Event)
    internal: bool = False
    """A listener inside the daemon (a relay), not counted as a WebSocket subscriber."""


class EventHub:
    """Orders, persists and fans out events. ``seq`` order is publish order."""

    def __init__(
        self,
        store: Store,
        *,
        queue_size: int = 1024,
        spool: SpoolLimits | None = None,
        retry_s: float = 1.0,
        shared_log: EventLog | None = None,
        origin: str = "",
    ) -> None:
        self._store = store
        self._queue_size = queue_size
        self._subs: set[Subscription] = set()
        self._lock = asyncio.Lock()
        self._next_seq: int | None = None
        self._spool = Spool(spool or SpoolLimits())
        self._retry_s = retry_s
        self._failure: str | None = None
        self._told_failure = False
        self._spooled_total = 0
        self._dropped_counted = {"evidence": 0, "event": 0}
        self._overflow_told = False
        self._evidence_failing = False
        self._flusher: asyncio.Task[None] | None = None
        self._log = (
            None
            if shared_log is None
            else LogBridge(
                shared_log, store, self._fan_out, origin=origin, spool=spool, retry_s=retry_s
            )
        )

    async def open(self) -> None:
        """Continue numbering after the last committed event (call once the store is open)."""
        self._next_seq = await self._store.last_seq() + 1
        if self._log is not None:
            await self._log.open()

    @property
    def shared_log(self) -> LogBridge | None:
        """The bridge to the cluster's log, or ``None`` for one process."""
        return self._log

    @property
    def store(self) -> Store:
        return self._store

    @property
    def backlog(self) -> int:
        """Events buffered for subscribers, all queues together."""
        return sum(sub.queue.qsize() for sub in self._subs)

    @property
    def spooled(self) -> int:
        """Events published but not yet committed (storage is failing)."""
        return len(self._spool)

    def degraded(self) -> list[str]:
        """Why storage is not fully working, for ``/healthz``; empty when it is."""
        reasons = []
        if self._failure is not None:
            reasons.append(f"store: {self._failure} ({len(self._spool)} events spooled)")
        if self._store.evidence_failure is not None:
            reasons.append(f"evidence: {self._store.evidence_failure}")
        if self._log is not None:
            reasons.extend(self._log.degraded())
        return reasons

    def subscribe(self, flt: EventFilter, *, internal: bool = False) -> Subscription:
        """``internal``: a listener inside the daemon, left out of the subscriber gauge."""
        sub = Subscription(flt, asyncio.Queue(maxsize=self._queue_size), internal=internal)
        self._subs.add(sub)
        metrics.WS_SUBSCRIBERS.set(sum(not s.internal for s in self._subs))
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)
        metrics.WS_SUBSCRIBERS.set(sum(not s.internal for s in self._subs))

    async def publish(
        self,
        event: Event,
        *,
        evidence: EvidenceInput | None = None,
        t_trigger: float | None = None,
    ) -> dict[str, Any]:
        """Commit ``event`` (with its evidence), fan it out, and return it as published.

        Never raises for a storage fault: the event is spooled and published anyway.
        """
        async with self._lock:
            committed = await self._commit(to_body(event), evidence, t_trigger)
        return committed

    async def close(self) -> None:
        """Stop retrying; one last attempt to commit what is spooled."""
        if self._log is not None:
            await self._log.close()
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
            self._flusher = None
        if len(self._spool):
            async with self._lock:
                await self._flush()
            if len(self._spool):
                log.error(
                    "storage still failing at shutdown: %d events were never stored",
                    len(self._spool),
                )

    # -- committing -------------------------------------------------------------

    async def _commit(
        self, body: dict[str, Any], evidence: EvidenceInput | None, t_trigger: float | None
    ) -> dict[str, Any]:
        """Number, stamp, commit (or spool) and fan out one event. Holds the lock."""
        if self._log is not None:
            return await self._append(body, evidence, t_trigger)
        if self._next_seq is None:
            self._next_seq = await self._store.last_seq() + 1
        now = time.time()
        event: dict[str, Any] = {"seq": self._next_seq, **body}
        self._next_seq += 1
        if evidence is not None:
            event["evidence_id"] = uuid.uuid4().hex
        if t_trigger is not None:
            event["latency_ms"] = round(max(0.0, (now - t_trigger) * 1000.0), 1)
        event["ts"] = round(now, 3)
        published: dict[str, Any] | None = None
        if not len(self._spool):
            try:
                published = await self._store.append_event(event, evidence)
            except StoreError as exc:
                self._fail(str(exc))
        overflowed = False
        if published is None:
            overflowed = self._spool.add(event, evidence)
            self._spooled_total += 1
            metrics.STORE_SPOOLED.set(len(self._spool))
            published = {**event, "stored": False}
        metrics.EVENTS.labels(str(body.get("type", "unknown"))).inc()
        self._fan_out(published)
        if body.get("type") != "store":
            await self._tell(published, overflowed)
        return published

    async def _append(
        self, body: dict[str, Any], evidence: EvidenceInput | None, t_trigger: float | None
    ) -> dict[str, Any]:
        """Stamp one event and append it to the shared log, which numbers it; it is
        committed here and fanned out when the tail reads it back (in log order)."""
        assert self._log is not None
        now = time.time()
        event: dict[str, Any] = dict(body)
        if evidence is not None:
            event["evidence_id"] = uuid.uuid4().hex
        if t_trigger is not None:
            event["latency_ms"] = round(max(0.0, (now - t_trigger) * 1000.0), 1)
        event["ts"] = round(now, 3)
        metrics.EVENTS.labels(str(body.get("type", "unknown"))).inc()
        return await self._log.append(event, evidence)

    def _fail(self, reason: str) -> None:
        metrics.STORE_WRITE_FAILURES.labels("event").inc()
        if self._failure is None:
            log.error("storage failed; spooling events until it recovers: %s", reason)
        self._failure = reason
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(
                self._retry(), name="livemod-store-retry"
            )

    async def _tell(self, published: dict[str, Any], overflowed: bool) -> None:
        """Publish a ``store`` event for each change of storage health an event showed."""
        notes: list[StoreEvent] = []
        if self._failure is not None and not self._told_failure:
            self._told_failure = True
            notes.append(StoreEvent(state="failed", reason=self._failure))
        if overflowed:
            spool = self._spool
            for kind, total in (
                ("evidence", spool.dropped_evidence),
                ("event", spool.dropped_events),
            ):
                delta = total - self._dropped_counted[kind]
                if delta > 0:
                    metrics.STORE_SPOOL_DROPPED.labels(kind).inc(delta)
                    self._dropped_counted[kind] = total
            if not self._overflow_told:
                self._overflow_told = True
                log.error(
                    "store spool full: dropping evidence pictures, then non-action events",
                    extra={
                        "dropped_evidence": spool.dropped_evidence,
                        "dropped_events": spool.dropped_events,
                    },
                )
                notes.append(
                    StoreEvent(
                        state="spool_full",
                        dropped_events=spool.dropped_events,
                        dropped_evidence=spool.dropped_evidence,
                    )
                )
        failing = self._store.evidence_failure
        if published.get("evidence") == "unavailable" and "stored" not in published:
            metrics.STORE_WRITE_FAILURES.labels("evidence").inc()
        if failing is not None and not self._evidence_failing:
            self._evidence_failing = True
            log.error("evidence folder failing; actions go on without pictures: %s", failing)
            notes.append(StoreEvent(state="evidence_failed", reason=failing))
        elif failing is None and self._evidence_failing:
            self._evidence_failing = False
            log.warning("evidence folder writable again")
            notes.append(StoreEvent(state="evidence_recovered"))
        for note in notes:
            await self._commit(to_body(note), None, None)

    async def _retry(self) -> None:
        wait = self._retry_s
        while True:
            await asyncio.sleep(wait)
            async with self._lock:
                before = len(self._spool)
                if not await self._flush():
                    # Progress: go on at once (after letting publishers in); none: wait.
                    wait = 0.0 if len(self._spool) < before else self._retry_s
                    continue
                spool = self._spool
                log.warning(
                    "storage recovered; spooled events committed",
                    extra={"spooled": self._spooled_total, "dropped_events": spool.dropped_events},
                )
                note = StoreEvent(
                    state="recovered",
                    spooled=self._spooled_total,
                    dropped_events=spool.dropped_events,
                    dropped_evidence=spool.dropped_evidence,
                )
                self._failure = None
                self._told_failure = False
                self._overflow_told = False
                self._spooled_total = 0
                self._dropped_counted = {"evidence": 0, "event": 0}
                self._spool = Spool(spool.limits)
                self._flusher = None
                await self._commit(to_body(note), None, None)
                return

    async def _flush(self) -> bool:
        """Commit spooled events in order, a batch at a time; True when none is left."""
        for _ in range(FLUSH_BATCH):
            item = self._spool.peek()
            if item is None:
                break
            try:
                await self._store.append_event(item.event, item.evidence)
            except StoreError as exc:
                self._failure = str(exc)
                return False
            self._spool.pop()
            metrics.STORE_SPOOLED.set(len(self._spool))
        return not len(self._spool)

    def _fan_out(self, event: dict[str, Any]) -> None:
        for sub in list(self._subs):
            if not sub.filter.matches(event):
                continue
            try:
                sub.queue.put_nowait(event)
            except asyncio.QueueFull:
                metrics.DROPS.labels("websocket", "slow_subscriber").inc()
                sub.overflowed.set()
                self.unsubscribe(sub)
