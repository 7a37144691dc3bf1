"""The webhook outbox: deliveries waiting, in the daemon's SQLite store.

One row per event and endpoint (unique, so a replayed event is never queued
twice); its id is the ``Idempotency-Key`` every attempt carries. A cursor row
remembers the last event considered, written in the same transaction as the
rows it produced.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from livemod.errors import StoreError
from livemod.store import Store

_SCHEMA = """
CREATE TABLE IF NOT EXISTS webhook_outbox (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    seq INTEGER NOT NULL,
    body TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,
    last_error TEXT,
    created_at REAL NOT NULL,
    done_at REAL,
    UNIQUE (url, seq)
);
CREATE INDEX IF NOT EXISTS webhook_due ON webhook_outbox(status, url, next_at);
CREATE TABLE IF NOT EXISTS webhook_cursor (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: str
    url: str
    seq: int
    body: str
    attempts: int
    created_at: float


class Outbox:
    """Outbox rows and the intake cursor. Every method runs on the store thread."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def open(self) -> None:
        await self._store.run(lambda db: db.executescript(_SCHEMA))

    async def cursor(self) -> int | None:
        def work(db: sqlite3.Connection) -> int | None:
            row = db.execute("SELECT seq FROM webhook_cursor WHERE id = 1").fetchone()
            return None if row is None else int(row[0])

        return await self._store.run(work)

    async def set_cursor(self, seq: int) -> None:
        await self._store.run(
            lambda db: db.execute(
                "INSERT INTO webhook_cursor (id, seq) VALUES (1, ?)"
                " ON CONFLICT(id) DO UPDATE SET seq = excluded.seq",
                (seq,),
            )
        )

    async def enqueue(self, seq: int, body: str, urls: Sequence[str], now: float) -> None:
        """Queue one event for every endpoint and move the cursor, atomically."""

        def work(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            try:
                for url in urls:
                    db.execute(
                        "INSERT OR IGNORE INTO webhook_outbox"
                        " (id, url, seq, body, status, attempts, next_at, created_at)"
                        " VALUES (?, ?, ?, ?, 'pending', 0, ?, ?)",
                        (uuid.uuid4().hex, url, seq, body, now, now),
                    )
                db.execute(
                    "INSERT INTO webhook_cursor (id, seq) VALUES (1, ?)"
                    " ON CONFLICT(id) DO UPDATE SET seq = MAX(seq, excluded.seq)",
                    (seq,),
                )
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                db.execute("ROLLBACK")
                raise StoreError(f"cannot queue webhook: {exc}") from exc

        await self._store.run(work)

    async def due(self, url: str, now: float, *, limit: int) -> list[OutboxRow]:
        def work(db: sqlite3.Connection) -> list[OutboxRow]:
            rows = db.execute(
                "SELECT id, url, seq, body, attempts, created_at FROM webhook_outbox"
                " WHERE status = 'pending' AND url = ? AND next_at <= ?"
                " ORDER BY seq LIMIT ?",
                (url, now, limit),
            ).fetchall()
            return [OutboxRow(*r) for r in rows]

        return await self._store.run(work)

    async def next_due(self, url: str) -> float | None:
        def work(db: sqlite3.Connection) -> float | None:
            row = db.execute(
                "SELECT MIN(next_at) FROM webhook_outbox WHERE status = 'pending' AND url = ?",
                (url,),
            ).fetchone()
            return None if row[0] is None else float(row[0])

        return await self._store.run(work)

    async def pending_count(self) -> int:
        def work(db: sqlite3.Connection) -> int:
            row = db.execute("SELECT COUNT(*) FROM webhook_outbox WHERE status = 'pending'")
            return int(row.fetchone()[0])

        return await self._store.run(work)

    async def delivered(self, row_id: str, now: float) -> None:
        await self._store.run(
            lambda db: db.execute(
                "UPDATE webhook_outbox SET status = 'delivered', attempts = attempts + 1,"
                " done_at = ?, last_error = NULL WHERE id = ?",
                (now, row_id),
            )
        )

    async def failed(self, row_id: str, error: str, retry_at: float) -> None:
        await self._store.run(
            lambda db: db.execute(
                "UPDATE webhook_outbox SET attempts = attempts + 1, last_error = ?, next_at = ?"
                " WHERE id = ?",
                (error, retry_at, row_id),
            )
        )

    async def dropped(self, row_id: str, error: str, now: float) -> None:
        await self._store.run(
            lambda db: db.execute(
                "UPDATE webhook_outbox SET status = 'dropped', attempts = attempts + 1,"
                " last_error = ?, done_at = ? WHERE id = ?",
                (error, now, row_id),
            )
        )

    async def rows(self) -> list[dict[str, object]]:
        """Every row (tools and tests)."""

        def work(db: sqlite3.Connection) -> list[dict[str, object]]:
            cur = db.execute(
                "SELECT id, url, seq, status, attempts, last_error FROM webhook_outbox ORDER BY seq"
            )
            cols = [c[0] for c in cur.description]
            return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

        return await self._store.run(work)
