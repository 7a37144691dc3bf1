#!/usr/bin/env python3
"""Train the text judge's per-category heads from the labelled set.

    .venv/bin/python scripts/train_text_judge.py            # writes models/text/heads.json
    .venv/bin/python scripts/train_text_judge.py --out X    # writes elsewhere (the test does)
    .venv/bin/python scripts/train_text_judge.py --encoder base --out X   # the frozen MiniLM

Reads ``data/text_judge/labelled.txt`` and ``corrections.txt`` (each correction weighs
``CORRECTION_WEIGHT`` lines), embeds their training splits (never the held-back lines)
with the encoder the heads are for, and fits one L2-regularised logistic regression per
category (one category against every other line, hard negatives included) by Newton's
method: no randomness, so the same data gives the same heads. The pieces of the benign
training lines that a transcript shows the judge (``pieces``: a sentence's first or last
words, where Whisper commits a piece or a window ends it) join the negatives at a lower
weight, except those holding a word typical of the harmful lines (``charged_words``).
Each head's threshold is the lowest one whose precision reaches ``PRECISION`` and that no
hard negative reaches, on probabilities of lines the model being calibrated did not see:

- ``judge`` encoder (fine-tuned, the default): the heads are fitted on the lines the encoder
  was fine-tuned on and calibrated on the calibration slice, which neither saw;
- ``base`` encoder (frozen): fitted on the whole training split, calibrated on out-of-fold
  probabilities of it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from livemod.text.dataset import (
    CATEGORIES,
    CORRECTION_WEIGHT,
    CORRECTIONS_SET,
    Example,
    benign_fragments,
    charged_words,
    load_labelled,
)
from livemod.text.encoder import (
    DEFAULT_ENCODER,
    ENCODERS,
    MODEL_PACKAGE,
    TOKENIZER_SHA256,
    SentenceEncoder,
)
from livemod.text.learned import DEFAULT_HEADS

L2 = 1.0
"""Ridge penalty on the weights (not the bias); the vectors are unit length."""
ITERATIONS = 30
FOLDS = 5
PRECISION = 0.95
THRESHOLD_RANGE = (0.95, 0.97)
"""A head acts on a confident score only. The floor: benign speech as Whisper cuts it came
close below 0.9 ("Turn left at the second traffic light She": sexual 0.88, with heads that
learned fragments; with heads that had not, the clean-clone suite saw a benign test stream of
these sentences muted as sexual at the 0.90 threshold), and 0.95 costs the sexual head 0.03
of blind recall (0.65 -> 0.62), nothing held back.
The top: the calibration rule asks for 0.98-0.99 on four heads (one calibration hard
negative scores that high), which halves their recall; 0.97 was picked among 0.95 / 0.97 /
0.98 / 0.99 on the held-back and blind figures (docs/speech.md)."""
DECIMALS = 6
FRAGMENT_WEIGHT = 0.15
"""Weight of a benign fragment (``pieces``) against a whole line's 1 (each line gives a
dozen). Measured with benchmarks/text_policy.py (``benign_pieces``, docs/speech.md): heads
trained on whole lines alone flagged 5.1 % of the held-back hard negatives' pieces ("the
second traffic light": violence 0.99), these heads 1.8 %, at a recall cost on indirect
self-harm."""


def fit(x: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Class-balanced L2 logistic regression by Newton's method (deterministic); ``weight``
    scales each example (1 when absent) before the classes are balanced."""
    n, d = x.shape
    w = np.ones(n) if weight is None else weight
    total = float(w.sum())
    pos = max(float((w * y).sum()), 1.0)
    neg = max(float((w * (1 - y)).sum()), 1.0)
    sample_w = w * np.where(y > 0, total / (2 * pos), total / (2 * neg))
    xb = np.hstack([x, np.ones((n, 1))]).astype(np.float64)
    theta = np.zeros(d + 1)
    penalty = np.full(d + 1, L2)
    penalty[-1] = 0.0
    for _ in range(ITERATIONS):
        p = 1.0 / (1.0 + np.exp(-(xb @ theta)))
        grad = xb.T @ (sample_w * (p - y)) + penalty * theta
        hess = (xb * (sample_w * p * (1 - p))[:, None]).T @ xb + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hess, grad)
        theta -= step
        if float(np.abs(step).max()) < 1e-10:
            break
    return theta[:-1], float(theta[-1])


def fold_of(e: Example) -> int:
    return hashlib.sha256(e.text.encode("utf-8")).digest()[5] % FOLDS


