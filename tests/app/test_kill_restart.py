"""A killed daemon: on restart its live sessions are announced as interrupted.

A real ``livemod serve`` is SIGKILLed while a stream has a ``pause`` standing. After the
restart, subscribers get one ``session`` event ``interrupted`` for that stream, naming
the action nothing will ever stop now, and the store says the session was interrupted.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import websockets

from tests.app.test_e2e import post_stream
from tests.conftest import TIMEOUT_SCALE, DaemonProcess

pytestmark = pytest.mark.e2e


async def next_event(ws: Any, match: Any, timeout: float = 60.0) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        async for raw in ws:
            event: dict[str, Any] = json.loads(raw)
            if match(event):
                return event
        raise AssertionError("the event stream closed")

    return await asyncio.wait_for(run(), timeout * TIMEOUT_SCALE)


async def test_killed_sessions_are_announced_interrupted_after_restart(
    daemon: DaemonProcess, violation_clip: Path
) -> None:
    async with (
        websockets.connect(f"{daemon.ws}?room_id=room-k") as ws,
        aiohttp.ClientSession() as http,
    ):
        created = await post_stream(
            http,
            daemon.base,
            url=str(violation_clip),
            user_id="kim",
            room_id="room-k",
            realtime=True,
        )
        sid = created["id"]
        start = await next_event(
            ws, lambda e: e["type"] == "action" and e["stream_id"] == sid, timeout=60
        )
        assert (start["action"], start["state"]) == ("pause", "start")

    assert daemon.proc is not None
    daemon.proc.kill()  # SIGKILL: no shutdown path runs
    daemon.proc.wait()
    daemon.start()

    async with (
        websockets.connect(f"{daemon.ws}?since={start['seq']}&room_id=room-k") as ws,
        aiohttp.ClientSession() as http,
    ):
        event = await next_event(
            ws, lambda e: e["type"] == "session" and e["stream_id"] == sid, timeout=20
        )
        assert event["state"] == "interrupted"
        assert event["reason"] == "daemon_restart"
        assert event["user_id"] == "kim" and event["room_id"] == "room-k"
        assert event["standing_actions"] == [{"action": "pause", "category": "known_bad"}]
        async with http.get(f"{daemon.base}/v1/streams/{sid}") as resp:
            summary = await resp.json()
        assert resp.status == 200 and summary["status"] == "interrupted"
        interrupted_seq = event["seq"]

    # A clean restart announces nothing again: the session is closed in the store.
    assert daemon.stop() == 0
    daemon.start()
    async with websockets.connect(f"{daemon.ws}?since={interrupted_seq}") as ws:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(ws.recv(), 2.0)
