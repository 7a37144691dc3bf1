"""Durable cursors over the event log in the daemon's SQLite store, so a kill loses nothing.

A component that acts on committed events (the escalator: an LLM verdict per
escalated action; the review desk: a queue item per policy ``review`` action)
keeps one row: the low-water mark (see ``watermark.py``) at or below which every
event it acts on has its outcome committed. On start it replays committed events
after the mark; an event whose outcome is already committed (handled after the
last cursor write, before the kill) is found with one query and skipped, so it is
never handled twice.

``CursorKeeper`` is the thin asyncio shell: it feeds the pure ``Watermark`` and
writes the mark from a background task, batched, and once more on stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass

from livemod.errors import StoreError
from livemod.escalation.watermark import Watermark
from livemod.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ResumePoint:
    """Where the escalator picks up after a start."""

    cursor: int
    """Follow events after this ``seq``."""
    boot_seq: int
    """The newest event when this process started: events up to it are replayed."""
    settled: set[int]
    """Actions after the cursor that already have their ``escalation`` event."""


class EventCursor:
    """One component's cursor row and its handled-events query. Every method runs on
    the store thread. Subclasses name the table and say which events are handled."""

    name = "cursor"
    table = ""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def open(self) -> None:
        # The table name is a class constant, never input: safe to format in.
        schema = (
            f"CREATE TABLE IF NOT EXISTS {self.table} ("
            " id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL)"
        )
        await self._store.run(lambda db: db.execute(schema))

    async def resume(self) -> ResumePoint:
        """Open the table and read where to resume: the stored cursor, so what a kill
        left unhandled is handled again; on the first run, the newest event (history
        from before the component was enabled is left alone)."""
        await self.open()
        boot_seq = await self._store.last_seq()
        cursor = await self.cursor()
        if cursor is None:
            cursor = boot_seq
            await self.set_cursor(cursor)
        # Handled after the last cursor write, before the kill: not handled again.
        settled = await self.settled_after(cursor)
        if cursor < boot_seq:
            log.info(
                "%s resumes after a restart",
                self.name,
                extra={"cursor": cursor, "last_seq": boot_seq, "settled": len(settled)},
            )
        return ResumePoint(cursor, boot_seq, settled)

    async def cursor(self) -> int | None:
        """The stored low-water mark; ``None`` before escalation first ran."""

        def work(db: sqlite3.Connection) -> int | None:
            row = db.execute(f"SELECT seq FROM {self.table} WHERE id = 1").fetchone()
            return None if row is None else int(row[0])

        return await self._store.run(work)

    async def set_cursor(self, seq: int) -> None:
        """Store ``seq``; the cursor never moves back (a late writer cannot undo)."""

        def work(db: sqlite3.Connection) -> None:
            try:
                db.execute(
                    f"INSERT INTO {self.table} (id, seq) VALUES (1, ?)"
                    " ON CONFLICT(id) DO UPDATE SET seq = MAX(seq, excluded.seq)",
                    (seq,),
                )
            except sqlite3.Error as exc:
                raise StoreError(f"cannot store the {self.name} cursor: {exc}") from exc

        await self._store.run(work)

    async def settled_after(self, seq: int) -> set[int]:
        """``seq`` of every event after ``seq`` whose outcome is already committed."""
        raise NotImplementedError


class EscalationLedger(EventCursor):
    """The escalator's cursor: an escalated action is handled once its ``escalation``
    event is committed."""

    name = "escalation"
    table = "escalation_cursor"

    async def settled_after(self, seq: int) -> set[int]:
        """``action_seq`` of every ``escalation`` event about an action after ``seq``."""

        def work(db: sqlite3.Connection) -> set[int]:
            rows = db.execute(
                "SELECT json_extract(body, '$.action_seq') FROM events"
                " WHERE type = 'escalation' AND seq > ?"
                " AND json_extract(body, '$.action_seq') > ?",
                (seq, seq),
            ).fetchall()
            return {int(r[0]) for r in rows if r[0] is not None}

        return await self._store.run(work)


class ReviewLedger(EventCursor):
    """The review desk's cursor: a policy ``review`` action is handled once its queue
    item exists (the ``reviews`` table, ``livemod/escalation/review.py``)."""

    name = "review"
    table = "review_cursor"

    async def settled_after(self, seq: int) -> set[int]:
        """``action_seq`` of every review item opened for an action after ``seq``."""

        def work(db: sqlite3.Connection) -> set[int]:
            rows = db.execute(
                "SELECT json_extract(detail, '$.action_seq') FROM reviews"
                " WHERE json_extract(detail, '$.action_seq') > ?",
                (seq,),
            ).fetchall()
            return {int(r[0]) for r in rows if r[0] is not None}

        return await self._store.run(work)


class CursorKeeper:
    """Owns a ``Watermark`` and persists its mark, at most every ``every_s``
    seconds or ``every_settles`` settles; ``close`` writes the final mark."""

    def __init__(
        self,
        ledger: EventCursor,
        start: int,
        *,
        every_settles: int = 32,
        every_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ledger = ledger
        self.mark = Watermark(start, every_settles=every_settles, every_s=every_s)
        self._every_s = every_s
        self._clock = clock
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"{self._ledger.name}-cursor")

    def observe(self, seq: int, *, escalate: bool) -> None:
        self.mark.observe(seq, escalate=escalate)

    def settle(self, seq: int) -> None:
        self.mark.settle(seq)
        if self.mark.due(self._clock()) is not None:
            self._wake.set()

    async def _run(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._every_s)
            self._wake.clear()
            if self._closing:
                return
            mark = self.mark.due(self._clock())
            if mark is None:
                continue
            try:
                await self._ledger.set_cursor(mark)
            except StoreError:
                # Not advancing is safe (a restart replays a little more): try later.
                log.warning("could not store the %s cursor", self._ledger.name, exc_info=True)
                continue
            self.mark.mark_written(mark, self._clock())

    async def close(self) -> None:
        """Stop the writer and store the mark as it stands (all settled on a
        graceful stop, so the cursor then covers every event followed)."""
        if self._task is not None:
            # A flag, not cancel(): on Python 3.11 wait_for can swallow a cancellation
            # that lands as the wake event fires, and the writer would never end.
            self._closing = True
            self._wake.set()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        mark = self.mark.low_water
        if mark > self.mark.written:
            try:
                await self._ledger.set_cursor(mark)
            except StoreError:
                # Safe to lose: the next start replays from the older mark and skips
                # what is settled.
                log.warning("could not store the %s cursor", self._ledger.name, exc_info=True)
                return
            self.mark.mark_written(mark, self._clock())
