"""Finding a listed picture inside a frame by local features (ORB), for insets.

The rectangle finders of ``regions`` look for a picture's outline; over busy video
(a brick wall, a street, another picture) its straight lines drown the outline and
the box lands a few pixels off, which PDQ does not forgive. Local features do not
need the outline: ORB keypoints of each listed picture are computed at list load;
per sample, the frame's keypoints are matched against them (nearest two, Lowe's
ratio test), each picture with enough matches gets a RANSAC homography, and a
homography with enough inliers places the picture: the frame is warped back onto
the picture's own square of pixels and hashed with PDQ. The decision stays PDQ's:
the warped hash must be within the list's threshold of the listed picture's, so a
chance constellation of matching keypoints in benign video does not match.

The frame's keypoints are spread over a grid (``_spread``), so a busy background
does not take them all. Brute-force matching grows with the listed keypoints (80 a
picture), so only the first ``known_bad.feature_pictures`` pictures (default 16)
get keypoints, and the analyzer looks for them only on samples no box matched, every
``known_bad.features_every``-th such sample; hash lists (PDQ hex, CSV) have no
picture. Costs are in docs/known-bad.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, cast

import cv2
import numpy as np
import numpy.typing as npt

__all__ = ["FeatureIndex", "Located", "PictureFeatures", "picture_features"]

_PICTURE_SIDE: Final = 320
"""A listed picture's longer side when its keypoints are computed."""
_PICTURE_FEATURES: Final = 80
_PICTURE_LEVELS: Final = 8
"""Eight levels of 1.2: the picture's keypoints at 320 px down to ~90 px, so a frame
looked at in two levels meets a picture shown 25-100 % of a 640-px frame's width."""
_FRAME_WIDTH: Final = 640
"""Wider frames are looked at shrunk to this width (keypoints scaled back)."""
_FRAME_FEATURES: Final = 300
_FRAME_LEVELS: Final = 2
_FRAME_DETECT: Final = 800
"""Keypoints detected in the frame, before ``_spread`` keeps ``_FRAME_FEATURES``."""
_GRID: Final = 8
_PER_CELL: Final = 4
_RATIO: Final = 0.8
_MIN_MATCHES: Final = 5
_MIN_INLIERS: Final = 5
_REPROJECT: Final = 4.0
_MIN_AREA: Final = 0.01
"""The located picture must cover this fraction of the frame at least."""


@dataclass(frozen=True, slots=True)
class PictureFeatures:
    """A listed picture's keypoints (in its ``size`` pixels) and ORB descriptors."""

    points: npt.NDArray[np.float32]
    descriptors: npt.NDArray[np.uint8]
    size: tuple[int, int]


@dataclass(frozen=True, slots=True)
class Located:
    """A listed picture placed in a frame: which one (its index in the
    ``FeatureIndex``), the frame's pixels warped onto its square, the quadrilateral it
    covers in frame pixels, and how many keypoint matches the homography explains."""

    picture: int
    warped: npt.NDArray[np.uint8]
    quad: npt.NDArray[np.float32]
    inliers: int
    upright: npt.NDArray[np.float32] | None = None
    """The picture's corners under a similarity (scale, turn, move) fitted to the same
    matches, or None: more exact than the homography for an upright inset."""

    def bounds(
        self, shape: tuple[int, ...], quad: npt.NDArray[np.float32] | None = None
    ) -> tuple[int, int, int, int]:
        """The bounding box ``(x, y, w, h)`` of ``quad`` (default: the homography's),
        clipped to the frame."""
        q = self.quad if quad is None else quad
        fh, fw = shape[:2]
        x0 = int(np.clip(np.round(q[:, 0].min()), 0, fw - 1))
        y0 = int(np.clip(np.round(q[:, 1].min()), 0, fh - 1))
        x1 = int(np.clip(np.round(q[:, 0].max()), x0 + 1, fw))
        y1 = int(np.clip(np.round(q[:, 1].max()), y0 + 1, fh))
        return x0, y0, x1 - x0, y1 - y0


def _orb(features: int, levels: int) -> cv2.ORB:
    # FAST's own score ranks keypoints as well here as Harris's, at ~2/3 of the cost.
    return cv2.ORB.create(
        nfeatures=features, nlevels=levels, fastThreshold=7, scoreType=cv2.ORB_FAST_SCORE
    )


