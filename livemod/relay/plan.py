"""The relay's pure core: which buffered frames and audio an action covers.

Decisions in, treatments out; time is media time on the session's timeline, passed
in. An action covers every frame after the last *clean* analyzed sample before its
first voting hit (the content may have appeared anywhere between the two samples),
until the sample that completed the clean run that stopped it. Regions come from
every analyzed sample of the action's category, joined between neighbouring samples
(the hull of a box and its match in the next sample covers an object that moved
between them) and grown by a margin.

The gate (:func:`gate`) says when a frame may leave: after ``delay_s``, and only
once analysis has looked far enough past it that any vote about it is settled.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from livemod.messages import Decision, Region

SPEECH_PAD_S = 0.15
"""Silence this much before and after the words of a speech action."""
FALLBACK_ONSET_S = 0.5
"""When no earlier sample is known, cover this much before the first voting hit."""
KEEP_SAMPLES_S = 30.0
"""Samples older than this behind the output are forgotten (bounds memory)."""

CoverKind = Literal["none", "regions", "whole", "slate"]
Gate = Literal["wait", "go", "hold", "late"]


@dataclass(frozen=True, slots=True)
class Box:
    """A rectangle in source pixels, corners inclusive-exclusive."""

    x0: int
    y0: int
    x1: int
    y1: int

    @staticmethod
    def of(region: Region) -> Box:
        return Box(region.x, region.y, region.x + region.w, region.y + region.h)

    def hull(self, other: Box) -> Box:
        return Box(
            min(self.x0, other.x0),
            min(self.y0, other.y0),
            max(self.x1, other.x1),
            max(self.y1, other.y1),
        )

    def grown(self, margin: float, min_px: int, width: int, height: int) -> Box:
        mx = max(min_px, round((self.x1 - self.x0) * margin))
        my = max(min_px, round((self.y1 - self.y0) * margin))
        return Box(
            max(0, self.x0 - mx),
            max(0, self.y0 - my),
            min(width, self.x1 + mx),
            min(height, self.y1 + my),
        )

    def overlap(self, other: Box) -> float:
        """Intersection over the smaller box's area (0: disjoint)."""
        w = min(self.x1, other.x1) - max(self.x0, other.x0)
        h = min(self.y1, other.y1) - max(self.y0, other.y0)
        if w <= 0 or h <= 0:
            return 0.0
        small = min(self.area, other.area)
        return (w * h) / small if small else 0.0

    @property
    def area(self) -> int:
        return max(0, self.x1 - self.x0) * max(0, self.y1 - self.y0)


@dataclass(frozen=True, slots=True)
class Cover:
    """What to do with one video frame."""

    kind: CoverKind = "none"
    boxes: tuple[Box, ...] = ()
    actions: tuple[str, ...] = ()
    """The actions behind this cover (for metrics)."""


@dataclass(slots=True)
class _Span:
    category: str
    action: str
    start_s: float
    """Exclusive: media times strictly after this are covered."""
    end_s: float | None
    """Inclusive; None while the action stands."""
    regions: tuple[Region, ...]
    regional: bool

    def covers(self, t: float) -> bool:
        return t > self.start_s and (self.end_s is None or t <= self.end_s)

    def overlaps(self, t0: float, t1: float) -> bool:
        return t1 > self.start_s and (self.end_s is None or t0 <= self.end_s)


@dataclass(slots=True)
class _Sample:
    t: float
    regions: dict[str, tuple[Box, ...]]


