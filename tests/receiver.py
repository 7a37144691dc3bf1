"""A webhook receiver on 127.0.0.1 that behaves like a careful operator's: it
checks the signature and timestamp, and applies each idempotency key once."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from livemod.actions.webhooks import verify


@dataclass(frozen=True, slots=True)
class Delivery:
    key: str
    seq: int
    attempt: int
    signed: bool
    status: int


class Receiver:
    def __init__(self, secret: bytes) -> None:
        self.secret = secret
        self.deliveries: list[Delivery] = []
        self.effects: dict[str, dict[str, Any]] = {}
        """Idempotency key -> event, applied once however often it arrives."""
        self.lose_acks = 0
        """Apply each key's first N deliveries but answer 500, as if the reply got lost."""
        self.down = False
        """Answer 503 without applying anything."""
        self.hang_s = 0.0
        self.changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.port = int(self._runner.addresses[0][1])

    async def close(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        h = request.headers
        signed = verify(
            self.secret, h.get("X-Livemod-Timestamp", ""), body, h.get("X-Livemod-Signature", "")
        )
        if self.hang_s:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.hang_s):
                    await self._closing.wait()
        status = 200
        if self.down:
            status = 503
        elif not signed:
            status = 401
        else:
            key = h["Idempotency-Key"]
            self.effects.setdefault(key, json.loads(body))
            if sum(1 for d in self.deliveries if d.key == key) < self.lose_acks:
                status = 500
        self.deliveries.append(
            Delivery(
                h.get("Idempotency-Key", ""),
                int(h.get("X-Livemod-Event-Seq", "0")),
                int(h.get("X-Livemod-Attempt", "0")),
                signed,
                status,
            )
        )
        self.changed.set()
        return web.json_response({"ok": status == 200}, status=status)

    async def wait_effects(self, n: int, timeout: float) -> None:
        async def run() -> None:
            while len(self.effects) < n:
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(run(), timeout)

    async def wait_deliveries(self, n: int, timeout: float) -> None:
        async def run() -> None:
            while len(self.deliveries) < n:
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(run(), timeout)