def picture_features(grey: npt.NDArray[np.uint8]) -> PictureFeatures | None:
    """ORB keypoints of a listed picture (grey), or None when it has too few."""
    h, w = grey.shape[:2]
    f = _PICTURE_SIDE / max(h, w)
    size = (max(1, round(w * f)), max(1, round(h * f)))
    small = cv2.resize(grey, size, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
    keypoints, descriptors = _orb(_PICTURE_FEATURES, _PICTURE_LEVELS).detectAndCompute(small, None)
    if descriptors is None or len(keypoints) < _MIN_MATCHES:
        return None
    points = np.array([k.pt for k in keypoints], dtype=np.float32)
    return PictureFeatures(points, np.ascontiguousarray(descriptors, dtype=np.uint8), size)


def _spread(keypoints: Sequence[cv2.KeyPoint], shape: tuple[int, ...]) -> list[cv2.KeyPoint]:
    """At most ``_FRAME_FEATURES`` keypoints: the ``_PER_CELL`` strongest of each cell
    of a ``_GRID`` x ``_GRID`` grid, then the strongest of the rest. A busy background
    (bricks) has the frame's strongest corners and would otherwise take them all,
    leaving none on a smooth inset (a clock face)."""
    if len(keypoints) <= _FRAME_FEATURES:
        return list(keypoints)
    h, w = shape[:2]
    ranked = sorted(keypoints, key=lambda k: -k.response)
    counts: dict[tuple[int, int], int] = {}
    first: list[cv2.KeyPoint] = []
    rest: list[cv2.KeyPoint] = []
    for k in ranked:
        cell = (int(k.pt[0] * _GRID / w), int(k.pt[1] * _GRID / h))
        n = counts.get(cell, 0)
        (first if n < _PER_CELL else rest).append(k)
        counts[cell] = n + 1
    return (first + rest)[:_FRAME_FEATURES]


def _convex(quad: npt.NDArray[np.float32]) -> bool:
    edges = np.roll(quad, -1, axis=0) - quad
    nxt = np.roll(edges, -1, axis=0)
    cross = edges[:, 0] * nxt[:, 1] - edges[:, 1] * nxt[:, 0]
    return bool(np.all(cross > 0) or np.all(cross < 0))


class FeatureIndex:
    """Every listed picture's ORB descriptors stacked, for brute-force matching."""

    def __init__(self, pictures: Sequence[PictureFeatures]) -> None:
        self.pictures = tuple(pictures)
        rows = [p.descriptors for p in self.pictures]
        self.descriptors = np.concatenate(rows) if rows else np.empty((0, 32), np.uint8)
        self.points = (
            np.concatenate([p.points for p in self.pictures])
            if rows
            else np.empty((0, 2), np.float32)
        )
        self.owner = np.concatenate(
            [np.full(len(r), i, np.int64) for i, r in enumerate(rows)] or [np.empty(0, np.int64)]
        )
        self._matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
        self._frame_orb = _orb(_FRAME_DETECT, _FRAME_LEVELS)

    def __len__(self) -> int:
        return len(self.pictures)

    def locate(self, grey: npt.NDArray[np.uint8], limit: int = 2) -> list[Located]:
        """The listed pictures placed in ``grey`` (the frame's luma) by a homography
        that enough keypoint matches support, best supported first, at most ``limit``."""
        if not self.pictures:
            return []
        fh, fw = grey.shape[:2]
        scale = 1.0
        look = grey
        if fw > _FRAME_WIDTH:
            scale = fw / _FRAME_WIDTH
            size = (_FRAME_WIDTH, max(1, round(fh / scale)))
            look = cast(
                "npt.NDArray[np.uint8]", cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
            )
        spread = _spread(self._frame_orb.detect(look, None), look.shape)
        keypoints, descriptors = self._frame_orb.compute(look, spread)
        if descriptors is None or len(keypoints) < _MIN_MATCHES:
            return []
        pairs = self._matcher.knnMatch(descriptors, self.descriptors, k=2)
        query: list[int] = []
        train: list[int] = []
        for pair in pairs:
            if len(pair) == 2 and pair[0].distance < _RATIO * pair[1].distance:
                query.append(pair[0].queryIdx)
                train.append(pair[0].trainIdx)
        if len(train) < _MIN_MATCHES:
            return []
        q = np.asarray(query)
        t = np.asarray(train)
        frame_pts = np.array([k.pt for k in keypoints], dtype=np.float32)[q] * scale
        owners = self.owner[t]
        counts = np.bincount(owners, minlength=len(self.pictures))
        found: list[Located] = []
        for pic in np.argsort(-counts, kind="stable"):
            if counts[pic] < _MIN_MATCHES or len(found) >= limit:
                break
            sel = owners == pic
            src = self.points[t[sel]]
            dst = frame_pts[sel]
            hom, mask = cv2.findHomography(src, dst, cv2.RANSAC, _REPROJECT * scale)
            if hom is None or mask is None or int(mask.sum()) < _MIN_INLIERS:
                continue
            # An upright picture scaled and moved (most insets): four degrees of
            # freedom instead of eight place it more exactly from few inliers.
            similar, keep = cv2.estimateAffinePartial2D(
                src, dst, method=cv2.RANSAC, ransacReprojThreshold=_REPROJECT * scale
            )
            picture = self.pictures[int(pic)]
            pw, ph = picture.size
            corners = np.array([[0, 0], [pw, 0], [pw, ph], [0, ph]], dtype=np.float32)
            quad = cv2.perspectiveTransform(corners[None], hom)[0]
            area = float(cv2.contourArea(quad))
            if not _convex(quad) or area < _MIN_AREA * fw * fh or area > 1.5 * fw * fh:
                continue
            warped = cv2.warpPerspective(
                grey,
                hom,
                (pw, ph),
                flags=cv2.INTER_AREA | cv2.WARP_INVERSE_MAP,
                borderMode=cv2.BORDER_CONSTANT,
            )
            upright = None
            if similar is not None and keep is not None and int(keep.sum()) >= _MIN_INLIERS:
                upright = (corners @ similar[:, :2].T + similar[:, 2]).astype(np.float32)
            found.append(
                Located(
                    int(pic),
                    cast("npt.NDArray[np.uint8]", warped),
                    quad,
                    int(mask.sum()),
                    upright,
                )
            )
        return found
