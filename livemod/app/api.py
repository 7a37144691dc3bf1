"""HTTP API (aiohttp): streams, evidence, health and metrics.

Every request is validated; errors answer JSON ``{"error": "..."}`` with a 4xx
that says what was wrong. With ``http.token`` set, ``/v1/*`` needs
``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from livemod import __version__
from livemod.errors import RequestError, StoreError
from livemod.pipeline.runtime import Component, Runtime
from livemod.web import json_body

log = logging.getLogger(__name__)

Health = Callable[[], Awaitable[dict[str, Any]]]
"""What ``/healthz`` reports beyond the status and version (the daemon computes it)."""

RUNTIME: web.AppKey[Runtime] = web.AppKey("runtime")
HEALTH: web.AppKey[Health] = web.AppKey("health")
_ID = re.compile(r"^[A-Za-z0-9_.@\-]{1,128}$")
_STREAM_FIELDS = {"url", "user_id", "room_id", "metadata", "realtime"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class HttpServer:
    runner: web.AppRunner
    site: web.TCPSite

    @property
    def port(self) -> int:
        host_port = self.runner.addresses[0]
        return int(host_port[1])

    async def close(self) -> None:
        await self.runner.cleanup()


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except RequestError as exc:
        return _error(exc.status, str(exc))
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[RUNTIME].config.http.max_body_bytes
        return _error(413, f"request body too large (limit {limit} bytes, http.max_body_bytes)")
    except web.HTTPException as exc:
        if exc.status >= 400:
            return _error(exc.status, exc.reason)
        raise
    except StoreError as exc:
        # Moderation goes on (events are spooled); what needs the database waits.
        log.warning("request failed on storage", extra={"path": request.path, "error": str(exc)})
        return _error(503, f"storage unavailable, try again: {exc}")
    except Exception:
        log.exception("request failed", extra={"path": request.path})
        return _error(500, "internal error (logged)")


def _auth(token: str | None) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if token and request.path.startswith("/v1/"):
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return _error(401, "missing or wrong bearer token")
        return await handler(request)

    return check


def validate_url(url: Any, schemes: list[str]) -> str:
    if not isinstance(url, str) or not url.strip():
        raise RequestError("url: required, a non-empty string", status=422)
    text: str = url.strip()
    if text.startswith("/"):
        text = "file://" + text
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in schemes:
        raise RequestError(
            f"url: scheme {scheme or '(none)'!r} is not accepted; use one of {', '.join(schemes)}",
            status=422,
        )
    if scheme == "file":
        path = Path(parts.path)
        if not path.is_file():
            raise RequestError(f"url: file {parts.path} does not exist", status=422)
    elif not parts.hostname:
        raise RequestError(f"url: {text} has no host", status=422)
    return text


def _ident(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not _ID.match(value):
        raise RequestError(
            f"{name}: required, 1-128 characters of letters, digits, '_', '.', '@' or '-'",
            status=422,
        )
    return str(value)


async def create_stream(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    data = await json_body(request, _STREAM_FIELDS)
    url = validate_url(data.get("url"), runtime.config.ingest.schemes)
    user_id = _ident(data, "user_id")
    room_id = _ident(data, "room_id")
    metadata = data.get("metadata", {})
    if not isinstance(metadata, dict):
        raise RequestError("metadata: must be a JSON object", status=422)
    realtime = data.get("realtime", url.startswith("file://"))
    if not isinstance(realtime, bool):
        raise RequestError("realtime: must be true or false", status=422)
    session = await runtime.sessions.start(
        url, user_id, room_id, metadata=metadata, realtime=realtime
    )
    return web.json_response(
        session.summary(), status=201, headers={"Location": f"/v1/streams/{session.info.id}"}
    )


async def list_streams(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    ongoing = [s.summary() for s in runtime.sessions.values() if s.status in ("starting", "live")]
    return web.json_response({"streams": ongoing})


async def get_stream(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    sid = request.match_info["id"]
    session = runtime.sessions.get(sid)
    if session is not None:
        return web.json_response(session.summary())
    stored = await runtime.store.get_session(sid)
    if stored is None:
        raise RequestError(f"no stream with id {sid}", status=404)
    return web.json_response(stored)


async def delete_stream(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    session = await runtime.sessions.stop(request.match_info["id"])
    return web.json_response(session.summary())


async def get_evidence(request: web.Request) -> web.StreamResponse:
    runtime = request.app[RUNTIME]
    eid = request.match_info["id"]
    record = await runtime.store.get_evidence(eid)
    if record is None:
        raise RequestError(f"no evidence with id {eid}", status=404)
    # Speech evidence keeps a WAV of what was said where frames keep a JPEG.
    path = record.pop("path", None)
    kind = "audio" if path and path.endswith(".wav") else "image"
    part = request.match_info.get("part")
    if part in ("image", "audio"):
        # FileResponse reads off the loop; a vanished file answers 404 by itself.
        if not path or part != kind:
            raise RequestError(f"evidence {eid} has no {part} (past retention?)", status=404)
        mime = "audio/wav" if kind == "audio" else "image/jpeg"
        return web.FileResponse(path, headers={"Content-Type": mime})
    record[kind] = f"/v1/evidence/{eid}/{kind}"
    return web.json_response(record)


async def healthz(request: web.Request) -> web.Response:
    body: dict[str, Any] = {"status": "ok", "version": __version__}
    body.update(await request.app[HEALTH]())
    return web.json_response(body)


async def metrics_view(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def make_app(runtime: Runtime, components: list[Component], health: Health) -> web.Application:
    app = web.Application(
        client_max_size=runtime.config.http.max_body_bytes,
        middlewares=[_errors, _auth(runtime.config.http.token)],
    )
    app[RUNTIME] = runtime
    app[HEALTH] = health
    app.router.add_post("/v1/streams", create_stream)
    app.router.add_get("/v1/streams", list_streams)
    app.router.add_get("/v1/streams/{id}", get_stream)
    app.router.add_delete("/v1/streams/{id}", delete_stream)
    app.router.add_get("/v1/evidence/{id}", get_evidence)
    app.router.add_get("/v1/evidence/{id}/{part:image|audio}", get_evidence)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_view)
    for component in components:
        component.add_routes(app)
    return app


async def start_http(runtime: Runtime, components: list[Component], health: Health) -> HttpServer:
    runner = web.AppRunner(make_app(runtime, components, health), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, runtime.config.http.host, runtime.config.http.port)
    await site.start()
    return HttpServer(runner, site)
