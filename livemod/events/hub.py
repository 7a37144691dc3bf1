"""The event hub: commit each event to the store, then fan it out to subscribers.

Subscribers each own a bounded queue. A subscriber that falls behind by more than
its queue is disconnected (its loss is counted), never allowed to grow memory; it
reconnects with ``?since=`` and misses nothing, because every event is committed
before it is published.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from livemod import metrics
from livemod.events.types import Event, to_body
from livemod.store import EvidenceInput, Store


@dataclass(frozen=True, slots=True)
class EventFilter:
    room_id: str | None = None
    user_id: str | None = None
    stream_id: str | None = None

    def matches(self, event: dict[str, Any]) -> bool:
        return (
            (self.room_id is None or event.get("room_id") == self.room_id)
            and (self.user_id is None or event.get("user_id") == self.user_id)
            and (self.stream_id is None or event.get("stream_id") == self.stream_id)
        )


@dataclass(eq=False, slots=True)
class Subscription:
    filter: EventFilter
    queue: asyncio.Queue[dict[str, Any]]
    overflowed: asyncio.Event = field(default_factory=asyncio.Event)


class EventHub:
    """Orders, persists and fans out events. ``seq`` order is publish order."""

    def __init__(self, store: Store, *, queue_size: int = 1024) -> None:
        self._store = store
        self._queue_size = queue_size
        self._subs: set[Subscription] = set()
        self._lock = asyncio.Lock()

    @property
    def store(self) -> Store:
        return self._store

    @property
    def backlog(self) -> int:
        """Events buffered for subscribers, all queues together."""
        return sum(sub.queue.qsize() for sub in self._subs)

    def subscribe(self, flt: EventFilter) -> Subscription:
        sub = Subscription(flt, asyncio.Queue(maxsize=self._queue_size))
        self._subs.add(sub)
        metrics.WS_SUBSCRIBERS.set(len(self._subs))
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)
        metrics.WS_SUBSCRIBERS.set(len(self._subs))

    async def publish(
        self,
        event: Event,
        *,
        evidence: EvidenceInput | None = None,
        t_trigger: float | None = None,
    ) -> dict[str, Any]:
        """Commit ``event`` (with its evidence), fan it out, and return it as committed."""
        async with self._lock:
            committed = await self._store.append_event(to_body(event), evidence, t_trigger)
            self._fan_out(committed)
        metrics.EVENTS.labels(event.type).inc()
        return committed

    def _fan_out(self, event: dict[str, Any]) -> None:
        for sub in list(self._subs):
            if not sub.filter.matches(event):
                continue
            try:
                sub.queue.put_nowait(event)
            except asyncio.QueueFull:
                metrics.DROPS.labels("websocket", "slow_subscriber").inc()
                sub.overflowed.set()
                self.unsubscribe(sub)
