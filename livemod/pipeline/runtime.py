"""Long-lived parts that plug into the daemon (enforcers, webhooks, escalation).

A component is started after the store, hub and servers, and stopped before them.
Most consume committed events through ``daemon.hub.subscribe(...)``, exactly as a
WebSocket client would, so they never slow the pipeline down.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from aiohttp import web

if TYPE_CHECKING:
    from livemod.app.daemon import Daemon


class Component(Protocol):
    name: str

    async def start(self, daemon: Daemon) -> None: ...

    async def stop(self) -> None: ...

    def add_routes(self, app: web.Application) -> None:
        """Register HTTP routes (called before the HTTP server starts)."""
        ...
