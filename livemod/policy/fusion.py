"""Fusion: one category's sample score from independent analyzers' signals.

Taking the strongest signal lets one detector decide alone: on animated footage NudeNet
saw an exposed breast at 0.68-0.73 on a drawn character while open_nsfw stayed below
0.6, and the maximum turned that into ``blur``. With a category's ``fusion`` set, the
sources it names must corroborate each other: a sample scores fully when ``agree`` of
them reach the floor, or when one of them alone reaches ``alone`` (well above its
calibrated threshold). A lone opinion below ``alone`` is scaled under the floor, so it
still shows in levels and risk but never counts as a hit. Sources the fusion does not
name (on-screen text, hashes) keep their own score.

Animation and illustration are not photographs of people: detectors trained on photos
(``photo_only``, NudeNet) are not heard on a sample whose raw ``drawn`` score (an
illustration cue from another model, EfficientNet's "comic book") reaches ``above``.

Pure: signals in, score out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from livemod.messages import Signal


@dataclass(frozen=True, slots=True)
class Fusion:
    """How a category combines the analyzers listed in ``sources``."""

    sources: tuple[str, ...]
    """Independent analyzers of this category (``vision:nudenet``, ...)."""
    agree: int = 2
    """How many of them must reach the floor on the same sample."""
    alone: float = 0.9
    """A single source at or above this scores by itself."""
    drawn_score: str | None = None
    """The raw score (``FrameAnalysis.scores`` key) that says the frame is drawn."""
    drawn_above: float = 0.2
    photo_only: tuple[str, ...] = ()
    """Sources ignored on drawn frames (detectors trained on photographs)."""

    def __post_init__(self) -> None:
        if not self.sources:
            raise ValueError("fusion.sources must name at least one analyzer")
        if not 1 <= self.agree <= len(self.sources):
            raise ValueError(f"fusion.agree must be 1..{len(self.sources)}, got {self.agree}")
        if not 0.0 < self.alone <= 1.0:
            raise ValueError(f"fusion.alone must be in (0, 1], got {self.alone}")


@dataclass(frozen=True, slots=True)
class Fused:
    """A category's score for one sample and the signals that earned it."""

    score: float
    counted: tuple[Signal, ...]
    """The signals behind a hit (their sources and regions go into the action)."""


def fuse(
    signals: Sequence[Signal],
    floor: float,
    fusion: Fusion | None,
    scores: Mapping[str, float] | None = None,
) -> Fused:
    """The sample score of one category's ``signals`` (all of that category);
    ``scores`` are the sample's raw model scores (for the drawn-picture cue)."""
    if fusion is None:
        score = max((s.score for s in signals), default=0.0)
        return Fused(score, tuple(s for s in signals if s.score >= floor))
    drawn = scores.get(fusion.drawn_score, 0.0) if fusion.drawn_score and scores else 0.0
    if fusion.photo_only and fusion.drawn_score and drawn >= fusion.drawn_above:
        signals = [s for s in signals if s.source not in fusion.photo_only]
    free = [s for s in signals if s.source not in fusion.sources]
    best: dict[str, float] = {}
    for s in signals:
        if s.source in fusion.sources:
            best[s.source] = max(best.get(s.source, 0.0), s.score)
    agreeing = sorted((p for p in best.values() if p >= floor), reverse=True)
    if len(agreeing) >= fusion.agree or (agreeing and agreeing[0] >= fusion.alone):
        fused = agreeing[0]
    else:
        top = max(best.values(), default=0.0)
        # Below the floor whatever it was: shown as a level, never a hit.
        fused = min(top, fusion.alone) * floor / fusion.alone * 0.999
    score = max([fused, *(s.score for s in free)])
    counted = tuple(
        s
        for s in signals
        if s.score >= floor and (s.source not in fusion.sources or fused >= floor)
    )
    return Fused(score, counted)
