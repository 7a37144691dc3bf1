"""A hook-started RTMP pull moves when its instance dies: nginx-rtmp's ``on_publish``
reaches instance a (through a small failover proxy in front of both instances, the
"one address for the hooks" of docs/cluster.md), a pulls the stream; a is killed with
SIGKILL and b continues the same session, while a WebSocket subscriber on b sees every
event once, in ``seq`` order."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import websockets
from aiohttp import web

from tests.cluster.conftest import instance
from tests.cluster.support import status, until
from tests.conftest import free_port
from tests.nginx import NginxRtmp
from tests.redis_server import RedisServer

pytestmark = pytest.mark.e2e


@asynccontextmanager
async def failover_proxy(upstreams: list[str]) -> AsyncIterator[str]:
    """One address for the hooks: each call goes to the first upstream that accepts a
    connection (what a load balancer with health checks, or nginx's ``upstream`` with
    ``proxy_next_upstream error``, does)."""
    session = aiohttp.ClientSession()

    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() == "content-type"}
        for base in upstreams:
            try:
                async with session.request(
                    request.method, base + request.path_qs, data=body, headers=headers,
                    allow_redirects=False,
                ) as resp:  # fmt: skip
                    out = {k: v for k, v in resp.headers.items() if k.lower() == "location"}
                    return web.Response(status=resp.status, body=await resp.read(), headers=out)
            except aiohttp.ClientConnectorError:
                continue
        return web.Response(status=502)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
        await session.close()


def publish(clip: Path, url: str) -> subprocess.Popen[bytes]:
    """A looping ffmpeg publisher of ``clip`` to ``url`` (keyframes every second)."""
    return subprocess.Popen(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1",
         "-i", str(clip), "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-an",
         "-f", "flv", url],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


async def test_a_hook_started_rtmp_pull_continues_on_the_survivor_after_kill_9(
    tmp_path: Path, known_bad_dir: Path, violation_clip: Path, redis_server: RedisServer
) -> None:
    a = instance(tmp_path, "a", known_bad_dir, redis_server)
    b = instance(tmp_path, "b", known_bad_dir, redis_server)
    nginx: NginxRtmp | None = None
    publisher: subprocess.Popen[bytes] | None = None
    seen: list[dict[str, Any]] = []
    async with failover_proxy([a.base, b.base]) as hooks, aiohttp.ClientSession() as http:
        try:
            await asyncio.gather(asyncio.to_thread(a.start), asyncio.to_thread(b.start))
            nginx = NginxRtmp(tmp_path / "nginx", hook_url=f"{hooks}/hooks/nginx-rtmp")
            await asyncio.to_thread(nginx.start)

            async def subscribe() -> None:
                async with websockets.connect(f"{b.ws}?since=0") as ws:
                    async for message in ws:
                        seen.append(json.loads(message))

            listener = asyncio.create_task(subscribe())
            publisher = publish(violation_clip, nginx.publish_url("stage", "user_id=alice"))

            async def live_on(base: str) -> Any:
                code, streams = await status(http, f"{base}/v1/streams")
                if code != 200:
                    return None
                items = streams if isinstance(streams, list) else streams.get("streams", [])
                return next(
                    (s for s in items if s["status"] == "live" and s.get("samples", 0) > 0), None
                )

            # The hook reached a (the proxy's first choice): a pulls the stream.
            on_a = await until(lambda: live_on(a.base), 30, "the hook's session live on a")
            sid = on_a["id"]
            assert on_a["user_id"] == "alice" and on_a["room_id"] == "stage"
            assert on_a["metadata"]["server"] == "nginx-rtmp"  # started by the hook

            async def owned_by_a() -> bool:
                _, cluster = await status(http, f"{b.base}/v1/cluster")
                return any(i["id"] == "a" and sid in i["sessions"] for i in cluster["instances"])

            await until(owned_by_a, 10, "a's lease on the session")
            assert a.proc is not None
            os.kill(a.proc.pid, signal.SIGKILL)
            a.proc.wait()

            # b plays the same stream from nginx (its on_play reaches b through the
            # proxy now), under the same session id.
            on_b = await until(lambda: live_on(b.base), 20, "b to continue the session")
            assert on_b["id"] == sid and on_b["url"] == on_a["url"]

            async def owned_by_b() -> bool:
                # a stays listed until its heartbeat expires: look b up by id.
                _, cluster = await status(http, f"{b.base}/v1/cluster")
                mine = [i for i in cluster["instances"] if i["id"] == "b"]
                return bool(mine) and mine[0]["sessions"] == [sid] and cluster["takeovers"] == 1

            await until(owned_by_b, 10, "b's lease on the session, counted as a takeover")
            assert "stage" in await asyncio.to_thread(nginx.publishers)
            await asyncio.sleep(1.0)
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
        finally:
            if publisher is not None:
                publisher.kill()
                publisher.wait()
            for d in (a, b):
                if d.proc is not None and d.proc.poll() is None:
                    await asyncio.to_thread(d.stop)
            if nginx is not None:
                nginx.stop()
    seqs = [e["seq"] for e in seen]
    assert seqs == list(range(1, len(seqs) + 1)), "gap or duplicate across the failover"
    starts = [e for e in seen if e.get("type") == "session" and e.get("state") == "started"]
    assert [e["stream_id"] for e in starts] == [sid, sid]  # on a, then again on b
