"""The cluster's event log in a Redis Stream, numbered by one counter.

One Lua script per append takes the next ``seq`` (INCR) and adds the entry with the
stream id ``<seq>-0``, so the stream's order is the ``seq`` order and a reader resumes
or replays from any ``seq`` with a plain range. The script also records the append's
unique id for an hour: a retry of an append whose answer was lost returns the ``seq``
it already got instead of appending a duplicate.

Keys share the hash tag ``{livemod}``, so the script's keys sit on one node of a
Redis Cluster too.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from livemod.events.log import LogEntry, LogUnavailable

SEQ_KEY = "livemod:{livemod}:seq"
STREAM_KEY = "livemod:{livemod}:events"
APPEND_ID_PREFIX = "livemod:{livemod}:append:"
APPEND_ID_TTL_S = 3600
MAXLEN = 1_000_000
"""Entries the stream keeps (approximately): the reach of ``?since=`` on a new instance."""

APPEND = """
local seen = redis.call('GET', KEYS[3])
if seen then return tonumber(seen) end
local seq = redis.call('INCR', KEYS[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], seq .. '-0',
  'e', ARGV[1], 'o', ARGV[2], 'i', ARGV[5])
redis.call('SET', KEYS[3], seq, 'EX', ARGV[4])
return seq
"""


class RedisEventLog:
    """An :class:`~livemod.events.log.EventLog` on a Redis Stream."""

    def __init__(self, client: aioredis.Redis, *, maxlen: int = MAXLEN) -> None:
        self._r = client
        self._script = client.register_script(APPEND)
        self._maxlen = maxlen

    async def append(self, body: dict[str, Any], *, origin: str, append_id: str) -> int:
        text = json.dumps(body, separators=(",", ":"))
        try:
            seq = await self._script(
                keys=[SEQ_KEY, STREAM_KEY, APPEND_ID_PREFIX + append_id],
                args=[text, origin, self._maxlen, APPEND_ID_TTL_S, append_id],
            )
        except (RedisError, OSError) as exc:
            raise _unavailable(exc) from exc
        return int(seq)

    async def read(self, after: int, *, count: int, block_s: float) -> list[LogEntry]:
        try:
            reply: Any = await self._r.xread(
                {STREAM_KEY: f"{after}-0"}, count=count, block=max(1, int(block_s * 1000))
            )
        except (RedisError, OSError) as exc:
            raise _unavailable(exc) from exc
        _still_wanted()
        return [_entry(i, f) for _, entries in reply or [] for i, f in entries]

    async def since(self, after: int, *, count: int) -> list[LogEntry]:
        """Entries after ``after`` without waiting (a replay)."""
        try:
            entries: Any = await self._r.xrange(STREAM_KEY, min=f"({after}-0", count=count)
        except (RedisError, OSError) as exc:
            raise _unavailable(exc) from exc
        return [_entry(i, f) for i, f in entries]

    # -- consumer groups (GroupLog) -----------------------------------------------------

    async def ensure_group(self, group: str, after: int) -> None:
        try:
            await self._r.xgroup_create(STREAM_KEY, group, id=f"{after}-0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise _unavailable(exc) from exc
        except (RedisError, OSError) as exc:
            raise _unavailable(exc) from exc

    async def group_read(
        self, group: str, consumer: str, *, count: int, block_s: float, min_idle_s: float
    ) -> list[LogEntry]:
        """Entries a dead consumer of the group left unacknowledged first (XAUTOCLAIM),
        then new ones (XREADGROUP)."""
        try:
            claimed: Any = await self._r.xautoclaim(
                STREAM_KEY, group, consumer, int(min_idle_s * 1000), "0-0", count=count
            )
            entries = [e for e in claimed[1] if e[1] is not None]
            if entries:
                return [_entry(i, f) for i, f in entries]
            reply: Any = await self._r.xreadgroup(
                group, consumer, {STREAM_KEY: ">"}, count=count, block=max(1, int(block_s * 1000))
            )
        except (RedisError, OSError) as exc:
            raise _unavailable(exc) from exc
        _still_wanted()
        return [_entry(i, f) for _, items in reply or [] for i, f in items if f is not None]

    async def ack(self, group: str, seq: int) -> None:
        try:
            await self._r.xack(STREAM_KEY, group, f"{seq}-0")
        except (RedisError, OSError) as exc:
            raise _unavailable(exc) from exc

    async def close(self) -> None:
        await self._r.aclose()

    async def last_seq(self) -> int:
        try:
            value = await self._r.get(SEQ_KEY)
        except (RedisError, OSError) as exc:
            raise _unavailable(exc) from exc
        return 0 if value is None else int(value)


def _still_wanted() -> None:
    """A blocking read that was cancelled can come back empty instead of raising (the
    client swallowed the cancellation): end the task as it was asked to."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError()


def _unavailable(exc: BaseException) -> BaseException:
    """The error to raise for a failed call. redis-py turns a cancellation that lands
    during a read into a connection error: a task being cancelled gets its
    ``CancelledError`` back instead, so a retry loop around the call still ends."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        return asyncio.CancelledError()
    return LogUnavailable(f"redis: {exc}")


def _entry(entry_id: bytes | str, fields: dict[Any, Any]) -> LogEntry:
    sid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    seq = int(sid.split("-", 1)[0])
    raw = {(k.decode() if isinstance(k, bytes) else k): v for k, v in fields.items()}
    event = {"seq": seq, **json.loads(raw["e"])}
    return LogEntry(seq, event, _text(raw.get("o", b"")), _text(raw.get("i", b"")))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
