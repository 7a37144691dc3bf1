"""Pure bookkeeping for the durable escalation cursor.

The escalator follows committed events in ``seq`` order. Some of them are
escalated and stay *pending* until their ``escalation`` event is committed
(settled), in whatever order the LLM answers. The cursor it may persist is the
*low-water mark*: the highest ``seq`` such that every escalated event at or below
it is settled. After a crash the escalator replays from there, so an event that
was queued or in flight is escalated again, and none is skipped.

Writes are batched (every ``every_settles`` settles or ``every_s`` seconds);
writing late only replays a little more, never less. No clock inside: time is
passed in.
"""

from __future__ import annotations


class Watermark:
    """Pending escalations and the highest event followed → the low-water mark."""

    def __init__(self, start: int, *, every_settles: int = 32, every_s: float = 1.0) -> None:
        if every_settles < 1 or every_s <= 0:
            raise ValueError("every_settles must be >= 1 and every_s > 0")
        self._highest = start
        self._pending: set[int] = set()
        self._written = start
        self._written_at: float | None = None
        self._settles = 0
        self._every_settles = every_settles
        self._every_s = every_s

    @property
    def low_water(self) -> int:
        """Every escalated event at or below this ``seq`` is settled."""
        if self._pending:
            return min(self._pending) - 1
        return self._highest

    @property
    def written(self) -> int:
        """The mark last persisted (or the starting one)."""
        return self._written

    @property
    def pending(self) -> int:
        return len(self._pending)

    def is_pending(self, seq: int) -> bool:
        return seq in self._pending

    def observe(self, seq: int, *, escalate: bool) -> None:
        """One more event followed; ``escalate``: it waits for its outcome now.

        Events come in ``seq`` order (a replay then the live feed, without gaps);
        one at or below the highest seen is a bug in the caller, not data.
        """
        if seq <= self._highest:
            raise ValueError(f"event {seq} observed after {self._highest}")
        if escalate:
            self._pending.add(seq)
        self._highest = seq

    def settle(self, seq: int) -> None:
        """The ``escalation`` event for ``seq`` is committed (settling twice is a no-op)."""
        if seq in self._pending:
            self._pending.discard(seq)
            self._settles += 1

    def due(self, now: float) -> int | None:
        """The mark to persist now, or ``None`` when it has not moved or the batch
        is not full yet (the first write after start is due at once)."""
        mark = self.low_water
        if mark <= self._written:
            return None
        if (
            self._written_at is None
            or self._settles >= self._every_settles
            or now - self._written_at >= self._every_s
        ):
            return mark
        return None

    def mark_written(self, mark: int, now: float) -> None:
        """``mark`` (a value ``due`` or ``low_water`` gave) is persisted."""
        self._written = max(self._written, mark)
        self._written_at = now
        self._settles = 0
