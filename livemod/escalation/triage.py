"""Pure escalation policy: which actions go to the LLM, and what each answer (or
its absence) does to the standing action.

Nothing here performs I/O; the escalator applies the returned ``Plan``.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from livemod.config import FallbackMode, LlmConfig
from livemod.escalation.verdict import Verdict
from livemod.policy.taxonomy import Policy, action_rank


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do after an escalation.

    ``outcome`` is ``confirmed``, ``upgraded``, ``cleared`` or ``inconclusive`` for a
    verdict, or the fallback mode's name (``fail_open``, ``fail_closed``,
    ``degraded``) when there was none.
    """

    outcome: str
    start: str | None = None
    """Start this stronger action (the standing one stops after it)."""
    lift: bool = False
    """Stop the standing action."""
    review: bool = False
    """Put the clip in the human review queue."""


def escalation_reason(
    event: dict[str, Any], config: LlmConfig, loaded_sources: Collection[str]
) -> str | None:
    """Why this committed event should go to the LLM, or ``None``.

    Only action starts are escalated: medium-tier (``escalate_tiers``) decisions,
    ``always_escalate`` categories, and disagreement: a ``cross_check`` category
    for which some loaded analyzers fired and others did not.
    """
    if event.get("type") != "action" or event.get("state") != "start":
        return None
    if "origin" in event:
        return None  # set by the LLM, a fallback or a reviewer: never escalated again
    category = str(event.get("category", ""))
    if category in config.always_escalate:
        return "always"
    if event.get("tier") in config.escalate_tiers:
        return f"tier_{event.get('tier')}"
    peers = [s for s in config.cross_check.get(category, ()) if s in loaded_sources]
    fired = set(event.get("sources") or ())
    if len(peers) >= 2 and any(p in fired for p in peers) and not all(p in fired for p in peers):
        return "disagreement"
    return None


def fallback_mode(category: str, config: LlmConfig) -> FallbackMode:
    return config.fallback.get(category, config.fallback_default)


def _capped(action: str, config: LlmConfig) -> str:
    return action if action_rank(action) <= action_rank(config.max_action) else config.max_action


def plan_for_verdict(verdict: Verdict, standing: str | None, config: LlmConfig) -> Plan:
    """``standing`` is the category's standing action now (``None``: already lifted)."""
    if verdict.confidence < config.min_confidence:
        return Plan("inconclusive", review=True)
    if not verdict.unsafe:
        return Plan("cleared", lift=standing is not None)
    target = _capped(verdict.action, config)
    wants_review = target == "review" or standing == "review"
    if standing is not None and action_rank(target) > action_rank(standing):
        return Plan("upgraded", start=target, review=wants_review)
    return Plan("confirmed", review=wants_review)


def plan_fallback(
    mode: FallbackMode,
    *,
    category: str,
    confidence: float,
    standing: str | None,
    policy: Policy,
    config: LlmConfig,
) -> Plan:
    """What a category does when the LLM cannot answer (breaker open, call failed).

    ``fail_open`` allows: the action waiting on the LLM is lifted and the clip is
    recorded as unmoderated, unless the first pass was confident (high tier): a
    fail-open LLM must not undo what the edge models were sure of. ``fail_closed``
    pauses and sends the clip to review.
    ``degraded`` trusts the first pass with a stricter bar: a confidence of at least
    ``degraded_confidence`` takes the category's high-tier action.
    """
    if mode == "fail_open":
        return Plan("fail_open", lift=standing is not None and policy.tier(confidence) != "high")
    if mode == "fail_closed":
        pause = standing is not None and action_rank("pause") > action_rank(standing)
        return Plan("fail_closed", start="pause" if pause else None, review=True)
    cat = policy.categories.get(category)
    high = cat.actions["high"] if cat is not None else "none"
    if (
        standing is not None
        and confidence >= config.degraded_confidence
        and high != "none"
        and action_rank(high) > action_rank(standing)
    ):
        return Plan("degraded", start=high, review=high == "review")
    return Plan("degraded", review=standing == "review")


def for_ended_stream(plan: Plan, first_action: str) -> Plan:
    """The plan for a clip whose stream ended with a killed daemon (replayed after a
    restart; planned with nothing standing): no action is started, lifted or
    upgraded, but a first-pass ``review`` still reaches people unless the verdict
    cleared the clip or the category fails open, as it would have live."""
    asked = first_action == "review" and plan.outcome not in ("cleared", "fail_open")
    return Plan(plan.outcome, review=plan.review or asked)
