"""On-screen text: PaddleOCR's PP-OCRv4 detector and recognizer (ONNX) on ONNX Runtime.

The model files and the detector's post-processing (DB binarisation, box unclipping)
come from ``rapidocr-onnxruntime``; the sessions are livemod's own (pinned threads),
and recognition is run and decoded here so that it can:

- run only for detected boxes, and only for boxes whose content changed since the
  stream's previous reading (``LineMemory``): a caption that stays on screen is read
  once, not at every OCR;
- restore word spaces the recognizer drops on Latin text ("Callmenow555") from the
  ink gaps in the crop, because the text policy matches on word boundaries.

Detection is limited to ``det_limit_side_len`` pixels on the long side: RapidOCR's
default upscales a 640x360 frame to about 1308x736, more than doubling the cost.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
from rapidocr_onnxruntime.ch_ppocr_det.utils import DBPostProcess, DetPreProcess

from livemod.errors import ModelError
from livemod.messages import Image
from livemod.ocr.lines import (
    LineMemory,
    Quad,
    Remembered,
    bbox,
    crop,
    gap_between,
    ink_gaps,
    reading_order,
    signature,
)
from livemod.vision.inference import make_session
from livemod.vision.manifest import ModelSpec, verify

DET_MODEL = "ppocr-v4-det"
REC_MODEL = "ppocr-v4-rec"
"""Manifest names of the two models."""

_REC_HEIGHT = 48
_REC_MIN_WIDTH = 320
# On CPU a batch of lines costs more than the lines one by one (padding to the widest
# line; measured 411 ms for six page lines one by one, 701 ms as one batch).
_REC_BATCH_CPU = 1
_REC_BATCH_GPU = 8


@dataclass(frozen=True, slots=True)
class OcrOptions:
    """Engine settings (``ocr`` section of the config)."""

    det_limit_side_len: int = 640
    box_thresh: float = 0.4
    """Mean detector probability inside a box for it to count (0.5, RapidOCR's default,
    missed one line in six of a printed page; 0.4 added no false box on photographs)."""
    min_text_score: float = 0.5
    """Lines the recognizer is less sure of are dropped (kept for reuse)."""
    threads: int = 1


@dataclass(frozen=True, slots=True)
class TextLine:
    """One recognized line: its text, recognizer confidence and box in image pixels."""

    text: str
    score: float
    x: int
    y: int
    w: int
    h: int
    quad: tuple[tuple[float, float], ...]
    reused: bool = False


@dataclass(frozen=True, slots=True)
class OcrReading:
    """What one OCR pass read in one image, with its cost."""

    lines: tuple[TextLine, ...]
    det_ms: float
    rec_ms: float
    recognized: int
    """Boxes sent to the recognizer."""
    reused: int
    """Boxes whose text was taken from the previous reading."""

    @property
    def text(self) -> str:
        """The lines in reading order, one a line."""
        return "\n".join(line.text for line in self.lines)


class OcrEngine:
    """Detector and recognizer sessions; ``read`` is thread-safe given distinct memories."""

    def __init__(
        self,
        det_path: Path,
        rec_path: Path,
        options: OcrOptions = OcrOptions(),
        providers: list[str] | None = None,
    ) -> None:
        self.options = options
        self._det = make_session(det_path, options.threads, providers)
        self._rec = make_session(rec_path, options.threads, providers)
        meta = self._rec.get_modelmeta().custom_metadata_map
        if "character" not in meta:
            raise ModelError(f"OCR model {rec_path} carries no character list in its metadata")
        # CTC index 0 is the blank; the dictionary ends with a space, as PaddleOCR trains it.
        self._chars = ["", *meta["character"].splitlines(), " "]
        gpu = "CUDAExecutionProvider" in self._rec.get_providers()
        self._rec_batch = _REC_BATCH_GPU if gpu else _REC_BATCH_CPU
        self._det_in = self._det.get_inputs()[0].name
        self._rec_in = self._rec.get_inputs()[0].name
        self._pre = DetPreProcess(options.det_limit_side_len, "max", [0.5] * 3, [0.5] * 3)
        self._post = DBPostProcess(
            thresh=0.3, box_thresh=options.box_thresh, max_candidates=1000, unclip_ratio=1.6
        )

    @classmethod
    def from_manifest(
        cls,
        specs: Sequence[ModelSpec],
        options: OcrOptions = OcrOptions(),
        providers: list[str] | None = None,
    ) -> OcrEngine:
        """Build from the manifest entries ``ppocr-v4-det`` and ``ppocr-v4-rec`` (checksums
        verified)."""
        by_name = {s.name: s for s in specs}
        missing = [n for n in (DET_MODEL, REC_MODEL) if n not in by_name]
        if missing:
            raise ModelError(f"ocr is enabled but the model manifest lacks {', '.join(missing)}")
        det, rec = verify(by_name[DET_MODEL]), verify(by_name[REC_MODEL])
        return cls(det, rec, options, providers)

    def detect(self, bgr: npt.NDArray[np.uint8]) -> list[Quad]:
        """Text boxes in reading order (top to bottom, then left to right)."""
        h, w = bgr.shape[:2]
        batch = self._pre(bgr)
        if batch is None:
            return []
        (prob,) = self._det.run(None, {self._det_in: batch})
        boxes, _ = self._post(prob, (h, w))
        quads: list[Quad] = []
        for box in boxes:
            quad = np.asarray(box, dtype=np.float32).reshape(4, 2)
            quad[:, 0] = np.clip(quad[:, 0], 0, w - 1)
            quad[:, 1] = np.clip(quad[:, 1], 0, h - 1)
            if np.linalg.norm(quad[0] - quad[1]) > 3 and np.linalg.norm(quad[0] - quad[3]) > 3:
                quads.append(quad)
        return reading_order(quads)

    def recognize(self, crops: Sequence[npt.NDArray[np.uint8]]) -> list[tuple[str, float]]:
        """Text and mean character confidence of each BGR line crop, in order."""
        out: list[tuple[str, float]] = [("", 0.0)] * len(crops)
        # Similar widths share a batch, so little of it is padding.
        order = sorted(range(len(crops)), key=lambda i: crops[i].shape[1] / crops[i].shape[0])
        for start in range(0, len(order), self._rec_batch):
            chunk = order[start : start + self._rec_batch]
            ratios = [crops[i].shape[1] / crops[i].shape[0] for i in chunk]
            width = math.ceil(_REC_HEIGHT * max(max(ratios), _REC_MIN_WIDTH / _REC_HEIGHT))
            batch = np.zeros((len(chunk), 3, _REC_HEIGHT, width), dtype=np.float32)
            used: list[int] = []
            for j, i in enumerate(chunk):
                rw = min(width, math.ceil(_REC_HEIGHT * ratios[j]))
                resized = cv2.resize(crops[i], (rw, _REC_HEIGHT)).astype(np.float32)
                batch[j, :, :, :rw] = resized.transpose(2, 0, 1) / 127.5 - 1.0
                used.append(rw)
            (preds,) = self._rec.run(None, {self._rec_in: batch})
            for j, i in enumerate(chunk):
                px_per_step = width / preds.shape[1] * crops[i].shape[1] / used[j]
                out[i] = self._decode(preds[j], px_per_step, crops[i])
        return out

    def _decode(
        self, probs: npt.NDArray[np.float32], px_per_step: float, line: npt.NDArray[np.uint8]
    ) -> tuple[str, float]:
        ids = probs.argmax(axis=1)
        keep = np.ones(len(ids), dtype=bool)
        keep[1:] = ids[1:] != ids[:-1]
        keep &= ids != 0
        steps = np.flatnonzero(keep)
        if steps.size == 0:
            return "", 0.0
        conf = float(probs[steps, ids[steps]].mean())
        xs = (steps + 0.5) * px_per_step
        gaps = ink_gaps(line)
        text: list[str] = []
        for k, step in enumerate(steps):
            ch = self._chars[int(ids[step])]
            if k and ch != " " and text[-1] != " " and gap_between(gaps, xs[k - 1], xs[k]):
                text.append(" ")
            text.append(ch)
        return " ".join("".join(text).split()), conf

    def read(self, image: Image, memory: LineMemory | None = None) -> OcrReading:
        """Detect and recognize the text of an RGB frame; ``memory`` holds the stream's
        previous reading and is updated with this one."""
        bgr = np.ascontiguousarray(image[:, :, ::-1])
        started = time.perf_counter()
        quads = self.detect(bgr)
        det_ms = (time.perf_counter() - started) * 1000.0
        started = time.perf_counter()
        crops = [crop(bgr, q) for q in quads]
        boxes = [bbox(q) for q in quads]
        sigs = [signature(c) for c in crops]
        found = [
            memory.find(b, s) if memory is not None else None
            for b, s in zip(boxes, sigs, strict=True)
        ]
        todo = [i for i, f in enumerate(found) if f is None]
        fresh = dict(zip(todo, self.recognize([crops[i] for i in todo]), strict=True))
        rec_ms = (time.perf_counter() - started) * 1000.0
        remembered: list[Remembered] = []
        lines: list[TextLine] = []
        for i, quad in enumerate(quads):
            old = found[i]
            text, score = (old.text, old.score) if old is not None else fresh[i]
            remembered.append(Remembered(boxes[i], sigs[i], text, score))
            if text and score >= self.options.min_text_score:
                x0, y0, x1, y1 = boxes[i]
                corners = tuple((float(px), float(py)) for px, py in quad)
                lines.append(
                    TextLine(text, score, x0, y0, x1 - x0, y1 - y0, corners, old is not None)
                )
        if memory is not None:
            memory.replace(remembered)
        return OcrReading(tuple(lines), det_ms, rec_ms, len(todo), len(quads) - len(todo))
