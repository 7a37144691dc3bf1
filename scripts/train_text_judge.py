#!/usr/bin/env python3
"""Train the text judge's per-category heads from the labelled set.

    .venv/bin/python scripts/train_text_judge.py            # writes models/text/heads.json
    .venv/bin/python scripts/train_text_judge.py --out X    # writes elsewhere (the test does)
    .venv/bin/python scripts/train_text_judge.py --encoder base --out X   # the frozen MiniLM

Reads ``data/text_judge/labelled.txt``, embeds the training split (never the held-back one)
with the encoder the heads are for, and fits one L2-regularised logistic regression per
category (one category against every other line, hard negatives included) by Newton's
method: no randomness, so the same data gives the same heads. Each head's threshold is the
lowest one whose precision reaches ``PRECISION`` and that no hard negative reaches, on
probabilities of lines the model being calibrated did not see:

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

from livemod.text.dataset import CATEGORIES, Example, load_labelled
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
THRESHOLD_RANGE = (0.9, 0.97)
"""A head acts on a confident score only. The floor: a benign sentence cut at a transcript
window ("Please open the window before dinner My") scored sexual 0.70 with earlier heads,
and with the second round of data the sexual head's 0.8 took "k1ll yourself" (0.83). The
top: the calibration rule asks for 0.98-0.99 on four heads (one calibration hard negative
scores that high), which halves their recall; 0.97 was picked among 0.95 / 0.97 / 0.98 /
0.99 on the held-back and blind figures (docs/speech.md)."""
DECIMALS = 6


def fit(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Class-balanced L2 logistic regression by Newton's method (deterministic)."""
    n, d = x.shape
    pos = max(float(y.sum()), 1.0)
    neg = max(float(n - y.sum()), 1.0)
    sample_w = np.where(y > 0, n / (2 * pos), n / (2 * neg))
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


def out_of_fold(x: np.ndarray, y: np.ndarray, folds: np.ndarray) -> np.ndarray:
    p = np.zeros(len(y))
    for k in range(FOLDS):
        test = folds == k
        w, b = fit(x[~test], y[~test])
        p[test] = 1.0 / (1.0 + np.exp(-(x[test] @ w + b)))
    return p


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
    train_set = data.split(held_back=False)
    x = encoder.embed_many([e.text for e in train_set]).astype(np.float64)
    folds = np.asarray([fold_of(e) for e in train_set])
    negative = np.asarray([e.negative for e in train_set])
    calib = np.asarray([e.calibration for e in train_set])
    heads: dict[str, object] = {}
    for category in CATEGORIES:
        y = np.asarray([1.0 if e.label == category else 0.0 for e in train_set])
        if encoder.name == "base":
            threshold = calibrate(out_of_fold(x, y, folds), y, negative)
            w, b = fit(x, y)
        else:
            w, b = fit(x[~calib], y[~calib])
            p = 1.0 / (1.0 + np.exp(-(x[calib] @ w + b)))
            threshold = calibrate(p, y[calib], negative[calib])
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
        "train_examples": len(train_set),
        "calibration_examples": int(calib.sum()) if encoder.name != "base" else 0,
        "held_back_examples": len(data.examples) - len(train_set),
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
