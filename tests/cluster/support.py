"""Small helpers the cluster tests share: polling, JSON over HTTP, a running pair."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp

from tests.conftest import TIMEOUT_SCALE, DaemonProcess


async def until(check: Callable[[], Awaitable[Any]], timeout: float, what: str) -> Any:
    """Poll ``check`` every 0.1 s until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout * TIMEOUT_SCALE
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def status(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    """GET ``url``: its status and JSON body."""
    async with http.get(url) as resp:
        return resp.status, await resp.json()


@contextmanager
def running(*daemons: DaemonProcess) -> Iterator[tuple[DaemonProcess, ...]]:
    """Start the instances in order; stop those still alive on the way out."""
    try:
        for daemon in daemons:
            daemon.start()
        yield daemons
    finally:
        for daemon in daemons:
            if daemon.proc is not None and daemon.proc.poll() is None:
                daemon.stop()
