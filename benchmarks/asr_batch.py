"""Whisper windows of several streams per call: windows/s and call latency by batch size.

Each "stream" contributes one window of espeak-ng speech (2-4 s, padded to 30 s by
Whisper as every window is). For each batch size B the same windows go through
``WhisperEngine.transcribe_batch`` B at a time; the baseline, measured in the same
run, is the single-window path (``transcribe``) one window after another. On a CPU
the model is compute-bound and batching gains little; on a GPU a batch of 8 costs
little more than one window.

    .venv/bin/python benchmarks/asr_batch.py [--quick] [--device auto|cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from loadgen import machine

from livemod.speech.batch import BatchItem
from livemod.speech.whisper import WhisperEngine
from livemod.testing import speech as ts

SENTENCES = (*ts.EVERYDAY[:7], ts.THREAT)


def windows(count: int) -> list[BatchItem]:
    out = []
    for k in range(count):
        track, _ = ts.compose(
            [ts.Part(seconds=0.5), ts.Part(SENTENCES[k % len(SENTENCES)]), ts.Part(seconds=0.5)],
            seed=k,
        )
        out.append(BatchItem(track, 0.0))
    return out


def pct(values: Sequence[float]) -> dict[str, float]:
    p50, p95, p99 = np.percentile(np.asarray(values), [50, 95, 99])
    return {
        "n": len(values),
        "p50": round(float(p50), 1),
        "p95": round(float(p95), 1),
        "p99": round(float(p99), 1),
    }


def bench(engine: WhisperEngine, items: list[BatchItem], batch: int, rounds: int) -> dict[str, Any]:
    calls: list[float] = []
    started = time.perf_counter()
    done = 0
    for _ in range(rounds):
        step = max(batch, 1)
        for i in range(0, len(items) - step + 1, step):
            t0 = time.perf_counter()
            if batch == 0:
                item = items[i]
                engine.transcribe(item.audio, item.offset_s)
            else:
                engine.transcribe_batch(items[i : i + batch])
            calls.append((time.perf_counter() - t0) * 1000.0)
            done += step
    wall = time.perf_counter() - started
    return {
        "batch": batch or 1,
        "call_ms": pct(calls),
        "windows_per_s": round(done / wall, 2),
        "windows": done,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="batches of 1 and 2, one round")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--compute-type", default="auto", help="auto: int8 CPU, float16 CUDA")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads per call")
    args = parser.parse_args(argv)
    engine = WhisperEngine(device=args.device, compute_type=args.compute_type, threads=args.threads)
    sizes = [1, 2] if args.quick else [1, 2, 4, 8, 16]
    rounds = 1 if args.quick else 2
    items = windows(max(sizes) if not args.quick else 2)
    engine.transcribe_batch(items[:2])  # warm-up (first-call allocations)
    baseline = bench(engine, items, 0, rounds)
    results = [bench(engine, items, b, rounds) for b in sizes]
    base = baseline["windows_per_s"]
    for r in results:
        r["ratio_vs_single_window_path"] = round(r["windows_per_s"] / base, 2) if base else None
    doc = {
        "benchmark": "livemod whisper batching",
        "setting": {
            "machine": machine(),
            "device": engine.device,
            "compute_type": engine.compute_type,
            "model": engine.model_dir.name,
            "threads": args.threads,
            "window": "2-4 s of espeak-ng speech, padded to 30 s by Whisper",
            "rounds": rounds,
            "quick": args.quick,
        },
        "baseline": {"path": "transcribe(), one window after another", **baseline},
        "results": results,
    }
    json.dump(doc, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
