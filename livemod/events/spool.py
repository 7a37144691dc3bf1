"""The spool: events decided while the store cannot take them, in ``seq`` order.

Pure and bounded. While storage is failing the hub still publishes every event, keeps
it here with its evidence, and commits the lot in order once the store recovers. The
bound protects memory, and the drop order protects moderation: evidence pictures go
first (oldest first), then events that are not actions, and an action event only when
nothing else is left.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from livemod.store import EvidenceInput


@dataclass(frozen=True, slots=True)
class SpoolLimits:
    max_events: int = 10_000
    max_evidence_bytes: int = 64 * 1024 * 1024


@dataclass(slots=True)
class Spooled:
    event: dict[str, Any]
    evidence: EvidenceInput | None

    @property
    def evidence_bytes(self) -> int:
        ev = self.evidence
        if ev is None:
            return 0
        return (ev.image.nbytes if ev.image is not None else 0) + (
            ev.audio.nbytes if ev.audio is not None else 0
        )


@dataclass(slots=True)
class Spool:
    """Events waiting for the store, oldest first, within ``limits``."""

    limits: SpoolLimits = field(default_factory=SpoolLimits)
    dropped_evidence: int = 0
    dropped_events: int = 0
    _items: deque[Spooled] = field(default_factory=deque)
    _bytes: int = 0

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Spooled]:
        return iter(self._items)

    @property
    def evidence_bytes(self) -> int:
        return self._bytes

    def add(self, event: dict[str, Any], evidence: EvidenceInput | None) -> bool:
        """Keep one more event; True when the bound made something be dropped."""
        item = Spooled(event, evidence)
        self._items.append(item)
        self._bytes += item.evidence_bytes
        dropped = False
        for old in self._items:
            if self._bytes <= self.limits.max_evidence_bytes:
                break
            if old.evidence_bytes:
                self._bytes -= old.evidence_bytes
                assert old.evidence is not None
                old.evidence = replace(old.evidence, image=None, audio=None)
                old.event["evidence"] = "unavailable"
                self.dropped_evidence += 1
                dropped = True
        while len(self._items) > self.limits.max_events:
            victim = next((i for i in self._items if i.event.get("type") != "action"), None)
            if victim is None:
                victim = self._items[0]
            self._items.remove(victim)
            self._bytes -= victim.evidence_bytes
            self.dropped_events += 1
            dropped = True
        return dropped

    def peek(self) -> Spooled | None:
        return self._items[0] if self._items else None

    def pop(self) -> Spooled:
        item = self._items.popleft()
        self._bytes -= item.evidence_bytes
        return item
