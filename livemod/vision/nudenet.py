"""NudeNet 320n (YOLOv8n, 18 body-part classes): exposed parts become ``sexual``
signals with the boxes a regional blur covers.

Pre- and post-processing (letterbox, YOLOv8 decoding, NMS) are our own and batched;
only the model file comes from the ``nudenet`` package.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from livemod.errors import ModelError
from livemod.messages import Image, Region, Signal
from livemod.vision.base import AnalyzerResult
from livemod.vision.inference import SessionRunner, make_session
from livemod.vision.manifest import ModelFile, ModelSpec, verify

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.intp]


@dataclass(frozen=True, slots=True)
class LetterboxMeta:
    """How to map model-input pixels back to one source image."""

    width: int
    height: int
    scale: float
    """Source pixels per model-input pixel."""


@dataclass(frozen=True, slots=True)
class Detection:
    """One detected box, top-left corner and size in source pixels."""

    label: str
    score: float
    x: float
    y: float
    w: float
    h: float


def letterbox_batch(images: Sequence[Image], size: int) -> tuple[FloatArray, list[LetterboxMeta]]:
    """RGB frames to an NCHW float32 0..1 batch: pad bottom/right to a square, resize."""
    batch = np.empty((len(images), 3, size, size), dtype=np.float32)
    metas: list[LetterboxMeta] = []
    for i, image in enumerate(images):
        height, width = image.shape[:2]
        side = max(height, width)
        square = cv2.copyMakeBorder(
            image, 0, side - height, 0, side - width, cv2.BORDER_CONSTANT, value=(0, 0, 0)
        )
        # Resizing the padded square (not the image alone) keeps edge pixels identical to
        # the reference, which blends the image with the black border there.
        resized = cv2.resize(square, (size, size), interpolation=cv2.INTER_LINEAR)
        batch[i] = resized.transpose(2, 0, 1)
        metas.append(LetterboxMeta(width, height, side / size))
    batch *= np.float32(1.0 / 255.0)
    return batch, metas


def decode_yolov8(
    output: FloatArray, meta: LetterboxMeta, conf_threshold: float
) -> tuple[FloatArray, FloatArray, IntArray]:
    """One image's YOLOv8 output ``(4 + C, N)`` to boxes (x, y, w, h in source pixels,
    clipped to the frame), best-class scores and class ids, keeping scores >= threshold."""
    class_scores = output[4:]
    class_ids = np.argmax(class_scores, axis=0)
    scores = np.take_along_axis(class_scores, class_ids[None, :], axis=0)[0]
    keep = scores >= conf_threshold
    cx, cy, w, h = (output[:4, keep] * meta.scale).astype(np.float32)
    x = np.clip(cx - w / 2, 0, meta.width)
    y = np.clip(cy - h / 2, 0, meta.height)
    w = np.minimum(w, meta.width - x)
    h = np.minimum(h, meta.height - y)
    boxes = np.stack([x, y, w, h], axis=1).astype(np.float32)
    return boxes, scores[keep].astype(np.float32), class_ids[keep]


def nms(boxes_xywh: FloatArray, scores: FloatArray, iou_threshold: float) -> IntArray:
    """Greedy class-agnostic non-maximum suppression; indices of kept boxes, best first.

    A box is dropped when its IoU with a kept, higher-scoring box exceeds the threshold.
    """
    x1, y1 = boxes_xywh[:, 0], boxes_xywh[:, 1]
    x2, y2 = x1 + boxes_xywh[:, 2], y1 + boxes_xywh[:, 3]
    areas = boxes_xywh[:, 2] * boxes_xywh[:, 3]
    order = np.argsort(-scores, kind="stable")
    kept: list[int] = []
    while order.size:
        best, rest = int(order[0]), order[1:]
        kept.append(best)
        inter_w = np.clip(np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]), 0, None)
        inter_h = np.clip(np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]), 0, None)
        inter = inter_w * inter_h
        union = areas[best] + areas[rest] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[iou <= iou_threshold]
    return np.asarray(kept, dtype=np.intp)


def _region(det: Detection, width: int, height: int) -> Region | None:
    # Round outwards so a blur covers the whole box, then clip to the frame.
    x0, y0 = max(0, math.floor(det.x)), max(0, math.floor(det.y))
    x1, y1 = min(width, math.ceil(det.x + det.w)), min(height, math.ceil(det.y + det.h))
    if x1 <= x0 or y1 <= y0:
        return None
    return Region(x0, y0, x1 - x0, y1 - y0, det.label, det.score)


class NudeNetAnalyzer:
    """Body-part detector (NudeNet 320n); exposed parts become ``sexual`` signals with boxes."""

    name = "vision:nudenet"

    def __init__(
        self,
        spec: ModelSpec,
        *,
        threads: int = 1,
        providers: list[str] | None = None,
        model: ModelFile | None = None,
        io_binding: bool = False,
        engine_cache: Path | None = None,
    ) -> None:
        self.spec = spec
        self.size = int(spec.input["size"])
        self.labels = list(spec.labels)
        self.model = model or ModelFile(verify(spec), "fp32")
        self.precision = self.model.precision
        self.session = make_session(self.model.path, threads, providers, engine_cache=engine_cache)
        self.runner = SessionRunner(self.session, io_binding=io_binding)
        self._input = self.session.get_inputs()[0].name
        channels = self.session.get_outputs()[0].shape[1]
        if isinstance(channels, int) and channels != 4 + len(self.labels):
            raise ModelError(
                f"model {spec.name}: outputs {channels - 4} classes "
                f"but the manifest lists {len(self.labels)} labels"
            )

    def preprocess(self, images: Sequence[Image]) -> tuple[FloatArray, list[LetterboxMeta]]:
        """The model input for a batch, with what is needed to map boxes back."""
        return letterbox_batch(images, self.size)

    def raw(self, batch: FloatArray) -> FloatArray:
        """The model's output for a batch, ``(N, 4 + classes, anchors)``: one model call."""
        (output,) = self.runner.run({self._input: batch})
        return np.asarray(output, dtype=np.float32)

    def infer(self, batch: FloatArray, metas: Sequence[LetterboxMeta]) -> list[list[Detection]]:
        """One model call for the batch, then decoding and NMS per image."""
        if not metas:
            return []
        return self.decode(self.raw(batch), metas)

    def decode(self, output: FloatArray, metas: Sequence[LetterboxMeta]) -> list[list[Detection]]:
        """Raw outputs to detections per image (threshold, boxes to source pixels, NMS)."""
        results: list[list[Detection]] = []
        for row, meta in zip(output, metas, strict=True):
            boxes, scores, ids = decode_yolov8(row, meta, self.spec.min_score)
            results.append(
                [
                    Detection(self.labels[ids[k]], float(scores[k]), *map(float, boxes[k]))
                    for k in nms(boxes, scores, self.spec.nms_iou)
                ]
            )
        return results

    def detect_batch(self, images: Sequence[Image]) -> list[list[Detection]]:
        """Detections for each image, best first."""
        return self.infer(*self.preprocess(images))

    def analyze_batch(self, images: Sequence[Image]) -> list[AnalyzerResult]:
        """One signal per mapped category (max score, all its boxes); raw max score per label."""
        results: list[AnalyzerResult] = []
        for image, detections in zip(images, self.detect_batch(images), strict=True):
            scores: dict[str, float] = {}
            by_category: dict[str, list[Detection]] = {}
            for det in detections:
                key = f"nudenet:{det.label}"
                scores[key] = max(scores.get(key, 0.0), det.score)
                category = self.spec.labels.get(det.label)
                if category is not None:
                    by_category.setdefault(category, []).append(det)
            signals = []
            for category, dets in by_category.items():
                # A category is raised by a box that passes its label's calibrated
                # threshold (manifest `thresholds`); the blur then covers all its boxes.
                passing = [d for d in dets if d.score >= self.spec.thresholds.get(d.label, 0.0)]
                if not passing:
                    continue
                best = max(passing, key=lambda d: d.score)
                boxes = (_region(d, image.shape[1], image.shape[0]) for d in dets)
                regions = tuple(r for r in boxes if r is not None)
                signals.append(Signal(category, best.score, self.name, best.label, regions))
            results.append(AnalyzerResult(tuple(signals), scores))
        return results
