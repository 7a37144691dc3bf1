"""SQLite store (WAL): sessions, every event, and the evidence behind each action.

All database work runs on one dedicated thread, never on the event loop. An event
is committed before it is broadcast, so what a subscriber saw survives a restart
and ``?since=SEQ`` can replay it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
import uuid
import wave
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np

from livemod.errors import StoreError
from livemod.messages import AUDIO_RATE, Image, Samples

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    url TEXT NOT NULL,
    source TEXT NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    metadata TEXT NOT NULL DEFAULT '{}',
    started_at REAL NOT NULL,
    ended_at REAL
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    type TEXT NOT NULL,
    stream_id TEXT,
    user_id TEXT,
    room_id TEXT,
    created_at REAL NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_stream ON events(stream_id);
CREATE TABLE IF NOT EXISTS evidence (
    id TEXT PRIMARY KEY,
    stream_id TEXT NOT NULL,
    category TEXT NOT NULL,
    path TEXT,
    scores TEXT NOT NULL,
    media_time_s REAL NOT NULL,
    created_at REAL NOT NULL,
    text TEXT
);
CREATE TABLE IF NOT EXISTS log_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    append_id TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL,
    created_at REAL NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class EvidenceInput:
    """The frame and scores that triggered an action, to keep for appeals."""

    stream_id: str
    category: str
    media_time_s: float
    scores: dict[str, float]
    image: Image | None
    text: str | None = None
    """The words behind the action (on-screen text, a transcript), if any."""
    audio: Samples | None = None
    """What was said (16 kHz mono), kept as a WAV file when there is no image."""


class Store:
    """The daemon's durable state. Every public coroutine runs on the store thread."""

    def __init__(self, path: Path, evidence_dir: Path) -> None:
        self._path = path
        self._evidence_dir = evidence_dir
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="livemod-store")
        self._db: sqlite3.Connection | None = None
        self.evidence_failure: str | None = None
        """Why the last evidence file could not be written; None once one is again."""

    async def open(self) -> None:
        await self._run(self._open_sync)

    def _open_sync(self) -> None:
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._evidence_dir.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            # FULL: an acknowledged event survives power loss, not only a crash.
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
            # Stores made before evidence kept text gain the column.
            if "text" not in {row[1] for row in db.execute("PRAGMA table_info(evidence)")}:
                db.execute("ALTER TABLE evidence ADD COLUMN text TEXT")
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open store {self._path}: {exc}") from exc
        self._db = db

    async def close(self) -> None:
        if self._db is not None:
            await self._run(self._db.close)
            self._db = None
        self._pool.shutdown(wait=True)

    async def _run(self, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn)
        except sqlite3.Error as exc:  # a full disk, a broken file: one error type for callers
            raise StoreError(f"store: {exc}") from exc

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError("store is not open")
        return self._db

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the store thread (components keep their own
        tables in this database this way)."""
        return await self._run(lambda: fn(self.db))

    async def add_evidence(self, evidence: EvidenceInput) -> str:
        """Keep one more frame (and its scores) as evidence; return its id."""
        return await self._run(lambda: self._save_evidence(evidence))

    # -- sessions -----------------------------------------------------------

    async def add_session(
        self,
        session_id: str,
        user_id: str,
        room_id: str,
        url: str,
        source: str,
        metadata: dict[str, Any],
    ) -> None:
        def work() -> None:
            self.db.execute(
                "INSERT INTO sessions (id, user_id, room_id, url, source, status, metadata,"
                " started_at) VALUES (?, ?, ?, ?, ?, 'starting', ?, ?)",
                (session_id, user_id, room_id, url, source, json.dumps(metadata), time.time()),
            )

        await self._run(work)

    async def end_session(self, session_id: str, status: str, error: str | None) -> None:
        def work() -> None:
            self.db.execute(
                "UPDATE sessions SET status=?, error=?, ended_at=? WHERE id=?",
                (status, error, time.time(), session_id),
            )

        await self._run(work)

    async def set_session_status(self, session_id: str, status: str) -> None:
        def work() -> None:
            self.db.execute("UPDATE sessions SET status=? WHERE id=?", (status, session_id))

        await self._run(work)

    async def close_orphan_sessions(self) -> list[dict[str, Any]]:
        """Sessions left open by a previous process (crash, kill) are marked interrupted.

        Returns each one (``id``, ``user_id``, ``room_id``, ``source``) with the actions
        its events left standing (``[{"action", "category"}]``: started, never stopped).
        """

        def work() -> list[dict[str, Any]]:
            # One store thread: nothing writes sessions between the read and the update.
            rows = self.db.execute(
                "SELECT id, user_id, room_id, source FROM sessions WHERE ended_at IS NULL"
                " ORDER BY started_at"
            ).fetchall()
            self.db.execute(
                "UPDATE sessions SET status='interrupted', ended_at=? WHERE ended_at IS NULL",
                (time.time(),),
            )
            out = []
            for sid, user_id, room_id, source in rows:
                standing: dict[tuple[str, str], None] = {}
                for (body,) in self.db.execute(
                    "SELECT body FROM events WHERE stream_id=? AND type='action' ORDER BY seq",
                    (sid,),
                ):
                    event = json.loads(body)
                    key = (str(event.get("action")), str(event.get("category")))
                    if event.get("state") == "start":
                        standing[key] = None
                    else:
                        standing.pop(key, None)
                actions = [{"action": a, "category": c} for a, c in standing]
                out.append(
                    {
                        "id": sid,
                        "user_id": user_id,
                        "room_id": room_id,
                        "source": source,
                        "standing_actions": actions,
                    }
                )
            return out

        return await self._run(work)

    async def get_session(self, session_id: str) -> dict[str, Any] | None:
        def work() -> dict[str, Any] | None:
            cur = self.db.execute(
                "SELECT id, user_id, room_id, url, source, status, error, metadata, started_at,"
                " ended_at FROM sessions WHERE id=?",
                (session_id,),
            )
            row = cur.fetchone()
            if row is None:
                return None
            cols = [c[0] for c in cur.description]
            out = dict(zip(cols, row, strict=True))
            out["metadata"] = json.loads(out["metadata"])
            return out

        return await self._run(work)

    # -- events ---------------------------------------------------------------

    async def append_event(
        self, event: dict[str, Any], evidence: EvidenceInput | None = None
    ) -> dict[str, Any]:
        """Commit one stamped event (the hub chose its ``seq``) with its evidence row.

        The evidence file is written first; when it cannot be (a full or read-only
        evidence folder) the row and the event are committed anyway, the event marked
        ``"evidence": "unavailable"``: moderation never waits on a picture. Returns the
        event as committed; raises ``StoreError`` when the database cannot take it.
        """

        def insert(out: dict[str, Any]) -> None:
            self.db.execute(
                "INSERT INTO events (seq, type, stream_id, user_id, room_id, created_at,"
                " body) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    out["seq"],
                    out.get("type"),
                    out.get("stream_id"),
                    out.get("user_id"),
                    out.get("room_id"),
                    out.get("ts", time.time()),
                    json.dumps(out),
                ),
            )

        return await self._run(lambda: self._commit(event, evidence, insert, "cannot store event"))

    def _commit(
        self,
        event: dict[str, Any],
        evidence: EvidenceInput | None,
        insert: Callable[[dict[str, Any]], None],
        failure: str,
    ) -> dict[str, Any]:
        """Write the evidence file (if any), then its row and the event (``insert``) in one
        transaction. A picture that cannot be written marks the event ``"evidence":
        "unavailable"``; a database error rolls back, removes the picture (a spool writes it
        again with the event) and raises ``StoreError`` prefixed by ``failure``."""
        out = dict(event)
        evidence_id = out.get("evidence_id")
        path: str | None = None
        if evidence is not None and evidence_id:
            try:
                path = self._write_evidence_file(str(evidence_id), evidence)
            except OSError as exc:
                self.evidence_failure = f"cannot write evidence: {exc}"
                out["evidence"] = "unavailable"
            else:
                self.evidence_failure = None
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
            if evidence is not None and evidence_id:
                self._insert_evidence(str(evidence_id), evidence, path)
            insert(out)
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            if path is not None:
                Path(path).unlink(missing_ok=True)
            raise StoreError(f"{failure}: {exc}") from exc
        return out

    # -- the outbox of a shared log (events waiting for Redis) -------------------

    async def outbox_add(
        self, append_id: str, event: dict[str, Any], evidence: EvidenceInput | None = None
    ) -> dict[str, Any]:
        """Keep one event (no ``seq`` yet) for the shared log, with its evidence row, in
        one transaction: it survives a crash until :meth:`outbox_remove`. Returns the
        event as kept (marked ``"evidence": "unavailable"`` when the picture could not
        be written); raises ``StoreError``."""

        def insert(out: dict[str, Any]) -> None:
            self.db.execute(
                "INSERT INTO log_outbox (append_id, body, created_at) VALUES (?, ?, ?)",
                (append_id, json.dumps(out), time.time()),
            )

        return await self._run(
            lambda: self._commit(event, evidence, insert, "cannot keep event for the log")
        )

    async def outbox_peek(self, limit: int) -> list[tuple[str, dict[str, Any]]]:
        """The oldest kept events, in the order they were kept: (append id, event)."""

        def work() -> list[tuple[str, dict[str, Any]]]:
            rows = self.db.execute(
                "SELECT append_id, body FROM log_outbox ORDER BY id LIMIT ?", (limit,)
            ).fetchall()
            return [(str(r[0]), json.loads(r[1])) for r in rows]

        return await self._run(work)

    async def outbox_remove(self, append_id: str) -> None:
        await self._run(
            lambda: self.db.execute("DELETE FROM log_outbox WHERE append_id = ?", (append_id,))
        )

    async def outbox_count(self) -> int:
        return int(
            await self._run(
                lambda: self.db.execute("SELECT COUNT(*) FROM log_outbox").fetchone()[0]
            )
        )

    def _save_evidence(self, evidence: EvidenceInput) -> str:
        evidence_id = uuid.uuid4().hex
        try:
            path = self._write_evidence_file(evidence_id, evidence)
        except OSError as exc:
            self.evidence_failure = f"cannot write evidence: {exc}"
            path = None
        try:
            self._insert_evidence(evidence_id, evidence, path)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot store evidence: {exc}") from exc
        return evidence_id

    def _write_evidence_file(self, evidence_id: str, evidence: EvidenceInput) -> str | None:
        """The JPEG (or, for speech, WAV) of one piece of evidence; ``OSError`` when
        the folder cannot take it."""
        if evidence.image is not None:
            day = time.strftime("%Y%m%d", time.gmtime())
            folder = self._evidence_dir / day
            folder.mkdir(parents=True, exist_ok=True)
            file = folder / f"{evidence_id}.jpg"
            bgr = np.ascontiguousarray(evidence.image[:, :, ::-1])
            ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
            if not ok:
                return None
            try:
                file.write_bytes(data.tobytes())
            except OSError:
                file.unlink(missing_ok=True)  # no half-written pictures
                raise
            return str(file)
        if evidence.audio is not None and len(evidence.audio):
            return self._save_wav(evidence_id, evidence.audio)
        return None

    def _insert_evidence(self, evidence_id: str, evidence: EvidenceInput, path: str | None) -> None:
        self.db.execute(
            "INSERT INTO evidence (id, stream_id, category, path, scores, media_time_s, created_at,"
            " text) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                evidence_id,
                evidence.stream_id,
                evidence.category,
                path,
                json.dumps(evidence.scores),
                evidence.media_time_s,
                time.time(),
                evidence.text,
            ),
        )

    def _save_wav(self, evidence_id: str, audio: Samples) -> str:
        folder = self._evidence_dir / time.strftime("%Y%m%d", time.gmtime())
        folder.mkdir(parents=True, exist_ok=True)
        file = folder / f"{evidence_id}.wav"
        pcm = (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2")
        try:
            with wave.open(str(file), "wb") as out:
                out.setnchannels(1)
                out.setsampwidth(2)
                out.setframerate(AUDIO_RATE)
                out.writeframes(pcm.tobytes())
        except OSError:
            file.unlink(missing_ok=True)
            raise
        return str(file)

    async def events_since(
        self,
        since: int,
        *,
        room_id: str | None = None,
        user_id: str | None = None,
        stream_id: str | None = None,
        limit: int = 10_000,
    ) -> list[dict[str, Any]]:
        def work() -> list[dict[str, Any]]:
            sql = "SELECT body FROM events WHERE seq > ?"
            args: list[Any] = [since]
            for column, value in (
                ("room_id", room_id),
                ("user_id", user_id),
                ("stream_id", stream_id),
            ):
                if value is not None:
                    sql += f" AND {column} = ?"
                    args.append(value)
            sql += " ORDER BY seq LIMIT ?"
            args.append(limit)
            return [json.loads(row[0]) for row in self.db.execute(sql, args)]

        return await self._run(work)

    async def last_seq(self) -> int:
        def work() -> int:
            row = self.db.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()
            return int(row[0])

        return await self._run(work)

    async def get_evidence(self, evidence_id: str) -> dict[str, Any] | None:
        def work() -> dict[str, Any] | None:
            row = self.db.execute(
                "SELECT id, stream_id, category, path, scores, media_time_s, created_at, text"
                " FROM evidence WHERE id=?",
                (evidence_id,),
            ).fetchone()
            if row is None:
                return None
            keys = (
                "id", "stream_id", "category", "path", "scores", "media_time_s", "created_at",
                "text",
            )  # fmt: skip
            out = dict(zip(keys, row, strict=True))
            out["scores"] = json.loads(out["scores"])
            return out

        return await self._run(work)

    async def purge_evidence(self, older_than_s: float) -> int:
        """Delete evidence files and text past retention; their index rows keep the scores."""

        def work() -> int:
            cutoff = time.time() - older_than_s
            rows: Sequence[tuple[str, str | None]] = self.db.execute(
                "SELECT id, path FROM evidence WHERE created_at < ?"
                " AND (path IS NOT NULL OR text IS NOT NULL)",
                (cutoff,),
            ).fetchall()
            for evidence_id, path in rows:
                if path is not None:
                    Path(path).unlink(missing_ok=True)
                self.db.execute(
                    "UPDATE evidence SET path=NULL, text=NULL WHERE id=?", (evidence_id,)
                )
            return len(rows)

        return await self._run(work)
