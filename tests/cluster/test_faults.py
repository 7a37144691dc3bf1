"""Faults of a cluster: Redis down at start-up, an owner paused past its lease (a split
brain), and Redis lost while running (degraded, moderation goes on)."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from livemod.cluster.node import PLACED_HEADER
from tests.cluster.conftest import FAST_ENV
from tests.cluster.support import status, until
from tests.conftest import DaemonProcess, free_port
from tests.nginx import NginxRtmp
from tests.redis_server import RedisServer

pytestmark = pytest.mark.e2e


def test_redis_down_at_start_up_names_the_setting(tmp_path: Path, known_bad_dir: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    daemon = DaemonProcess(
        tmp_path, known_bad_dir, extra_env={**FAST_ENV, "LIVEMOD_CLUSTER__REDIS_URL": url}
    )
    with pytest.raises(RuntimeError, match="daemon exited"):
        daemon.start()
    assert f"cluster.redis_url='{url}'" in daemon.log()
    assert "Redis does not answer" in daemon.log()


async def test_a_paused_owner_finds_its_lease_taken_and_redis_loss_degrades(
    stack: tuple[DaemonProcess, DaemonProcess, NginxRtmp], redis_server: RedisServer
) -> None:
    a, b, nginx = stack
    assert a.proc is not None
    async with aiohttp.ClientSession() as http:
        body = {
            "url": f"rtmp://127.0.0.1:{nginx.rtmp_port}/plain/room-9",
            "user_id": "u9",
            "room_id": "room-9",
        }
        # Sent to b, placed by b on the least-loaded instance; both have no load, so
        # the tie goes to the lower id: a.
        async with http.post(f"{b.base}/v1/streams", json=body) as resp:
            created = await resp.json()
            assert resp.status == 201, created
            assert resp.headers[PLACED_HEADER] == "a"
        sid = created["id"]

        async def live(base: str) -> bool:
            code, body = await status(http, f"{base}/v1/streams/{sid}")
            return code == 200 and body["status"] == "live" and body["samples"] > 0

        await until(lambda: live(a.base), 20, "the session live on a")
        # A pause longer than the lease (a frozen VM, a network partition) ...
        os.kill(a.proc.pid, signal.SIGSTOP)
        try:
            await until(lambda: live(b.base), 20, "b to take the paused owner's session")
        finally:
            os.kill(a.proc.pid, signal.SIGCONT)

        # ... and when a wakes up it finds the lease taken and stops its copy.
        async def a_gave_up() -> bool:
            code, body = await status(http, f"{a.base}/v1/streams/{sid}")
            return code == 200 and body["status"] in ("ended", "failed")

        await until(a_gave_up, 15, "a to give the session up")

        # The cluster view is the instances' cards, each republished on its heartbeat:
        # b's card names the session from b's next heartbeat on (seen in CI: one read
        # right after a gave up still had b's card from before the takeover).
        async def b_owns_it_alone() -> bool:
            _, cluster = await status(http, f"{a.base}/v1/cluster")
            owners = {i["id"]: i["sessions"] for i in cluster["instances"]}
            return owners.get("b") == [sid] and not owners.get("a")

        await until(b_owns_it_alone, 10, "the cluster view to show b alone owning it")
        _, on_b = await status(http, f"{b.base}/v1/streams/{sid}")
        assert on_b["status"] == "live"

        # Redis lost: /healthz says degraded, and the session goes on moderating.
        redis_server.stop()

        async def degraded() -> Any:
            _, health = await status(http, f"{b.base}/healthz")
            return health if health["status"] == "degraded" else None

        health = await until(degraded, 10, "healthz to say degraded")
        assert any("redis" in reason for reason in health["degraded"])
        _, before = await status(http, f"{b.base}/v1/streams/{sid}")
        await asyncio.sleep(1.5)
        _, after = await status(http, f"{b.base}/v1/streams/{sid}")
        assert after["status"] == "live" and after["samples"] > before["samples"]
        redis_server.start()

        async def healthy() -> bool:
            _, health = await status(http, f"{b.base}/healthz")
            return bool(health["status"] == "ok")

        await until(healthy, 15, "healthz to be ok again")
