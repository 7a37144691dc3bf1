"""One WHIP publisher's WebRTC peer connection: negotiate, receive, close.

The daemon is always the answerer. It gathers all of its candidates before it
answers (WHIP servers are not required to trickle), offering only
``whip.ice_addresses`` when that is set, and takes the publisher's candidates
from the offer or from trickle PATCHes. When every configured address is
loopback, remote candidates that are not loopback are dropped: a loopback
socket could never reach them, and resolving mDNS names would multicast.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Coroutine
from typing import Any

from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.exceptions import InvalidAccessError, InvalidStateError, OperationError
from aiortc.mediastreams import MediaStreamError
from aiortc.sdp import candidate_from_sdp

from livemod.config import WhipConfig
from livemod.errors import RequestError
from livemod.ingest.whip import sdp
from livemod.ingest.whip.ice import host_addresses, is_loopback, rtc_configuration
from livemod.ingest.whip.source import WhipSource

log = logging.getLogger(__name__)

_NEGOTIATION_ERRORS = (
    ValueError,
    AssertionError,
    LookupError,
    InvalidAccessError,
    InvalidStateError,
    OperationError,
)

AudioSink = Callable[[Any, float], None]
"""Receives each decoded ``av.AudioFrame`` and its arrival time (event loop)."""


class WhipPeer:
    """Wraps one ``RTCPeerConnection``; ``on_state`` hears its connection states."""

    def __init__(self, config: WhipConfig) -> None:
        self._config = config
        self.label = ""
        """The stream id, for logs, once the session exists."""
        self._loopback_only = bool(config.ice_addresses) and all(
            is_loopback(a) for a in config.ice_addresses
        )
        self.pc = RTCPeerConnection(rtc_configuration(config.ice_servers))
        self.video: MediaStreamTrack | None = None
        self.audio: MediaStreamTrack | None = None
        self.video_codec: str | None = None
        self.audio_codec: str | None = None
        self.remote_ufrag: str | None = None
        self.etag = ""
        self.audio_sink: AudioSink | None = None
        """Where received audio goes; ``None`` drains it (aiortc's queue is unbounded)."""
        self.on_state: Callable[[str], None] | None = None
        self.created = time.monotonic()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self.pc.on("track", self._on_track)
        self.pc.on("connectionstatechange", self._on_connection_state)

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "video" and self.video is None:
            self.video = track
        elif track.kind == "audio" and self.audio is None:
            self.audio = track

    def _on_connection_state(self) -> None:
        if self.on_state is not None:
            self.on_state(self.pc.connectionState)

    @property
    def state(self) -> str:
        return str(self.pc.connectionState)

    async def negotiate(self, offer: str) -> str:
        """Check and apply the publisher's offer; return the SDP answer.

        Raises ``RequestError`` (400 malformed, 422 unusable) with the reason.
        """
        sdp.check_offer(offer)
        if self._loopback_only:
            offer = sdp.keep_loopback_candidates(offer)
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
            answer = await self.pc.createAnswer()
            with host_addresses(self._config.ice_addresses):
                await self.pc.setLocalDescription(answer)
        except _NEGOTIATION_ERRORS as exc:
            reason = str(exc) or type(exc).__name__
            raise RequestError(f"cannot use the SDP offer: {reason}", status=400) from exc
        local = self.pc.localDescription.sdp
        self.video_codec = sdp.answered_codec(local, "video")
        if self.video is None or self.video_codec is None:
            raise RequestError("no video track could be negotiated from the offer", status=422)
        self.audio_codec = sdp.answered_codec(local, "audio")
        self.remote_ufrag = sdp.ice_ufrag(offer)
        # The ETag names this ICE session (RFC 9725 4.3.1); no restarts, so it is fixed.
        self.etag = f'"{sdp.ice_ufrag(local) or ""}-{secrets.token_hex(4)}"'
        return str(local)

    async def add_candidates(self, frag: sdp.SdpFragment) -> int:
        """Apply trickled candidates; returns how many were used."""
        used = 0
        for mid, value in frag.candidates:
            if self._loopback_only and not is_loopback(sdp.candidate_address(value)):
                continue
            try:
                candidate = candidate_from_sdp(value[len("candidate:") :])
            except (AssertionError, ValueError, IndexError) as exc:
                raise RequestError(f"malformed candidate: {value[:80]!r}", status=400) from exc
            if mid is None:
                candidate.sdpMLineIndex = 0
            else:
                candidate.sdpMid = mid
            await self.pc.addIceCandidate(candidate)
            used += 1
        if frag.end_of_candidates:
            await self.pc.addIceCandidate(None)
        return used

    def start(self, source: WhipSource) -> None:
        """Pump received frames into ``source`` until the tracks end."""
        if self.video is not None:
            self._spawn(self._pump_video(self.video, source))
        if self.audio is not None:
            self._spawn(self._pump_audio(self.audio, source))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pump_video(self, track: MediaStreamTrack, source: WhipSource) -> None:
        try:
            while True:
                frame = await track.recv()
                # Arrival is when the frame leaves the jitter buffer and decoder.
                source.offer(frame, time.time())
        except MediaStreamError:
            return  # the track ended with the connection
        except Exception as exc:  # a bug must end this publish, not the daemon
            log.exception("WHIP receive failed", extra={"stream_id": self.label})
            source.finish("error", f"internal error receiving WHIP video: {exc}")

    async def _pump_audio(self, track: MediaStreamTrack, source: WhipSource) -> None:
        try:
            while True:
                frame = await track.recv()
                arrival = time.time()
                source.offer_audio(frame, arrival)  # the relay's tap, if any
                sink = self.audio_sink
                if sink is not None:
                    sink(frame, arrival)
        except MediaStreamError:
            return

    async def close(self) -> None:
        """Close the connection (the publisher sees it end) and stop the pumps."""
        if self._closed:
            return
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        try:
            await self.pc.close()
        except Exception:  # closing must not fail the caller; the pc is gone either way
            log.exception("closing a WHIP peer connection failed", extra={"stream_id": self.label})
        await asyncio.gather(*tasks, return_exceptions=True)
