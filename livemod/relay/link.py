"""How a session drives its relay: the thin asyncio shell around :class:`Relay`.

The session hands each analyzed sample and its decisions over at once (before any
``await``, so no frame can leave between a sample and the decision it caused). Other
changes to the stream's actions (an LLM upgrade, a reviewer's or moderator's lift or
pause) reach the relay through the event hub, filtered to the stream's
``userId:roomId``. The relay's own events go out through the hub as ``relay`` events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any, cast, get_args

from livemod.config import Config
from livemod.errors import ConfigError
from livemod.events.hub import EventFilter, EventHub, Subscription
from livemod.events.types import RelayEvent, RelayState
from livemod.logs import redact_credentials
from livemod.messages import ActionName, Decision, FrameAnalysis, Region
from livemod.policy.taxonomy import Policy
from livemod.relay.output import EncoderSettings
from livemod.relay.plan import min_delay_s, speech_lookahead_s, vote_lookahead_s
from livemod.relay.relay import Relay, RelaySettings

log = logging.getLogger(__name__)

RELAY_STATES = frozenset(get_args(RelayState))
ACTION_NAMES = frozenset(get_args(ActionName))


def wanted(config: Config, requested: bool | None) -> bool:
    """Whether a session relays: as requested, else ``relay.enabled``."""
    return config.relay.enabled if requested is None else requested


def windows(policy: Policy) -> list[tuple[int, int]]:
    return [(c.k, c.n) for c in policy.categories.values()]


def check_delay(config: Config, policy: Policy) -> None:
    """Refuse a ``relay.delay_s`` shorter than the vote can need (start-up)."""
    need = min_delay_s(windows(policy), config.sampling.fps, config.relay.headroom_s)
    if config.relay.delay_s < need:
        raise ConfigError(
            f"relay.delay_s={config.relay.delay_s:g} is shorter than the vote can need: "
            f"{need:.2f} s (the slowest category's k samples at sampling.fps="
            f"{config.sampling.fps:g}, plus relay.headroom_s={config.relay.headroom_s:g})"
        )


def render(template: str, *, stream_id: str, user_id: str, room_id: str) -> str:
    return template.format(stream_id=stream_id, user_id=user_id, room_id=room_id)


def regions_of(analysis: FrameAnalysis) -> dict[str, tuple[Region, ...]]:
    """The boxes each category's signals drew on one sample."""
    out: dict[str, list[Region]] = {}
    for signal in analysis.signals:
        if signal.regions:
            out.setdefault(signal.category, []).extend(signal.regions)
    return {cat: tuple(rs) for cat, rs in out.items()}


def decision_of(event: dict[str, Any], key: str) -> Decision | None:
    """An action event as the relay needs it (None: not an action that starts or stops)."""
    if event.get("type") != "action" or event.get("state") not in ("start", "stop"):
        return None
    action = event.get("action")
    if action not in ACTION_NAMES:
        return None
    name = cast(ActionName, action)
    span = event.get("span_s")
    regions = tuple(
        Region(int(r["x"]), int(r["y"]), int(r["w"]), int(r["h"]), str(r["label"]), 1.0)
        for r in event.get("regions") or ()
    )
    return Decision(
        key=key,
        category=str(event.get("category")),
        action=name,
        state=event["state"],
        confidence=float(event.get("confidence") or 0.0),
        tier="high",
        sources=tuple(event.get("sources") or ()),
        media_time_s=float(event.get("media_time_s") or 0.0),
        t_trigger=time.time(),
        regions=regions,
        span_s=(float(span[0]), float(span[1])) if span else None,
    )


class RelayLink:
    """One session's relay and its wiring to the loop and the hub."""

    def __init__(
        self,
        config: Config,
        policy: Policy,
        hub: EventHub,
        *,
        stream_id: str,
        user_id: str,
        room_id: str,
        speech: bool = False,
    ) -> None:
        """``speech``: the session moderates its speech; frames then also wait until
        speech moderation has judged past them."""
        c = config.relay
        self._hub = hub
        self._ids = {"stream_id": stream_id, "user_id": user_id, "room_id": room_id}
        self._key = f"{user_id}:{room_id}"
        target = render(c.output, stream_id=stream_id, user_id=user_id, room_id=room_id)
        self.target = target
        self.relay = Relay(
            stream_id,
            RelaySettings(
                target=target,
                delay_s=c.delay_s,
                max_delay_s=c.max_delay_s,
                lookahead_s=vote_lookahead_s(windows(policy), config.sampling.fps),
                speech_lookahead_s=speech_lookahead_s(windows(policy)) if speech else None,
                encoder=EncoderSettings(gop_s=c.gop_s, preset=c.preset, crf=c.crf),
                slate_text=c.slate.text,
                slate_image=c.slate.image,
                margin=c.margin,
            ),
            self._on_event,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sub: Subscription | None = None
        self._listener: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Future[Any]] = set()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.relay.start()
        self._sub = self._hub.subscribe(
            EventFilter(room_id=self._ids["room_id"], user_id=self._ids["user_id"]),
            internal=True,  # not a WebSocket subscriber (livemod_websocket_subscribers)
        )
        self._listener = asyncio.create_task(self._listen(self._sub))

    def analyzed(self, analysis: FrameAnalysis, decisions: Sequence[Decision]) -> None:
        """One analyzed sample and what the vote decided on it: decisions first."""
        for decision in decisions:
            self.relay.decide(decision)
        self.relay.observe(analysis.frame.media_time_s, regions_of(analysis))

    def decided(self, decision: Decision) -> None:
        self.relay.decide(decision)

    def speech_judged(self, media_time_s: float) -> None:
        """Speech moderation reached this speech sample: every earlier one is decided."""
        self.relay.speech(media_time_s)

    def speech_off(self) -> None:
        """The session's audio is not moderated after all: stop waiting for speech."""
        self.relay.speech_off()

    async def close(self) -> None:
        if self._sub is not None:
            self._hub.unsubscribe(self._sub)
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        await asyncio.to_thread(self.relay.close)
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    async def _listen(self, sub: Subscription) -> None:
        while True:
            event = await sub.queue.get()
            decision = decision_of(event, self._key)
            if decision is not None:
                self.relay.decide(decision)

    def _on_event(self, state: str, fields: dict[str, Any]) -> None:
        """From the relay thread."""
        loop = self._loop
        if loop is None or loop.is_closed() or state not in RELAY_STATES:
            return
        ids = self._ids
        event = RelayEvent(
            state=cast(RelayState, state),
            stream_id=ids["stream_id"],
            user_id=ids["user_id"],
            room_id=ids["room_id"],
            output=redact_credentials(self.target),
            delay_s=self.relay.settings.delay_s,
            media_time_s=fields.get("media_time_s"),
            held_s=fields.get("held_s"),
            error=fields.get("error"),
            reason=fields.get("reason"),
            frames=fields.get("frames"),
        )
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self._publish, event)

    def _publish(self, event: RelayEvent) -> None:
        task = asyncio.ensure_future(self._hub.publish(event))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
