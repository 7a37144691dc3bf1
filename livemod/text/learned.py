"""The learned text judge: sentence embeddings scored by small per-category heads.

A head is a logistic regression on the 384-float MiniLM sentence vector with its own
threshold, calibrated on training lines the encoder and heads did not see
(``scripts/train_text_judge.py`` writes ``models/text/heads.json`` with the encoder it is for
and the sha256 of the labelled set it came from; the heads pick their encoder). The
judge reads text a sentence at a time, so a hit's span is the sentence that carries it (a
long one's from near the words that score highest) and a long transcript does not dilute one
threatening sentence. Thread-safe.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from livemod.errors import ConfigError
from livemod.text.encoder import DEFAULT_ENCODER, DIMENSION, TEXT_MODELS_DIR, SentenceEncoder

DEFAULT_HEADS = TEXT_MODELS_DIR / "heads.json"
TERM = "judge"
"""The term a judge hit carries (evidence shows it as ``text:judge``)."""
SCORE_AT_THRESHOLD = 0.70
SCORE_AT_CERTAINTY = 0.90
"""A head's probability maps linearly from its threshold..1 onto these policy scores: a judge
hit alone lands in the medium tier (speech mutes, on-screen text goes to review) and never in
the high tier, which stays with the deterministic patterns."""
MAX_WORDS = 40
"""Longer sentences (run-on transcripts) are judged in overlapping windows of this many words."""
NARROW_FROM_WORDS = 8
"""A flagged sentence of this many words or more starts its span where the words that carry
the hit start: Whisper runs sentences together ("the weather is warm we found out where you
live"), and a speech mute starts where the hit's span starts."""
NARROW_KEEP_WORDS = 4
"""Narrowing never leaves fewer words than this."""
NARROW_MIN_GAIN = 1.5
"""Log-odds the words before the best start must cost for the span to be narrowed."""
CACHE_SIZE = 2048
# A sentence ends at . ! ? ; followed by a space, or at a line break (OCR reads lines).
_BREAK = re.compile(r"[.!?;]+(?=\s)|\n")
_WORD = re.compile(r"\S+")


@dataclass(frozen=True, slots=True)
class Head:
    category: str
    weights: np.ndarray
    bias: float
    threshold: float


@dataclass(frozen=True, slots=True)
class JudgeHit:
    category: str
    probability: float
    score: float
    start: int
    end: int


class Heads:
    """The per-category heads file (``models/text/heads.json``)."""

    def __init__(self, heads: list[Head], meta: dict[str, Any]) -> None:
        self.heads = tuple(heads)
        self.meta = meta
        self._w = np.stack([h.weights for h in heads]).astype(np.float32)
        self._b = np.asarray([h.bias for h in heads], dtype=np.float32)

    @property
    def categories(self) -> tuple[str, ...]:
        return tuple(h.category for h in self.heads)

    @property
    def encoder(self) -> str:
        """The encoder the heads were trained for (``judge`` unless the file says)."""
        return str(self.meta.get("encoder", DEFAULT_ENCODER))

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        """Per row of ``vectors`` (n, 384), per head, P(category)."""
        logits = vectors.astype(np.float32) @ self._w.T + self._b
        return np.asarray(1.0 / (1.0 + np.exp(-logits)), dtype=np.float64)

    @classmethod
    def load(cls, path: Path = DEFAULT_HEADS) -> Heads:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"text judge: cannot read heads {path}: {exc.strerror}") from exc
        except ValueError as exc:
            raise ConfigError(f"text judge: {path} is not valid JSON: {exc}") from exc
        return cls.parse(data, str(path))

    @classmethod
    def parse(cls, data: Any, where: str = "heads") -> Heads:
        if not isinstance(data, dict) or not isinstance(data.get("heads"), dict):
            raise ConfigError(f"text judge: {where}: expected a mapping with 'heads'")
        heads = []
        for category, raw in data["heads"].items():
            try:
                weights = np.asarray(raw["weights"], dtype=np.float32)
                head = Head(str(category), weights, float(raw["bias"]), float(raw["threshold"]))
            except (KeyError, TypeError, ValueError) as exc:
                raise ConfigError(f"text judge: {where}: head {category!r} is malformed") from exc
            if weights.shape != (DIMENSION,) or not 0.0 < head.threshold < 1.0:
                raise ConfigError(
                    f"text judge: {where}: head {category!r} needs {DIMENSION} weights "
                    "and a threshold between 0 and 1"
                )
            heads.append(head)
        if not heads:
            raise ConfigError(f"text judge: {where}: no heads")
        meta = {k: v for k, v in data.items() if k != "heads"}
        return cls(heads, meta)


