"""One live WHIP publish: its peer connection, its frame source, its session.

The publisher ends exactly once, whoever asks first: a ``DELETE``, an ``end``
action, the session being stopped through the API, the connection failing or
closing, or a timeout (never connected, or no video for ``whip.idle_timeout_s``,
which is how a publisher that vanished without a ``DELETE`` is noticed before
ICE consent expires). Then the peer connection is closed and the publisher
forgets itself.

Enforcement reads committed action events for its stream, as a WebSocket client
would: ``end`` closes the connection; ``pause`` holds the publish (frames are
still analyzed, so the policy can lift it, and counted as held) until every
category's pause has stopped. Each enforcement is published as a session event
(``enforced``, ``held``, ``released``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Literal

from livemod.config import WhipConfig
from livemod.events.follow import follow
from livemod.events.hub import EventFilter, EventHub
from livemod.events.types import SessionState
from livemod.ingest.whip.peer import WhipPeer
from livemod.ingest.whip.source import WhipSource
from livemod.pipeline.session import Session

log = logging.getLogger(__name__)

TICK_S = 0.25
"""How often timeouts are checked."""


class WhipPublisher:
    """Supervises one publish from ``start`` until it is ended and cleaned up."""

    def __init__(
        self,
        session: Session,
        peer: WhipPeer,
        source: WhipSource,
        ended: asyncio.Event,
        *,
        hub: EventHub,
        config: WhipConfig,
        on_closed: Callable[[WhipPublisher], None],
        on_end_action: Callable[[WhipPublisher, str], None] | None = None,
    ) -> None:
        self.session = session
        self.peer = peer
        self.source = source
        self._ended = ended
        """Set (on the loop) by the source when it ends, for whatever reason."""
        self._hub = hub
        self._config = config
        self._on_closed = on_closed
        self._on_end_action = on_end_action
        self._holds: set[str] = set()
        self._held_since = 0.0
        self._held_frames_at = 0
        self._tasks: list[asyncio.Task[None]] = []
        self.closed = asyncio.Event()

    @property
    def id(self) -> str:
        return self.session.info.id

    @property
    def room_id(self) -> str:
        return self.session.info.room_id

    @property
    def user_id(self) -> str:
        return self.session.info.user_id

    @property
    def location(self) -> str:
        return f"/whip/{self.room_id}/{self.id}"

    def start(self) -> None:
        self.peer.on_state = self._on_state
        self.peer.start(self.source)
        self._tasks.append(asyncio.create_task(self._enforce()))
        self._tasks.append(asyncio.create_task(self._supervise()))

    def end(self, reason: Literal["eof", "stopped", "error"], error: str | None = None) -> None:
        """End the publish (first reason wins; the daemon logs and announces how it
        ended); cleanup follows on its own."""
        self.source.finish(reason, error)

    def _on_state(self, state: str) -> None:
        if state == "failed":
            self.end("error", "WebRTC connection failed (ICE or DTLS)")
        elif state == "closed":
            self.end("eof")  # the publisher closed it (a no-op when we did)

    async def _supervise(self) -> None:
        cfg = self._config
        try:
            while not self._ended.is_set():
                # asyncio.timeout: 3.11's wait_for can swallow a cancellation.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(TICK_S):
                        await self._ended.wait()
                self._check_timeouts(cfg, time.monotonic())
        finally:
            await self._cleanup()

    def _check_timeouts(self, cfg: WhipConfig, now: float) -> None:
        last = self.source.last_frame_at
        age = now - self.peer.created
        if last is None:
            if self.peer.state != "connected" and age > cfg.connect_timeout_s:
                self.end(
                    "error",
                    f"publisher did not connect within {cfg.connect_timeout_s:g} s "
                    "(whip.connect_timeout_s)",
                )
            elif age > cfg.connect_timeout_s + cfg.idle_timeout_s:
                self.end("error", "publisher connected but sent no video")
        elif now - last > cfg.idle_timeout_s:
            self.end(
                "error",
                f"publisher sent no video for {cfg.idle_timeout_s:g} s "
                "(whip.idle_timeout_s): it vanished without a DELETE",
            )

    async def _cleanup(self) -> None:
        enforce = self._tasks[0] if self._tasks else None
        if enforce is not None:
            enforce.cancel()
            await asyncio.gather(enforce, return_exceptions=True)
        await self.peer.close()
        self._on_closed(self)
        self.closed.set()

    async def close(self) -> None:
        """End now and wait until the connection is closed (daemon shutdown)."""
        self.end("stopped")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.closed.wait(), 10.0)

    # -- enforcement ---------------------------------------------------------------

    async def _enforce(self) -> None:
        try:
            await self._follow_actions()
        except Exception:  # enforcement must fail loudly, the publish goes on
            log.exception("WHIP enforcement stopped", extra={"stream_id": self.id})

    async def _follow_actions(self) -> None:
        async for event in follow(self._hub, 0, EventFilter(stream_id=self.id)):
            if event.get("type") != "action":
                continue
            action, state = event.get("action"), event.get("state")
            if action == "end" and state == "start":
                await self._announce("enforced", event, action="end")
                if self._on_end_action is not None:
                    self._on_end_action(self, str(event.get("category", "")))
                self.end("stopped")
                return
            if action == "pause":
                await self._pause(event, state == "start")

    async def _pause(self, event: dict[str, Any], start: bool) -> None:
        category = str(event.get("category", ""))
        was_held = bool(self._holds)
        if start:
            self._holds.add(category)
        else:
            self._holds.discard(category)
        if self._holds and not was_held:
            self.source.held = True
            self._held_since = time.monotonic()
            self._held_frames_at = self.source.held_frames
            await self._announce("held", event)
        elif was_held and not self._holds:
            self.source.held = False
            await self._announce(
                "released",
                event,
                held_s=round(time.monotonic() - self._held_since, 3),
                frames_held=self.source.held_frames - self._held_frames_at,
            )

    async def _announce(self, state: SessionState, event: dict[str, Any], **extra: Any) -> None:
        await self.session.announce(
            state,
            enforcer="whip",
            action_seq=event.get("seq"),
            category=event.get("category"),
            **extra,
        )
