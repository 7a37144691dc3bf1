"""Stopping a session that is still opening its source: ``DELETE`` answers at once and
the session ends ``stopped``, not ``error`` once the open times out (10 s)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
import websockets

from tests.app.test_e2e import collect_until_end, post_stream
from tests.conftest import TIMEOUT_SCALE, DaemonProcess

pytestmark = pytest.mark.e2e


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[tuple[int, asyncio.Event]]:
    """A loopback server that accepts, reads what it is sent and never answers (a
    hung RTMP server, an HTTP server that never sends its response). Yields its port
    and an event set once a client connected."""
    connected = asyncio.Event()
    held: set[asyncio.Task[None]] = set()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connected.set()
        task = asyncio.current_task()
        assert task is not None
        held.add(task)
        try:
            while await reader.read(4096):
                pass
        except ConnectionError:
            pass
        finally:
            writer.close()
            held.discard(task)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], connected
    finally:
        server.close()
        for task in list(held):
            task.cancel()
        await asyncio.gather(*held, return_exceptions=True)


@pytest.mark.parametrize("scheme", ["rtmp", "http"])
async def test_delete_interrupts_an_open_that_hangs(daemon: DaemonProcess, scheme: str) -> None:
    async with (
        silent_server() as (port, connected),
        websockets.connect(f"{daemon.ws}?room_id=hung") as ws,
        aiohttp.ClientSession() as http,
    ):
        created = await post_stream(
            http,
            daemon.base,
            url=f"{scheme}://127.0.0.1:{port}/live/hung",
            user_id="hank",
            room_id="hung",
        )
        await asyncio.wait_for(connected.wait(), 5 * TIMEOUT_SCALE)
        await asyncio.sleep(0.5)  # well inside FFmpeg's open, waiting for an answer
        started = time.monotonic()
        async with http.delete(f"{daemon.base}/v1/streams/{created['id']}") as resp:
            body = await resp.json()
            assert resp.status == 200, body
        took = time.monotonic() - started
        events = await collect_until_end(ws, created["id"], 5)
    assert took < 2.0 * TIMEOUT_SCALE, f"DELETE took {took:.1f} s"
    assert body["status"] == "ended" and body["error"] is None
    last = events[-1]
    assert last["state"] == "ended" and last["reason"] == "stopped", last
