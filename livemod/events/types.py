"""Every event the daemon publishes, as frozen dataclasses, and their one serializer.

Producers build one of these types and hand it to ``EventHub.publish``; the hub
serializes it with :func:`to_body`, the store commits it and stamps the fields every
committed event carries (``seq``, ``ts``, and where they apply ``latency_ms`` and
``evidence_id``), and subscribers receive that JSON object. ``docs/events.schema.json``
is generated from these types (``python -m livemod.events.schema``).

A field declared with :func:`optional` is left out of the JSON while it is ``None``;
every other field is always present, ``null`` included.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from livemod.logs import redact_credentials
from livemod.messages import ActionName, Decision, Region, Tier

OMIT_NONE = "omit_none"


def optional(description: str = "") -> Any:
    """A field that is absent from the JSON (rather than ``null``) while unset."""
    return field(default=None, metadata={OMIT_NONE: True, "description": description})


def described(description: str, **kwargs: Any) -> Any:
    """A field that is always present, with its description for the schema."""
    return field(metadata={"description": description}, **kwargs)


@dataclass(frozen=True, slots=True, kw_only=True)
class BoxJson:
    """A region to blur, in source pixels."""

    x: int
    y: int
    w: int
    h: int
    label: str
    score: float

    @staticmethod
    def of(region: Region) -> BoxJson:
        return BoxJson(
            x=region.x,
            y=region.y,
            w=region.w,
            h=region.h,
            label=region.label,
            score=round(region.score, 4),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class StandingAction:
    """An action left standing by a session that ended without stopping it."""

    action: str
    category: str


@dataclass(frozen=True, slots=True, kw_only=True)
class VerdictJson:
    """What the LLM answered about a clip."""

    unsafe: bool
    confidence: float
    label: str
    rationale: str
    action: str
    possible_minor: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionEvent:
    """A moderation action starts or stops for a stream."""

    type: ClassVar[str] = "action"
    action: ActionName
    state: Literal["start", "stop"]
    stream_id: str
    user_id: str
    room_id: str
    category: str
    confidence: float
    tier: Tier
    sources: tuple[str, ...] = described("Analyzers whose signals voted, e.g. vision:nudenet")
    media_time_s: float = described("Media time of the sample that decided, in seconds")
    source_time_s: float | None = optional(
        "The source's own timestamp of that sample; differs from media_time_s (the"
        " session's monotonic timeline) after the source's timestamps restart, jump or wrap"
    )
    regions: tuple[BoxJson, ...] | None = optional("Boxes for a regional blur")
    span_s: tuple[float, float] | None = optional("Media times of the words a speech action covers")
    evidence_id: str | None = optional("The evidence kept for the action (a stop: its start's)")
    origin: str | None = optional(
        "What changed a standing action: escalation, review, expired, moderator (by hand)"
    )
    escalation_seq: int | None = optional("The escalation event behind this change")
    review_id: str | None = optional("The review behind this change")
    moderator_id: str | None = optional("origin moderator: who acted by hand")
    note: str | None = optional("origin moderator: why, in the moderator's words")

    @staticmethod
    def of(decision: Decision, *, stream_id: str, user_id: str, room_id: str) -> ActionEvent:
        """The action event for a vote decision about one stream."""
        span = decision.span_s
        return ActionEvent(
            action=decision.action,
            state=decision.state,
            stream_id=stream_id,
            user_id=user_id,
            room_id=room_id,
            category=decision.category,
            confidence=decision.confidence,
            tier=decision.tier,
            sources=tuple(decision.sources),
            media_time_s=round(decision.media_time_s, 3),
            source_time_s=(
                round(decision.source_time_s, 3) if decision.source_time_s is not None else None
            ),
            regions=tuple(BoxJson.of(r) for r in decision.regions) or None,
            span_s=(round(span[0], 3), round(span[1], 3)) if span is not None else None,
        )


SessionState = Literal[
    "started",
    "reconnecting",
    "audio_unmoderated",
    "held",
    "released",
    "enforced",
    "ended",
    "error",
    "interrupted",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionEvent:
    """A session's life: started, reconnecting, ended, error, or enforced by WHIP."""

    type: ClassVar[str] = "session"
    state: SessionState
    stream_id: str
    user_id: str
    room_id: str
    url: str | None = optional("started: the moderated URL")
    source: str | None = optional("started, interrupted: how media arrives (pull, whip, ...)")
    reason: str | None = optional(
        "ended, interrupted, audio_unmoderated: why; error: the cause where known"
        " (input_lost: a network feed broke or went silent mid-stream)"
    )
    error: str | None = optional("error, reconnecting: what went wrong")
    frames: int | None = optional("ended: frames decoded")
    samples: int | None = optional("ended: samples analyzed")
    attempt: int | None = optional("reconnecting: the attempt number")
    standing_actions: tuple[StandingAction, ...] | None = optional(
        "interrupted: actions the session left standing"
    )
    enforcer: str | None = optional("held, released, enforced: who enforced (whip)")
    action_seq: int | None = optional("held, released, enforced: the action event enforced")
    category: str | None = optional("held, released, enforced: the action's category")
    action: str | None = optional("enforced: the action enforced")
    held_s: float | None = optional("released: how long the publish was held")
    frames_held: int | None = optional("released: frames held back meanwhile")


