"""Instances and session leases in Redis.

Each instance writes its card (HTTP address, load, sessions) every heartbeat with a
time to live of ``lease_ttl_s``: a card that expired is a dead instance. Each pull
session has a spec (what to pull, for whom) and a lease naming its owner, renewed every
heartbeat; a lease that expired is a session nobody moderates, which the least-loaded
live instance claims with ``SET NX`` and starts again under the same id. Renewal is one
Lua script that also tells an owner it lost the lease (after a pause longer than the
lease, another instance took it over), so two owners never both go on: the one that
finds the lease taken stops its copy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

MEMBERS = "livemod:{livemod}:members"
CARD = "livemod:{livemod}:instance:"
SPECS = "livemod:{livemod}:sessions"
LEASE = "livemod:{livemod}:lease:"

# KEYS[1] lease; ARGV owner, ttl ms. 1: held (renewed or taken back), 0: another owns it.
RENEW = """
local owner = redis.call('GET', KEYS[1])
if owner == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not owner then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

# KEYS[1] lease, KEYS[2] specs; ARGV owner, session id. The spec goes only with the lease.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('HDEL', KEYS[2], ARGV[2])
  return 1
end
return 0
"""


@dataclass(frozen=True, slots=True)
class Card:
    """One live instance as it last described itself."""

    id: str
    http: str
    load: int
    sessions: tuple[str, ...]
    ts: float


@dataclass(frozen=True, slots=True)
class Spec:
    """What a pull session needs to be started again elsewhere."""

    id: str
    url: str
    user_id: str
    room_id: str
    realtime: bool
    metadata: dict[str, Any]


class Leases:
    def __init__(self, client: aioredis.Redis, instance: str, ttl_s: float) -> None:
        self._r = client
        self.instance = instance
        self._ttl_ms = int(ttl_s * 1000)
        self._renew = client.register_script(RENEW)
        self._release = client.register_script(RELEASE)

    async def publish_card(self, card: Card) -> None:
        body = json.dumps(
            {"http": card.http, "load": card.load, "sessions": list(card.sessions), "ts": card.ts}
        )
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.set(CARD + card.id, body, px=self._ttl_ms)
            pipe.sadd(MEMBERS, card.id)
            await pipe.execute()

    async def withdraw_card(self) -> None:
        await self._r.delete(CARD + self.instance)
        await self._r.srem(MEMBERS, self.instance)

    async def cards(self) -> list[Card]:
        """Live instances; members whose card expired are forgotten."""
        members = sorted(_s(m) for m in await self._r.smembers(MEMBERS))
        if not members:
            return []
        raw = await self._r.mget([CARD + m for m in members])
        out: list[Card] = []
        for member, body in zip(members, raw, strict=True):
            if body is None:
                await self._r.srem(MEMBERS, member)
                continue
            d = json.loads(body)
            out.append(Card(member, d["http"], int(d["load"]), tuple(d["sessions"]), d["ts"]))
        return out

    async def claim_new(self, spec: Spec) -> bool:
        """Record a session started here and take its lease; False when another owns it."""
        body = json.dumps(
            {
                "url": spec.url,
                "user_id": spec.user_id,
                "room_id": spec.room_id,
                "realtime": spec.realtime,
                "metadata": spec.metadata,
            }
        )
        held = await self._renew(keys=[LEASE + spec.id], args=[self.instance, self._ttl_ms])
        if not held:
            return False
        await self._r.hset(SPECS, spec.id, body)
        return True

    async def renew(self, session_id: str) -> bool:
        return bool(
            await self._renew(keys=[LEASE + session_id], args=[self.instance, self._ttl_ms])
        )

    async def release(self, session_id: str) -> None:
        await self._release(keys=[LEASE + session_id, SPECS], args=[self.instance, session_id])

    async def orphans(self) -> list[Spec]:
        """Sessions with a spec and no lease: their owner died (or paused too long)."""
        specs = {_s(k): json.loads(v) for k, v in (await self._r.hgetall(SPECS)).items()}
        if not specs:
            return []
        ids = sorted(specs)
        owners = await self._r.mget([LEASE + i for i in ids])
        return [
            Spec(i, d["url"], d["user_id"], d["room_id"], bool(d["realtime"]), d["metadata"])
            for i, owner in zip(ids, owners, strict=True)
            if owner is None
            for d in (specs[i],)
        ]

    async def take(self, session_id: str) -> bool:
        """Claim an orphan's lease (only one claimant wins)."""
        return bool(await self._r.set(LEASE + session_id, self.instance, nx=True, px=self._ttl_ms))

    async def tracked(self, session_id: str) -> bool:
        return bool(await self._r.hexists(SPECS, session_id))

    async def owner(self, session_id: str) -> str | None:
        value = await self._r.get(LEASE + session_id)
        return None if value is None else _s(value)


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
