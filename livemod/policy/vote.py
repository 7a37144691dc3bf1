"""The rolling vote: per ``userId:roomId`` and category, k hits of the last n samples.

Pure: analyses in, decisions out; time comes from the analyses themselves. State is
keyed by ``userId:roomId`` rather than by session, so a publisher who drops and
rejoins the room keeps its history and any standing action.

Video frames and speech samples vote in separate channels of the same key: their
sample clocks differ, and a clean frame must not end a mute of what was said.
Speech acts through each category's ``speech_actions``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from livemod.messages import (
    ActionName,
    ActionState,
    Decision,
    FrameAnalysis,
    Region,
    Signal,
    Tier,
)
from livemod.policy.fusion import fuse
from livemod.policy.taxonomy import ACTIONS, ActionOrNone, CategoryPolicy, Policy, action_rank
from livemod.policy.votestate import (
    Active,
    CategoryState,
    KeyState,
    MemoryVoteStore,
    Sample,
    VoteStore,
)

VIDEO = "video"
SPEECH = "speech"
MODERATOR = "moderator"
"""The channel of actions a person started by hand: no vote ever stops them."""


# The state's types live with the stores that keep it (votestate.py).
_Sample = Sample
_Active = Active
_CategoryState = CategoryState
_KeyState = KeyState


@dataclass(frozen=True, slots=True)
class StandingAction:
    category: str
    action: str
    tier: Tier
    confidence: float
    channel: str = VIDEO


class VoteEngine:
    """Turns per-sample signals into start/stop decisions.

    ``max_keys`` bounds memory: the least recently updated keys are forgotten first.
    ``store`` keeps the state elsewhere (several instances share it through Redis);
    every change of a key goes through it as one atomic update.
    """

    def __init__(
        self, policy: Policy, *, max_keys: int = 100_000, store: VoteStore | None = None
    ) -> None:
        self._policy = policy
        self._store: VoteStore = store if store is not None else MemoryVoteStore(max_keys)

    @property
    def policy(self) -> Policy:
        return self._policy

    @property
    def store(self) -> VoteStore:
        return self._store

    def update(self, key: str, analysis: FrameAnalysis) -> list[Decision]:
        """Feed one analyzed sample; return the actions that start or stop."""
        return self._store.update(key, lambda state: self._update(key, state, analysis))

    def _update(self, key: str, state: _KeyState, analysis: FrameAnalysis) -> list[Decision]:
        decisions: list[Decision] = []
        by_category: dict[str, list[Signal]] = {}
        for sig in analysis.signals:
            by_category.setdefault(sig.category, []).append(sig)
        quiet: _Sample | None = None
        for name, cat in self._policy.categories.items():
            cstate = state.categories.get(name)
            if cstate is None:
                cstate = _CategoryState(window=deque(maxlen=cat.n))
                state.categories[name] = cstate
            signals = by_category.get(name)
            if signals is None and cat.floor > 0.0:
                # Most categories see nothing in most samples: one shared, scoreless
                # sample (frozen) stands for all of them.
                quiet = quiet or _sample(cat, analysis, [])
                sample = quiet
            else:
                sample = _sample(cat, analysis, signals or [])
            cstate.window.append(sample)
            cstate.peak = max(cstate.peak, _level(cat, cstate.window))
            decisions.extend(self._step(key, cat, cstate, sample, cat.actions))
        return decisions

    def update_signals(
        self, key: str, signals: Sequence[Signal], media_time_s: float, t_arrival: float
    ) -> list[Decision]:
        """Feed one speech sample (signals from a transcript at ``media_time_s``).

        Only categories with ``speech_actions`` vote; the rest ignore speech.
        """

        def change(state: _KeyState) -> list[Decision]:
            return self._update_signals(key, state, signals, media_time_s, t_arrival)

        return self._store.update(key, change)

    def _update_signals(
        self,
        key: str,
        state: _KeyState,
        signals: Sequence[Signal],
        media_time_s: float,
        t_arrival: float,
    ) -> list[Decision]:
        decisions: list[Decision] = []
        for name, cat in self._policy.categories.items():
            if cat.speech_actions is None:
                continue
            cstate = state.speech.get(name)
            if cstate is None:
                cstate = _CategoryState(window=deque(maxlen=cat.n))
                state.speech[name] = cstate
            sample = _signal_sample(cat, signals, media_time_s, t_arrival)
            cstate.window.append(sample)
            cstate.peak = max(cstate.peak, _level(cat, cstate.window))
            decisions.extend(self._step(key, cat, cstate, sample, cat.speech_actions))
        return decisions

    def _step(
        self,
        key: str,
        cat: CategoryPolicy,
        cstate: _CategoryState,
        sample: _Sample,
        actions: dict[Tier, ActionOrNone],
    ) -> list[Decision]:
        active = cstate.active
        if active is not None and not sample.hit:
            cstate.clean_run += 1
            if cstate.clean_run < cat.clear_after:
                return []
            cstate.active = None
            cstate.clean_run = 0
            cstate.window.clear()
            return [_decision(key, cat.name, active, "stop", sample, sample, ())]
        if not sample.hit:
            if cstate.released is not None:
                cstate.clean_run += 1
                if cstate.clean_run >= cat.clear_after:
                    cstate.released = None
                    cstate.clean_run = 0
            return []
        cstate.clean_run = 0
        hits = [s for s in cstate.window if s.hit]
        confidence = sum(s.score for s in hits) / len(hits)
        tier = self._policy.tier(confidence)
        # A single hit may act only at the high tier; a low tier never acts alone.
        if len(hits) < cat.k or (tier == "low" and len(hits) < 2):
            return []
        action = actions[tier]
        if action == "none":
            return []
        # A reviewer or the LLM lifted this episode's action: do not re-impose it (or a
        # weaker one) while the same content stays on screen.
        released = cstate.released
        if active is None and released is not None and action_rank(action) <= action_rank(released):
            return []
        sources = tuple(sorted({src for s in hits for src in s.sources}))
        first = hits[0]
        best = max(hits, key=lambda s: s.score)
        regions = sample.regions if cat.regional else ()
        if active is None:
            cstate.released = None
            cstate.active = _Active(action, tier, confidence, sources)
            return [_decision(key, cat.name, cstate.active, "start", first, best, regions)]
        if action_rank(action) <= action_rank(active.action):
            return []
        # Escalate: the stronger action starts before the weaker one stops, so a
        # client never sees a gap in enforcement.
        upgraded = _Active(action, tier, confidence, sources)
        cstate.active = upgraded
        return [
            _decision(key, cat.name, upgraded, "start", first, best, regions),
            _decision(key, cat.name, active, "stop", sample, sample, ()),
        ]

    def release(
        self,
        key: str,
        category: str,
        *,
        t_now: float,
        fresh: bool = False,
        channel: str = VIDEO,
    ) -> Decision | None:
        """Lift the standing action of one category (a reviewer overturned it, or the
        LLM cleared it) and return its ``stop``; ``None`` when nothing stands.

        The same or a weaker action does not start again for this category until it
        has been clean for ``clear_after`` samples; a stronger one still can.
        ``fresh`` (an expired ban: the publisher served it) instead forgets the
        window, so the next violation acts again at once. ``channel``: ``video`` or
        ``speech`` (the vote the action came from).
        """

        def change(state: _KeyState) -> Decision | None:
            cstate = _category(state, category, channel)
            if cstate is None or cstate.active is None:
                return None
            active, cstate.active = cstate.active, None
            cstate.released = None if fresh else active.action
            cstate.clean_run = 0
            stop = _manual(key, category, active, "stop", cstate, t_now)
            if fresh:
                cstate.window.clear()
            return stop

        return self._store.amend(key, change, None)

    def upgrade(
        self,
        key: str,
        category: str,
        action: str,
        *,
        confidence: float,
        tier: Tier,
        sources: tuple[str, ...],
        t_trigger: float,
        channel: str = VIDEO,
    ) -> list[Decision]:
        """Replace the standing action with a stronger one (an LLM verdict, a
        fallback): the new action's ``start``, then the old one's ``stop``. Nothing
        when no action stands or the standing one is already as strong."""

        def change(state: _KeyState) -> list[Decision]:
            cstate = _category(state, category, channel)
            if cstate is None or cstate.active is None:
                return []
            old = cstate.active
            if action not in ACTIONS or action == "none":
                raise ValueError(f"not an action: {action!r}")
            if action_rank(action) <= action_rank(old.action):
                return []
            cstate.active = _Active(cast(ActionName, action), tier, confidence, sources)
            return [
                _manual(key, category, cstate.active, "start", cstate, t_trigger),
                _manual(key, category, old, "stop", cstate, t_trigger),
            ]

        return self._store.amend(key, change, [])

    def impose(
        self,
        key: str,
        category: str,
        action: ActionName,
        *,
        media_time_s: float,
        t_trigger: float,
    ) -> list[Decision]:
        """Start an action by hand (a moderator saw what the models missed): the new
        action's ``start``, then the ``stop`` of a weaker one standing by hand. It stands
        in the ``moderator`` channel, which no vote stops: only :meth:`release` with
        ``channel=MODERATOR`` lifts it. Nothing when as strong an action stands by hand."""

        def change(state: _KeyState) -> list[Decision]:
            cstate = state.manual.get(category)
            if cstate is None:
                cstate = state.manual[category] = _CategoryState(window=deque(maxlen=1))
            old = cstate.active
            if old is not None and action_rank(action) <= action_rank(old.action):
                return []
            cstate.active = _Active(action, "high", 1.0, (MODERATOR,))
            decisions = [_by_hand(key, category, cstate.active, "start", media_time_s, t_trigger)]
            if old is not None:
                decisions.append(_by_hand(key, category, old, "stop", media_time_s, t_trigger))
            return decisions

        return self._store.update(key, change)

    def suspicious(self, key: str) -> bool:
        """Any category with a recent hit: the sampler should boost."""
        state = self._store.get(key)
        if state is None:
            return False
        return any(c.active is not None or any(s.hit for s in c.window) for _, c in state.all())

    def standing(self, key: str) -> list[StandingAction]:
        state = self._store.get(key)
        if state is None:
            return []
        out: list[StandingAction] = []
        channels = ((VIDEO, state.categories), (SPEECH, state.speech), (MODERATOR, state.manual))
        for channel, states in channels:
            out.extend(
                StandingAction(name, c.active.action, c.active.tier, c.active.confidence, channel)
                for name, c in states.items()
                if c.active is not None
            )
        return out

    def levels(self, key: str) -> dict[str, float]:
        """The score each category sustained over k of its last n samples."""
        state = self._store.get(key)
        if state is None:
            return {}
        cats = self._policy.categories
        out: dict[str, float] = {}
        for name, c in state.all():
            out[name] = max(out.get(name, 0.0), _level(cats[name], c.window))
        return out

    def peak_risk(self, key: str) -> float:
        state = self._store.get(key)
        if state is None:
            return 0.0
        return max((c.peak for _, c in state.all()), default=0.0)


def _category(state: _KeyState, category: str, channel: str) -> _CategoryState | None:
    states = {SPEECH: state.speech, MODERATOR: state.manual}.get(channel, state.categories)
    return states.get(category)


def _level(cat: CategoryPolicy, window: deque[_Sample]) -> float:
    if len(window) < cat.k:
        return 0.0
    return sorted((s.score for s in window), reverse=True)[cat.k - 1]


def _sample(cat: CategoryPolicy, analysis: FrameAnalysis, signals: Sequence[Signal]) -> _Sample:
    """The vote sample of ``cat`` from its ``signals`` in ``analysis``."""
    fused = fuse(signals, cat.floor, cat.fusion, analysis.scores)
    score = fused.score
    hit = score >= cat.floor
    strong = fused.counted if hit else ()
    frame = analysis.frame
    return _Sample(
        score=score,
        hit=hit,
        t_arrival=frame.t_arrival,
        media_time_s=frame.media_time_s,
        sources=tuple(sorted({s.source for s in strong})),
        regions=tuple(r for s in strong for r in s.regions),
        frame=frame if hit else None,
        scores=analysis.scores if hit else {},
        source_time_s=frame.source_time_s,
    )


def _manual(
    key: str,
    category: str,
    active: _Active,
    state: ActionState,
    cstate: _CategoryState,
    t: float,
) -> Decision:
    last = cstate.window[-1] if cstate.window else None
    return Decision(
        key=key,
        category=category,
        action=active.action,
        state=state,
        confidence=round(active.confidence, 4),
        tier=active.tier,
        sources=active.sources,
        media_time_s=last.media_time_s if last is not None else 0.0,
        t_trigger=t,
        source_time_s=last.source_time_s if last is not None else None,
    )


def _by_hand(
    key: str, category: str, active: _Active, state: ActionState, media_time_s: float, t: float
) -> Decision:
    return Decision(
        key=key,
        category=category,
        action=active.action,
        state=state,
        confidence=active.confidence,
        tier=active.tier,
        sources=active.sources,
        media_time_s=media_time_s,
        t_trigger=t,
    )


def _signal_sample(
    cat: CategoryPolicy, signals: Sequence[Signal], media_time_s: float, t_arrival: float
) -> _Sample:
    mine = [s for s in signals if s.category == cat.name]
    score = max((s.score for s in mine), default=0.0)
    return _Sample(
        score=score,
        hit=score >= cat.floor,
        t_arrival=t_arrival,
        media_time_s=media_time_s,
        sources=tuple(sorted({s.source for s in mine if s.score >= cat.floor})),
        regions=(),
        frame=None,
        scores={},
    )


def _decision(
    key: str,
    category: str,
    active: _Active,
    state: ActionState,
    trigger: _Sample,
    evidence: _Sample,
    regions: tuple[Region, ...],
) -> Decision:
    return Decision(
        key=key,
        category=category,
        action=active.action,
        state=state,
        confidence=round(active.confidence, 4),
        tier=active.tier,
        sources=active.sources,
        media_time_s=trigger.media_time_s,
        t_trigger=trigger.t_arrival,
        regions=regions,
        evidence_frame=evidence.frame,
        evidence_scores=evidence.scores,
        source_time_s=trigger.source_time_s,
    )