@dataclass(slots=True)
class Plan:
    """Spans of actions over media time and the regions each sample saw."""

    margin: float = 0.15
    min_margin_px: int = 16
    treat_actions: frozenset[str] = frozenset({"blur", "mute", "pause", "end"})
    horizon_s: float = float("-inf")
    """Media time of the newest analyzed sample."""
    ended_at: float | None = None
    """Media time after which the output is the slate, then ends (an ``end``)."""
    _spans: list[_Span] = field(default_factory=list)
    _times: list[float] = field(default_factory=list)
    _samples: list[_Sample] = field(default_factory=list)

    def sample(self, t: float, regions: Mapping[str, Sequence[Region]]) -> None:
        """One analyzed sample: its media time and the boxes each category saw."""
        boxes = {cat: tuple(Box.of(r) for r in rs) for cat, rs in regions.items() if rs}
        if self._times and t <= self._times[-1]:
            i = bisect.bisect_left(self._times, t)
            if i < len(self._times) and self._times[i] == t:
                self._samples[i].regions.update(boxes)
                return
            self._times.insert(i, t)
            self._samples.insert(i, _Sample(t, boxes))
        else:
            self._times.append(t)
            self._samples.append(_Sample(t, boxes))
        self.horizon_s = max(self.horizon_s, t)

    def forget_before(self, t: float) -> None:
        """Drop samples and closed spans that can no longer matter to frames after ``t``."""
        cut = bisect.bisect_left(self._times, t - KEEP_SAMPLES_S)
        if cut:
            del self._times[:cut]
            del self._samples[:cut]
        self._spans = [s for s in self._spans if s.end_s is None or s.end_s >= t - 1.0]

    def onset(self, decision: Decision) -> float:
        """Where a starting action's cover begins (exclusive)."""
        if decision.span_s is not None:
            return decision.span_s[0] - SPEECH_PAD_S
        first = decision.media_time_s
        i = bisect.bisect_left(self._times, first)
        if i > 0:
            return self._times[i - 1]
        return max(-1e-9, first - FALLBACK_ONSET_S) if first > 0 else -1.0

    def decide(self, decision: Decision) -> float | None:
        """Apply one decision; return where its cover begins (None: nothing to cover)."""
        if decision.action not in self.treat_actions:
            return None
        if decision.state == "stop":
            for span in reversed(self._spans):
                key = (span.category, span.action)
                if key == (decision.category, decision.action) and span.end_s is None:
                    end = decision.media_time_s
                    if decision.span_s is not None:
                        end = max(end, decision.span_s[1] + SPEECH_PAD_S)
                    span.end_s = max(end, span.start_s)
                    break
            return None
        for span in self._spans:
            same = (span.category, span.action) == (decision.category, decision.action)
            if same and span.end_s is None:
                return None  # already standing: the earlier onset holds
        start = self.onset(decision)
        # Open until its stop, a speech mute included (its span_s is where it begins).
        span = _Span(
            decision.category,
            decision.action,
            start,
            None,
            decision.regions,
            bool(decision.regions),
        )
        self._spans.append(span)
        if decision.action == "end":
            self.ended_at = start if self.ended_at is None else min(self.ended_at, start)
        return start

    def standing(self) -> list[tuple[str, str]]:
        return [(s.category, s.action) for s in self._spans if s.end_s is None]

    def video(self, t: float) -> Cover:
        """The cover of the frame at media time ``t``."""
        if self.ended_at is not None and t > self.ended_at:
            return Cover("slate", (), ("end",))
        spans = [s for s in self._spans if s.covers(t) and s.action != "mute"]
        if not spans:
            return Cover()
        actions = tuple(sorted({s.action for s in spans}))
        if any(s.action in ("pause", "end") for s in spans):
            return Cover("slate", (), actions)
        whole = [s for s in spans if not s.regional]
        if whole:
            return Cover("whole", (), actions)
        boxes: list[Box] = []
        for span in spans:
            found = self._boxes(span, t)
            if not found:
                return Cover("whole", (), actions)  # regions lost: cover everything
            boxes.extend(found)
        return Cover("regions", tuple(boxes), actions)

    def grow(self, boxes: Sequence[Box], width: int, height: int) -> list[Box]:
        return [b.grown(self.margin, self.min_margin_px, width, height) for b in boxes]

    def silent(self, t0: float, t1: float) -> list[tuple[float, float]]:
        """Parts of [t0, t1) to silence: mutes, pauses and the end."""
        out: list[tuple[float, float]] = []
        for s in self._spans:
            if s.action in ("mute", "pause", "end") and s.overlaps(t0, t1):
                end = t1 if s.end_s is None else min(t1, s.end_s)
                out.append((max(t0, s.start_s), end))
        if self.ended_at is not None and t1 > self.ended_at:
            out.append((max(t0, self.ended_at), t1))
        return out

    def _boxes(self, span: _Span, t: float) -> list[Box]:
        """The span's boxes at ``t``: the neighbouring samples' boxes joined, or the
        nearest sample's within the span, or the decision's."""
        cat = span.category
        i = bisect.bisect_right(self._times, t)
        before = self._samples[i - 1].regions.get(cat, ()) if i > 0 else ()
        after = self._samples[i].regions.get(cat, ()) if i < len(self._samples) else ()
        if before or after:
            return joined(before, after)
        for j in range(i - 1, -1, -1):  # held: the latest boxes seen within the span
            sample = self._samples[j]
            if sample.t <= span.start_s:
                break
            if cat in sample.regions:
                return list(sample.regions[cat])
        for j in range(i, len(self._samples)):
            sample = self._samples[j]
            if span.end_s is not None and sample.t > span.end_s:
                break
            if cat in sample.regions:
                return list(sample.regions[cat])
        return [Box.of(r) for r in span.regions]


