"""JSON Schema of the events, generated from their types in ``livemod.events.types``.

``python -m livemod.events.schema > docs/events.schema.json`` writes the published
copy; the suite checks that the copy is current and that every event it sees validates.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import types
import typing
from typing import Any, Literal

from livemod.events.types import EVENT_TYPES, OMIT_NONE

SCHEMA_ID = "https://livemod.dev/schemas/events.schema.json"

COMMITTED: dict[str, dict[str, Any]] = {
    "seq": {"type": "integer", "minimum": 1, "description": "Position in the event log"},
    "ts": {"type": "number", "description": "Commit time, Unix seconds"},
    "latency_ms": {
        "type": "number",
        "minimum": 0,
        "description": "Commit time minus arrival of the media that triggered it",
    },
    "evidence_id": {"type": "string", "description": "Evidence kept with this event"},
    "evidence": {
        "enum": ["unavailable"],
        "description": "The evidence picture could not be kept (a full evidence folder)",
    },
    "stored": {
        "const": False,
        "description": "Published while storage is failing: spooled, committed on recovery",
    },
}
"""Fields the store stamps on every committed event (``seq``, ``ts``) or some of them."""


def _type_schema(hint: Any, defs: dict[str, Any]) -> dict[str, Any]:
    origin = typing.get_origin(hint)
    if hint is type(None):
        return {"type": "null"}
    if hint is str:
        return {"type": "string"}
    if hint is bool:
        return {"type": "boolean"}
    if hint is int:
        return {"type": "integer"}
    if hint is float:
        return {"type": "number"}
    if hint is Any:
        return {}
    if origin is Literal:
        return {"enum": list(typing.get_args(hint))}
    if origin in (typing.Union, types.UnionType):
        options = [_type_schema(arg, defs) for arg in typing.get_args(hint)]
        return {"anyOf": options}
    if origin is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return {"type": "array", "items": _type_schema(args[0], defs)}
        return {
            "type": "array",
            "prefixItems": [_type_schema(a, defs) for a in args],
            "minItems": len(args),
            "maxItems": len(args),
        }
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        name = hint.__name__
        if name not in defs:
            defs[name] = {}  # a placeholder first: the type may refer to itself
            defs[name] = _object_schema(hint, defs)
        return {"$ref": f"#/$defs/{name}"}
    raise TypeError(f"no JSON Schema for {hint!r}")


def _object_schema(cls: type[Any], defs: dict[str, Any]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for f in dataclasses.fields(cls):
        prop = _type_schema(hints[f.name], defs)
        if f.metadata.get(OMIT_NONE):
            # Absent while unset, so never null on the wire.
            options = prop.get("anyOf")
            if options is not None:
                kept = [o for o in options if o != {"type": "null"}]
                prop = kept[0] if len(kept) == 1 else {"anyOf": kept}
        else:
            required.append(f.name)
        if f.metadata.get("description"):
            prop = {**prop, "description": f.metadata["description"]}
        properties[f.name] = prop
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }
    if cls.__doc__:
        schema["description"] = cls.__doc__.strip().splitlines()[0]
    return schema


def event_schema() -> dict[str, Any]:
    """The schema of a committed event: one of the event types, by ``type``."""
    defs: dict[str, Any] = {}
    variants = []
    for cls in EVENT_TYPES:
        body = _object_schema(cls, defs)
        properties = {"type": {"const": cls.type}, **COMMITTED, **body["properties"]}
        required = ["seq", "type", "ts", *body["required"]]
        defs[cls.__name__] = {
            "type": "object",
            "description": body.get("description", ""),
            "properties": properties,
            "required": required,
            "additionalProperties": False,
        }
        variants.append({"$ref": f"#/$defs/{cls.__name__}"})
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "livemod event",
        "description": "One JSON object per WebSocket message, webhook body and replayed event.",
        "oneOf": variants,
        "$defs": dict(sorted(defs.items())),
    }


def render() -> str:
    return json.dumps(event_schema(), indent=2) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
