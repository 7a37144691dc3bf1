"""Events kept while Redis is lost survive the instance: a real child process publishes
while Redis is down and is killed with SIGKILL; its store's outbox holds the events, and
the instance started again on that store appends them, in order and once, when Redis is
back, evidence included, even the one that reached Redis before the kill."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import redis
import redis.asyncio as aioredis

from livemod.cluster.eventlog import RedisEventLog
from livemod.events.hub import EventFilter
from livemod.store import Store
from tests.cluster.outbox_child import event
from tests.cluster.test_eventlog import drain, instance
from tests.conftest import TIMEOUT_SCALE
from tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]


def crash_while_redis_is_lost(folder: Path, redis_server: RedisServer) -> str:
    """Run instance ``a`` in a child process, stop Redis, let it publish five events,
    kill -9 it; the evidence id of the event that carried a picture."""
    folder.mkdir()
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.cluster.outbox_child", str(folder), redis_server.url],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert child.stdin is not None and child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        redis_server.stop()
        child.stdin.write("go\n")
        child.stdin.flush()
        answers = json.loads(child.stdout.readline())
        # Acknowledged while the log is lost: no seq yet, kept in the store's outbox.
        assert [(e["seq"], e["stored"]) for e in answers] == [(0, False)] * 5
        return str(answers[2]["evidence_id"])
    finally:
        child.kill()
        child.wait()


def is_file(path: str) -> bool:
    return Path(path).is_file()


async def test_events_kept_while_redis_is_lost_survive_a_kill_and_append_once(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    folder = tmp_path / "a"
    evidence_id = crash_while_redis_is_lost(folder, redis_server)
    redis_server.start()
    client = redis.Redis.from_url(redis_server.url)
    assert int(client.get("livemod:{livemod}:seq") or 0) == 3
    client.close()
    # The worst moment of a crash: the first kept event reached the log but the
    # instance died before clearing it from its outbox. Its append id makes the
    # restart's append of it a no-op.
    store = Store(folder / "livemod.db", folder / "evidence")
    await store.open()
    kept_rows = await store.outbox_peek(10)
    await store.close()
    assert [e["stream_id"] for _, e in kept_rows] == [f"a-{i}" for i in range(3, 8)]
    first_id, first = kept_rows[0]
    shared = RedisEventLog(aioredis.Redis.from_url(redis_server.url))
    assert await shared.append(first, origin="a", append_id=first_id) == 4
    await shared.close()

    # A second instance follows the log; the killed one starts again on its store.
    async with instance(tmp_path, "b", redis_server) as b:
        sub = b.subscribe(EventFilter())
        async with instance(tmp_path, "a", redis_server, reuse=True) as a:
            got = await drain(sub, 8, timeout=20 * TIMEOUT_SCALE)
            assert [e["seq"] for e in got] == list(range(1, 9))
            assert [e["stream_id"] for e in got] == [f"a-{i}" for i in range(8)]
            await asyncio.sleep(0.5)
            assert sub.queue.empty(), "an event was appended twice"
            assert await a.store.outbox_count() == 0
            bridge = a.shared_log
            assert bridge is not None and bridge.spooled == 0
            # The evidence was committed with the event before the kill.
            kept = await a.store.get_evidence(evidence_id)
            assert kept is not None and kept["stream_id"] == "a-5"
            assert kept["path"] and is_file(kept["path"])
            mirrored = await a.store.events_since(3)
            assert [e["seq"] for e in mirrored] == [4, 5, 6, 7, 8]
            assert mirrored[2]["evidence_id"] == evidence_id
            # New events follow the ones kept.
            assert (await a.publish(event(99)))["seq"] == 9
