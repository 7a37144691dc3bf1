"""Follow the cluster's log as one of a group: each event to one instance.

A side effect that must happen once per cluster (a webhook delivery) reads the shared
log through a consumer group named after it: each event goes to one instance, which
acknowledges it once handled (the generator is resumed for the next one). An event an
instance took and never acknowledged, because it died, is claimed by another after
``min_idle_s`` (XAUTOCLAIM). Delivery is at least once: an instance that dies after
handling an event and before acknowledging it has it handled again elsewhere.

Without a shared log (one process) this is :func:`livemod.events.follow.follow`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any, cast

from livemod.events.follow import follow
from livemod.events.hub import EventFilter, EventHub
from livemod.events.log import GroupLog, LogUnavailable

log = logging.getLogger(__name__)

BATCH = 100
MIN_IDLE_S = 30.0


async def follow_group(
    hub: EventHub,
    group: str,
    since: int,
    flt: EventFilter | None = None,
    *,
    min_idle_s: float = MIN_IDLE_S,
    retry_s: float = 1.0,
) -> AsyncIterator[dict[str, Any]]:
    """Yield the events with ``seq > since`` (for a group created now) that this
    instance's share of ``group`` gets, matching ``flt``, forever."""
    bridge = hub.shared_log
    if bridge is None or not hasattr(bridge.log, "group_read"):
        async for event in follow(hub, since, flt):
            yield event
        return
    shared = cast(GroupLog, bridge.log)
    flt = flt or EventFilter()
    while True:
        try:
            await shared.ensure_group(group, since)
            break
        except LogUnavailable as exc:
            log.warning("consumer group %s not ready: %s", group, exc)
            await asyncio.sleep(retry_s)
    while True:
        try:
            entries = await shared.group_read(
                group, bridge.origin, count=BATCH, block_s=1.0, min_idle_s=min_idle_s
            )
        except LogUnavailable as exc:
            log.warning("consumer group %s: %s", group, exc)
            await asyncio.sleep(retry_s)
            continue
        for entry in entries:
            if flt.matches(entry.event):
                yield entry.event
            while True:
                try:
                    await shared.ack(group, entry.seq)
                    break
                except LogUnavailable:
                    await asyncio.sleep(retry_s)
