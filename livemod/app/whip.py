"""WHIP (RFC 9725): OBS, browsers and WebRTC servers publish to the daemon.

Routes (a :class:`~livemod.pipeline.runtime.Component`):

* ``POST /whip/{room_id}`` with an ``application/sdp`` offer: ``201 Created``,
  the SDP answer, ``Location`` of the WHIP session, its ``ETag``, and one
  ``Link: rel="ice-server"`` per configured STUN/TURN server. The user is the
  bearer token's (``whip.tokens``) or, for an admin or open runtime, ``?user_id=``.
* ``PATCH`` on the session with ``application/trickle-ice-sdpfrag``: trickled
  candidates (``204``); ICE restarts are not supported (``422``, publish again).
* ``DELETE`` on the session ends it (``200``).
* ``OPTIONS`` (with the ``Link`` headers too, for an authorised caller) and CORS
  headers everywhere, for browser publishers on other origins.
* ``GET /whip``: a publisher page for browsers (camera or a test pattern).

Errors answer JSON ``{"error": "..."}`` with the RFC's status: 400 malformed
offer, 401 missing or wrong token, 403 not yours / refused, 404 unknown session,
412 stale ``If-Match``, 415 wrong content type, 422 unusable offer, 503 full.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from livemod.app.whip_publisher import WhipPublisher
from livemod.config import Config
from livemod.errors import RequestError
from livemod.ingest.audio import AudioSink
from livemod.ingest.source import Deliver
from livemod.ingest.whip import sdp
from livemod.ingest.whip.access import (
    Caller,
    EndRefusals,
    authorize,
    check_room,
    cors_headers,
    etag_matches,
    ice_links,
    publisher_user,
    request_etag,
)
from livemod.ingest.whip.audio import WhipAudio
from livemod.ingest.whip.peer import WhipPeer
from livemod.ingest.whip.source import WhipSource
from livemod.sampling import FrameSampler

if TYPE_CHECKING:
    from livemod.pipeline.runtime import Runtime

SDP = "application/sdp"
SDPFRAG = "application/trickle-ice-sdpfrag"
PAGE = Path(__file__).resolve().parents[1] / "static" / "whip.html"
WhipHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class WhipIngest:
    """The WHIP endpoint and every live WHIP publish."""

    name = "whip"

    def __init__(self, config: Config) -> None:
        self._config = config
        self._whip = config.whip
        self._runtime: Runtime | None = None
        self.publishers: dict[str, WhipPublisher] = {}
        self._audio: dict[str, WhipAudio] = {}
        """Per session id: the publisher's audio feeding speech moderation."""
        self._refusals = EndRefusals(config.enforce.end_refuse_s)

    async def start(self, runtime: Runtime) -> None:
        self._runtime = runtime
        quiet = logging.getLogger("aioice")
        if quiet.level == logging.NOTSET:
            quiet.setLevel(logging.WARNING)  # it logs every candidate pair check at INFO

    async def stop(self) -> None:
        await asyncio.gather(*(p.close() for p in list(self.publishers.values())))

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/whip", self._page)
        app.router.add_post("/whip/{room_id}", self._wrap(self._post))
        app.router.add_route("OPTIONS", "/whip/{room_id}", self._wrap(self._options))
        app.router.add_patch("/whip/{room_id}/{sid}", self._wrap(self._patch))
        app.router.add_delete("/whip/{room_id}/{sid}", self._wrap(self._delete))
        app.router.add_route("OPTIONS", "/whip/{room_id}/{sid}", self._wrap(self._options))

    # -- HTTP plumbing -------------------------------------------------------------

    def _wrap(self, handler: WhipHandler) -> WhipHandler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            try:
                response = await handler(request)
            except RequestError as exc:
                response = web.json_response({"error": str(exc)}, status=exc.status)
                if exc.status == 401:
                    response.headers["WWW-Authenticate"] = 'Bearer realm="livemod"'
            response.headers.update(cors_headers(self._whip.cors_origin))
            return response

        return wrapped

    def _caller(self, request: web.Request) -> Caller:
        header = request.headers.get("Authorization", "")
        return authorize(header, self._config.http.token, self._whip.tokens)

    def _publisher(self, request: web.Request, caller: Caller) -> WhipPublisher:
        room_id, sid = request.match_info["room_id"], request.match_info["sid"]
        pub = self.publishers.get(sid)
        if pub is None or pub.room_id != room_id:
            raise RequestError(f"no WHIP session {sid} in room {room_id} (ended?)", status=404)
        if caller.user_id is not None and caller.user_id != pub.user_id:
            raise RequestError("this WHIP session belongs to another user", status=403)
        return pub

    async def _page(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(PAGE, headers={"Content-Type": "text/html; charset=utf-8"})

    async def _options(self, request: web.Request) -> web.StreamResponse:
        """Never refused: a CORS preflight carries no ``Authorization``.

        On the endpoint URL, an authorised caller (anyone, without tokens) also gets
        the ICE servers as ``Link`` headers, for clients that configure their peer
        connection before the offer (RFC 9725 4.4).
        """
        response = web.Response(status=204)
        if "sid" in request.match_info:
            response.headers["Allow"] = "PATCH, DELETE, OPTIONS"
            response.headers["Accept-Patch"] = SDPFRAG
            return response
        response.headers["Allow"] = "POST, OPTIONS"
        response.headers["Accept-Post"] = SDP
        if self._whip.ice_servers:
            try:
                self._caller(request)
            except RequestError:
                return response
            for link in ice_links(self._whip.ice_servers):
                response.headers.add("Link", link)
        return response

    # -- WHIP ------------------------------------------------------------------------

    async def _post(self, request: web.Request) -> web.StreamResponse:
        runtime = self._runtime
        assert runtime is not None
        caller = self._caller(request)
        room_id = check_room(request.match_info["room_id"])
        user_id = publisher_user(caller, request.query.get("user_id"))
        if request.content_type != SDP:
            raise RequestError(f"expected Content-Type: {SDP} (an SDP offer)", status=415)
        self._refusals.check(f"{user_id}:{room_id}", time.monotonic())
        try:
            offer = await request.text()
        except UnicodeDecodeError as exc:
            raise RequestError("the SDP offer is not valid UTF-8 text", status=400) from exc
        peer = WhipPeer(self._whip)
        try:
            answer = await peer.negotiate(offer)
            pub = await self._start(runtime, peer, user_id, room_id)
        except BaseException:
            await peer.close()
            raise
        headers = {
            "Content-Type": SDP,
            "Location": pub.location,
            "ETag": peer.etag,
            "Accept-Patch": SDPFRAG,
        }
        response = web.Response(status=201, text=answer, headers=headers)
        response.content_type = SDP
        for link in ice_links(self._whip.ice_servers):
            response.headers.add("Link", link)
        return response

    async def _start(
        self, runtime: Runtime, peer: WhipPeer, user_id: str, room_id: str
    ) -> WhipPublisher:
        loop = asyncio.get_running_loop()
        ended = asyncio.Event()
        made: list[WhipSource] = []

        def make_source(
            stream_id: str,
            sampler: FrameSampler,
            deliver: Deliver,
            deliver_audio: AudioSink | None,
        ) -> WhipSource:
            # Audio arrives on the event loop, not on this source's thread: WhipAudio
            # (wired below, once the session exists) takes it to the speech path.
            made.append(WhipSource(stream_id, sampler, deliver, loop=loop, on_end=ended.set))
            return made[0]

        metadata = {
            "ingest": "whip",
            "video_codec": peer.video_codec,
            "audio_codec": peer.audio_codec,
        }
        session = await runtime.sessions.start(
            f"whip:/whip/{room_id}", user_id, room_id, metadata=metadata, source=make_source
        )
        peer.label = session.info.id
        if session.moderates_speech:
            audio = WhipAudio(session.info.id, session.deliver_audio)
            self._audio[session.info.id] = audio
            if peer.audio is None:
                audio.unavailable("the WHIP offer has no audio track")
            else:
                peer.audio_sink = audio.offer
        pub = WhipPublisher(
            session,
            peer,
            made[0],
            ended,
            hub=runtime.hub,
            config=self._whip,
            on_closed=self._forget,
            on_end_action=self._remember_end,
        )
        self.publishers[pub.id] = pub
        pub.start()
        return pub

    def _forget(self, pub: WhipPublisher) -> None:
        self.publishers.pop(pub.id, None)
        audio = self._audio.pop(pub.session.info.id, None)
        if audio is not None:
            audio.close()

    def _remember_end(self, pub: WhipPublisher, category: str) -> None:
        self._refusals.remember(f"{pub.user_id}:{pub.room_id}", category, time.monotonic())

    async def _patch(self, request: web.Request) -> web.StreamResponse:
        pub = self._publisher(request, self._caller(request))
        if request.content_type != SDPFRAG:
            raise RequestError(f"expected Content-Type: {SDPFRAG}", status=415)
        tag = request_etag(request.headers)
        if tag == "*":
            raise RequestError(
                "ICE restarts are not supported: DELETE and publish again", status=422
            )
        if tag is not None and not etag_matches(tag, pub.peer.etag):
            raise RequestError(
                f"the entity tag {tag} (If-Match) is not this session's ETag", status=412
            )
        frag = sdp.parse_sdpfrag(await request.text())
        if frag.ice_ufrag is not None and frag.ice_ufrag != pub.peer.remote_ufrag:
            raise RequestError(
                "ICE restarts are not supported: DELETE and publish again", status=422
            )
        await pub.peer.add_candidates(frag)
        return web.Response(status=204, headers={"ETag": pub.peer.etag})

    async def _delete(self, request: web.Request) -> web.StreamResponse:
        pub = self._publisher(request, self._caller(request))
        pub.end("stopped")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(pub.closed.wait(), 10.0)
        return web.json_response(
            {
                "id": pub.id,
                "room_id": pub.room_id,
                "status": "ended",
                "frames": pub.source.received,
                "samples": pub.session.samples,
            }
        )
