"""The shared event log of several instances, and the hub's bridge to it.

With a log (Redis Streams, :mod:`livemod.cluster.eventlog`) the log numbers events,
not the hub: ``append`` gives each one the next cluster-wide ``seq`` atomically. Every
instance tails the whole log in ``seq`` order, commits each event to its own store
(so ``?since=`` replays and the components that follow the store see the cluster's
events) and only then fans it out, so a subscriber on any instance sees every event
once, in order, whichever instance decided it.

When the log cannot be reached, events are kept in the local store's outbox (a table
committed with the event's evidence, so an instance that dies meanwhile loses none it
acknowledged), in order, and appended when the log answers again, at the latest when
the instance starts next; subscribers see them then, with the ``seq`` they got. Only
when the store cannot take them either do they wait in a bounded spool in memory (and
every later one joins them there, so the order holds). An append carries a unique id,
kept with the event in the outbox, so one that reached the log before its answer (or
the outbox's delete) was lost is not appended twice.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from livemod import metrics
from livemod.errors import LivemodError, StoreError
from livemod.events.spool import Spool, SpoolLimits
from livemod.store import EvidenceInput, Store

log = logging.getLogger(__name__)

TAIL_BATCH = 500
OUTBOX_BATCH = 200
OWN_KEPT = 100_000


class LogUnavailable(LivemodError):
    """The shared log did not answer (Redis down or unreachable)."""

    retryable = True


@dataclass(frozen=True, slots=True)
class LogEntry:
    seq: int
    event: dict[str, Any]
    """The event as appended, ``seq`` included."""
    origin: str
    """The instance that appended it."""
    append_id: str = ""
    """The id its appender gave it (pairs it with evidence kept here)."""


class EventLog(Protocol):
    """An append-only, totally ordered log of events shared by every instance."""

    async def append(self, body: dict[str, Any], *, origin: str, append_id: str) -> int:
        """Append one event; return its ``seq``. The same ``append_id`` appends once.
        Raises :class:`LogUnavailable`."""
        ...

    async def read(self, after: int, *, count: int, block_s: float) -> list[LogEntry]:
        """Entries with ``seq > after`` in order, waiting up to ``block_s`` for one."""
        ...

    async def last_seq(self) -> int: ...

    async def close(self) -> None:
        """Let go of the connection (after the last append)."""
        ...


class GroupLog(Protocol):
    """A log whose entries a named group of consumers shares: each entry goes to one
    consumer of the group, and entries a consumer took but never acknowledged (it
    died) are taken over by another after ``min_idle_s``."""

    async def ensure_group(self, group: str, after: int) -> None: ...

    async def group_read(
        self, group: str, consumer: str, *, count: int, block_s: float, min_idle_s: float
    ) -> list[LogEntry]: ...

    async def ack(self, group: str, seq: int) -> None: ...


class LogBridge:
    """The hub's side of a shared log: append (or spool), tail, mirror, fan out."""

    def __init__(
        self,
        events: EventLog,
        store: Store,
        fan_out: Callable[[dict[str, Any]], None],
        *,
        origin: str,
        spool: SpoolLimits | None = None,
        retry_s: float = 1.0,
        catch_up: int = 100_000,
    ) -> None:
        self._log = events
        self._store = store
        self._fan_out = fan_out
        self.origin = origin
        self._spool = Spool(spool or SpoolLimits())
        self._ids: dict[int, str] = {}
        """Spooled events' append ids, by ``id()`` of the spooled event."""
        self._evidence: dict[str, EvidenceInput] = {}
        """Evidence of events appended here, by append id, until the tail commits it."""
        self._retry_s = retry_s
        self._catch_up = catch_up
        self.failure: str | None = None
        self.tail_failure: str | None = None
        self.mirrored = 0
        self._own: set[int] = set()
        self._own_order: list[int] = []
        self._tail: asyncio.Task[None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._closing = False
        self._outbox = 0
        """Events kept in the store's outbox, waiting for the log."""

    @property
    def spooled(self) -> int:
        """Events waiting for the log: in the store's outbox and in memory."""
        return self._outbox + len(self._spool)

    def _pending(self) -> bool:
        return self._outbox > 0 or len(self._spool) > 0

    def _gauge(self) -> None:
        metrics.CLUSTER_LOG_SPOOLED.set(self.spooled)

    @property
    def log(self) -> EventLog:
        return self._log

    def is_local(self, seq: int) -> bool:
        """Whether this instance appended ``seq`` (in this run, among the latest)."""
        return seq in self._own

    def _mark_own(self, seq: int) -> None:
        self._own.add(seq)
        self._own_order.append(seq)
        if len(self._own_order) > OWN_KEPT:
            for old in self._own_order[: OWN_KEPT // 2]:
                self._own.discard(old)
            del self._own_order[: OWN_KEPT // 2]

    def degraded(self) -> list[str]:
        reasons = []
        if self.failure is not None:
            reasons.append(
                f"event log: {self.failure} ({self._outbox} events kept in the store,"
                f" {len(self._spool)} in memory)"
            )
        if self.tail_failure is not None and self.tail_failure != self.failure:
            reasons.append(f"event log tail: {self.tail_failure}")
        return reasons

    async def open(self) -> None:
        """Start mirroring after the last event this instance's store holds."""
        mine = await self._store.last_seq()
        newest = await self._log.last_seq()
        start = max(mine, newest - self._catch_up)
        self._outbox = await self._store.outbox_count()
        if self._outbox:
            # Kept while the log was lost, and this instance stopped before it returned.
            log.warning("appending %d events kept while the event log was lost", self._outbox)
            self._gauge()
            self._start_retry()
        self._tail = asyncio.get_running_loop().create_task(
            self._follow(start), name="livemod-log-tail"
        )

    async def close(self) -> None:
        self._closing = True
        for task in (self._flusher, self._tail):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._tail = self._flusher = None
        async with self._lock:
            # One last try for what is waiting, in order.
            try:
                flushed = await self._flush_outbox()
            except LogUnavailable:
                flushed = False
            while flushed and (item := self._spool.peek()) is not None:
                append_id = self._ids.pop(id(item.event), uuid.uuid4().hex)
                try:
                    await self._log.append(item.event, origin=self.origin, append_id=append_id)
                except LogUnavailable:
                    break
                self._spool.pop()
        if self._outbox:
            log.warning(
                "event log unreachable at shutdown: %d events kept in the store,"
                " appended at the next start",
                self._outbox,
            )
        if len(self._spool):
            log.error(
                "event log unreachable at shutdown: %d events never appended", len(self._spool)
            )
        await self._log.close()

    async def append(self, event: dict[str, Any], evidence: EvidenceInput | None) -> dict[str, Any]:
        """Append one stamped event (no ``seq`` yet) and return it as numbered; while the
        log is unreachable, keep it (in the store's outbox) and return it with ``seq`` 0
        and ``stored`` false."""
        async with self._lock:
            append_id = uuid.uuid4().hex
            if not self._pending():
                # Kept before the append: the tail may read the entry back first.
                if evidence is not None:
                    self._evidence[append_id] = evidence
                try:
                    seq = await self._log.append(event, origin=self.origin, append_id=append_id)
                except LogUnavailable as exc:
                    self._evidence.pop(append_id, None)
                    self._lost(str(exc))
                else:
                    return {"seq": seq, **event}
            if not len(self._spool):
                try:
                    kept = await self._store.outbox_add(append_id, event, evidence)
                except StoreError as exc:
                    log.error("cannot keep events in the store; spooling in memory: %s", exc)
                else:
                    self._outbox += 1
                    self._gauge()
                    return {"seq": 0, **kept, "stored": False}
            self._spool.add(event, evidence)
            self._ids[id(event)] = append_id
            self._gauge()
            return {"seq": 0, **event, "stored": False}

    async def _flush_outbox(self) -> bool:
        """Append the outbox's events in order (each with the id it was kept with, so a
        retry after a lost answer appends once); True when it is empty. Raises
        :class:`LogUnavailable`."""
        while self._outbox:
            try:
                rows = await self._store.outbox_peek(OUTBOX_BATCH)
            except StoreError as exc:
                log.error("cannot read the outbox: %s", exc)
                return False
            if not rows:
                self._outbox = 0
                break
            for append_id, event in rows:
                # Its evidence row was committed with it: nothing for the tail to add.
                await self._log.append(event, origin=self.origin, append_id=append_id)
                try:
                    await self._store.outbox_remove(append_id)
                except StoreError as exc:
                    log.error("cannot clear the outbox: %s", exc)
                    return False
                self._outbox -= 1
                self._gauge()
        return True

    def _lost(self, reason: str) -> None:
        if self.failure is None:
            log.error("event log unreachable; spooling events until it answers: %s", reason)
        self.failure = reason
        self._start_retry()

    def _start_retry(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(
                self._retry(), name="livemod-log-retry"
            )

    async def _retry(self) -> None:
        while True:
            await asyncio.sleep(self._retry_s)
            async with self._lock:
                try:
                    if not await self._flush_outbox():
                        continue
                except LogUnavailable as exc:
                    self.failure = str(exc)
                    continue
                while (item := self._spool.peek()) is not None:
                    append_id = self._ids.get(id(item.event), uuid.uuid4().hex)
                    if item.evidence is not None:
                        self._evidence[append_id] = item.evidence
                    try:
                        await self._log.append(item.event, origin=self.origin, append_id=append_id)
                    except LogUnavailable as exc:
                        self._evidence.pop(append_id, None)
                        self.failure = str(exc)
                        break
                    self._spool.pop()
                    self._ids.pop(id(item.event), None)
                    self._gauge()
                else:
                    log.warning("event log answers again; spooled events appended")
                    self.failure = None
                    self._flusher = None
                    return

    async def _follow(self, after: int) -> None:
        while not self._closing:
            try:
                entries = await self._log.read(after, count=TAIL_BATCH, block_s=1.0)
            except LogUnavailable as exc:
                if self.tail_failure is None:
                    log.error("event log tail lost: %s", exc)
                self.tail_failure = str(exc)
                await asyncio.sleep(self._retry_s)
                continue
            if self.tail_failure is not None:
                log.warning("event log tail back")
                self.tail_failure = None
            for entry in entries:
                if entry.seq <= after:
                    continue
                after = entry.seq
                evidence = None
                if entry.origin == self.origin:
                    self._mark_own(entry.seq)
                    evidence = self._evidence.pop(entry.append_id, None)
                try:
                    event = await self._store.append_event(entry.event, evidence)
                except StoreError as exc:
                    # The log is the record of the cluster; this mirror only serves
                    # replays here. Deliver the event all the same.
                    log.error("could not mirror event %d: %s", entry.seq, exc)
                    event = entry.event
                self.mirrored += 1
                self._fan_out(event)
