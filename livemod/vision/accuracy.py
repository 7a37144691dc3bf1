"""Does a reduced-precision model still decide like the original? fp32 against fp16 or bf16.

Both analyzers see the same reference frames through the same (their own) preprocessing;
the raw model outputs are compared, then the final results the policy would see
(open_nsfw's score; NudeNet's detections, matched by label, compared by score and box).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from livemod.messages import Image
from livemod.vision.classifier import ImageClassifierAnalyzer
from livemod.vision.nudenet import Detection, NudeNetAnalyzer
from livemod.vision.opennsfw import OpenNsfwAnalyzer
from livemod.vision.reference import cartoon, fit, photo

# Measured on the reference frames below (ONNX Runtime 1.32, CPU provider, which folds the
# fp16 weights back to float32, so this is the cost of rounding the weights): NudeNet's raw
# class scores moved by at most 0.0036 and its detections' scores by 0.0016 with IoU >=
# 0.997; open_nsfw's probability moved by 0.0001. A GPU also computes in half precision, so allow
# ~5x the worst: 0.02 on a 0..1 score is far below what separates the policy's tiers
# (0.70 / 0.95), and the vote averages over samples anyway; IoU 0.9 is a blur box off by
# about a twentieth of its side. Weights perturbed by 5% noise fail both (scores move by
# 0.04-0.08), so the check does catch a broken conversion.
SCORE_TOLERANCE = 0.02
IOU_TOLERANCE = 0.9

REFERENCE_PHOTOS = (
    "astronaut", "coffee", "chelsea", "rocket", "camera", "immunohistochemistry",
    "hubble_deep_field", "retina", "brick", "page", "text", "colorwheel", "horse", "clock",
)  # fmt: skip
"""scikit-image photographs (bundled, nothing downloaded): faces, animals, objects, text,
textures and flat pictures, so both models see high and low scores."""

CARTOONS = ("astronaut", "camera", "coffee")

COMPARE_BATCH = 8


@dataclass(frozen=True, slots=True)
class Tolerances:
    """How far fp16 may drift from fp32 and still be used."""

    score: float = SCORE_TOLERANCE
    iou: float = IOU_TOLERANCE


DEFAULT_TOLERANCES = Tolerances()


@dataclass(frozen=True, slots=True)
class Comparison:
    """What the comparison measured, and every way it exceeded the tolerances."""

    measured: dict[str, float | int | None]
    failures: tuple[str, ...] = field(default=())

    @property
    def passed(self) -> bool:
        return not self.failures


def _reference_makers() -> list[tuple[str, Callable[[], Image]]]:
    """Each reference frame's name and how to make it: names are read at every start-up
    (a cache key), pictures only when a check runs."""
    makers: list[tuple[str, Callable[[], Image]]] = [
        (name, functools.partial(lambda n: fit(photo(n)), name)) for name in REFERENCE_PHOTOS
    ]
    makers.append(("astronaut-512x512", lambda: photo("astronaut")))
    makers.append(
        ("astronaut-crop", lambda: np.ascontiguousarray(photo("astronaut")[40:400, 60:300]))
    )
    # Drawn pictures and a small page at its own size: where bf16 moved EfficientNet's
    # comic_book by 0.075 and pill_bottle by 0.034 (the photographs above, by 0.017).
    makers += [
        (f"cartoon:{name}", functools.partial(lambda n: cartoon(photo(n)), name))
        for name in CARTOONS
    ]
    makers.append(("page-191x384", lambda: photo("page")))
    return makers


def reference_frame_names() -> list[str]:
    """The names of ``reference_frames()``, in order, without making the frames."""
    return [name for name, _ in _reference_makers()]


@functools.cache
def reference_frames() -> tuple[tuple[str, Image], ...]:
    """Named RGB frames at stream resolution (640x360), plus a square and a crop."""
    return tuple((name, make()) for name, make in _reference_makers())


def compare(
    fp32: NudeNetAnalyzer | OpenNsfwAnalyzer | ImageClassifierAnalyzer,
    fp16: NudeNetAnalyzer | OpenNsfwAnalyzer | ImageClassifierAnalyzer,
    frames: Sequence[tuple[str, Image]],
    tolerances: Tolerances,
) -> Comparison:
    """Run both analyzers of one model on ``frames`` and compare them."""
    if isinstance(fp32, NudeNetAnalyzer) and isinstance(fp16, NudeNetAnalyzer):
        return _compare_detector(fp32, fp16, frames, tolerances)
    if isinstance(fp32, OpenNsfwAnalyzer) and isinstance(fp16, OpenNsfwAnalyzer):
        return _compare_classifier(fp32, fp16, frames, tolerances)
    if isinstance(fp32, ImageClassifierAnalyzer) and isinstance(fp16, ImageClassifierAnalyzer):
        return _compare_classes(fp32, fp16, frames, tolerances)
    raise TypeError(f"cannot compare {type(fp32).__name__} with {type(fp16).__name__}")


def _chunks(
    frames: Sequence[tuple[str, Image]],
) -> list[tuple[list[str], list[Image]]]:
    out = []
    for start in range(0, len(frames), COMPARE_BATCH):
        part = frames[start : start + COMPARE_BATCH]
        out.append(([name for name, _ in part], [image for _, image in part]))
    return out


def _compare_classifier(
    fp32: OpenNsfwAnalyzer,
    fp16: OpenNsfwAnalyzer,
    frames: Sequence[tuple[str, Image]],
    tol: Tolerances,
) -> Comparison:
    raw_diff = 0.0
    failures: list[str] = []
    for names, images in _chunks(frames):
        batch = fp32.preprocess(images)
        a, b = fp32.raw(batch), fp16.raw(batch)
        raw_diff = max(raw_diff, float(np.max(np.abs(a - b))))
        for name, p32, p16 in zip(names, a[:, 1], b[:, 1], strict=True):
            if abs(float(p32) - float(p16)) > tol.score:
                failures.append(f"{name}: nsfw score {p32:.4f} (fp32) vs {p16:.4f} (fp16)")
    # The score the policy sees is the probability itself, so both diffs coincide.
    measured: dict[str, float | int | None] = {
        "raw_score_max_abs_diff": round(raw_diff, 6),
        "score_max_abs_diff": round(raw_diff, 6),
    }
    return Comparison(measured, tuple(failures))


def _compare_classes(
    fp32: ImageClassifierAnalyzer,
    fp16: ImageClassifierAnalyzer,
    frames: Sequence[tuple[str, Image]],
    tol: Tolerances,
) -> Comparison:
    """Every mapped class's probability, fp32 against fp16 (the weighted signal moves less)."""
    diff = 0.0
    failures: list[str] = []
    columns = [c.index for c in fp32.classes]
    for names, images in _chunks(frames):
        batch = fp32.preprocess(images)
        a, b = fp32.raw(batch)[:, columns], fp16.raw(batch)[:, columns]
        diff = max(diff, float(np.max(np.abs(a - b))))
        for name, row32, row16 in zip(names, a, b, strict=True):
            for cls, p32, p16 in zip(fp32.classes, row32, row16, strict=True):
                if abs(float(p32) - float(p16)) > tol.score:
                    failures.append(f"{name}: {cls.label} {p32:.4f} (fp32) vs {p16:.4f} (fp16)")
    measured: dict[str, float | int | None] = {
        "raw_score_max_abs_diff": round(diff, 6),
        "score_max_abs_diff": round(diff, 6),
    }
    return Comparison(measured, tuple(failures))


