"""The HTTP API's types, and its OpenAPI 3.1 document generated from them.

Request bodies are parsed with these models (``livemod.web.parse``), responses are
shaped by them (``livemod.web.respond``), and ``document()`` publishes both: one
definition, not two. The document is served at ``/v1/openapi.json`` and kept in
``docs/openapi.json`` (``python -m livemod.app.openapi > docs/openapi.json``); the
suite fuzzes a real daemon from it with Schemathesis.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field, RootModel

from livemod import __version__
from livemod.cluster.models import ClusterOverview
from livemod.escalation.review_api import ClaimRequest, DecideRequest, Review, ReviewList
from livemod.web import Id, RequestModel, ResponseModel

Severity = Literal["none", "low", "medium", "high", "critical"]


class StreamRequest(RequestModel):
    """Start moderating a stream that the daemon pulls."""

    url: str = Field(
        min_length=1,
        max_length=4096,
        description="What to pull: rtmp://, rtsp://, http(s):// (HLS), srt:// where FFmpeg can,"
        " or a file under ingest.file_roots",
    )
    user_id: Id
    room_id: Id
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="Kept with the session, echoed back"
    )
    realtime: bool | None = Field(
        None,
        description="Pace a file at its frame rate (default: true for files); false reads "
        "it as fast as analysis allows, every due sample analyzed, none dropped",
    )
    relay: bool | None = Field(
        None,
        description="Relay a delayed, moderated copy to relay.output (default: relay.enabled)",
    )


class ManualActionRequest(RequestModel):
    """Start or lift a ``pause`` or ``end`` by hand (what the models missed)."""

    action: Literal["pause", "end"]
    state: Literal["start", "stop"] = "start"
    category: Id = Field(
        "manual", description="What the moderator saw (a policy category, or 'manual')"
    )
    moderator_id: Id = Field(description="Who acts: recorded in the event")
    note: str = Field("", max_length=2000, description="Why, kept in the event")


class ManualActionResult(ResponseModel):
    """The action events committed (a stronger action starts before the weaker stops)."""

    events: list[dict[str, Any]]


class KnownBadListSize(ResponseModel):
    name: str
    entries: int = Field(description="Hashes loaded (PDQ and old pHash entries)")


class KnownBadReloadResult(ResponseModel):
    """The known-bad lists now in use, after a reload."""

    lists: list[KnownBadListSize]
    entries: int


class TranscriptionOut(ResponseModel):
    """How much of a stream's speech was transcribed and judged."""

    partial: bool = Field(
        description="Speech moderation is partial: windows were skipped under the CPU budget"
    )
    skipped_windows: int
    skipped_s: float = Field(description="Seconds of voice never transcribed")
    decodes: int
    words: int
    hits: int


class StandingActionOut(ResponseModel):
    category: str
    action: str
    tier: str


class ActionSeen(ResponseModel):
    seq: int | None
    action: str | None
    state: str | None
    category: str | None
    media_time_s: float | None
    latency_ms: float | None


class RelayOut(ResponseModel):
    """The moderated relay of a stream (docs/relay.md)."""

    output: str = Field(description="rtmp:// URL or HLS directory of the moderated output")
    state: str = Field(description="starting, live, output_down, ended or failed")
    delay_s: float
    max_delay_s: float
    current_delay_s: float = Field(description="Arrival to output of the last frame written")
    buffered_frames: int
    frames_in: int
    frames_out: int
    frames_treated: int
    treated_by_action: dict[str, int]
    frames_dropped: int = Field(description="Released while the output was down")
    holds: int = Field(description="Times the output waited for a lagging analysis")
    held_s: float
    late_frames: int = Field(description="Frames that left at max_delay_s unanalyzed")
    late_decisions: int = Field(description="Decisions that came after their frames left")
    output_failures: int
    output_error: str | None
    encode_ms_per_frame: float | None


class StreamSummary(ResponseModel):
    """A session the daemon is running (or ran in the last minutes)."""

    id: str
    user_id: str
    room_id: str
    url: str
    source: str
    metadata: dict[str, Any]
    status: str
    error: str | None
    started_at: float
    first_frame_ms: float | None
    samples: int
    drops: int
    lag_s: float
    risk_score: float = Field(ge=0, le=1)
    severity: Severity
    flagged_media_times: list[float]
    audio: str
    fps: float | None = Field(None, description="Current base sampling rate (adaptive rates)")
    gating: dict[str, int] | None = Field(
        None, description="Fresh and reused samples, detector runs and skips (change gating)"
    )
    transcription: TranscriptionOut | None = Field(
        None, description="Speech moderation's coverage (null: asr off or not started)"
    )
    relay: RelayOut | None = Field(None, description="The moderated relay (null: not relayed)")
    standing_actions: list[StandingActionOut]
    actions: list[ActionSeen]


class StoredStream(ResponseModel):
    """A finished session, as the store keeps it."""

    id: str
    user_id: str
    room_id: str
    url: str
    source: str
    status: str
    error: str | None
    metadata: dict[str, Any]
    started_at: float
    ended_at: float | None


class StreamStatus(RootModel[StreamSummary | StoredStream]):
    """A running session's summary, or a finished one as the store keeps it."""


class StreamList(ResponseModel):
    streams: list[StreamSummary]


class EvidenceRecord(ResponseModel):
    """What was kept for an action: scores, text, and a link to the picture or sound."""

    id: str
    stream_id: str
    category: str
    scores: dict[str, float]
    media_time_s: float
    created_at: float
    text: str | None
    image: str | None = None
    audio: str | None = None


class HealthReport(ResponseModel):
    status: Literal["ok", "degraded"]
    version: str
    degraded: list[str] | None = None
    sessions: int
    analyzers: list[str]
    inference_providers: dict[str, str]
    inference_precision: dict[str, str]
    websocket_port: int
    last_seq: int | None
    uptime_s: float


