"""The moderator console: a few static files served at ``/console``.

The page holds no data of its own: everything a moderator sees comes from the
public HTTP API (``/v1/...``, the bearer token the moderator types in once) and the
event WebSocket, so a platform can build its own console the same way. The files
are served without the token (they hold nothing), with a Content-Security-Policy
that allows only the console's own scripts and styles (no inline script, no
``eval``), pictures and sounds fetched as blobs, and connections to this daemon's
HTTP origin and its event WebSocket.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from livemod.config import Config

if TYPE_CHECKING:
    from livemod.pipeline.runtime import Runtime

FOLDER = Path(__file__).resolve().parents[1] / "static" / "console"
FILES = {
    "index.html": "text/html; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
}


def policy(ws_source: str) -> str:
    """The console's Content-Security-Policy; ``ws_source`` is the event WebSocket."""
    return "; ".join(
        (
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' blob:",
            "media-src 'self' blob:",
            f"connect-src 'self' {ws_source}",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        )
    )


class Console:
    """A daemon component (always on): the console's static files."""

    name = "console"

    def __init__(self, config: Config) -> None:
        self._ws_port = config.websocket.port

    async def start(self, runtime: Runtime) -> None:
        return None

    async def stop(self) -> None:
        return None

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/console", self._index)
        app.router.add_get("/console/", self._index)
        app.router.add_get("/console/{name}", self._file)

    def _headers(self, request: web.Request, content_type: str) -> dict[str, str]:
        host = request.url.host or "127.0.0.1"
        if ":" in host:  # an IPv6 literal
            host = f"[{host}]"
        # Port 0 binds a free port chosen at start-up: allow the host's ports then.
        port = str(self._ws_port) if self._ws_port else "*"
        return {
            "Content-Type": content_type,
            "Content-Security-Policy": policy(f"ws://{host}:{port} wss://{host}:{port}"),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store",
        }

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return self._send(request, "index.html")

    async def _file(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in FILES:
            raise web.HTTPNotFound(reason=f"no console file {name}")
        return self._send(request, name)

    def _send(self, request: web.Request, name: str) -> web.StreamResponse:
        return web.FileResponse(FOLDER / name, headers=self._headers(request, FILES[name]))
