"""The shared event log on a real Redis: two hubs (two instances' worth) publish at
once, and every subscriber sees every event once in ``seq`` order; Redis lost in the
middle spools the events and appends them, in order and once, when it is back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from livemod.cluster.eventlog import RedisEventLog
from livemod.events.groups import follow_group
from livemod.events.hub import EventFilter, EventHub, Subscription
from livemod.events.types import SessionEvent
from livemod.store import Store
from tests.redis_server import RedisServer


@asynccontextmanager
async def instance(
    tmp: Path, name: str, server: RedisServer, *, reuse: bool = False
) -> AsyncIterator[EventHub]:
    """``reuse``: open the store an earlier run of ``name`` left (a restart)."""
    folder = tmp / name
    folder.mkdir(exist_ok=reuse)
    store = Store(folder / "livemod.db", folder / "evidence")
    await store.open()
    client = aioredis.Redis.from_url(server.url, socket_timeout=3.0, socket_connect_timeout=0.5)
    hub = EventHub(store, shared_log=RedisEventLog(client), origin=name, retry_s=0.2)
    await hub.open()
    try:
        yield hub
    finally:
        await hub.close()
        await client.aclose()
        await store.close()


def event(i: int, who: str) -> SessionEvent:
    return SessionEvent(state="started", stream_id=f"{who}-{i}", user_id="u", room_id="r")


async def drain(sub: Subscription, n: int, timeout: float = 20.0) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while len(out) < n:
            out.append(await sub.queue.get())
    return out


async def test_two_instances_share_one_ordered_log(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with (
        instance(tmp_path, "a", redis_server) as a,
        instance(tmp_path, "b", redis_server) as b,
    ):
        sub_a, sub_b = a.subscribe(EventFilter()), b.subscribe(EventFilter())

        async def burst(hub: EventHub, who: str) -> list[int]:
            return [int((await hub.publish(event(i, who)))["seq"]) for i in range(100)]

        seqs_a, seqs_b = await asyncio.gather(burst(a, "a"), burst(b, "b"))
        # Unique across instances, increasing per publisher.
        assert sorted(seqs_a + seqs_b) == list(range(1, 201))
        assert seqs_a == sorted(seqs_a) and seqs_b == sorted(seqs_b)
        for sub in (sub_a, sub_b):
            got = await drain(sub, 200)
            assert [e["seq"] for e in got] == list(range(1, 201))
            assert {e["stream_id"][0] for e in got} == {"a", "b"}
        # Each instance's store mirrors the whole log: ?since= replays it anywhere.
        replay = await b.store.events_since(150)
        assert [e["seq"] for e in replay] == list(range(151, 201))


async def test_redis_lost_spools_then_appends_in_order_once(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with (
        instance(tmp_path, "a", redis_server) as a,
        instance(tmp_path, "b", redis_server) as b,
    ):
        sub = b.subscribe(EventFilter())
        for i in range(3):
            await a.publish(event(i, "a"))
        assert [e["seq"] for e in await drain(sub, 3)] == [1, 2, 3]
        redis_server.stop()
        held = [await a.publish(event(i, "a")) for i in range(3, 8)]
        # Moderation goes on: publish answers at once, the events wait in the spool.
        assert all(e["stored"] is False and e["seq"] == 0 for e in held)
        assert any("event log" in r for r in a.degraded())
        redis_server.start()
        got = await drain(sub, 5)
        assert [e["seq"] for e in got] == [4, 5, 6, 7, 8]
        assert [e["stream_id"] for e in got] == [f"a-{i}" for i in range(3, 8)]
        await asyncio.sleep(0.5)
        assert sub.queue.empty(), "an event was appended twice"
        for _ in range(100):
            if not a.degraded():
                break
            await asyncio.sleep(0.1)
        assert not a.degraded()
        # Events published after the return follow the spooled ones.
        assert (await a.publish(event(99, "a")))["seq"] == 9


async def test_a_consumer_group_hands_each_event_to_one_instance_and_reclaims_the_dead(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with (
        instance(tmp_path, "a", redis_server) as a,
        instance(tmp_path, "b", redis_server) as b,
    ):
        bridge = a.shared_log
        assert bridge is not None
        shared = bridge.log
        assert isinstance(shared, RedisEventLog)
        await shared.ensure_group("hooks", 0)
        for i in range(10):
            await a.publish(event(i, "a"))
        # An instance takes five events and dies before acknowledging them.
        taken = await shared.group_read("hooks", "dead", count=5, block_s=0.1, min_idle_s=60)
        assert [e.seq for e in taken] == [1, 2, 3, 4, 5]
        got: dict[str, list[int]] = {"a": [], "b": []}

        async def consume(hub: EventHub, name: str) -> None:
            async for e in follow_group(hub, "hooks", 0, min_idle_s=0.2):
                got[name].append(int(e["seq"]))

        tasks = [asyncio.create_task(consume(a, "a")), asyncio.create_task(consume(b, "b"))]
        for i in range(10, 30):
            await b.publish(event(i, "b"))
        for _ in range(100):
            if len(got["a"]) + len(got["b"]) >= 30:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # Every event once across the cluster, the dead consumer's five included.
        assert sorted(got["a"] + got["b"]) == list(range(1, 31))
