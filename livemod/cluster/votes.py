"""Vote state in Redis: every instance reads and changes the same ``userId:roomId``.

Each update is a compare-and-set: read the key's state and version, run the vote on
it here, and write it back with a Lua script that succeeds only if the version is
still the one read; a concurrent writer makes it run again on the newer state. So two
instances that see the same key never both start the same action, and a publisher who
reconnects to another instance keeps its window and its standing action.

The vote engine is synchronous (it runs between two awaits of a session), so this
store uses the blocking client with a short deadline: one loopback round trip for a
read, two for an update. While Redis is unreachable the store goes on with the last
state it saw of each key (moderation never stops), marks those keys dirty, and writes
them back when Redis answers again; it tries Redis again at most every ``retry_s``.

Evidence frames never leave the instance: a hit sample's frame is kept in a small
local cache by its arrival time and re-attached when the state is read back.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TypeVar, cast

import redis

from livemod import metrics
from livemod.messages import VideoFrame
from livemod.policy.votestate import KeyState, decode, encode

log = logging.getLogger(__name__)

T = TypeVar("T")

PREFIX = "livemod:vote:"
MAX_TRIES = 64
FRAMES_KEPT = 512
LOCAL_KEYS = 10_000
READ_FRESH_S = 0.1
"""A read this soon after this instance's own update of the key is served locally: the
session reads levels and suspicion right after each vote, and one stale tenth of a
second there only moves a boost or a summary."""

# KEYS[1]: the state hash; ARGV: expected version, new state, ttl in ms.
CAS = """
local v = redis.call('HGET', KEYS[1], 'v') or '0'
if v ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'v', tostring(tonumber(v) + 1), 's', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

# A dirty key written back after an outage: last writer wins, version moves on.
FORCE = """
redis.call('HSET', KEYS[1], 's', ARGV[1])
redis.call('HINCRBY', KEYS[1], 'v', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""


class RedisVoteStore:
    """A :class:`~livemod.policy.votestate.VoteStore` kept in Redis."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        ttl_s: float = 86400.0,
        retry_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._r = client
        self._ttl_ms = int(ttl_s * 1000)
        self._retry_s = retry_s
        self._clock = clock
        self._cas = client.register_script(CAS)
        self._force = client.register_script(FORCE)
        self._frames: OrderedDict[tuple[str, float], VideoFrame] = OrderedDict()
        self._local: OrderedDict[str, KeyState] = OrderedDict()
        self._written: dict[str, float] = {}
        self._dirty: set[str] = set()
        self._down_since: float | None = None
        self._next_try = 0.0
        self.conflicts = 0
        """Updates that ran again because another instance wrote first."""
        self.failure: str | None = None

    @property
    def degraded(self) -> str | None:
        """Why the shared state is not used right now, or ``None``."""
        return self.failure

    # -- VoteStore ------------------------------------------------------------------

    def get(self, key: str) -> KeyState | None:
        written = self._written.get(key)
        if written is not None and self._clock() - written < READ_FRESH_S:
            return self._local.get(key)
        if self._reachable():
            try:
                _, state = self._read(key)
                return state
            except redis.RedisError as exc:
                self._lost(exc)
        return self._local.get(key)

    def update(self, key: str, change: Callable[[KeyState], T]) -> T:
        # ``create``: the default is never returned.
        return self._change(key, change, cast(T, None), create=True)

    def amend(self, key: str, change: Callable[[KeyState], T], default: T) -> T:
        return self._change(key, change, default, create=False)

    # -- internals -------------------------------------------------------------------

    def _change(self, key: str, change: Callable[[KeyState], T], default: T, *, create: bool) -> T:
        if self._reachable():
            try:
                return self._cas_loop(key, change, default, create=create)
            except redis.RedisError as exc:
                self._lost(exc)
        state = self._local.get(key)
        if state is None:
            if not create:
                return default
            state = KeyState()
        result = change(state)
        self._remember(key, state)
        self._dirty.add(key)
        return result

    def _cas_loop(
        self, key: str, change: Callable[[KeyState], T], default: T, *, create: bool
    ) -> T:
        for _ in range(MAX_TRIES):
            version, state = self._read(key)
            if state is None:
                if not create:
                    return default
                state = KeyState()
            result = change(state)
            self._keep_frames(key, state)
            if self._cas(keys=[PREFIX + key], args=[version, encode(state), self._ttl_ms]):
                self._remember(key, state)
                self._written[key] = self._clock()
                return result
            self.conflicts += 1
            metrics.CLUSTER_VOTE_CONFLICTS.inc()
        raise redis.RedisError(f"vote state of {key!r} kept changing under {MAX_TRIES} tries")

    def _read(self, key: str) -> tuple[str, KeyState | None]:
        version, text = self._r.hmget(PREFIX + key, ["v", "s"])
        v = "0" if version is None else _str(version)
        if text is None:
            return v, None
        return v, decode(_str(text), lambda t: self._frames.get((key, t)))

    def _keep_frames(self, key: str, state: KeyState) -> None:
        for _, c in state.all():
            for s in c.window:
                if s.frame is not None and (key, s.t_arrival) not in self._frames:
                    self._frames[(key, s.t_arrival)] = s.frame
        while len(self._frames) > FRAMES_KEPT:
            self._frames.popitem(last=False)

    def _remember(self, key: str, state: KeyState) -> None:
        self._local[key] = state
        self._local.move_to_end(key)
        while len(self._local) > LOCAL_KEYS:
            old, _ = self._local.popitem(last=False)
            self._written.pop(old, None)

    def _reachable(self) -> bool:
        if self._down_since is None:
            return True
        now = self._clock()
        if now < self._next_try:
            return False
        self._next_try = now + self._retry_s
        try:
            for key in list(self._dirty):
                state = self._local.get(key)
                if state is not None:
                    self._force(keys=[PREFIX + key], args=[encode(state), self._ttl_ms])
                self._dirty.discard(key)
        except redis.RedisError:
            return False
        log.warning("vote state back in Redis", extra={"down_s": round(now - self._down_since, 1)})
        self._down_since = None
        self.failure = None
        return True

    def _lost(self, exc: Exception) -> None:
        if self._down_since is None:
            log.error("Redis lost; votes go on with local state: %s", exc)
            self._down_since = self._clock()
            self._next_try = self._down_since + self._retry_s
        self.failure = f"redis: {exc}"


def _str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
