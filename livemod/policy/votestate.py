"""Where the rolling vote keeps its state per ``userId:roomId``: the store protocol,
the in-memory default, and a JSON codec for stores that live elsewhere (Redis).

The vote's logic stays in :mod:`livemod.policy.vote`; a store only has to run one
change of one key's state atomically. ``update`` may call ``change`` again when a
concurrent writer got there first (a compare-and-set store), so a change reads and
writes only the state it is given.
"""

from __future__ import annotations

import json
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, cast

from livemod.messages import ActionName, Region, Tier, VideoFrame

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Sample:
    score: float
    hit: bool
    t_arrival: float
    media_time_s: float
    sources: tuple[str, ...]
    regions: tuple[Region, ...]
    frame: VideoFrame | None
    scores: dict[str, float]
    source_time_s: float | None = None


@dataclass(slots=True)
class Active:
    action: ActionName
    tier: Tier
    confidence: float
    sources: tuple[str, ...]


@dataclass(slots=True)
class CategoryState:
    window: deque[Sample]
    active: Active | None = None
    clean_run: int = 0
    peak: float = 0.0
    released: str | None = None
    """An action lifted by ``release``: it and weaker ones stay off until clean."""


@dataclass(slots=True)
class KeyState:
    categories: dict[str, CategoryState] = field(default_factory=dict)
    """The video channel."""
    speech: dict[str, CategoryState] = field(default_factory=dict)
    manual: dict[str, CategoryState] = field(default_factory=dict)
    """Actions started by hand (:meth:`VoteEngine.impose`); not voted on."""

    def all(self) -> Iterator[tuple[str, CategoryState]]:
        yield from self.categories.items()
        yield from self.speech.items()


class VoteStore(Protocol):
    """The vote state of every key; each change of one key is atomic."""

    def get(self, key: str) -> KeyState | None:
        """The key's state to read (not to change), or ``None``."""
        ...

    def update(self, key: str, change: Callable[[KeyState], T]) -> T:
        """Apply ``change`` to the key's state (created empty when new) atomically."""
        ...

    def amend(self, key: str, change: Callable[[KeyState], T], default: T) -> T:
        """As :meth:`update`, but only for a key that has state; else ``default``."""
        ...


class MemoryVoteStore:
    """One process's state; the least recently updated keys beyond ``max_keys`` go."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self._keys: OrderedDict[str, KeyState] = OrderedDict()
        self._max_keys = max_keys

    def get(self, key: str) -> KeyState | None:
        return self._keys.get(key)

    def update(self, key: str, change: Callable[[KeyState], T]) -> T:
        state = self._keys.get(key)
        if state is None:
            state = KeyState()
            self._keys[key] = state
            while len(self._keys) > self._max_keys:
                self._keys.popitem(last=False)
        else:
            self._keys.move_to_end(key)
        return change(state)

    def amend(self, key: str, change: Callable[[KeyState], T], default: T) -> T:
        state = self._keys.get(key)
        return default if state is None else change(state)


# -- codec ---------------------------------------------------------------------------

FrameLookup = Callable[[float], VideoFrame | None]
"""Finds the evidence frame of a hit sample by its ``t_arrival`` (frames stay local)."""


def encode(state: KeyState) -> str:
    """The state as JSON, without frames (pictures stay with the instance that saw them)."""
    return json.dumps(
        {
            "video": _channel(state.categories),
            "speech": _channel(state.speech),
            "manual": _channel(state.manual),
        },
        separators=(",", ":"),
    )


def decode(text: str, frames: FrameLookup) -> KeyState:
    raw = json.loads(text)
    return KeyState(
        categories=_unchannel(raw["video"], frames),
        speech=_unchannel(raw["speech"], frames),
        manual=_unchannel(raw["manual"], frames),
    )


def _channel(states: dict[str, CategoryState]) -> dict[str, Any]:
    return {name: _category(c) for name, c in states.items()}


def _category(c: CategoryState) -> dict[str, Any]:
    a = c.active
    return {
        "n": c.window.maxlen,
        "w": [_sample(s) for s in c.window],
        "a": None if a is None else [a.action, a.tier, a.confidence, list(a.sources)],
        "c": c.clean_run,
        "p": c.peak,
        "r": c.released,
    }


def _sample(s: Sample) -> list[Any]:
    regions = [[r.x, r.y, r.w, r.h, r.label, r.score] for r in s.regions]
    return [
        s.score,
        s.hit,
        s.t_arrival,
        s.media_time_s,
        list(s.sources),
        regions,
        s.scores,
        s.source_time_s,
    ]


def _unchannel(raw: dict[str, Any], frames: FrameLookup) -> dict[str, CategoryState]:
    return {name: _uncategory(c, frames) for name, c in raw.items()}


def _uncategory(raw: dict[str, Any], frames: FrameLookup) -> CategoryState:
    window: deque[Sample] = deque((_unsample(s, frames) for s in raw["w"]), maxlen=raw["n"])
    a = raw["a"]
    active = (
        None
        if a is None
        else Active(cast(ActionName, a[0]), cast(Tier, a[1]), float(a[2]), tuple(a[3]))
    )
    return CategoryState(window, active, int(raw["c"]), float(raw["p"]), raw["r"])


def _unsample(raw: list[Any], frames: FrameLookup) -> Sample:
    score, hit, t_arrival, media_time_s, sources, regions, scores, source_time_s = raw
    return Sample(
        score=float(score),
        hit=bool(hit),
        t_arrival=float(t_arrival),
        media_time_s=float(media_time_s),
        sources=tuple(sources),
        regions=tuple(Region(*r) for r in regions),
        frame=frames(float(t_arrival)) if hit else None,
        scores=dict(scores),
        source_time_s=source_time_s,
    )