def joined(before: Sequence[Box], after: Sequence[Box]) -> list[Box]:
    """Boxes between two samples: each box of one with the hull of its best match in
    the other (an object that moved stays inside the hull), and every unmatched box."""
    out: list[Box] = []
    matched: set[int] = set()
    for a in before:
        best, best_j = 0.0, -1
        for j, b in enumerate(after):
            o = a.overlap(b.hull(a)) if a.overlap(b) > 0 else _near(a, b)
            if o > best:
                best, best_j = o, j
        if best_j >= 0:
            matched.add(best_j)
            out.append(a.hull(after[best_j]))
        else:
            out.append(a)
    out.extend(b for j, b in enumerate(after) if j not in matched)
    return out


def _near(a: Box, b: Box) -> float:
    """A small score for disjoint boxes of similar size close to each other."""
    gap = max(b.x0 - a.x1, a.x0 - b.x1, b.y0 - a.y1, a.y0 - b.y1, 0)
    size = max(a.x1 - a.x0, a.y1 - a.y0, b.x1 - b.x0, b.y1 - b.y0, 1)
    return 0.5 * max(0.0, 1.0 - gap / (4 * size))


def gate(
    *,
    now: float,
    arrival: float,
    t: float,
    horizon_s: float,
    lookahead_s: float,
    delay_s: float,
    max_delay_s: float,
    final: bool = False,
    speech_horizon_s: float | None = None,
    speech_lookahead_s: float = 0.0,
) -> Gate:
    """May the frame at media time ``t``, received at ``arrival`` (monotonic), leave now?

    ``wait``: not yet ``delay_s`` old. ``go``: old enough, and analysis has looked
    ``lookahead_s`` past it (every vote that could cover it is settled) and, when the
    session moderates speech (``speech_horizon_s`` not None), speech moderation has
    judged the audio ``speech_lookahead_s`` past it. ``hold``: old enough but analysis
    or speech lags: keep it (the delay grows). ``late``: held to ``max_delay_s``; it
    leaves without that assurance (counted).
    """
    age = now - arrival
    if final:
        return "go"
    if age < delay_s:
        return "wait"
    if horizon_s >= t + lookahead_s and (
        speech_horizon_s is None or speech_horizon_s >= t + speech_lookahead_s
    ):
        return "go"
    if age < max_delay_s:
        return "hold"
    return "late"


def vote_lookahead_s(windows: Sequence[tuple[int, int]], fps: float) -> float:
    """How far past a frame analysis must look before no vote can still cover it: a
    first hit may be followed by up to n-1 more samples before the k-th hit decides."""
    if not windows or fps <= 0:
        return 0.0
    return max((n - 1) for _, n in windows) / fps


def min_delay_s(windows: Sequence[tuple[int, int]], fps: float, headroom_s: float) -> float:
    """The shortest ``relay.delay_s`` the vote allows: the k-th hit of the slowest
    category at ``fps``, plus headroom for inference and the hand-off."""
    if not windows or fps <= 0:
        return headroom_s
    return max(k for k, _ in windows) / fps + headroom_s


SPEECH_STEP_S = 0.25
"""The speech vote's sample step (``livemod.speech.moderator.SpeechTimeline``)."""


def speech_lookahead_s(windows: Sequence[tuple[int, int]], step_s: float = SPEECH_STEP_S) -> float:
    """How far past an audio frame speech moderation must have judged before no mute
    can still begin before it: a word's first hit is followed by up to n-1 more speech
    samples before the k-th decides, the sample being judged may still decide, and
    the mute begins ``SPEECH_PAD_S`` before the words."""
    n = max((n for _, n in windows), default=1)
    return n * step_s + SPEECH_PAD_S
