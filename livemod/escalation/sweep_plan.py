"""When the LLM sweep looks at which stream: pure, with the clock passed in.

Each stream is due one look every ``interval_s`` (``suspicious_s`` while any of its
categories is suspicious), counted from its last look. Due streams wait in no queue: the
planner keeps one due time per stream, and whenever the budget has room it hands out the
stream that has waited longest, so a crowd of streams shares the budget round-robin and
none starves. The budget is global: at most ``per_minute`` looks started in any sliding
minute and ``concurrency`` in flight. A stream left due for a whole interval has missed a
look: that is counted once per interval, under the reason that held it back.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Stream:
    last: float | None = None
    """When its last look started (None: never)."""
    due_since: float | None = None
    """When it became due and had a frame to show (None: not due)."""
    missed_since: float = 0.0
    """When the current wait started, or its last missed look was counted."""
    looks: int = 0
    in_flight: bool = False
    gone: bool = False
    """The stream ended while its look was in flight: dropped at ``done``."""


class SweepPlan:
    """Due times per stream and the global budget."""

    def __init__(
        self,
        *,
        interval_s: float,
        suspicious_s: float,
        per_minute: float,
        concurrency: int,
        on_skip: Callable[[str], None] | None = None,
    ) -> None:
        if interval_s <= 0 or suspicious_s <= 0 or per_minute <= 0 or concurrency < 1:
            raise ValueError("positive intervals, per_minute and concurrency are required")
        self.interval_s = interval_s
        self.suspicious_s = min(suspicious_s, interval_s)
        self.per_minute = per_minute
        self.concurrency = concurrency
        self._streams: dict[str, _Stream] = {}
        self._started: deque[float] = deque()
        self._in_flight = 0
        self._on_skip = on_skip
        self._blocked = "budget"
        self.skipped: dict[str, int] = {"budget": 0, "concurrency": 0, "breaker_open": 0}
        """Looks missed (due a whole interval and not sent), by what held them back."""

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def offer(self, stream_id: str, now: float, *, suspicious: bool) -> bool:
        """A sample of ``stream_id`` arrived: whether the stream is due now."""
        s = self._streams.get(stream_id)
        if s is None:
            s = self._streams[stream_id] = _Stream()
        if s.in_flight:
            return False
        interval = self.suspicious_s if suspicious else self.interval_s
        due = s.last is None or now - s.last >= interval
        if due and s.due_since is None:
            s.due_since = s.missed_since = now
        elif due and now - s.missed_since >= interval:
            # Its place in line stays (``due_since``): the longest waiting goes first.
            s.missed_since = now
            self.skipped[self._blocked] += 1
            if self._on_skip is not None:
                self._on_skip(self._blocked)
        elif not due:
            # Suspicion ended before its look: back to the plain interval.
            s.due_since = None
        return due

    def next(self, now: float) -> str | None:
        """The stream to look at now, or None (nothing due, or no budget). The caller
        must call ``done`` for it when the look ends."""
        # The longest waiting first; among equals, the least served.
        due = [
            (s.due_since, s.looks, sid)
            for sid, s in self._streams.items()
            if s.due_since is not None
        ]
        if not due:
            return None
        while self._started and now - self._started[0] >= 60.0:
            self._started.popleft()
        if self._in_flight >= self.concurrency:
            self._blocked = "concurrency"
            return None
        if len(self._started) + 1 > self.per_minute:
            self._blocked = "budget"
            return None
        *_, stream_id = min(due)
        s = self._streams[stream_id]
        s.due_since = None
        s.looks += 1
        s.last = now
        s.in_flight = True
        self._in_flight += 1
        self._started.append(now)
        return stream_id

    def block(self, reason: str) -> None:
        """Nothing may be sent now for ``reason`` (the breaker is open)."""
        self._blocked = reason

    def done(self, stream_id: str) -> None:
        s = self._streams.get(stream_id)
        if s is None or not s.in_flight:
            return
        s.in_flight = False
        self._in_flight -= 1
        if s.gone:
            del self._streams[stream_id]

    def forget(self, stream_id: str) -> None:
        """The stream ended: it is no longer due (an in-flight look still calls ``done``)."""
        s = self._streams.get(stream_id)
        if s is None:
            return
        if s.in_flight:
            # The look in flight still counts against the budget until ``done``.
            s.gone, s.due_since = True, None
        else:
            del self._streams[stream_id]

    def waiting(self) -> int:
        """Streams due and not yet looked at."""
        return sum(1 for s in self._streams.values() if s.due_since is not None)