class Error(BaseModel):
    """Every 4xx and 5xx answer: what was wrong, for a person to read."""

    error: str


# -- the document ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Operation:
    method: str
    path: str
    summary: str
    body: type[BaseModel] | None = None
    ok: tuple[int, type[BaseModel] | str] = (200, Error)
    errors: tuple[int, ...] = ()
    query: dict[str, dict[str, Any]] = field(default_factory=dict)
    tag: str = "streams"


_ID_PATH = {"type": "string", "minLength": 1, "maxLength": 128}

OPERATIONS: tuple[Operation, ...] = (
    Operation("post", "/v1/streams", "Start moderating a pulled stream", StreamRequest,
              (201, StreamSummary), (400, 415, 422, 503)),
    Operation("get", "/v1/streams", "Sessions starting or live", None, (200, StreamList)),
    Operation("get", "/v1/streams/{id}", "A session's status and running summary", None,
              (200, StreamStatus), (404,)),
    Operation("delete", "/v1/streams/{id}", "Stop moderating a session", None,
              (200, StreamSummary), (404,)),
    Operation("post", "/v1/streams/{id}/actions", "Start or lift a pause or end by hand",
              ManualActionRequest, (200, ManualActionResult), (400, 404, 409, 415, 422)),
    Operation("get", "/v1/evidence/{id}", "What was kept for an action", None,
              (200, EvidenceRecord), (404,), tag="evidence"),
    Operation("get", "/v1/evidence/{id}/image", "The evidence picture (JPEG)", None,
              (200, "image/jpeg"), (404,), tag="evidence"),
    Operation("get", "/v1/evidence/{id}/audio", "The evidence sound (WAV)", None,
              (200, "audio/wav"), (404,), tag="evidence"),
    Operation("get", "/v1/reviews", "The review queue", None, (200, ReviewList), (422,),
              query={
                  "status": {"type": "string",
                             "enum": ["pending", "claimed", "decided", "open", "all"]},
                  "level": {"type": "integer", "minimum": 0, "maximum": 100},
                  "limit": {"type": "integer", "minimum": 1, "maximum": 1000},
              }, tag="reviews"),
    Operation("get", "/v1/reviews/{id}", "One review item", None, (200, Review), (404,),
              tag="reviews"),
    Operation("post", "/v1/reviews/{id}/claim", "Claim a review item", ClaimRequest,
              (200, Review), (400, 404, 409, 415, 422), tag="reviews"),
    Operation("post", "/v1/reviews/{id}/decide", "Decide a claimed review item", DecideRequest,
              (200, Review), (400, 404, 409, 415, 422), tag="reviews"),
    Operation("post", "/v1/known-bad/reload",
              "Reload the known-bad lists (a bad file keeps the old lists and says why)",
              None, (200, KnownBadReloadResult), (422,), tag="operations"),
    Operation("get", "/v1/cluster", "Instances sharing this one's Redis, their load and sessions",
              None, (200, ClusterOverview), tag="operations"),
    Operation("get", "/healthz", "Liveness, and why the daemon is degraded", None,
              (200, HealthReport), tag="operations"),
    Operation("get", "/metrics", "Prometheus metrics", None,
              (200, "text/plain"), tag="operations"),
    Operation("get", "/v1/openapi.json", "This document", None,
              (200, "application/json"), tag="operations"),
)  # fmt: skip


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the HTTP API (WHIP and the streaming-server hooks
    speak their own protocols: docs/whip.md, docs/streaming-servers.md)."""
    schemas: dict[str, Any] = {}

    def ref(model: type[BaseModel]) -> dict[str, str]:
        doc = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in doc.pop("$defs", {}).items():
            schemas[name] = sub
        schemas[model.__name__] = doc
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    def content(kind: type[BaseModel] | str) -> dict[str, Any]:
        if isinstance(kind, str):
            schema: dict[str, Any] = (
                {"type": "string"}
                if kind.startswith("text/")
                else {"type": "object"}
                if kind == "application/json"
                else {"type": "string", "format": "binary"}
            )
            return {kind: {"schema": schema}}
        return {"application/json": {"schema": ref(kind)}}

    error = {"description": "What was wrong", "content": content(Error)}
    paths: dict[str, Any] = {}
    for op in OPERATIONS:
        status, kind = op.ok
        spec: dict[str, Any] = {
            "summary": op.summary,
            "tags": [op.tag],
            "operationId": f"{op.method}_{op.path.strip('/').replace('/', '_')}".replace(
                "{id}", "by_id"
            ).replace(".", "_"),
            "responses": {
                str(status): {"description": "Success", "content": content(kind)},
                **{str(code): error for code in op.errors},
                "401": {"description": "Missing or wrong bearer token", "content": content(Error)},
            },
        }
        params = []
        if "{id}" in op.path:
            params.append({"name": "id", "in": "path", "required": True, "schema": _ID_PATH})
        for name, schema in op.query.items():
            params.append({"name": name, "in": "query", "required": False, "schema": schema})
        if params:
            spec["parameters"] = params
        if op.body is not None:
            spec["requestBody"] = {"required": True, "content": content(op.body)}
        paths.setdefault(op.path, {})[op.method] = spec
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "livemod",
            "version": __version__,
            "description": "Real-time moderation daemon for live video: streams, evidence,"
            " human review. Events are a WebSocket stream: docs/events.schema.json.",
        },
        "servers": [{"url": "http://127.0.0.1:8080"}],
        "paths": paths,
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{}, {"bearer": []}],
    }


def render() -> str:
    return json.dumps(document(), indent=2) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
