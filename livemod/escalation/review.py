"""The human review queue, kept in the daemon's SQLite store.

An item holds what a reviewer needs to judge a clip: evidence frames (ids served
by ``GET /v1/evidence/{id}``), first-pass scores, transcript and on-screen text,
and the LLM's verdict and rationale when there was one. Items are served
possible-minors first, then by severity, then oldest first. A claim holds an
item for one reviewer for ``CLAIM_TTL_S``; a decision is final except
``escalate``, which puts the item back in the queue one level up (senior review).
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from livemod.errors import RequestError
from livemod.store import Store

CLAIM_TTL_S = 900.0
"""A claim older than this lapses and another reviewer may take the item."""

Decision = Literal["uphold", "overturn", "escalate"]
DECISIONS: tuple[Decision, ...] = ("uphold", "overturn", "escalate")
STATUSES = ("pending", "claimed", "decided")
_SEVERITY_RANK = {"none": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS reviews (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    priority INTEGER NOT NULL,
    level INTEGER NOT NULL DEFAULT 0,
    stream_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    category TEXT NOT NULL,
    severity TEXT NOT NULL,
    possible_minor INTEGER NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    claimed_by TEXT,
    claimed_at REAL,
    decision TEXT,
    decided_by TEXT,
    decided_at REAL,
    note TEXT,
    history TEXT NOT NULL DEFAULT '[]',
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS reviews_queue ON reviews(status, priority DESC, created_at);
"""
_COLUMNS = (
    "id, status, priority, level, stream_id, user_id, room_id, category, severity,"
    " possible_minor, reason, detail, claimed_by, claimed_at, decision, decided_by,"
    " decided_at, note, history, created_at"
)
COLUMN_NAMES = tuple(c.strip() for c in _COLUMNS.split(","))


@dataclass(frozen=True, slots=True)
class NewReview:
    """A clip to put in front of a person."""

    stream_id: str
    user_id: str
    room_id: str
    category: str
    severity: str
    reason: str
    """Why it is here: ``fail_closed``, ``inconclusive``, ``policy_review``, ..."""
    possible_minor: bool = False
    detail: dict[str, Any] = field(default_factory=dict)
    """Evidence ids, scores, transcript, OCR text, verdict, the action concerned."""


class ReviewBackend(Protocol):
    """Where review items live: this process's store (:class:`ReviewQueue`, the
    default) or a store every instance shares (``livemod.cluster.reviews``). Claims
    and decisions raise :class:`RequestError` 409/404 as :class:`ReviewQueue` does."""

    async def open(self) -> None: ...

    async def add(self, item: NewReview) -> dict[str, Any]: ...

    async def get(self, review_id: str) -> dict[str, Any]: ...

    async def list(
        self, *, status: str = "open", level: int | None = None, limit: int = 100
    ) -> list[dict[str, Any]]: ...

    async def open_count(self) -> int: ...

    async def claim(self, review_id: str, reviewer: str) -> dict[str, Any]: ...

    async def decide(
        self, review_id: str, reviewer: str, decision: Decision, note: str = ""
    ) -> dict[str, Any]: ...


def priority(severity: str, possible_minor: bool) -> int:
    return (100 if possible_minor else 0) + _SEVERITY_RANK.get(severity, 0)


