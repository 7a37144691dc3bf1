"""Typed events: one serializer, a published schema that is current and strict."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from livemod.events import schema
from livemod.events.types import (
    EVENT_TYPES,
    ActionEvent,
    BreakerEvent,
    SessionEvent,
    StandingAction,
    to_body,
)
from livemod.messages import Decision, Region
from tests.conftest import EVENT_VALIDATOR

ROOT = Path(__file__).resolve().parents[2]


def committed(body: dict[str, Any], seq: int = 1) -> dict[str, Any]:
    """What the store makes of a body: seq and ts stamped."""
    return {"seq": seq, **body, "ts": 1_700_000_000.0}


def decision(**over: Any) -> Decision:
    base: dict[str, Any] = dict(
        key="u:r",
        category="sexual",
        action="blur",
        state="start",
        confidence=0.91234,
        tier="high",
        sources=("vision:nudenet",),
        media_time_s=12.34567,
        t_trigger=0.0,
        regions=(Region(1, 2, 30, 40, "FACE", 0.876543),),
    )
    base.update(over)
    return Decision(**base)


def test_published_schema_is_generated_from_the_types() -> None:
    published = (ROOT / "docs" / "events.schema.json").read_text()
    assert published == schema.render(), "run: python -m livemod.events.schema"


def test_schema_is_valid_json_schema_with_one_variant_per_type() -> None:
    doc = schema.event_schema()
    jsonschema.Draft202012Validator.check_schema(doc)
    assert len(doc["oneOf"]) == len(EVENT_TYPES)


def test_action_event_serializes_as_the_public_shape() -> None:
    body = to_body(ActionEvent.of(decision(), stream_id="s1", user_id="u", room_id="r"))
    assert body == {
        "type": "action",
        "action": "blur",
        "state": "start",
        "stream_id": "s1",
        "user_id": "u",
        "room_id": "r",
        "category": "sexual",
        "confidence": 0.91234,
        "tier": "high",
        "sources": ["vision:nudenet"],
        "media_time_s": 12.346,
        "regions": [{"x": 1, "y": 2, "w": 30, "h": 40, "label": "FACE", "score": 0.8765}],
    }
    EVENT_VALIDATOR.validate(committed(body))


def test_optional_fields_are_absent_not_null() -> None:
    body = to_body(ActionEvent.of(decision(regions=()), stream_id="s1", user_id="u", room_id="r"))
    assert "regions" not in body and "span_s" not in body and "origin" not in body
    json.dumps(body)  # plain JSON all the way down


def test_session_event_with_nested_types_validates() -> None:
    event = SessionEvent(
        state="interrupted",
        stream_id="s",
        user_id="u",
        room_id="r",
        reason="daemon_restart",
        source="pull",
        standing_actions=(StandingAction(action="pause", category="violence"),),
    )
    body = to_body(event)
    assert body["standing_actions"] == [{"action": "pause", "category": "violence"}]
    EVENT_VALIDATOR.validate(committed(body))


def test_unknown_session_field_is_refused_when_built() -> None:
    with pytest.raises(TypeError):
        SessionEvent(state="started", stream_id="s", user_id="u", room_id="r", colour="red")  # type: ignore[call-arg]


def breaker() -> dict[str, Any]:
    return committed(to_body(BreakerEvent(component="llm", state="open", previous="closed")))


def action() -> dict[str, Any]:
    return committed(to_body(ActionEvent.of(decision(), stream_id="s", user_id="u", room_id="r")))


@pytest.mark.parametrize(
    ("make", "mutate"),
    [
        (breaker, lambda e: e.update(extra_field=1)),
        (breaker, lambda e: e.pop("seq")),
        (breaker, lambda e: e.update(state="sideways")),
        (action, lambda e: e.update(confidence="high")),
        (action, lambda e: e.update(type="actions")),
        (action, lambda e: e.update(regions=None)),
    ],
    ids=["unknown field", "no seq", "bad enum", "wrong type", "unknown type", "null optional"],
)
def test_schema_rejects_events_outside_the_types(make: Any, mutate: Any) -> None:
    event = make()
    EVENT_VALIDATOR.validate(event)
    mutate(event)
    assert not EVENT_VALIDATOR.is_valid(event)
