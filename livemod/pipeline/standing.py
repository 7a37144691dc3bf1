"""Changing a standing action from outside the vote (LLM verdicts, fallbacks,
reviewers): the engine's decision is published like the session's own, and the
clip's recent frames are read from the live session.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from livemod import metrics
from livemod.events.types import ActionEvent
from livemod.messages import Decision, VideoFrame
from livemod.pipeline.session import MAX_ACTIONS_KEPT
from livemod.policy.vote import SPEECH, VIDEO

if TYPE_CHECKING:
    from livemod.pipeline.runtime import Runtime


def key_of(event: dict[str, Any]) -> str:
    """The policy key (``userId:roomId``) an event is about."""
    return f"{event.get('user_id')}:{event.get('room_id')}"


def channel_of(event: dict[str, Any]) -> str:
    """The vote an action came from: speech actions cover a span of words said."""
    return SPEECH if event.get("span_s") is not None or event.get("channel") == SPEECH else VIDEO


def standing_action(runtime: Runtime, key: str, category: str, channel: str = VIDEO) -> str | None:
    """The action standing now for one key, category and channel, if any."""
    for standing in runtime.engine.standing(key):
        if standing.category == category and standing.channel == channel:
            return standing.action
    return None


def recent_frames(runtime: Runtime, stream_id: str, n: int) -> list[VideoFrame]:
    """The last ``n`` sampled frames of a live session (empty once it is gone)."""
    session = runtime.sessions.get(stream_id)
    return session.ring.latest(n) if session is not None else []


async def publish_decisions(
    runtime: Runtime,
    decisions: Sequence[Decision],
    source_event: dict[str, Any],
    *,
    origin: str,
    extra: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Commit and fan out action events for ``decisions`` about ``source_event``'s
    stream; they point at its evidence and say what changed them (``origin``)."""
    out: list[dict[str, Any]] = []
    stream_id = str(source_event.get("stream_id"))
    for decision in decisions:
        body = replace(
            ActionEvent.of(
                decision,
                stream_id=stream_id,
                user_id=str(source_event.get("user_id")),
                room_id=str(source_event.get("room_id")),
            ),
            evidence_id=source_event.get("evidence_id") or None,
            origin=origin,
            **(extra or {}),
        )
        event = await runtime.hub.publish(body, t_trigger=decision.t_trigger)
        metrics.ACTIONS.labels(decision.action, decision.category, decision.state).inc()
        session = runtime.sessions.get(stream_id)
        if session is not None and len(session.actions) < MAX_ACTIONS_KEPT:
            session.actions.append(event)
        out.append(event)
    return out


def trigger_time(event: dict[str, Any]) -> float:
    """Arrival time of the sample behind a committed action (``ts - latency``)."""
    return float(event.get("ts", 0.0)) - float(event.get("latency_ms", 0.0)) / 1000.0
