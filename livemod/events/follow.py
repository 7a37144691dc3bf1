"""Follow committed events in process, in ``seq`` order, without gaps.

Components (escalation, review, webhooks) read the hub like a WebSocket client
with ``?since=``: a live subscription, plus a replay from the store of whatever
was committed after the last event handled. When the hub drops a subscriber that
fell behind, the follower subscribes again and replays, so nothing is skipped.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from livemod.events.hub import EventFilter, EventHub

REPLAY_PAGE = 1000


async def follow(
    hub: EventHub, since: int, flt: EventFilter | None = None, *, local_only: bool = False
) -> AsyncIterator[dict[str, Any]]:
    """Yield every event with ``seq > since`` matching ``flt``, forever.

    ``local_only``: with several instances (a shared log), only the events this
    instance decided, for work that needs the session's own frames (escalation)."""
    if local_only and hub.shared_log is not None:
        bridge = hub.shared_log
        async for event in follow(hub, since, flt):
            if bridge.is_local(int(event["seq"])):
                yield event
        return
    flt = flt or EventFilter()
    last = since
    while True:
        sub = hub.subscribe(flt)
        try:
            # Subscribed first, replayed second: an event committed in between is in
            # both, and the seq check below skips the second copy.
            while True:
                page = await hub.store.events_since(
                    last,
                    room_id=flt.room_id,
                    user_id=flt.user_id,
                    stream_id=flt.stream_id,
                    limit=REPLAY_PAGE,
                )
                for event in page:
                    last = int(event["seq"])
                    yield event
                if len(page) < REPLAY_PAGE:
                    break
            overflow = asyncio.ensure_future(sub.overflowed.wait())
            get: asyncio.Future[dict[str, Any]] | None = None
            try:
                while True:
                    get = asyncio.ensure_future(sub.queue.get())
                    done, _ = await asyncio.wait(
                        {get, overflow}, return_when=asyncio.FIRST_COMPLETED
                    )
                    if get not in done:
                        get.cancel()
                        break  # dropped for being slow: subscribe again and replay
                    event = get.result()
                    if int(event["seq"]) <= last:
                        continue
                    last = int(event["seq"])
                    yield event
            finally:
                overflow.cancel()
                if get is not None:
                    get.cancel()
        finally:
            hub.unsubscribe(sub)
