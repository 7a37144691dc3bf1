"""Two real ``livemod serve`` instances on one real Redis, a real nginx-rtmp and an
ffmpeg publisher: the instance that pulls the stream is killed with SIGKILL, and the
other takes the session over under the same id and vote state, while a WebSocket
subscriber on the survivor sees every event once, in ``seq`` order."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from typing import Any

import aiohttp
import pytest
import websockets

from livemod.cluster.node import PLACED_HEADER
from tests.cluster.support import until
from tests.conftest import DaemonProcess
from tests.nginx import NginxRtmp

pytestmark = pytest.mark.e2e


async def get(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as resp:
        return await resp.json()


async def test_kill_9_of_the_owner_moves_the_pull_with_its_votes_and_events(
    stack: tuple[DaemonProcess, DaemonProcess, NginxRtmp],
) -> None:
    a, b, nginx = stack
    seen: list[dict[str, Any]] = []

    async def subscribe() -> None:
        async with websockets.connect(f"{b.ws}?since=0") as ws:
            async for message in ws:
                seen.append(json.loads(message))

    async with aiohttp.ClientSession() as http:
        listener = asyncio.create_task(subscribe())
        url = f"rtmp://127.0.0.1:{nginx.rtmp_port}/plain/room-9"
        body = {"url": url, "user_id": "u9", "room_id": "room-9"}
        # Placed on a on purpose (the header says it was placed already).
        async with http.post(f"{a.base}/v1/streams", json=body, headers={PLACED_HEADER: "t"}) as r:
            created = await r.json()
            assert r.status == 201, created
        sid = created["id"]

        async def standing_on_a() -> Any:
            status = await get(http, f"{a.base}/v1/streams/{sid}")
            return status.get("standing_actions")

        standing = await until(standing_on_a, 40, "the known-bad picture to act on a")

        async def owned_by_a() -> bool:
            cluster = await get(http, f"{b.base}/v1/cluster")
            return any(i["id"] == "a" and sid in i["sessions"] for i in cluster["instances"])

        await until(owned_by_a, 10, "a's lease on the session")
        assert a.proc is not None
        os.kill(a.proc.pid, signal.SIGKILL)
        a.proc.wait()
        killed = time.monotonic()

        async def live_on_b() -> Any:
            async with http.get(f"{b.base}/v1/streams/{sid}") as resp:
                if resp.status != 200:
                    return None
                status = await resp.json()
            return status if status.get("samples", 0) > 0 and status["status"] == "live" else None

        moved = await until(live_on_b, 20, "b to take the session over")
        failover_s = time.monotonic() - killed
        assert moved["id"] == sid and moved["room_id"] == "room-9"
        # The vote state came along: b stops the action a started, which it could only
        # do holding a's standing action (a fresh vote would start it instead).
        wanted = {(s["category"], s["action"]) for s in standing}

        async def stopped_by_b() -> bool:
            restarts = [
                i for i, e in enumerate(seen)
                if e.get("type") == "session" and e.get("state") == "started"
            ]  # fmt: skip
            if len(restarts) < 2:
                return False
            return any(
                e.get("type") == "action" and e["state"] == "stop"
                and (e["category"], e["action"]) in wanted
                for e in seen[restarts[1] :]
            )  # fmt: skip

        await until(stopped_by_b, 30, "b to stop the action a started")
        cluster = await get(http, f"{b.base}/v1/cluster")
        assert [i["id"] for i in cluster["instances"]] == ["b"]
        assert cluster["instances"][0]["sessions"] == [sid] and cluster["takeovers"] == 1
        # A fresh client reads the whole log back from the survivor.
        async with websockets.connect(f"{b.ws}?since=0") as ws:
            replay: list[dict[str, Any]] = []
            while True:
                try:
                    replay.append(json.loads(await asyncio.wait_for(ws.recv(), 1.0)))
                except TimeoutError:
                    break
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)

    seqs = [e["seq"] for e in seen]
    assert seqs == list(range(1, len(seqs) + 1)), "gap or duplicate across the failover"
    assert [e["seq"] for e in replay][: len(seqs)] == seqs
    starts = [e for e in seen if e.get("type") == "session" and e.get("state") == "started"]
    assert [e["stream_id"] for e in starts] == [sid, sid]  # on a, then again on b
    # Never two starts of one action without a stop between them: no instance acted
    # again on what another had already decided.
    standing_now: set[tuple[str, str]] = set()
    for e in seen:
        if e.get("type") != "action" or e["stream_id"] != sid:
            continue
        pair = (e["category"], e["action"])
        if e["state"] == "start":
            assert pair not in standing_now, f"started twice: {pair}"
            standing_now.add(pair)
        elif e["state"] == "stop":
            standing_now.discard(pair)
    print(f"failover {failover_s:.2f} s, events {len(seqs)}")
