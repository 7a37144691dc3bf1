"""The review queue in Redis: one queue, one claim and one decision per item for the
whole cluster (``escalation.review.ReviewBackend``).

Each item is one key (``livemod:review:item:<id>``) holding the same record the
SQLite queue keeps in a row (JSON); a sorted set (``livemod:review:ids``, by creation
time) lists them, and ``livemod:review:action:<seq>`` holds the item of each action
(SET NX: one item per action even if an action is offered twice). A claim or a
decision reads the record, checks it here with the same rules as the embedded queue,
and writes it back with a compare-and-set script (the write happens only if the
record is still the one read; otherwise it runs again on the newer one). So two
reviewers on two instances never both hold an item, and an item is decided once. A
claim lapses after ``CLAIM_TTL_S`` as in the embedded queue (its time is in the
record).

Evidence pictures stay on the instance that queued the item: the item names it
(``evidence_instance``) and its links point at that instance's HTTP address
(``evidence_url``).
"""

from __future__ import annotations

import asyncio
import builtins
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from livemod.errors import RequestError
from livemod.escalation.desk import ReviewDesk
from livemod.escalation.review import (
    COLUMN_NAMES,
    Decision,
    NewReview,
    check_open,
    entry,
    item_of,
    priority,
)

if TYPE_CHECKING:
    from livemod.cluster.node import ClusterNode

PREFIX = "livemod:review:"
IDS = PREFIX + "ids"
ACTIONS = PREFIX + "action:"
MAX_TRIES = 32
RETRY_S = 1.0

log = logging.getLogger(__name__)

_CAS = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  return 1
end
return 0
"""


class RedisReviewQueue:
    """Review items shared by every instance on one Redis."""

    def __init__(
        self,
        client: aioredis.Redis,
        instance: str,
        http_url: Callable[[], str],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = client
        self._instance = instance
        self._http_url = http_url
        self._clock = clock

    async def open(self) -> None:
        await self._call(self._redis.ping())

    async def add(self, item: NewReview) -> dict[str, Any]:
        review_id = uuid.uuid4().hex[:20]
        now = self._clock()
        detail = {
            **item.detail,
            "evidence_instance": self._instance,
            "evidence_url": self._http_url(),
        }
        record: dict[str, Any] = dict.fromkeys(COLUMN_NAMES)
        record.update(
            id=review_id,
            status="pending",
            priority=priority(item.severity, item.possible_minor),
            level=0,
            stream_id=item.stream_id,
            user_id=item.user_id,
            room_id=item.room_id,
            category=item.category,
            severity=item.severity,
            possible_minor=int(item.possible_minor),
            reason=item.reason,
            detail=json.dumps(detail),
            history=json.dumps([{"at": round(now, 3), "event": "queued", "reason": item.reason}]),
            created_at=now,
        )
        while True:
            try:
                return await self._write(record, item.detail.get("action_seq"), now)
            except RequestError as exc:
                # Redis lost: the log is too, so waiting here holds nothing else up,
                # and the item is written once Redis answers (not dropped).
                if exc.status != 503:
                    raise
                log.warning("review item waits for Redis: %s", exc)
                await asyncio.sleep(RETRY_S)

    async def get(self, review_id: str) -> dict[str, Any]:
        _, record = await self._read(review_id)
        return item_of(record, self._clock())

    async def list(
        self, *, status: str = "open", level: int | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        now = self._clock()
        items = [item_of(r, now) for r in await self._records()]
        if status == "open":
            items = [i for i in items if i["status"] in ("pending", "claimed")]
        elif status != "all":
            items = [i for i in items if i["status"] == status]
        if level is not None:
            items = [i for i in items if i["level"] == level]
        items.sort(key=lambda i: (-i["priority"], i["created_at"]))
        return items[:limit]

    async def open_count(self) -> int:
        return sum(r["status"] in ("pending", "claimed") for r in await self._records())

    async def claim(self, review_id: str, reviewer: str) -> dict[str, Any]:
        def change(record: dict[str, Any], item: dict[str, Any], now: float) -> None:
            record.update(status="claimed", claimed_by=reviewer, claimed_at=now)
            record["history"] = json.dumps([*item["history"], entry(now, "claimed", reviewer)])

        return await self._update(review_id, reviewer, change)

    async def decide(
        self, review_id: str, reviewer: str, decision: Decision, note: str = ""
    ) -> dict[str, Any]:
        def change(record: dict[str, Any], item: dict[str, Any], now: float) -> None:
            history = [*item["history"], entry(now, decision, reviewer, note)]
            record["history"] = json.dumps(history)
            if decision == "escalate":
                record.update(
                    status="pending", level=record["level"] + 1, claimed_by=None, claimed_at=None
                )
            else:
                record.update(
                    status="decided", decision=decision, decided_by=reviewer, decided_at=now,
                    note=note,
                )  # fmt: skip

        return await self._update(review_id, reviewer, change)

    # -- internals ------------------------------------------------------------------

    async def _write(self, record: dict[str, Any], action_seq: Any, now: float) -> dict[str, Any]:
        if action_seq is not None:
            # One item per action (a restart may offer an action again): the first wins.
            key = ACTIONS + str(action_seq)
            if not await self._call(self._redis.set(key, record["id"], nx=True)):
                held = await self._call(self._redis.get(key))
                if held is not None:
                    try:
                        return await self.get(held.decode())
                    except RequestError as exc:
                        if exc.status != 404:
                            raise
                        record["id"] = held.decode()  # its first write was cut short
        review_id = record["id"]
        pipe = self._redis.pipeline(transaction=True)
        pipe.set(_key(review_id), json.dumps(record))
        pipe.zadd(IDS, {review_id: now})
        await self._call(pipe.execute())
        return item_of(record, now)

    async def _update(
        self,
        review_id: str,
        reviewer: str,
        change: Callable[[dict[str, Any], dict[str, Any], float], None],
    ) -> dict[str, Any]:
        for _ in range(MAX_TRIES):
            raw, record = await self._read(review_id)
            now = self._clock()
            check_open(item_of(record, now), reviewer, now)
            change(record, item_of(record, now), now)
            written = await self._call(
                self._redis.eval(_CAS, 1, _key(review_id), raw, json.dumps(record))
            )
            if written:
                return item_of(record, now)
        raise RequestError(f"review {review_id} is busy; try again", status=409)

    async def _read(self, review_id: str) -> tuple[bytes, dict[str, Any]]:
        raw = await self._call(self._redis.get(_key(review_id)))
        if raw is None:
            raise RequestError(f"no review with id {review_id}", status=404)
        return raw, json.loads(raw)

    async def _records(self) -> builtins.list[dict[str, Any]]:
        ids = await self._call(self._redis.zrange(IDS, 0, -1))
        if not ids:
            return []
        raws = await self._call(self._redis.mget([_key(i.decode()) for i in ids]))
        return [json.loads(r) for r in raws if r is not None]

    async def _call(self, pending: Any) -> Any:
        try:
            return await pending
        except (RedisError, OSError) as exc:
            raise RequestError(f"review queue (Redis) unavailable: {exc}", status=503) from exc


def _key(review_id: str) -> str:
    return PREFIX + "item:" + review_id


def share_reviews(components: Iterable[object], node: ClusterNode) -> None:
    """Point every review desk among ``components`` at the cluster's queue."""
    for component in components:
        if isinstance(component, ReviewDesk):
            component.share_queue(RedisReviewQueue(node.redis, node.instance, node.http_url))