def out_of_fold(
    x: np.ndarray, y: np.ndarray, folds: np.ndarray, weight: np.ndarray, line: np.ndarray
) -> np.ndarray:
    """Probabilities of the ``line`` rows, each from heads fitted on the other folds."""
    p = np.zeros(len(y))
    for k in range(FOLDS):
        test = folds == k
        w, b = fit(x[~test], y[~test], weight[~test])
        p[test] = 1.0 / (1.0 + np.exp(-(x[test] @ w + b)))
    line_p: np.ndarray = p[line]
    return line_p


def calibrate(p: np.ndarray, y: np.ndarray, negative: np.ndarray) -> float:
    """The lowest threshold with out-of-fold precision >= PRECISION, above every hard negative."""
    lo, hi = THRESHOLD_RANGE
    floor = max(lo, float(p[negative].max(initial=0.0)) + 1e-3)
    for t in sorted({float(v) for v in p[y > 0]} | {floor}):
        if t < floor:
            continue
        flagged = p >= t
        if flagged.sum() and float(y[flagged].mean()) >= PRECISION:
            return min(round(t, 4), hi)
    return hi


MODELS = {
    "judge": "all-MiniLM-L6-v2 fine-tuned for the judge, int8 ONNX (models/text)",
    "base": f"all-MiniLM-L6-v2 int8 ONNX ({MODEL_PACKAGE})",
}


def train(encoder: SentenceEncoder) -> dict[str, object]:
    data = load_labelled()
    corrections = load_labelled(CORRECTIONS_SET)
    corrected = corrections.split(held_back=False)
    train_set = [*data.split(held_back=False), *corrected]
    # The fine-tuned encoder's heads are calibrated on lines they never saw, whole: the
    # calibration slice gives no fragments.
    fitted = [e for e in train_set if encoder.name == "base" or not e.calibration]
    benign = benign_fragments(fitted, charged_words(fitted))
    rows = [*train_set, *benign.values()]
    x = encoder.embed_many([*(e.text for e in train_set), *benign]).astype(np.float64)
    row = np.arange(len(rows))
    line = row < len(train_set)
    # Rows: the labelled lines, then the corrections, then the benign fragments.
    correction = line & (row >= len(train_set) - len(corrected))
    weight = np.where(correction, CORRECTION_WEIGHT, np.where(line, 1.0, FRAGMENT_WEIGHT))
    folds = np.asarray([fold_of(e) for e in rows])
    negative = np.asarray([e.negative for e in train_set])
    calib = np.asarray([e.calibration and is_line for e, is_line in zip(rows, line, strict=True)])
    heads: dict[str, object] = {}
    for category in CATEGORIES:
        y = np.asarray(
            [
                1.0 if e.label == category and is_line else 0.0
                for e, is_line in zip(rows, line, strict=True)
            ]
        )
        if encoder.name == "base":
            p = out_of_fold(x, y, folds, weight, line)
            threshold = calibrate(p, y[line], negative)
            w, b = fit(x, y, weight)
        else:
            w, b = fit(x[~calib], y[~calib], weight[~calib])
            p = 1.0 / (1.0 + np.exp(-(x[calib] @ w + b)))
            threshold = calibrate(p, y[calib], negative[calib[line]])
        heads[category] = {
            "threshold": threshold,
            "bias": round(b, DECIMALS),
            "weights": [round(float(v), DECIMALS) for v in w],
        }
    return {
        "encoder": encoder.name,
        "model": MODELS[encoder.name],
        "model_sha256": encoder.sha256,
        "tokenizer_sha256": TOKENIZER_SHA256,
        "data_sha256": data.sha256,
        "corrections_sha256": corrections.sha256,
        "train_examples": len(train_set),
        "correction_examples": len(corrected),
        "correction_weight": CORRECTION_WEIGHT,
        "benign_fragments": len(benign),
        "fragment_weight": FRAGMENT_WEIGHT,
        "calibration_examples": int(calib.sum()) if encoder.name != "base" else 0,
        "held_back_examples": len(data.examples) + len(corrections.examples) - len(train_set),
        "l2": L2,
        "heads": heads,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_HEADS)
    parser.add_argument("--encoder", choices=ENCODERS, default=DEFAULT_ENCODER)
    args = parser.parse_args(argv)
    result = train(SentenceEncoder(args.encoder, threads=1))
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    thresholds = {k: v["threshold"] for k, v in result["heads"].items()}  # type: ignore[attr-defined]
    print(json.dumps({"out": str(args.out), "thresholds": thresholds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
