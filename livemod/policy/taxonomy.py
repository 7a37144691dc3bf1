"""The policy taxonomy: categories x confidence tiers → live actions.

Loaded from ``configs/policy.yaml`` and validated at start-up; errors name the
category and field.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import yaml

from livemod.errors import ConfigError
from livemod.messages import ActionName, Tier
from livemod.policy.fusion import Fusion

ACTIONS: tuple[str, ...] = ("none", "warn", "review", "blur", "mute", "pause", "end")
"""Every action the policy may choose, least to most severe."""

REQUIRED_CATEGORIES = ("sexual", "violence", "hate", "self_harm", "drugs", "weapons", "known_bad")

ActionOrNone = ActionName | Literal["none"]


def action_rank(action: str) -> int:
    return ACTIONS.index(action)


@dataclass(frozen=True, slots=True)
class CategoryPolicy:
    """How one category votes and acts."""

    name: str
    floor: float
    """A sample counts as a hit when its score is at least this."""
    k: int
    n: int
    """Act when k of the last n samples are hits."""
    clear_after: int
    """Stop the action after this many consecutive clean samples (hysteresis)."""
    actions: dict[Tier, ActionOrNone]
    regional: bool = False
    """Actions carry regions (boxes) so a client may blur just those."""
    speech_actions: dict[Tier, ActionOrNone] | None = None
    """Tier -> action for speech (ASR) samples; ``None`` means none of them act."""
    fusion: Fusion | None = None
    """How independent analyzers combine; ``None``: the strongest signal counts."""


@dataclass(frozen=True, slots=True)
class Policy:
    high: float
    medium: float
    categories: dict[str, CategoryPolicy]

    def tier(self, confidence: float) -> Tier:
        if confidence >= self.high:
            return "high"
        if confidence >= self.medium:
            return "medium"
        return "low"


def severity(risk_score: float) -> str:
    """Map a 0..1 risk score to the severity names operators see."""
    if risk_score >= 0.9:
        return "critical"
    if risk_score >= 0.7:
        return "high"
    if risk_score >= 0.5:
        return "medium"
    if risk_score >= 0.3:
        return "low"
    return "none"


def _num(where: str, raw: Any, lo: float, hi: float) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise ConfigError(f"{where}: expected a number, got {raw!r}")
    if not lo <= float(raw) <= hi:
        raise ConfigError(f"{where}: {raw} is outside {lo}..{hi}")
    return float(raw)


def _int(where: str, raw: Any, lo: int) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise ConfigError(f"{where}: expected an integer, got {raw!r}")
    if raw < lo:
        raise ConfigError(f"{where}: must be >= {lo}, got {raw}")
    return raw


_CATEGORY_KEYS = {
    "floor", "k", "n", "clear_after", "actions", "regional", "speech_actions", "fusion",
}  # fmt: skip
_FUSION_KEYS = {"sources", "agree", "alone", "drawn"}
_DRAWN_KEYS = {"score", "above", "photo_only"}
_TIERS: tuple[Tier, ...] = ("low", "medium", "high")


def _actions(where: str, acts: Any) -> dict[Tier, ActionOrNone]:
    if not isinstance(acts, dict):
        raise ConfigError(f"{where}: expected a mapping of tier -> action")
    actions: dict[Tier, ActionOrNone] = {}
    for tier in _TIERS:
        act = acts.get(tier, "none")
        if act not in ACTIONS:
            raise ConfigError(f"{where}.{tier}: {act!r} is not one of {', '.join(ACTIONS)}")
        actions[tier] = cast(ActionOrNone, act)
    extra = {str(t) for t in acts} - set(_TIERS)
    if extra:
        raise ConfigError(f"{where}: unknown tier(s) {', '.join(sorted(extra))}")
    return actions


def _fusion(where: str, raw: Any) -> Fusion | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping with sources, agree, alone")
    unknown = set(raw) - _FUSION_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(map(str, unknown)))}")
    sources = raw.get("sources")
    if not isinstance(sources, list) or not all(isinstance(x, str) and x for x in sources):
        raise ConfigError(f"{where}.sources: expected a list of analyzer names")
    agree = _int(f"{where}.agree", raw.get("agree", 2), 1)
    alone = _num(f"{where}.alone", raw.get("alone", 0.9), 0.0, 1.0)
    drawn = raw.get("drawn") or {}
    if not isinstance(drawn, dict) or set(drawn) - _DRAWN_KEYS:
        raise ConfigError(f"{where}.drawn: expected a mapping with score, above, photo_only")
    score = drawn.get("score")
    if score is not None and (not isinstance(score, str) or not score):
        raise ConfigError(f"{where}.drawn.score: expected a raw score name")
    photo_only = drawn.get("photo_only", [])
    if not isinstance(photo_only, list) or not all(isinstance(x, str) for x in photo_only):
        raise ConfigError(f"{where}.drawn.photo_only: expected a list of analyzer names")
    above = _num(f"{where}.drawn.above", drawn.get("above", 0.2), 0.0, 1.0)
    try:
        return Fusion(tuple(sources), agree, alone, score, above, tuple(photo_only))
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def _category(name: str, raw: Any, defaults: dict[str, Any]) -> CategoryPolicy:
    where = f"policy categories.{name}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping")
    unknown = set(raw) - _CATEGORY_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    merged = {**defaults, **raw}
    floor = _num(f"{where}.floor", merged.get("floor", 0.5), 0.0, 1.0)
    k = _int(f"{where}.k", merged.get("k", 3), 1)
    n = _int(f"{where}.n", merged.get("n", 5), 1)
    if k > n:
        raise ConfigError(f"{where}: k ({k}) must not exceed n ({n})")
    clear_after = _int(f"{where}.clear_after", merged.get("clear_after", 4), 1)
    actions = _actions(f"{where}.actions", merged.get("actions"))
    speech = merged.get("speech_actions")
    speech_actions = _actions(f"{where}.speech_actions", speech) if speech is not None else None
    return CategoryPolicy(
        name=name,
        floor=floor,
        k=k,
        n=n,
        clear_after=clear_after,
        actions=actions,
        regional=bool(merged.get("regional", False)),
        speech_actions=speech_actions,
        fusion=_fusion(f"{where}.fusion", merged.get("fusion")),
    )


def parse_policy(data: Any) -> Policy:
    if not isinstance(data, dict):
        raise ConfigError("policy: expected a mapping with 'tiers' and 'categories'")
    unknown = set(data) - {"tiers", "defaults", "categories"}
    if unknown:
        raise ConfigError(f"policy: unknown field(s) {', '.join(sorted(unknown))}")
    tiers = data.get("tiers") or {}
    high = _num("policy tiers.high", tiers.get("high", 0.95), 0.0, 1.0)
    medium = _num("policy tiers.medium", tiers.get("medium", 0.70), 0.0, 1.0)
    if medium > high:
        raise ConfigError("policy tiers: medium must not exceed high")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict) or set(defaults) - _CATEGORY_KEYS:
        raise ConfigError("policy defaults: expected a mapping of category fields")
    cats = data.get("categories")
    if not isinstance(cats, dict) or not cats:
        raise ConfigError("policy categories: expected a non-empty mapping")
    categories = {str(name): _category(str(name), raw, defaults) for name, raw in cats.items()}
    missing = [c for c in REQUIRED_CATEGORIES if c not in categories]
    if missing:
        raise ConfigError(f"policy categories: missing {', '.join(missing)}")
    return Policy(high=high, medium=medium, categories=categories)


def load_policy(path: Path) -> Policy:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"policy: cannot read {path}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"policy: {path} is not valid YAML: {exc}") from exc
    return parse_policy(data)
