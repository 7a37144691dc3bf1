"""HTTP API (aiohttp): streams, evidence, health and metrics.

Every request is validated; errors answer JSON ``{"error": "..."}`` with a 4xx
that says what was wrong. With ``http.token`` set, ``/v1/*`` needs
``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from livemod import __version__
from livemod.app import openapi
from livemod.app.openapi import (
    EvidenceRecord,
    HealthReport,
    ManualActionRequest,
    ManualActionResult,
    StreamList,
    StreamRequest,
    StreamStatus,
    StreamSummary,
)
from livemod.config import IngestConfig
from livemod.errors import RequestError, StoreError
from livemod.ingest.targets import allowed_addresses, find_file, resolve
from livemod.logs import redact_credentials
from livemod.pipeline.runtime import Component, Runtime
from livemod.pipeline.standing import publish_decisions, recent_frames, standing_action
from livemod.policy.vote import MODERATOR
from livemod.store import EvidenceInput
from livemod.web import body_deadline, json_body, parse, respond

log = logging.getLogger(__name__)

Health = Callable[[], Awaitable[dict[str, Any]]]
"""What ``/healthz`` reports beyond the status and version (the daemon computes it)."""

RUNTIME: web.AppKey[Runtime] = web.AppKey("runtime")
HEALTH: web.AppKey[Health] = web.AppKey("health")

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
            answer = _error(exc.status, exc.reason)
            if "Allow" in exc.headers:  # a 405 names the methods that would work (RFC 9110)
                answer.headers["Allow"] = exc.headers["Allow"]
            return answer
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


_FILE_REFUSED = "url: file not allowed or not found (files are read only under ingest.file_roots)"


def validate_url(url: Any, schemes: list[str]) -> str:
    """The URL's syntax: a string, an accepted scheme, a host unless a file. A bare
    absolute path is a ``file://`` URL. Where it may lead is :func:`check_target`'s."""
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
    if scheme != "file" and not parts.hostname:
        raise RequestError(f"url: {redact_credentials(text)} has no host", status=422)
    return text


async def check_target(url: str, ingest: IngestConfig) -> str:
    """Where ``url`` leads must be allowed; returns the URL to open.

    A file must be a regular file under ``ingest.file_roots`` once symlinks and
    ``..`` are resolved, and the real path is what is opened; a missing file and a
    forbidden one get the same answer, so the API does not tell what exists. A
    network host must resolve only to public addresses, or to networks listed in
    ``ingest.allow_hosts`` (numeric forms such as ``0x7f000001`` resolve as FFmpeg
    would resolve them).
    """
    parts = urlsplit(url)
    if parts.scheme.lower() == "file":
        # FFmpeg opens what follows "file:" as is (no percent-decoding), and so does
        # the session, so that is the path checked.
        path = url.split(":", 1)[1]
        path = path[2:] if path.startswith("//") else path
        real = await asyncio.to_thread(find_file, path, ingest.file_roots)
        if real is None:
            raise RequestError(_FILE_REFUSED, status=422)
        return "file://" + str(real)
    host = parts.hostname or ""
    try:
        port = parts.port
    except ValueError:
        raise RequestError("url: the port is not a number from 0 to 65535", status=422) from None
    addresses = await resolve(host, port, ingest.open_timeout_s)
    if not allowed_addresses(addresses, ingest.allow_networks):
        raise RequestError(
            f"url: host {host!r} is not allowed or does not resolve (only public addresses, "
            "or networks listed in ingest.allow_hosts)",
            status=422,
        )
    return url


def _public(summary: dict[str, Any]) -> dict[str, Any]:
    """A session summary as the API shows it: credentials in its URL (and in an
    error that quotes the URL) replaced by ``***``; the session keeps the real URL."""
    out = dict(summary)
    for key in ("url", "error"):
        if isinstance(out.get(key), str):
            out[key] = redact_credentials(out[key])
    return out


