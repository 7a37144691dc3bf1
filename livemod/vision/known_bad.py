"""The known-bad matcher: PDQ over candidate regions and dihedral variants, reloadable.

Per sample: the candidate boxes (``regions``: whole frame, content area, insets) are
each hashed once with ``pdqhash.compute_dihedral``; the whole frame and the content
area are searched under all eight turns and flips, insets as shown and mirrored
(the mirror of a front camera is common, a turned inset is not). The content area
(the frame when there is none) is also hashed with caption bands cut off
(``regions.CAPTION_CUTS``), as shown and mirrored, against the listed pictures
hashed with the same bands cut off; listed pictures are also hashed cropped
(``regions.CROPS``), so a cropped picture's content area matches one. Boxes whose PDQ
quality is below ``min_quality`` (flat, near-empty) are not searched. Old 64-bit pHash
entries are matched on the whole frame and the content area, as before. When no box
matches, the first ``feature_pictures`` listed pictures are looked for by local
features (``features``: ORB keypoints, a RANSAC homography), every
``features_every``-th sample; the frame warped onto a located picture must still be
within the list's PDQ threshold of it.

Lists are an immutable ``KnownBadLists`` snapshot; ``KnownBadAnalyzer.reload`` builds a
new one off to the side and swaps one reference, so a sample sees the old list or
the new one, never half of each, and a bad file leaves the old list in place.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from livemod import metrics
from livemod.errors import ConfigError
from livemod.messages import Image, Region, Signal
from livemod.vision import pdq as pdq_mod
from livemod.vision.base import AnalyzerResult
from livemod.vision.features import FeatureIndex
from livemod.vision.hashes import phash
from livemod.vision.hashlists import HashList, ListSpec, load_list
from livemod.vision.index import HashIndex
from livemod.vision.regions import (
    CAPTION_CUTS,
    Box,
    View,
    candidate_boxes,
    caption_area,
    snap_inset,
)

__all__ = ["KnownBadAnalyzer", "KnownBadLists", "Match"]

log = logging.getLogger(__name__)

_LIST_MIN_QUALITY: Final = 20
"""Listed pictures are kept down to this PDQ quality (scikit-image's clock photo is 35):
a frame must still reach ``min_quality`` to be searched at all."""
_FULL_VARIANTS: Final = tuple(range(8))
_INSET_VARIANTS: Final = (0, 5)  # as shown, mirrored (pdq.DIHEDRAL)


@dataclass(frozen=True, slots=True)
class Match:
    """Why a frame matched: the entry, its list, how close, where, and how shown."""

    list_name: str
    label: str
    distance: int
    max_distance: int
    box: Box
    transform: str
    hash_kind: str = "pdq"
    view: str = ""
    """How the listed picture was cut to match ("crop 10%", "bottom 15% cut"), or ""."""

    @property
    def how(self) -> str:
        parts = [p for p in (self.transform, self.box.kind) if p not in ("none", "frame")]
        if self.view:
            parts.append(self.view)
        return ", ".join(parts) or "as listed"


class KnownBadLists:
    """All configured lists, loaded, with one index over every PDQ entry."""

    def __init__(self, lists: Sequence[HashList], *, brute_force_max: int | None = None) -> None:
        self.lists = tuple(lists)
        # Listed pictures with keypoints: (list, entry in that list) for each.
        self.pictured = tuple((i, e) for i, hl in enumerate(self.lists) for e, _ in hl.pictures)
        self.features = FeatureIndex([f for hl in self.lists for _, f in hl.pictures])
        # One index over every list's entries, then every list's views of them.
        words: list[npt.NDArray[np.uint64]] = [np.empty((0, 4), np.uint64)]
        list_of: list[npt.NDArray[np.int32]] = [np.empty(0, np.int32)]
        thresholds: list[npt.NDArray[np.int64]] = [np.empty(0, np.int64)]
        self._labels: list[str] = []
        self._views: list[str] = []
        for i, hl in enumerate(self.lists):
            words.append(hl.pdq)
            list_of.append(np.full(len(hl.labels), i, np.int32))
            thresholds.append(np.full(len(hl.labels), hl.spec.max_distance, np.int64))
            self._labels.extend(hl.labels)
            self._views.extend([""] * len(hl.labels))
        for i, hl in enumerate(self.lists):
            words.append(hl.views)
            list_of.append(np.full(len(hl.view_of), i, np.int32))
            thresholds.append(np.full(len(hl.view_of), hl.spec.max_distance, np.int64))
            self._labels.extend(hl.labels[int(k)] for k in hl.view_of)
            self._views.extend(hl.view_names)
        self._list_of = np.concatenate(list_of)
        stacked = np.concatenate(words)
        kwargs = {} if brute_force_max is None else {"brute_force_max": brute_force_max}
        self.index = HashIndex(stacked, np.concatenate(thresholds), **kwargs)

    @classmethod
    def load(
        cls, specs: Sequence[ListSpec], *, min_quality: int = 0, features: int = 0
    ) -> KnownBadLists:
        """Every list; the first ``features`` pictures in all get ORB keypoints."""
        out: list[HashList] = []
        for spec in specs:
            hl = load_list(spec, min_quality=min_quality, features=features)
            features = max(0, features - len(hl.pictures))
            out.append(hl)
        return cls(out)

    def __len__(self) -> int:
        return sum(len(hl) for hl in self.lists)

    def sizes(self) -> dict[str, int]:
        return {hl.name: len(hl) for hl in self.lists}

    def entry(self, i: int) -> tuple[HashList, str, str]:
        """Index entry ``i``'s list, label, and view ("" for the entry as listed)."""
        return self.lists[int(self._list_of[i])], self._labels[i], self._views[i]

    @property
    def has_phash(self) -> bool:
        return any(len(hl.phash) for hl in self.lists)


class KnownBadAnalyzer:
    """Matches frames against known-bad lists (``FrameAnalyzer``, ``name = "hash"``).

    Every result carries ``hash_distance``: the distance of the best match, or of
    the closest entry examined (256 when none was). A match yields a ``known_bad``
    signal whose label is ``list:entry``, with one region (the matched box in frame
    pixels, labelled with the entry and how it was shown: mirrored, inset ...). Its
    score falls linearly from 1.0 (identical) to 0.7 (at the list's threshold).
    """

    name: str = "hash"

    def __init__(
        self,
        specs: Sequence[ListSpec],
        *,
        max_regions: int = 6,
        min_quality: int = 30,
        lists: KnownBadLists | None = None,
        caption_cuts: bool = True,
        feature_pictures: int = 16,
        features_every: int = 1,
    ) -> None:
        self.specs = tuple(specs)
        self.max_regions = max_regions
        self.min_quality = min_quality
        self.caption_cuts = caption_cuts
        self.feature_pictures = feature_pictures
        self.features_every = max(1, features_every)
        self._samples = 0
        self._reload_lock = threading.Lock()
        self.lists = lists if lists is not None else self._load()
        self._export()
        if len(self.lists) == 0:
            # Allowed (a fresh install), but an operator should see it.
            log.warning("known-bad lists are empty: nothing will be matched by hash")

    def _load(self) -> KnownBadLists:
        return KnownBadLists.load(
            self.specs,
            min_quality=min(self.min_quality, _LIST_MIN_QUALITY),
            features=self.feature_pictures,
        )

    def _export(self) -> None:
        for hl in self.lists.lists:
            metrics.KNOWN_BAD_ENTRIES.labels(hl.name).set(len(hl))
            metrics.KNOWN_BAD_SKIPPED.labels(hl.name).inc(hl.skipped_images)
            if len(hl) == 0 and hl.skipped_images == 0:
                continue  # said once below, when every list is empty
            log.info(
                "known-bad list loaded",
                extra={
                    "list": hl.name,
                    "pdq": len(hl.labels),
                    "phash": len(hl.phash),
                    "skipped_images": hl.skipped_images,
                },
            )

    def reload(self) -> dict[str, int]:
        """Load every list again and swap them in; on error keep the old ones.

        Returns the new sizes by list; raises ConfigError (the old lists stay).
        Blocking: call it from a worker thread.
        """
        with self._reload_lock:
            try:
                fresh = self._load()
            except ConfigError as exc:
                metrics.KNOWN_BAD_RELOADS.labels("failed").inc()
                log.error("known-bad reload failed; the old lists stay", extra={"error": str(exc)})
                raise
            self.lists = fresh  # one reference swap: samples see old or new, never both
            metrics.KNOWN_BAD_RELOADS.labels("ok").inc()
            self._export()
            return fresh.sizes()

    def analyze_batch(self, images: Sequence[Image]) -> list[AnalyzerResult]:
        """Match each image and report its best known-bad match, in order."""
        return [self._analyze(image) for image in images]

    def queries(
        self, image: Image
    ) -> tuple[npt.NDArray[np.uint64], list[tuple[Box, int, View | None]], list[Box]]:
        """One sample's query hashes ``(Q, 4)``, with each one's box, dihedral variant
        and caption cut, and the candidate boxes (the frame first)."""
        grey = pdq_mod.grey_of(image)
        boxes = candidate_boxes(grey, self.max_regions)
        queries: list[npt.NDArray[np.uint64]] = []
        owners: list[tuple[Box, int, View | None]] = []

        def add(box: Box, crop: Image, variants: Sequence[int], view: View | None) -> None:
            if crop.shape[0] < 8 or crop.shape[1] < 8:
                return
            hashes, quality = pdq_mod.pdq_dihedral(crop)
            if quality < self.min_quality:
                return
            for v in variants:
                queries.append(hashes[v])
                owners.append((box, v, view))

        for box in boxes:
            variants = _INSET_VARIANTS if box.kind == "inset" else _FULL_VARIANTS
            add(box, box.crop(grey), variants, None)
        # Captions: the picture's area (the content area made symmetric, as a caption
        # over the bars widens it on one side; else the frame), each band cut off.
        shown = next((b for b in boxes if b.kind == "content"), None)
        shown = boxes[0] if shown is None else caption_area(grey.shape, shown)
        for view in CAPTION_CUTS if self.caption_cuts else ():
            add(shown, view.crop(shown.crop(grey)), _INSET_VARIANTS, view)
        stacked = np.stack(queries) if queries else np.empty((0, pdq_mod.WORDS), np.uint64)
        return stacked, owners, boxes

    def match(self, image: Image) -> tuple[Match | None, int]:
        """The best match in ``image`` (or None) and the best distance seen."""
        lists = self.lists  # one snapshot for the whole sample
        queries, owners, boxes = self.queries(image)
        best: Match | None = None
        seen = pdq_mod.BITS
        if len(queries) and len(lists.index):
            hits = lists.index.search(queries)
            seen = int(hits.distance.min())
            for k in np.argsort(hits.distance, kind="stable"):
                if hits.entry[k] < 0:
                    continue
                hl, label, listed_view = lists.entry(int(hits.entry[k]))
                box, v, view = owners[int(k)]
                best = Match(
                    hl.name,
                    label,
                    int(hits.distance[k]),
                    hl.spec.max_distance,
                    box,
                    pdq_mod.DIHEDRAL[v],
                    view=view.name if view is not None else listed_view,
                )
                break
        if best is None and lists.has_phash:
            best = self._match_phash(image, lists, boxes)
        if best is None and len(lists.features) and self.feature_pictures > 0:
            self._samples += 1
            if self._samples % self.features_every == 0:
                found, closest = self._match_features(image, lists)
                seen = min(seen, closest)
                best = found
        return best, seen

    def _match_features(self, image: Image, lists: KnownBadLists) -> tuple[Match | None, int]:
        """A listed picture located by keypoints whose warped-back PDQ is within its
        list's threshold (the best seen distance either way)."""
        grey = pdq_mod.grey_of(image)
        seen = pdq_mod.BITS
        for located in lists.features.locate(grey):
            i, entry = lists.pictured[located.picture]
            hl = lists.lists[i]
            # The bounding boxes of the similarity's and the homography's placements,
            # each side snapped onto the inset's border (most insets are upright
            # rectangles, and a snapped border is exact where a placement from a few
            # keypoints is not), then the homography's warp.
            tries: list[tuple[Box, npt.NDArray[np.uint8]]] = []
            for quad in (located.upright, located.quad):
                if quad is not None:
                    box = snap_inset(grey, Box(*located.bounds(image.shape, quad), "inset"))
                    tries.append((box, box.crop(grey)))
            tries.append((tries[-1][0], located.warped))
            for box, crop in tries:
                if crop.shape[0] < 8 or crop.shape[1] < 8:
                    continue
                hashes, quality = pdq_mod.pdq_dihedral(crop)
                if quality < self.min_quality:
                    continue
                distance = sum(int(word).bit_count() for word in hashes[0] ^ hl.pdq[entry])
                seen = min(seen, distance)
                if distance <= hl.spec.max_distance:
                    view = f"located by {located.inliers} keypoints"
                    match = Match(
                        hl.name,
                        hl.labels[entry],
                        distance,
                        hl.spec.max_distance,
                        box,
                        "none",
                        view=view,
                    )
                    return match, seen
        return None, seen

    def _match_phash(
        self, image: Image, lists: KnownBadLists, boxes: Sequence[Box]
    ) -> Match | None:
        for box in boxes:
            if box.kind == "inset":
                continue
            h = phash(np.ascontiguousarray(box.crop(image)))
            for hl in lists.lists:
                found = hl.phash.nearest(h)
                if found is not None and found[0] <= hl.spec.phash_max_distance:
                    distance, label = found
                    return Match(
                        hl.name,
                        label,
                        distance,
                        hl.spec.phash_max_distance,
                        box,
                        "none",
                        "phash",
                    )
        return None

    def _analyze(self, image: Image) -> AnalyzerResult:
        found, seen = self.match(image)
        if found is None:
            return AnalyzerResult(scores={"hash_distance": float(seen)})
        metrics.KNOWN_BAD_MATCHES.labels(found.list_name).inc()
        # In the matched hash's own bits: PDQ's 256, or 64 for an old pHash entry.
        scores = {
            "hash_distance": float(found.distance),
            "hash_max_distance": float(found.max_distance),
        }
        score = 1.0 - 0.3 * found.distance / max(found.max_distance, 1)
        label = f"{found.list_name}:{found.label}"
        box = found.box
        region = Region(box.x, box.y, box.w, box.h, f"{label} ({found.how})", score)
        signal = Signal(
            category="known_bad", score=score, source=self.name, label=label, regions=(region,)
        )
        return AnalyzerResult(signals=(signal,), scores=scores)
