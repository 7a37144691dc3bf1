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
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from livemod import metrics
from livemod.actions.enforcers import Enforcer, EnforceResult, build_enforcers
from livemod.actions.events import EventFilter, Subscription
from livemod.config import Config
from livemod.errors import ConfigError, RequestError
from livemod.escalation.standing import publish_decisions
from livemod.ingest.av_source import SourceOptions
from livemod.ingest.hooks import (
    PULL_MARK,
    HookCall,
    IdentityRules,
    Server,
    check_template,
    parse_mediamtx,
    parse_nginx,
    parse_srs,
    pull_url,
    with_mark,
)
from livemod.ingest.reconnect import PullControl, ReconnectingSource
from livemod.ingest.rooms import Admission, Hold, Publisher, RoomTable
from livemod.ingest.source import Deliver, FrameSource, SourceFactory
from livemod.sampling import FrameSampler

if TYPE_CHECKING:
    from livemod.daemon import Daemon

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Pull:
    """The hook side's handle on one hook-driven session's pull."""

    control: PullControl
    token: str
    played: asyncio.Event = field(default_factory=asyncio.Event)


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
        self._pulls: dict[str, _Pull] = {}
        self._by_token: dict[str, _Pull] = {}
        self._play_hook: bool | None = None
        """Whether on_play reaches us (None: not known yet)."""
        self._daemon: Daemon | None = None
        self._http: aiohttp.ClientSession | None = None
        self._enforcers: dict[Server, Enforcer] = {}
        self._sub: Subscription | None = None
        self._consumer: asyncio.Task[None] | None = None
        self._room_locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # -- component -----------------------------------------------------------------

    async def start(self, daemon: Daemon) -> None:
        self._daemon = daemon
        e = self._config.enforce
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=e.timeout_s))
        self._enforcers = build_enforcers(
            nginx_control_url=e.nginx_control_url,
            mediamtx_api_url=e.mediamtx_api_url,
            srs_api_url=e.srs_api_url,
            http=self._http,
        )
        self._sub = daemon.hub.subscribe(EventFilter())
        self._consumer = asyncio.create_task(self._consume())

    async def stop(self) -> None:
        if self._consumer is not None:
            self._consumer.cancel()
            await asyncio.gather(self._consumer, return_exceptions=True)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._sub is not None and self._daemon is not None:
            self._daemon.hub.unsubscribe(self._sub)
        if self._http is not None:
            await self._http.close()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/hooks/nginx-rtmp", self._nginx)
        app.router.add_post("/hooks/mediamtx", self._mediamtx)
        app.router.add_post("/hooks/srs", self._srs)

    @property
    def daemon(self) -> Daemon:
        assert self._daemon is not None, "component not started"
        return self._daemon

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
        form = await request.post()
        call = parse_nginx({k: v for k, v in form.items() if isinstance(v, str)})
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
            data = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        await self._dispatch(parse_mediamtx(data), request.remote or "")
        return web.Response(text="ok")

    async def _srs(self, request: web.Request) -> web.StreamResponse:
        self._auth(request)
        await self._dispatch(parse_srs(await _json(request)), request.remote or "")
        return web.Response(text="0")  # SRS reads the body as an error code: 0 allows

    async def _dispatch(self, call: HookCall, remote: str) -> Admission:
        metrics.HOOK_CALLS.labels(call.server, call.kind).inc()
        if call.kind == "play":
            self._on_play(call)
        elif call.kind == "publish":
            return await self._on_publish(call, remote)
        elif call.kind == "publish_done":
            self._on_publish_done(call)
        return Admission(200)

    # -- publish -------------------------------------------------------------------

    def _on_play(self, call: HookCall) -> None:
        pull = self._by_token.get(call.args.get(PULL_MARK, ""))
        if pull is not None:
            self._play_hook = True
            pull.played.set()

    async def _on_publish(self, call: HookCall, remote: str) -> Admission:
        refusal: RequestError | None = None
        try:
            who = self._rules.identify(call)
        except RequestError as exc:
            who, refusal = None, exc
        enforcing = self._config.enforce.enabled
        adm = self.rooms.admit(call, who, time.time()) if enforcing else Admission(200)
        if adm.moved is not None:
            await self._follow(adm.moved, remote)
            return adm
        if who is None:
            assert refusal is not None
            raise refusal
        self._rules.check_key(call, who)
        for hold in adm.lifted:
            await self._lift(hold)
        if adm.status == 403:
            refused = EnforceResult(True, "refuse publish", adm.reason)
            ids = {"user_id": who.user_id, "room_id": who.room_id, "server": call.server}
            await self._record(None, "refuse", refused, None, ids=ids)
            if call.ready and call.server == "mediamtx":
                # runOnReady comes after the publish was accepted: kick it instead.
                pub = Publisher(call.server, call.app, call.name, who, call.client_id, call)
                await self._enforce(pub, "refuse", self._enforcers["mediamtx"].drop(pub), None)
            raise RequestError(adm.reason, status=403)
        if not call.ready:
            return adm  # MediaMTX auth: allowed; the session starts on runOnReady
        pub = self.rooms.register(call, who, adm.redirect_to or call.name)
        try:
            await self._ensure_session(pub, remote)
        except RequestError:
            if self._config.hooks.fail_open:
                where = {"room_id": who.room_id}
                log.warning("publish allowed unmoderated (hooks.fail_open)", extra=where)
                return adm
            self.rooms.publishers.pop(pub.key, None)
            raise
        if adm.status == 302:
            result = EnforceResult(True, "redirect on publish", f"held on {adm.redirect_to}")
            await self._record(pub, "pause", result, None)
        return adm

    async def _ensure_session(self, pub: Publisher, remote: str) -> None:
        """Start the publisher's session, or point its still-running one at it."""
        daemon = self.daemon
        url = pull_url(pub.call, pub.stream_name, remote, self._config.hooks.pull_url)
        old = daemon.sessions.get(pub.session_id) if pub.session_id else None
        pull = self._pulls.get(pub.session_id or "")
        if old is not None and pull is not None and old.status in ("starting", "live"):
            if old.info.key == f"{pub.who.user_id}:{pub.who.room_id}":
                # The same publisher is back (server restart, network drop): the
                # session goes on, with its history, from the new publish.
                pull.played.clear()
                pull.control.switch(with_mark(url, pull.token))
                await self._wait_play(pull, pub)
                return
            await daemon.stop_session(old.info.id)
        pull = self._new_pull(url)
        session = await daemon.start_session(
            pull.control.url,
            pub.who.user_id,
            pub.who.room_id,
            metadata={"server": pub.server, "app": pub.app, "stream": pub.name},
            source=self._factory(pull),
        )
        sid = session.info.id
        pub.session_id = sid
        self._pulls[sid] = pull
        loop = asyncio.get_running_loop()

        def on_retry(attempt: int, why: str) -> None:
            loop.call_soon_threadsafe(self._announce_retry, sid, attempt, why)

        pull.control.on_retry = on_retry
        await self._wait_play(pull, pub)

    def _new_pull(self, url: str) -> _Pull:
        token = uuid.uuid4().hex[:12]
        h = self._config.hooks
        pull = _Pull(PullControl(with_mark(url, token), give_up_s=h.reconnect_max_s), token)
        self._by_token[token] = pull
        return pull

    def _factory(self, pull: _Pull) -> SourceFactory:
        ingest = self._config.ingest

        def build(stream_id: str, sampler: FrameSampler, deliver: Deliver) -> FrameSource:
            options = SourceOptions(
                url=pull.control.url,
                open_timeout_s=ingest.open_timeout_s,
                read_timeout_s=ingest.read_timeout_s,
            )
            return ReconnectingSource(stream_id, options, sampler, deliver, pull.control)

        return build

    async def _wait_play(self, pull: _Pull, pub: Publisher) -> None:
        """Hold the hook's answer until nginx-rtmp registered our own play: a player
        that joins before the publisher starts gets its first keyframe at once,
        while a late one waits up to a whole GOP (nginx-rtmp keeps no GOP cache)."""
        limit = self._config.hooks.hold_publish_s
        if pub.server != "nginx-rtmp" or limit <= 0 or self._play_hook is False:
            return
        try:
            await asyncio.wait_for(pull.played.wait(), limit)
        except TimeoutError:
            if self._play_hook is None:
                self._play_hook = False
                log.warning(
                    "no on_play from nginx-rtmp for the daemon's own pull: add "
                    "'on_play' to the rtmp application (first frames come a GOP later)"
                )

    async def _follow(self, pub: Publisher, remote: str) -> None:
        """One of our redirects landed: pull from the publisher's new stream name."""
        pull = self._pulls.get(pub.session_id or "")
        if pull is None:
            return
        url = pull_url(pub.call, pub.stream_name, remote, self._config.hooks.pull_url)
        pull.played.clear()
        pull.control.switch(with_mark(url, pull.token))
        await self._wait_play(pull, pub)

    def _on_publish_done(self, call: HookCall) -> None:
        pub, ours = self.rooms.publish_done(call)
        if pub is None or ours:
            return
        pull = self._pulls.get(pub.session_id or "")
        if pull is not None:
            pull.control.finish()

    def _announce_retry(self, sid: str, attempt: int, why: str) -> None:
        session = self.daemon.sessions.get(sid)
        if session is not None:
            self._spawn(session.announce("reconnecting", attempt=attempt, error=why))

    # -- events → enforcement -----------------------------------------------------------

    async def _consume(self) -> None:
        assert self._sub is not None
        while True:
            event = await self._sub.queue.get()
            try:
                self._on_event(event)
            except Exception:
                log.exception("hooks: event handling failed", extra={"seq": event.get("seq")})

    def _on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        sid = str(event.get("stream_id", ""))
        if kind == "session" and event.get("state") in ("ended", "error"):
            pull = self._pulls.pop(sid, None)
            if pull is not None:
                self._by_token.pop(pull.token, None)
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
        action, state = event.get("action"), event.get("state")
        room = str(event.get("room_id", ""))
        enforcer = self._enforcers[pub.server]
        if action == "end" and state == "start":
            self._spawn(self._locked(room, self._enforce(pub, "end", enforcer.drop(pub), event)))
        elif action == "pause" and state == "start" and not pub.held:
            self._spawn(self._locked(room, self._move(pub, "pause", event, hold=True)))
        elif action == "pause" and state == "stop" and pub.held and not self._holding(room):
            self._spawn(self._locked(room, self._move(pub, "resume", event, hold=False)))

    def _holding(self, room: str) -> bool:
        return self.rooms.held(room, "end") or self.rooms.held(room, "pause")

    async def _move(self, pub: Publisher, what: str, event: dict[str, Any], *, hold: bool) -> None:
        to_name = self.rooms.hold_name(pub.name) if hold else pub.name
        enforcer = self._enforcers[pub.server]
        self.rooms.expect_move(pub, to_name)
        result = await self._enforce(pub, what, enforcer.move(pub, to_name), event)
        if not result.ok:
            self.rooms.cancel_move(pub, to_name)

    async def _enforce(
        self, pub: Publisher, what: str, call: Any, event: dict[str, Any] | None
    ) -> EnforceResult:
        started = time.perf_counter()
        result: EnforceResult = await call
        metrics.ENFORCEMENTS.labels(pub.server, what, "ok" if result.ok else "failed").inc()
        if not result.ok:
            extra = {"server": pub.server, "action": what, "detail": result.detail}
            log.warning("enforcement failed", extra=extra)
        await self._record(pub, what, result, event, ms=(time.perf_counter() - started) * 1000)
        return result

    async def _record(
        self,
        pub: Publisher | None,
        what: str,
        result: EnforceResult,
        event: dict[str, Any] | None,
        *,
        ms: float | None = None,
        ids: dict[str, str] | None = None,
    ) -> None:
        body: dict[str, Any] = {"type": "enforcement", "action": what, **result.as_dict()}
        if pub is not None:
            body.update(
                server=pub.server,
                stream_id=pub.session_id,
                user_id=pub.who.user_id,
                room_id=pub.who.room_id,
                stream=pub.stream_name,
            )
        body.update(ids or {})
        if event is not None:
            body["trigger_seq"] = event.get("seq")
            body["category"] = event.get("category")
        if ms is not None:
            body["took_ms"] = round(ms, 1)
        await self.daemon.hub.publish(body)

    async def _lift(self, hold: Hold) -> None:
        """An end's refusal lapsed: lift it, so the vote starts afresh for it."""
        stop = self.daemon.engine.release(hold.key, hold.category, t_now=time.time(), fresh=True)
        if stop is not None:
            await publish_decisions(self.daemon, [stop], hold.event, origin="expired")

    async def _locked(self, room: str, work: Any) -> None:
        # One enforcement at a time per room, in event order (a pause, then its stop).
        lock = self._room_locks.setdefault(room, asyncio.Lock())
        async with lock:
            await work

    def _spawn(self, work: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except ValueError as exc:
        raise RequestError(f"hook body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise RequestError("hook body must be a JSON object")
    return data