def _compare_detector(
    fp32: NudeNetAnalyzer,
    fp16: NudeNetAnalyzer,
    frames: Sequence[tuple[str, Image]],
    tol: Tolerances,
) -> Comparison:
    raw_diff = score_diff = 0.0
    min_iou: float | None = None
    counts = {"detections_fp32": 0, "detections_fp16": 0, "matched": 0, "unmatched": 0}
    failures: list[str] = []
    # A detection close to the model's own floor may fall on either side of it; only one
    # clearly above the floor that the other precision lost counts as a failure.
    floor = fp32.spec.min_score + tol.score
    for names, images in _chunks(frames):
        batch, metas = fp32.preprocess(images)
        a, b = fp32.raw(batch), fp16.raw(batch)
        raw_diff = max(raw_diff, float(np.max(np.abs(a[:, 4:] - b[:, 4:]))))
        for name, d32, d16 in zip(names, fp32.decode(a, metas), fp16.decode(b, metas), strict=True):
            counts["detections_fp32"] += len(d32)
            counts["detections_fp16"] += len(d16)
            pairs, lost = match_detections(d32, d16)
            counts["matched"] += len(pairs)
            counts["unmatched"] += len(lost)
            for x, y in pairs:
                overlap = iou(x, y)
                diff = abs(x.score - y.score)
                score_diff = max(score_diff, diff)
                min_iou = overlap if min_iou is None else min(min_iou, overlap)
                if diff > tol.score or overlap < tol.iou:
                    failures.append(
                        f"{name}: {x.label} score {x.score:.4f} vs {y.score:.4f}, IoU {overlap:.3f}"
                    )
            failures.extend(
                f"{name}: {det.label} ({det.score:.3f}) found by {which} only"
                for which, det in lost
                if det.score >= floor
            )
    if raw_diff > tol.score:
        # Every anchor's class scores, not only the kept boxes: a drift there is a
        # detection that appears or vanishes on some other picture.
        failures.insert(0, f"raw class scores differ by up to {raw_diff:.4f}")
    measured: dict[str, float | int | None] = {
        "raw_score_max_abs_diff": round(raw_diff, 6),
        "score_max_abs_diff": round(score_diff, 6),
        "min_iou": None if min_iou is None else round(min_iou, 4),
        **counts,
    }
    return Comparison(measured, tuple(failures))


def match_detections(
    fp32: Sequence[Detection], fp16: Sequence[Detection]
) -> tuple[list[tuple[Detection, Detection]], list[tuple[str, Detection]]]:
    """Pairs each fp32 detection, best first, with the unclaimed fp16 detection of the same
    label that overlaps it most; returns the pairs and what is left on either side."""
    left = list(fp16)
    pairs: list[tuple[Detection, Detection]] = []
    lost: list[tuple[str, Detection]] = []
    for det in sorted(fp32, key=lambda d: -d.score):
        same = [(iou(det, other), k) for k, other in enumerate(left) if other.label == det.label]
        best = max(same, default=(0.0, -1))
        if best[0] > 0.0:
            pairs.append((det, left.pop(best[1])))
        else:
            lost.append(("fp32", det))
    lost.extend(("fp16", det) for det in left)
    return pairs, lost


def iou(a: Detection, b: Detection) -> float:
    """Intersection over union of two boxes (0 when both are empty)."""
    w = min(a.x + a.w, b.x + b.w) - max(a.x, b.x)
    h = min(a.y + a.h, b.y + b.h) - max(a.y, b.y)
    inter = max(0.0, w) * max(0.0, h)
    union = a.w * a.h + b.w * b.h - inter
    return inter / union if union > 0 else 0.0
