"""Enforcers: act on the streaming server a publisher is live on.

* nginx-rtmp (``rtmp_control``): ``end`` → ``drop/publisher``; ``pause`` →
  ``redirect/publisher`` to a holding stream, and back when the pause lifts. The
  control module answers the number of clients it acted on; ``0`` is a failure.
* MediaMTX (control API v3): ``end`` → ``POST /v3/<conns>/kick/<id>``.
* SRS (HTTP API): ``end`` → ``DELETE /api/v1/clients/<client_id>``.

MediaMTX and SRS cannot move a publisher to another stream, so they cannot hold
one: a ``pause`` there is reported as not enforced and left to event consumers.
Every call returns an :class:`EnforceResult`; nothing here raises on a server's
failure, so the caller can record each outcome as an event.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote

import aiohttp

from livemod.ingest.hooks import Server
from livemod.ingest.rooms import Publisher

MEDIAMTX_KINDS = {
    "rtmp": "rtmpconns",
    "rtmpConn": "rtmpconns",
    "rtmps": "rtmpsconns",
    "rtmpsConn": "rtmpsconns",
    "rtsp": "rtspsessions",
    "rtspSession": "rtspsessions",
    "rtsps": "rtspssessions",
    "rtspsSession": "rtspssessions",
    "srt": "srtconns",
    "srtConn": "srtconns",
    "webrtc": "webrtcsessions",
    "webRTCSession": "webrtcsessions",
}
"""MediaMTX source types (``runOnReady``) and protocols (auth hook) → API collection."""


@dataclass(frozen=True, slots=True)
class EnforceResult:
    """What the server answered. ``ok`` only when it confirmed the action."""

    ok: bool
    operation: str
    detail: str
    status: int | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "operation": self.operation,
            "detail": self.detail,
            "status": self.status,
        }


class Enforcer(Protocol):
    server: Server

    async def drop(self, pub: Publisher) -> EnforceResult:
        """Disconnect the publisher."""
        ...

    async def move(self, pub: Publisher, to_name: str) -> EnforceResult:
        """Move the publisher to another stream name (pause, resume)."""
        ...


async def _call(
    http: aiohttp.ClientSession, method: str, url: str, operation: str
) -> tuple[int | None, str, EnforceResult | None]:
    """(status, body, failure) of one HTTP call; failure set when it did not answer."""
    try:
        async with http.request(method, url) as resp:
            return resp.status, (await resp.text())[:500], None
    except (aiohttp.ClientError, TimeoutError) as exc:
        why = str(exc) or type(exc).__name__
        return None, "", EnforceResult(False, operation, f"no answer from {url}: {why}")


class NginxRtmpEnforcer:
    server: Server = "nginx-rtmp"

    def __init__(self, control_url: str, http: aiohttp.ClientSession) -> None:
        self._base = control_url.rstrip("/")
        self._http = http

    def _query(self, pub: Publisher, name: str) -> str:
        q = f"app={quote(pub.app, safe='')}&name={quote(name, safe='')}"
        return f"{q}&clientid={quote(pub.client_id, safe='')}" if pub.client_id else q

    async def _control(self, path: str, query: str) -> EnforceResult:
        url = f"{self._base}/{path}?{query}"
        status, body, failed = await _call(self._http, "GET", url, path)
        if failed is not None:
            return failed
        count = body.strip()
        if status == 200 and count.isdigit() and int(count) > 0:
            return EnforceResult(True, path, f"{count} publisher(s)", status)
        if status == 200:
            return EnforceResult(False, path, f"no publisher matched (answered {count!r})", status)
        return EnforceResult(False, path, f"HTTP {status}: {body.strip()[:200]}", status)

    async def drop(self, pub: Publisher) -> EnforceResult:
        return await self._control("drop/publisher", self._query(pub, pub.stream_name))

    async def move(self, pub: Publisher, to_name: str) -> EnforceResult:
        query = self._query(pub, pub.stream_name) + f"&newname={quote(to_name, safe='')}"
        return await self._control("redirect/publisher", query)


class MediaMtxEnforcer:
    server: Server = "mediamtx"

    def __init__(self, api_url: str, http: aiohttp.ClientSession) -> None:
        self._base = api_url.rstrip("/")
        self._http = http

    async def drop(self, pub: Publisher) -> EnforceResult:
        kind = MEDIAMTX_KINDS.get(pub.call.source_type)
        operation = f"kick {kind or pub.call.source_type or '?'}"
        if kind is None or not pub.client_id:
            why = f"unknown connection (type {pub.call.source_type!r}, id {pub.client_id!r})"
            return EnforceResult(False, operation, why)
        url = f"{self._base}/v3/{kind}/kick/{quote(pub.client_id, safe='')}"
        status, body, failed = await _call(self._http, "POST", url, operation)
        if failed is not None:
            return failed
        if status == 200:
            return EnforceResult(True, operation, "kicked", status)
        return EnforceResult(False, operation, f"HTTP {status}: {body.strip()[:200]}", status)

    async def move(self, pub: Publisher, to_name: str) -> EnforceResult:
        return EnforceResult(False, "move", "mediamtx cannot move a publisher to another path")


class SrsEnforcer:
    server: Server = "srs"

    def __init__(self, api_url: str, http: aiohttp.ClientSession) -> None:
        self._base = api_url.rstrip("/")
        self._http = http

    async def drop(self, pub: Publisher) -> EnforceResult:
        operation = "kick client"
        url = f"{self._base}/api/v1/clients/{quote(pub.client_id, safe='')}"
        status, body, failed = await _call(self._http, "DELETE", url, operation)
        if failed is not None:
            return failed
        # SRS answers 200 with {"code": 0} on success, a non-zero code otherwise.
        code = _srs_code(body)
        if status == 200 and code == 0:
            return EnforceResult(True, operation, "kicked", status)
        return EnforceResult(False, operation, f"HTTP {status}, code {code}: {body[:200]}", status)

    async def move(self, pub: Publisher, to_name: str) -> EnforceResult:
        return EnforceResult(False, "move", "srs cannot move a publisher to another stream")


def _srs_code(body: str) -> int | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if isinstance(data, int):
        return data
    code = data.get("code") if isinstance(data, dict) else None
    return code if isinstance(code, int) else None


class Unconfigured:
    """Stands in for a server whose API URL is not set: every call fails, loudly."""

    def __init__(self, server: Server, key: str) -> None:
        self.server = server
        self._key = key

    async def drop(self, pub: Publisher) -> EnforceResult:
        return EnforceResult(False, "drop", f"{self._key} is not set")

    async def move(self, pub: Publisher, to_name: str) -> EnforceResult:
        return EnforceResult(False, "move", f"{self._key} is not set")


def build_enforcers(
    *,
    nginx_control_url: str | None,
    mediamtx_api_url: str | None,
    srs_api_url: str | None,
    http: aiohttp.ClientSession,
) -> dict[Server, Enforcer]:
    """One enforcer per server kind; unconfigured ones report why they cannot act."""
    return {
        "nginx-rtmp": NginxRtmpEnforcer(nginx_control_url, http)
        if nginx_control_url
        else Unconfigured("nginx-rtmp", "enforce.nginx_control_url"),
        "mediamtx": MediaMtxEnforcer(mediamtx_api_url, http)
        if mediamtx_api_url
        else Unconfigured("mediamtx", "enforce.mediamtx_api_url"),
        "srs": SrsEnforcer(srs_api_url, http)
        if srs_api_url
        else Unconfigured("srs", "enforce.srs_api_url"),
    }