EnforceOp = Literal["end", "pause", "resume", "refuse"]


@dataclass(frozen=True, slots=True, kw_only=True)
class EnforcementEvent:
    """A streaming server was asked to drop, move or refuse a publisher."""

    type: ClassVar[str] = "enforcement"
    action: EnforceOp
    ok: bool
    operation: str
    detail: str
    status: int | None
    server: str | None = optional("nginx-rtmp, mediamtx or srs")
    stream_id: str | None = optional()
    user_id: str | None = optional()
    room_id: str | None = optional()
    stream: str | None = optional("The publisher's stream name on the server")
    trigger_seq: int | None = optional("The action event enforced")
    category: str | None = optional()
    took_ms: float | None = optional()


@dataclass(frozen=True, slots=True, kw_only=True)
class EscalationEvent:
    """An action went to the LLM; its verdict (or the fallback) and what follows."""

    type: ClassVar[str] = "escalation"
    outcome: str
    stream_id: str
    user_id: str
    room_id: str
    category: str
    action: str
    action_seq: int | None
    evidence_id: str | None
    reason: str
    fallback: str | None
    error: str | None
    verdict: VerdictJson | None
    standing: str | None
    replayed: bool
    duration_ms: float


ReviewState = Literal["queued", "claimed", "decided", "escalated"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ReviewEvent:
    """The review queue's audit trail: queued, claimed, decided, escalated."""

    type: ClassVar[str] = "review"
    state: ReviewState
    review_id: str
    stream_id: str
    user_id: str
    room_id: str
    category: str
    severity: str
    reason: str
    level: int
    action_seq: int | None
    evidence_id: str | None
    # Always present (null until they apply), so every review event has one shape.
    reviewer_id: str | None = described("claimed, decided, escalated: who", default=None)
    decision: str | None = described("decided, escalated: uphold, overturn, escalate", default=None)
    note: str | None = described("decided, escalated: the reviewer's note", default=None)
    standing: str | None = described("decided: the action standing afterwards", default=None)
    lifted_seq: int | None = described("decided: the stop an overturn published", default=None)


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerEvent:
    """A circuit breaker changed state."""

    type: ClassVar[str] = "breaker"
    component: str
    state: Literal["closed", "open", "half_open"]
    previous: Literal["closed", "open", "half_open"]


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreEvent:
    """Storage failed or recovered; while it is failing, events are spooled in memory."""

    type: ClassVar[str] = "store"
    state: Literal["failed", "recovered", "spool_full", "evidence_failed", "evidence_recovered"]
    reason: str | None = optional("failed, evidence_failed: the error")
    spooled: int | None = optional("recovered: events committed from the spool")
    dropped_events: int | None = optional("recovered, spool_full: events the spool dropped")
    dropped_evidence: int | None = optional(
        "recovered, spool_full: evidence pictures the spool dropped"
    )


RelayState = Literal["started", "held", "resumed", "output_failed", "ended"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayEvent:
    """A stream's moderated relay: its output started, held (analysis lagged and the
    delay grew), resumed, failed (retried with backoff), or ended."""

    type: ClassVar[str] = "relay"
    state: RelayState
    stream_id: str
    user_id: str
    room_id: str
    output: str = described("The moderated output: an rtmp:// URL or an HLS directory")
    delay_s: float = described("The configured delay of the output, in seconds")
    media_time_s: float | None = optional("held, resumed: media time of the frame held")
    held_s: float | None = optional("resumed: how long the output was held")
    error: str | None = optional("output_failed: why the output could not be written")
    reason: str | None = optional("ended: why, when not at the stream's end")
    frames: int | None = optional("ended: frames written to the output")


Event = (
    ActionEvent
    | SessionEvent
    | EnforcementEvent
    | EscalationEvent
    | ReviewEvent
    | BreakerEvent
    | StoreEvent
    | RelayEvent
)
EVENT_TYPES: tuple[type[Any], ...] = (
    ActionEvent,
    SessionEvent,
    EnforcementEvent,
    EscalationEvent,
    ReviewEvent,
    BreakerEvent,
    StoreEvent,
    RelayEvent,
)


def _json(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _fields(value)
    if isinstance(value, tuple | list):
        return [_json(v) for v in value]
    if isinstance(value, str):
        # A pull URL, or an error quoting one, may carry credentials: never in an event.
        return redact_credentials(value)
    return value


def _fields(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if value is None and f.metadata.get(OMIT_NONE):
            continue
        out[f.name] = _json(value)
    return out


def to_body(event: Event) -> dict[str, Any]:
    """The JSON object of an event before it is committed (no ``seq`` or ``ts`` yet)."""
    return {"type": event.type, **_fields(event)}


def standing_actions(rows: Sequence[dict[str, Any]]) -> tuple[StandingAction, ...]:
    """Standing actions as the store lists them, typed."""
    return tuple(StandingAction(action=str(r["action"]), category=str(r["category"])) for r in rows)