async def create_stream(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    body = parse(StreamRequest, await json_body(request))
    url = validate_url(body.url, runtime.config.ingest.schemes)
    realtime = body.realtime
    if realtime is None:
        realtime = urlsplit(url).scheme.lower() == "file"
    # Last: the checks that touch the file system or DNS run on a valid request only.
    url = await check_target(url, runtime.config.ingest)
    session = await runtime.sessions.start(
        url,
        body.user_id,
        body.room_id,
        metadata=body.metadata,
        realtime=realtime,
        relay=body.relay,
    )
    return respond(
        StreamSummary,
        _public(session.summary()),
        status=201,
        headers={"Location": f"/v1/streams/{session.info.id}"},
    )


async def list_streams(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    ongoing = [
        _public(s.summary()) for s in runtime.sessions.values() if s.status in ("starting", "live")
    ]
    return respond(StreamList, {"streams": ongoing})


async def get_stream(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    sid = request.match_info["id"]
    session = runtime.sessions.get(sid)
    if session is not None:
        return respond(StreamStatus, _public(session.summary()))
    stored = await runtime.store.get_session(sid)
    if stored is None:
        raise RequestError(f"no stream with id {sid}", status=404)
    return respond(StreamStatus, _public(stored))


async def delete_stream(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    session = await runtime.sessions.stop(request.match_info["id"])
    return respond(StreamSummary, _public(session.summary()))


async def act_by_hand(request: web.Request) -> web.Response:
    """A moderator starts (or lifts) a ``pause``/``end`` the models missed: it stands in
    the vote engine's ``moderator`` channel, which no vote stops, and its events carry
    ``origin: "moderator"`` and the moderator's name, like any action to subscribers."""
    runtime = request.app[RUNTIME]
    sid = request.match_info["id"]
    body = parse(ManualActionRequest, await json_body(request))
    session = runtime.sessions.get(sid)
    if session is None or session.status not in ("starting", "live"):
        raise RequestError(f"no live stream with id {sid}", status=404)
    info, now = session.info, time.time()
    standing = standing_action(runtime, info.key, body.category, MODERATOR)
    frames = recent_frames(runtime, sid, 1)
    source: dict[str, Any] = {"stream_id": sid, "user_id": info.user_id, "room_id": info.room_id}
    if body.state == "start":
        media_time = frames[-1].media_time_s if frames else 0.0
        decisions = runtime.engine.impose(
            info.key, body.category, body.action, media_time_s=media_time, t_trigger=now
        )
        if not decisions:
            raise RequestError(
                f"a {standing} by hand already stands for {body.category}", status=409
            )
        if frames:  # what the moderator saw: the latest sampled frame
            source["evidence_id"] = await runtime.store.add_evidence(
                EvidenceInput(sid, body.category, media_time, {}, frames[-1].image)
            )
    else:
        if standing != body.action:
            raise RequestError(f"no {body.action} by hand stands for {body.category}", status=409)
        stop = runtime.engine.release(
            info.key, body.category, t_now=now, fresh=True, channel=MODERATOR
        )
        decisions = [stop] if stop is not None else []
        started = [
            e
            for e in session.actions
            if e.get("origin") == MODERATOR
            and e.get("category") == body.category
            and e.get("state") == "start"
        ]
        if started and started[-1].get("evidence_id"):
            source["evidence_id"] = started[-1]["evidence_id"]
    events = await publish_decisions(
        runtime,
        decisions,
        source,
        origin=MODERATOR,
        extra={"moderator_id": body.moderator_id, "note": body.note or None},
    )
    log.info(
        "action by hand",
        extra={"stream_id": sid, "action": body.action, "state": body.state},
    )
    return respond(ManualActionResult, {"events": events})


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
    return respond(EvidenceRecord, record)


async def healthz(request: web.Request) -> web.Response:
    body: dict[str, Any] = {"status": "ok", "version": __version__}
    body.update(await request.app[HEALTH]())
    return respond(HealthReport, body)


async def openapi_view(request: web.Request) -> web.Response:
    return web.json_response(openapi.document())


async def metrics_view(request: web.Request) -> web.Response:
    # Off the event loop: the thread-CPU collector reads two /proc files per thread.
    body = await asyncio.to_thread(generate_latest)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def make_app(runtime: Runtime, components: list[Component], health: Health) -> web.Application:
    app = web.Application(
        client_max_size=runtime.config.http.max_body_bytes,
        middlewares=[
            _errors,
            _auth(runtime.config.http.token),
            body_deadline(runtime.config.http.read_timeout_s),
        ],
    )
    app[RUNTIME] = runtime
    app[HEALTH] = health
    app.router.add_post("/v1/streams", create_stream)
    app.router.add_get("/v1/streams", list_streams)
    app.router.add_get("/v1/streams/{id}", get_stream)
    app.router.add_delete("/v1/streams/{id}", delete_stream)
    app.router.add_post("/v1/streams/{id}/actions", act_by_hand)
    app.router.add_get("/v1/evidence/{id}", get_evidence)
    app.router.add_get("/v1/evidence/{id}/{part:image|audio}", get_evidence)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_view)
    app.router.add_get("/v1/openapi.json", openapi_view)
    for component in components:
        component.add_routes(app)
    return app


async def start_http(runtime: Runtime, components: list[Component], health: Health) -> HttpServer:
    read_timeout_s = runtime.config.http.read_timeout_s
    # Slow clients (slowloris). aiohttp has no request-head timeout, but its keep-alive
    # timer also runs from the moment a connection opens (and again after each answer)
    # and closes it unless a complete head has arrived, however slowly bytes trickle
    # in; idle keep-alive connections are closed after as long. lingering_time bounds
    # the draining of a body left unread by an early answer (a 401). Bodies: web.py.
    runner = web.AppRunner(
        make_app(runtime, components, health),
        access_log=None,
        keepalive_timeout=read_timeout_s,
        lingering_time=read_timeout_s,
    )
    await runner.setup()
    site = web.TCPSite(runner, runtime.config.http.host, runtime.config.http.port)
    await site.start()
    return HttpServer(runner, site)
