"""Streaming-server hooks and enforcement: the asyncio shell around
:mod:`livemod.ingest.hooks` (parsing) and :mod:`livemod.ingest.rooms` (decisions).

Routes: ``POST /hooks/nginx-rtmp`` (``on_publish``, ``on_publish_done``,
``on_play``), ``POST /hooks/mediamtx`` (auth hook, ``runOnReady``/``runOnNotReady``)
and ``POST /hooks/srs`` (``http_hooks``). A publish starts a session that pulls the
stream back from the server and reconnects while the publisher is live; its end
stops the session. Committed ``end``/``pause`` action events of hook-driven
sessions are enforced on the server, and every enforcement (or failure to
enforce, or refused publish) is itself an event ``{"type": "enforcement", ...}``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aiohttp import web

from livemod import metrics
from livemod.actions.enforcement import Enforcement
from livemod.app.pulls import PullManager
from livemod.config import Config
from livemod.errors import ConfigError, RequestError
from livemod.events.hub import EventFilter, Subscription
from livemod.ingest.hooks import (
    HookCall,
    IdentityRules,
    PullRules,
    check_template,
    parse_mediamtx,
    parse_nginx,
    parse_srs,
)
from livemod.ingest.rooms import Admission, RoomTable
from livemod.web import MAX_JSON_DEPTH, form_body, nesting_depth

if TYPE_CHECKING:
    from livemod.pipeline.runtime import Runtime

log = logging.getLogger(__name__)


class StreamingServerHooks:
    """The ``hooks`` component (see the module docstring)."""

    name = "hooks"

    def __init__(self, config: Config) -> None:
        self._config = config
        h = config.hooks
        if h.pull_url:
            try:
                check_template(h.pull_url)
            except ValueError as exc:
                raise ConfigError(f"hooks.pull_url: {exc}") from exc
        self._rules = IdentityRules(
            user_arg=h.user_arg,
            room_arg=h.room_arg,
            default_user_id=h.default_user_id,
            key_check=h.key_check,
            key_arg=h.key_arg,
            secret=os.environ.get(h.secret_env) or None,
        )
        if h.key_check != "none" and not self._rules.secret:
            log.warning("hooks.key_check is on but %s is empty: all refused", h.secret_env)
        self.rooms = RoomTable(
            end_refuse_s=config.enforce.end_refuse_s, pause_stream=config.enforce.pause_stream
        )
        self.pulls = PullManager(config, pull_rules(config))
        self.enforcement = Enforcement(config.enforce, self.rooms)
        self._runtime: Runtime | None = None
        self._sub: Subscription | None = None
        self._consumer: asyncio.Task[None] | None = None

    # -- component -----------------------------------------------------------------

    async def start(self, runtime: Runtime) -> None:
        self._runtime = runtime
        await self.enforcement.start(runtime)
        self._sub = runtime.hub.subscribe(EventFilter())
        self._consumer = asyncio.create_task(self._consume())

    async def stop(self) -> None:
        if self._consumer is not None:
            self._consumer.cancel()
            await asyncio.gather(self._consumer, return_exceptions=True)
        await self.enforcement.close()
        await self.pulls.close()
        if self._sub is not None and self._runtime is not None:
            self._runtime.hub.unsubscribe(self._sub)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/hooks/nginx-rtmp", self._nginx)
        app.router.add_post("/hooks/mediamtx", self._mediamtx)
        app.router.add_post("/hooks/srs", self._srs)

    @property
    def runtime(self) -> Runtime:
        assert self._runtime is not None, "component not started"
        return self._runtime

    # -- routes ----------------------------------------------------------------------

    def _auth(self, request: web.Request) -> None:
        token = self._config.http.token
        if not token:
            return
        given = request.query.get("token", "")
        bearer = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if not any(hmac.compare_digest(g.encode(), token.encode()) for g in (given, bearer)):
            raise RequestError("missing or wrong token (?token= in the hook URL)", status=401)

    async def _nginx(self, request: web.Request) -> web.StreamResponse:
        self._auth(request)
        call = parse_nginx(await form_body(request))
        adm = await self._dispatch(call, request.remote or "")
        if adm.status == 302 and adm.redirect_to:
            # nginx-rtmp moves the publisher to the stream named in Location.
            return web.Response(status=302, headers={"Location": adm.redirect_to})
        return web.Response(text="ok")

    async def _mediamtx(self, request: web.Request) -> web.StreamResponse:
        self._auth(request)
        if request.content_type == "application/json":
            data = await _json(request)
        else:
            data = await form_body(request)
        await self._dispatch(parse_mediamtx(data), request.remote or "")
        return web.Response(text="ok")

    async def _srs(self, request: web.Request) -> web.StreamResponse:
        self._auth(request)
        await self._dispatch(parse_srs(await _json(request)), request.remote or "")
        return web.Response(text="0")  # SRS reads the body as an error code: 0 allows

    async def _dispatch(self, call: HookCall, remote: str) -> Admission:
        metrics.HOOK_CALLS.labels(call.server, call.kind).inc()
        if call.kind == "play":
            self.pulls.on_play(call)
        elif call.kind == "publish":
            return await self._on_publish(call, remote)
        elif call.kind == "publish_done":
            self._on_publish_done(call)
        return Admission(200)

    # -- publish -------------------------------------------------------------------

    async def _on_publish(self, call: HookCall, remote: str) -> Admission:
        refusal: RequestError | None = None
        try:
            who = self._rules.identify(call)
            self._rules.check_key(call, who)
        except RequestError as exc:
            # Refused unless it is one of our own redirects (those carry no args).
            who, refusal = None, exc
        enforcing = self._config.enforce.enabled
        adm = self.rooms.admit(call, who, time.time()) if enforcing else Admission(200)
        if adm.moved is not None:
            await self.pulls.follow(adm.moved, remote)
            return adm
        if who is None:
            assert refusal is not None
            raise refusal
        for hold in adm.lifted:
            await self.enforcement.lift(hold)
        if adm.status == 403:
            await self.enforcement.refused(call, who, adm.reason)
            raise RequestError(adm.reason, status=403)
        if not call.ready:
            return adm  # MediaMTX auth: allowed; the session starts on runOnReady
        try:
            self.pulls.url_for(call, adm.redirect_to or call.name, remote)
        except RequestError as exc:
            # Never opened, never retried, and a live session is not switched to it.
            log.warning("publish refused: pull URL not allowed", extra={"detail": str(exc)})
            await self.enforcement.refused(call, who, str(exc), operation="refuse pull")
            raise
        pub = self.rooms.register(call, who, adm.redirect_to or call.name)
        try:
            await self.pulls.ensure_session(self.runtime, pub, remote)
        except RequestError:
            if self._config.hooks.fail_open:
                where = {"room_id": who.room_id}
                log.warning("publish allowed unmoderated (hooks.fail_open)", extra=where)
                return adm
            self.rooms.publishers.pop(pub.key, None)
            raise
        if adm.status == 302:
            await self.enforcement.held_on_publish(pub)
        return adm

    def _on_publish_done(self, call: HookCall) -> None:
        pub, ours = self.rooms.publish_done(call)
        if pub is not None and not ours:
            self.pulls.finish(pub)

    # -- events → enforcement -----------------------------------------------------------

    async def _consume(self) -> None:
        while True:
            sub = self._sub
            assert sub is not None
            if sub.overflowed.is_set() and sub.queue.empty():
                # The hub dropped us for falling behind (counted in livemod_drops_total).
                log.error("hooks fell behind the event stream; resubscribing")
                self._sub = self.runtime.hub.subscribe(EventFilter())
                continue
            # asyncio.timeout, not wait_for: in a loop, 3.11's wait_for can swallow
            # the cancellation that stop() sends, and the task would never end.
            try:
                async with asyncio.timeout(1.0):
                    event = await sub.queue.get()
            except TimeoutError:
                continue
            try:
                self._on_event(event)
            except Exception:
                log.exception("hooks: event handling failed", extra={"seq": event.get("seq")})

    def _on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        sid = str(event.get("stream_id", ""))
        if kind == "session" and event.get("state") in ("ended", "error"):
            self.pulls.forget(sid)
            pub = self.rooms.by_session(sid)
            if pub is not None and self.rooms.publishers.get(pub.key) is pub:
                del self.rooms.publishers[pub.key]
            return
        if kind != "action":
            return
        self.rooms.on_action(event, time.time())
        if not self._config.enforce.enabled or event.get("origin") == "expired":
            return
        pub = self.rooms.by_session(sid)
        if pub is None:
            return  # not a hook-driven stream, or its publisher is gone
        self.enforcement.on_action(event, pub)


def pull_rules(config: Config) -> PullRules:
    """Where hook-built pulls may go: ``ingest.schemes``, and beside the hook's sender
    the hosts of ``hooks.allow_hosts`` and of the servers the config names
    (``enforce.*_url``, a literal host in ``hooks.pull_url``)."""
    hosts = list(config.hooks.allow_hosts)
    e = config.enforce
    for url in (e.nginx_control_url, e.mediamtx_api_url, e.srs_api_url, config.hooks.pull_url):
        host = urlsplit(url).hostname if url else None
        if host and "{" not in host:
            hosts.append(host)
    return PullRules.of(config.ingest.schemes, hosts)


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except ValueError as exc:  # UnicodeDecodeError included
        raise RequestError(f"hook body is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise RequestError("hook body is nested too deep") from exc
    if not isinstance(data, dict):
        raise RequestError("hook body must be a JSON object")
    if nesting_depth(data) > MAX_JSON_DEPTH:
        raise RequestError(f"hook body is nested deeper than {MAX_JSON_DEPTH}")
    return data
