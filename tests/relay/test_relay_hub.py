"""A relay listens to the event hub without counting as a WebSocket subscriber, and
hears decisions made elsewhere (a moderator's pause) through it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from livemod import metrics
from livemod.config import load_config
from livemod.events.hub import EventFilter, EventHub
from livemod.events.types import ActionEvent
from livemod.messages import Decision
from livemod.policy.taxonomy import load_policy
from livemod.relay.link import RelayLink
from livemod.store import Store


def gauge() -> float:
    return float(metrics.WS_SUBSCRIBERS._value.get())


async def test_a_relay_is_not_counted_as_a_websocket_subscriber(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite", tmp_path / "evidence")
    await store.open()
    hub = EventHub(store)
    await hub.open()
    config = load_config(None, {"LIVEMOD_RELAY__OUTPUT": f"{tmp_path}/hls/{{room_id}}"})
    link = RelayLink(
        config, load_policy(config.policy), hub, stream_id="s1", user_id="u", room_id="r"
    )
    try:
        before = gauge()
        link.start()
        assert gauge() == before  # the relay's own subscription is internal
        viewer = hub.subscribe(EventFilter())
        assert gauge() == before + 1  # a WebSocket subscriber still counts
        decision = Decision(
            key="u:r",
            category="known_bad",
            action="pause",
            state="start",
            confidence=1.0,
            tier="high",
            sources=("moderator",),
            media_time_s=2.0,
            t_trigger=0.0,
        )
        await hub.publish(ActionEvent.of(decision, stream_id="s1", user_id="u", room_id="r"))
        for _ in range(100):
            if link.relay._plan.standing():
                break
            await asyncio.sleep(0.01)
        assert link.relay._plan.standing() == [("known_bad", "pause")]
        hub.unsubscribe(viewer)
        assert gauge() == before
    finally:
        await link.close()
        await store.close()
    assert gauge() == before