class TextJudge:
    """Scores text per category, a sentence at a time. Thread-safe; caches sentences."""

    def __init__(self, encoder: SentenceEncoder, heads: Heads) -> None:
        self.encoder = encoder
        self.heads = heads
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def load(cls, heads_path: Path = DEFAULT_HEADS, *, threads: int = 1) -> TextJudge:
        heads = Heads.load(heads_path)
        return cls(SentenceEncoder(heads.encoder, threads=threads), heads)

    @property
    def categories(self) -> frozenset[str]:
        return frozenset(self.heads.categories)

    def probabilities(self, text: str) -> np.ndarray:
        """P(category) per head for ``text`` taken as one sentence (cached)."""
        key = " ".join(text.split()).casefold()
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        probs: np.ndarray = self.heads.probabilities(self.encoder.embed(key)[None, :])[0]
        with self._lock:
            self._cache[key] = probs
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return probs

    def judge(self, text: str) -> list[JudgeHit]:
        """Every sentence of ``text`` a head flags, with its span in ``text`` (a long sentence's
        span starts near the words that carry the hit: ``NARROW_FROM_WORDS``)."""
        hits: list[JudgeHit] = []
        for start, end in segments(text):
            probs = self.probabilities(text[start:end])
            for index, (head, p) in enumerate(zip(self.heads.heads, probs, strict=True)):
                if p >= head.threshold:
                    lo, hi = self._narrow(text, start, end, index)
                    hits.append(JudgeHit(head.category, float(p), _score(p, head), lo, hi))
        return hits

    def _narrow(self, text: str, start: int, end: int, index: int) -> tuple[int, int]:
        """``text[start:end]``, or its end from one word before the latest start at which
        head ``index`` scores the rest highest, when words before it lower the score by
        ``NARROW_MIN_GAIN`` in log-odds or more (everyday words run into a threat dilute it;
        the threat's own first words do not). Measured on `labelled.txt`'s harmful lines
        with a benign sentence run into them: the span starts a word before the threat at
        the median (p95: three words late), where it started with the benign sentence; on
        the harmful lines alone, 2 % lose two or more leading words. A run of the encoder
        per word, on hits only."""
        words = [m.span() for m in _WORD.finditer(text, start, end)]
        if len(words) < NARROW_FROM_WORDS:
            return start, end
        logits = [
            _logit(self.probabilities(text[words[lo][0] : end])[index])
            for lo in range(len(words) - NARROW_KEEP_WORDS + 1)
        ]
        top = max(logits)
        best = max(i for i, z in enumerate(logits) if z == top)
        if logits[best] - logits[0] < NARROW_MIN_GAIN:
            return start, end
        return words[max(0, best - 1)][0], end


def _logit(p: float) -> float:
    p = min(max(float(p), 1e-9), 1.0 - 1e-9)
    return math.log(p / (1.0 - p))


def _score(p: float, head: Head) -> float:
    frac = (float(p) - head.threshold) / max(1.0 - head.threshold, 1e-9)
    return round(float(SCORE_AT_THRESHOLD + (SCORE_AT_CERTAINTY - SCORE_AT_THRESHOLD) * frac), 4)


def segments(text: str) -> list[tuple[int, int]]:
    """Sentence spans of ``text`` (trimmed, with words), long ones cut into windows."""
    out: list[tuple[int, int]] = []
    bounds = [0, *(m.end() for m in _BREAK.finditer(text)), len(text)]
    for lo, hi in itertools.pairwise(bounds):
        words = [w.span() for w in _WORD.finditer(text, lo, hi)]
        if not words or not any(ch.isalpha() for ch in text[lo:hi]):
            continue
        step = MAX_WORDS // 2
        for i in range(0, max(1, len(words) - step), step):
            window = words[i : i + MAX_WORDS]
            out.append((window[0][0], window[-1][1]))
    return out
