"""The LLM's verdict: the JSON schema asked for, and a strict parser.

A verdict that does not parse or does not fit the schema is an error, never a
"safe" answer: a model that rambles, refuses or truncates must not clear a clip.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from livemod.errors import LivemodError
from livemod.events.types import VerdictJson
from livemod.policy.taxonomy import ACTIONS

MAX_RATIONALE = 2000
_FIELDS = ("unsafe", "confidence", "label", "rationale", "action")
_OPTIONAL = ("possible_minor",)


class VerdictError(LivemodError):
    """The model's answer is not a valid verdict (not JSON, or off the schema)."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the model decided about one clip."""

    unsafe: bool
    confidence: float
    label: str
    """A policy category, or ``none`` when the clip is safe."""
    rationale: str
    action: str
    """One of the policy's actions (``none`` .. ``end``)."""
    possible_minor: bool = False
    """The model thinks a minor may be shown: such reviews go first."""

    def as_json(self) -> VerdictJson:
        """The verdict as escalation events carry it."""
        return VerdictJson(
            unsafe=self.unsafe,
            confidence=round(self.confidence, 4),
            label=self.label,
            rationale=self.rationale,
            action=self.action,
            possible_minor=self.possible_minor,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "unsafe": self.unsafe,
            "confidence": round(self.confidence, 4),
            "label": self.label,
            "rationale": self.rationale,
            "action": self.action,
            "possible_minor": self.possible_minor,
        }


def verdict_schema(categories: Sequence[str]) -> dict[str, Any]:
    """The JSON schema sent as the response format (and Ollama's ``format``)."""
    return {
        "type": "object",
        "properties": {
            "unsafe": {"type": "boolean"},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            "label": {"type": "string", "enum": [*categories, "none"]},
            "rationale": {"type": "string", "maxLength": MAX_RATIONALE},
            "action": {"type": "string", "enum": list(ACTIONS)},
            "possible_minor": {"type": "boolean"},
        },
        "required": list(_FIELDS),
        "additionalProperties": False,
    }


def _strip_fence(text: str) -> str:
    # Some servers wrap JSON in a Markdown fence even when asked for a schema;
    # that is presentation, not a different answer.
    stripped = text.strip()
    if stripped.startswith("```") and stripped.endswith("```") and len(stripped) >= 6:
        inner = stripped[3:-3]
        newline = inner.find("\n")
        if newline != -1 and inner[:newline].strip().isalpha():
            inner = inner[newline + 1 :]
        return inner.strip()
    return stripped


def parse_verdict(text: str, categories: Sequence[str]) -> Verdict:
    """Parse and validate the model's message content; raise ``VerdictError``."""
    try:
        data = json.loads(_strip_fence(text))
    except (json.JSONDecodeError, TypeError) as exc:
        raise VerdictError(f"verdict is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise VerdictError("verdict is not a JSON object")
    return validate_verdict(data, categories)


def validate_verdict(data: dict[str, Any], categories: Sequence[str]) -> Verdict:
    """Check every field's type and range, and that the answer is consistent."""
    missing = [f for f in _FIELDS if f not in data]
    if missing:
        raise VerdictError(f"verdict lacks {', '.join(missing)}")
    extra = set(data) - set(_FIELDS) - set(_OPTIONAL)
    if extra:
        raise VerdictError(f"verdict has unknown field(s) {', '.join(sorted(extra))}")
    unsafe = data["unsafe"]
    if not isinstance(unsafe, bool):
        raise VerdictError("verdict.unsafe must be true or false")
    confidence = data["confidence"]
    if isinstance(confidence, bool) or not isinstance(confidence, int | float):
        raise VerdictError("verdict.confidence must be a number")
    if not math.isfinite(confidence) or not 0.0 <= confidence <= 1.0:
        raise VerdictError(f"verdict.confidence {confidence} is outside 0..1")
    label = data["label"]
    if not isinstance(label, str) or (label not in categories and label != "none"):
        raise VerdictError(f"verdict.label {label!r} is not a policy category or 'none'")
    rationale = data["rationale"]
    if not isinstance(rationale, str):
        raise VerdictError("verdict.rationale must be a string")
    action = data["action"]
    if not isinstance(action, str) or action not in ACTIONS:
        raise VerdictError(f"verdict.action {action!r} is not one of {', '.join(ACTIONS)}")
    minor = data.get("possible_minor", False)
    if not isinstance(minor, bool):
        raise VerdictError("verdict.possible_minor must be true or false")
    if not unsafe and action != "none":
        raise VerdictError(f"verdict says safe but asks for action {action!r}")
    if unsafe and label == "none":
        raise VerdictError("verdict says unsafe but names no category")
    return Verdict(
        unsafe=unsafe,
        confidence=float(confidence),
        label=label,
        rationale=rationale[:MAX_RATIONALE],
        action=action,
        possible_minor=minor,
    )
