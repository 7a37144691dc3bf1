"""A WHIP publisher is bound to the peer connection of the instance it reached: when
that instance dies (SIGKILL), another announces the session ``interrupted``, with
what stands for the publisher, and the publisher reconnects to any instance."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from aiortc import VideoStreamTrack

from livemod.ingest.whip.client import WhipClient
from tests.cluster.conftest import instance
from tests.cluster.support import running
from tests.conftest import TIMEOUT_SCALE, DaemonProcess
from tests.redis_server import RedisServer

pytestmark = pytest.mark.e2e

LOOPBACK = ["127.0.0.1"]


@pytest.fixture
def pair(
    tmp_path: Path, known_bad_dir: Path, redis_server: RedisServer
) -> Iterator[tuple[DaemonProcess, DaemonProcess]]:
    env = {"LIVEMOD_WHIP__ICE_ADDRESSES": json.dumps(LOOPBACK)}
    a = instance(tmp_path, "a", known_bad_dir, redis_server, **env)
    b = instance(tmp_path, "b", known_bad_dir, redis_server, **env)
    with running(a, b):
        yield a, b


async def next_event(ws: Any, state: str, timeout: float) -> dict[str, Any]:
    async with asyncio.timeout(timeout * TIMEOUT_SCALE):
        while True:
            event: dict[str, Any] = json.loads(await ws.recv())
            if event.get("type") == "session" and event.get("state") == state:
                return event


async def test_whip_publisher_of_a_killed_instance_is_interrupted(
    pair: tuple[DaemonProcess, DaemonProcess],
) -> None:
    a, b = pair
    client = WhipClient(f"{a.base}/whip/room-w?user_id=wendy", ice_addresses=LOOPBACK)
    async with websockets.connect(f"{b.ws}?room_id=room-w") as ws:
        await client.publish(VideoStreamTrack())
        started = await next_event(ws, "started", 20)
        assert started["source"] == "whip"
        await asyncio.sleep(1.5)  # a heartbeat has recorded the session
        assert a.proc is not None
        os.kill(a.proc.pid, signal.SIGKILL)
        a.proc.wait()
        interrupted = await next_event(ws, "interrupted", 10)
    await client.close()
    assert interrupted["stream_id"] == started["stream_id"]
    assert interrupted["reason"] == "instance_lost" and interrupted["source"] == "whip"
    assert interrupted["standing_actions"] == []
