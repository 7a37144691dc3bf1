"""A child process for ``test_outbox.py``: one instance's hub on a real store and Redis.

It publishes three events, says ``ready``, waits for ``go`` on stdin (the test stops
Redis meanwhile), publishes five more (one with an evidence picture), prints what
``publish`` answered as JSON and then waits to be killed (kill -9: no shutdown path).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import numpy as np
import redis.asyncio as aioredis

from livemod.cluster.eventlog import RedisEventLog
from livemod.events.hub import EventHub
from livemod.events.types import SessionEvent
from livemod.store import EvidenceInput, Store


def event(i: int) -> SessionEvent:
    return SessionEvent(state="started", stream_id=f"a-{i}", user_id="u", room_id="r")


async def main(folder: Path, url: str) -> None:
    store = Store(folder / "livemod.db", folder / "evidence")
    await store.open()
    client = aioredis.Redis.from_url(url, socket_timeout=3.0, socket_connect_timeout=0.5)
    hub = EventHub(store, shared_log=RedisEventLog(client), origin="a", retry_s=0.2)
    await hub.open()
    for i in range(3):
        await hub.publish(event(i))
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    answers = []
    picture = np.full((32, 32, 3), 200, dtype=np.uint8)
    for i in range(3, 8):
        evidence = (
            EvidenceInput(f"a-{i}", "nudity", 1.0, {"nudity": 0.9}, picture) if i == 5 else None
        )
        answers.append(await hub.publish(event(i), evidence=evidence))
    print(json.dumps(answers), flush=True)
    await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2]))
