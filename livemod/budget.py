"""A CPU budget shared by all streams and the fair order in which streams get it. Pure.

Used by speech (Whisper, ``asr.max_cpu``) and OCR (``ocr.max_cpu``); a shared lower
module because the two stages are independent siblings.

- ``CpuBudget`` is a token bucket of CPU seconds: it refills at ``rate`` CPU seconds
  per second (``max_cpu`` times the cores) up to ``burst_s`` seconds' worth. A
  pass may start while the bucket is not empty; its cost is taken afterwards (the
  bucket may go into debt), and the next pass waits until the debt is repaid. So
  over any stretch longer than a few passes the stage uses at most ``rate``.
- ``FairQueue`` holds the streams waiting for a pass, each at most once, and hands
  out the one with the least recent CPU time (exponentially decayed usage,
  ``half_life_s``): deficit scheduling, so a busy stream gets its share and no more,
  and a quiet stream that needs a pass is served next. An ``urgent`` wait (speech: a
  window that ends an utterance; OCR: the stream's last reading had a text hit) counts
  its stream's usage at half, and so does a stream with a recent policy hit (``flag``):
  the streams being acted on are served first, and as weights in a fair share (twice
  the others' share, four times for both) they cannot starve the rest.
- ``lower_priority`` makes the calling thread yield the cores to the rest of the
  daemon (OCR's workers: background work that must not slow a burst of fresh analyses).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)

Clock = Callable[[], float]

LN2 = math.log(2.0)
URGENT_FACTOR = 0.5
FLAGGED_FACTOR = 0.5


class CpuBudget:
    """CPU seconds a stage may spend, refilled at ``rate`` per second (None: no cap)."""

    def __init__(
        self, rate: float | None, *, burst_s: float = 2.0, clock: Clock = time.monotonic
    ) -> None:
        if rate is not None and rate <= 0:
            raise ValueError("rate must be positive (or None: no cap)")
        self.rate = rate
        self._clock = clock
        self._capacity = (rate or 0.0) * burst_s
        self._tokens = self._capacity
        self._at = clock()
        self.spent_s = 0.0

    def _refill(self) -> None:
        now = self._clock()
        if self.rate is not None:
            self._tokens = min(self._capacity, self._tokens + (now - self._at) * self.rate)
        self._at = now

    def wait_s(self) -> float:
        """Seconds until a pass may start (0: now)."""
        if self.rate is None:
            return 0.0
        self._refill()
        return 0.0 if self._tokens > 0 else (-self._tokens) / self.rate + 1e-3

    def charge(self, cpu_s: float) -> None:
        self._refill()
        self.spent_s += cpu_s
        if self.rate is not None:
            self._tokens -= cpu_s


@dataclass(slots=True)
class _Usage:
    cpu_s: float = 0.0
    at: float = 0.0
    flagged_until: float = 0.0


class FairQueue(Generic[K]):
    """Streams waiting for a pass, each once, served least-recently-served first."""

    def __init__(
        self,
        max_len: int,
        *,
        half_life_s: float = 10.0,
        flag_s: float = 30.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self._max = max_len
        self._half_life_s = half_life_s
        self._flag_s = flag_s
        self._clock = clock
        self._waiting: dict[K, tuple[bool, int]] = {}
        """Waiting streams: (urgent, arrival order)."""
        self._usage: dict[K, _Usage] = {}
        self._seq = 0

    def __len__(self) -> int:
        return len(self._waiting)

    def __contains__(self, key: object) -> bool:
        return key in self._waiting

    def push(self, key: K, *, urgent: bool = False) -> tuple[bool, K | None]:
        """Queue ``key``; return (coalesced: it was already waiting, the key dropped to
        keep the bound: the one that waited longest, or None)."""
        if key in self._waiting:
            was_urgent, seq = self._waiting[key]
            self._waiting[key] = (was_urgent or urgent, seq)
            return True, None
        dropped = None
        if len(self._waiting) >= self._max:
            dropped = min(self._waiting, key=lambda k: self._waiting[k][1])
            del self._waiting[dropped]
        self._seq += 1
        self._waiting[key] = (urgent, self._seq)
        return False, dropped

    def any(self, test: Callable[[K], bool]) -> bool:
        return any(test(k) for k in self._waiting)

    def pop(self, n: int = 1, *, only: Callable[[K], bool] | None = None) -> list[K]:
        """Up to ``n`` waiting keys (those that pass ``only``), fairest first; they leave
        the queue."""
        now = self._clock()
        keys = [k for k in self._waiting if only is None or only(k)]
        order = sorted(keys, key=lambda k: (self._priority(k, now), self._waiting[k][1]))
        out = order[:n]
        for key in out:
            del self._waiting[key]
        return out

    def peek(self, *, only: Callable[[K], bool] | None = None) -> K | None:
        """The waiting key (of those that pass ``only``) ``pop`` would hand out next."""
        now = self._clock()
        keys = [k for k in self._waiting if only is None or only(k)]
        if not keys:
            return None
        return min(keys, key=lambda k: (self._priority(k, now), self._waiting[k][1]))

    def leave(self, key: K) -> None:
        """``key`` no longer waits; its usage is kept."""
        self._waiting.pop(key, None)

    def remove(self, key: K) -> None:
        self._waiting.pop(key, None)
        self._usage.pop(key, None)

    def clear(self) -> None:
        self._waiting.clear()

    def charge(self, key: K, cpu_s: float) -> None:
        """``key`` used ``cpu_s`` of the budget now."""
        now = self._clock()
        usage = self._usage.setdefault(key, _Usage(at=now))
        usage.cpu_s = self._decayed(usage, now) + cpu_s
        usage.at = now

    def flag(self, key: K) -> None:
        """``key`` had a policy hit: serve it ahead for ``flag_s``."""
        now = self._clock()
        usage = self._usage.setdefault(key, _Usage(at=now))
        usage.flagged_until = now + self._flag_s

    def usage(self, key: K) -> float:
        usage = self._usage.get(key)
        return 0.0 if usage is None else self._decayed(usage, self._clock())

    def _decayed(self, usage: _Usage, now: float) -> float:
        return usage.cpu_s * math.exp(-LN2 * max(0.0, now - usage.at) / self._half_life_s)

    def _priority(self, key: K, now: float) -> float:
        usage = self._usage.get(key)
        if usage is None:
            return 0.0
        value = self._decayed(usage, now)
        if self._waiting[key][0]:
            value *= URGENT_FACTOR
        if usage.flagged_until > now:
            value *= FLAGGED_FACTOR
        return value


def lower_priority(nice: int) -> None:
    """Raise the calling thread's nice value by ``nice`` (Linux schedules threads one by
    one), so it runs on what the daemon's other threads leave: a budget caps a stage's
    average share, this decides who waits when every core is wanted at once. Where the
    system refuses (not Linux, a sandbox), the thread keeps its priority (logged)."""
    if nice <= 0:
        return
    tid = threading.get_native_id()
    try:
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, current + nice))
    except (AttributeError, OSError) as exc:
        log.warning(
            "cannot lower the priority of thread %s: %s", threading.current_thread().name, exc
        )