class ReviewQueue:
    """Review items in the store. Every method runs on the store thread."""

    def __init__(self, store: Store, *, clock: Any = time.time) -> None:
        self._store = store
        self._clock = clock

    async def open(self) -> None:
        await self._store.run(lambda db: db.executescript(_SCHEMA))

    async def add(self, item: NewReview) -> dict[str, Any]:
        review_id = uuid.uuid4().hex[:20]
        now = self._clock()
        history = [{"at": round(now, 3), "event": "queued", "reason": item.reason}]

        def work(db: sqlite3.Connection) -> dict[str, Any]:
            db.execute(
                f"INSERT INTO reviews ({_COLUMNS}) VALUES"
                " (?, 'pending', ?, 0, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, NULL, NULL, NULL,"
                " NULL, ?, ?)",
                (
                    review_id,
                    priority(item.severity, item.possible_minor),
                    item.stream_id,
                    item.user_id,
                    item.room_id,
                    item.category,
                    item.severity,
                    int(item.possible_minor),
                    item.reason,
                    json.dumps(item.detail),
                    json.dumps(history),
                    now,
                ),
            )
            return _get(db, review_id, now)

        return await self._store.run(work)

    async def get(self, review_id: str) -> dict[str, Any]:
        now = self._clock()
        return await self._store.run(lambda db: _get(db, review_id, now))

    async def list(
        self, *, status: str = "open", level: int | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Items in serving order. ``status``: pending, claimed, decided, open
        (pending or claimed) or all."""
        now = self._clock()

        def work(db: sqlite3.Connection) -> list[dict[str, Any]]:
            sql = f"SELECT {_COLUMNS} FROM reviews"
            where: list[str] = []
            args: list[Any] = []
            lapsed = now - CLAIM_TTL_S
            if status == "open":
                where.append("status IN ('pending', 'claimed')")
            elif status == "pending":
                where.append("(status = 'pending' OR (status = 'claimed' AND claimed_at <= ?))")
                args.append(lapsed)
            elif status == "claimed":
                where.append("status = 'claimed' AND claimed_at > ?")
                args.append(lapsed)
            elif status != "all":
                where.append("status = ?")
                args.append(status)
            if level is not None:
                where.append("level = ?")
                args.append(level)
            if where:
                sql += " WHERE " + " AND ".join(where)
            sql += " ORDER BY priority DESC, created_at ASC LIMIT ?"
            args.append(limit)
            return [_row(r, now) for r in db.execute(sql, args)]

        return await self._store.run(work)

    async def open_count(self) -> int:
        def work(db: sqlite3.Connection) -> int:
            row = db.execute(
                "SELECT COUNT(*) FROM reviews WHERE status IN ('pending', 'claimed')"
            ).fetchone()
            return int(row[0])

        return await self._store.run(work)

    async def claim(self, review_id: str, reviewer: str) -> dict[str, Any]:
        """Hold an item for ``reviewer``; 409 if another holds it or it is decided."""
        now = self._clock()

        def work(db: sqlite3.Connection) -> dict[str, Any]:
            item = _get(db, review_id, now)
            check_open(item, reviewer, now)
            history = [*item["history"], entry(now, "claimed", reviewer)]
            db.execute(
                "UPDATE reviews SET status='claimed', claimed_by=?, claimed_at=?, history=?"
                " WHERE id=?",
                (reviewer, now, json.dumps(history), review_id),
            )
            return _get(db, review_id, now)

        return await self._store.run(work)

    async def decide(
        self, review_id: str, reviewer: str, decision: Decision, note: str = ""
    ) -> dict[str, Any]:
        """Record a decision. ``escalate`` re-queues the item one level up."""
        now = self._clock()

        def work(db: sqlite3.Connection) -> dict[str, Any]:
            item = _get(db, review_id, now)
            check_open(item, reviewer, now)
            history = [*item["history"], entry(now, decision, reviewer, note)]
            if decision == "escalate":
                db.execute(
                    "UPDATE reviews SET status='pending', level=level+1, claimed_by=NULL,"
                    " claimed_at=NULL, history=? WHERE id=?",
                    (json.dumps(history), review_id),
                )
            else:
                db.execute(
                    "UPDATE reviews SET status='decided', decision=?, decided_by=?,"
                    " decided_at=?, note=?, history=? WHERE id=?",
                    (decision, reviewer, now, note, json.dumps(history), review_id),
                )
            return _get(db, review_id, now)

        return await self._store.run(work)


def entry(now: float, event: str, reviewer: str, note: str = "") -> dict[str, Any]:
    entry: dict[str, Any] = {"at": round(now, 3), "event": event, "reviewer_id": reviewer}
    if note:
        entry["note"] = note
    return entry


def check_open(item: dict[str, Any], reviewer: str, now: float) -> None:
    if item["status"] == "decided":
        raise RequestError(
            f"review {item['id']} was already decided ({item['decision']} by {item['decided_by']})",
            status=409,
        )
    holder = item["claimed_by"]
    if item["status"] == "claimed" and holder != reviewer and item["claim_expires_at"] > now:
        raise RequestError(f"review {item['id']} is claimed by {holder}", status=409)


def _get(db: sqlite3.Connection, review_id: str, now: float) -> dict[str, Any]:
    row = db.execute(f"SELECT {_COLUMNS} FROM reviews WHERE id=?", (review_id,)).fetchone()
    if row is None:
        raise RequestError(f"no review with id {review_id}", status=404)
    return _row(row, now)


def _row(row: tuple[Any, ...], now: float) -> dict[str, Any]:
    return item_of(dict(zip(COLUMN_NAMES, row, strict=True)), now)


def item_of(record: dict[str, Any], now: float) -> dict[str, Any]:
    """The API's item from a stored record (the table's columns, ``detail`` and
    ``history`` as JSON text): shared by this queue and any :class:`ReviewBackend`."""
    out = dict(record)
    out["possible_minor"] = bool(out["possible_minor"])
    out["history"] = json.loads(out["history"])
    detail = json.loads(out.pop("detail"))
    out.update(detail)
    # Evidence pictures stay on the instance that took them (``evidence_url``, set
    # by a shared backend): links then point there.
    base = str(detail.get("evidence_url") or "")
    out["evidence"] = [
        {"id": eid, "image": f"{base}/v1/evidence/{eid}/image"}
        for eid in detail.get("evidence_ids", [])
    ]
    claimed_at = out["claimed_at"]
    out["claim_expires_at"] = claimed_at + CLAIM_TTL_S if claimed_at is not None else None
    if out["status"] == "claimed" and claimed_at is not None and claimed_at + CLAIM_TTL_S <= now:
        out["status"] = "pending"  # the claim lapsed; the row is rewritten on the next claim
    return out
