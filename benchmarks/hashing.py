"""Cost of known-bad hashing: phash per 640x360 frame and nearest-hash lookups.

Prints one JSON document: the setting (machine, library versions, frame size, index
sizes), phash milliseconds per frame (p50/p95/p99), the resize step on its own
(livemod's two-stage shrink against one INTER_AREA call), and for index sizes 10,
1,000 and 100,000 the cost of one lookup, vectorized, against a plain Python loop
over the same hashes measured in the same run, with the ratio. The Python loop's
answers are checked against the vectorized ones.

    .venv/bin/python benchmarks/hashing.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np
from skimage import data

from livemod.messages import Image
from livemod.vision import hashes
from livemod.vision.hashes import HashAnalyzer, KnownBadIndex, phash

WIDTH, HEIGHT = 640, 360
INDEX_SIZES = (10, 1_000, 100_000)
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "hubble_deep_field")
SEED = 1234


def load_frames() -> list[Image]:
    """The skimage photos stretched to a sampled-stream resolution."""
    frames: list[Image] = []
    for name in PHOTOS:
        photo = np.asarray(getattr(data, name)(), dtype=np.uint8)
        if photo.ndim == 2:
            photo = np.repeat(photo[..., None], 3, axis=2)
        frame = cv2.resize(photo, (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA)
        frames.append(np.ascontiguousarray(frame, dtype=np.uint8))
    return frames


def summarize(values_us: Sequence[float], unit: str) -> dict[str, float | int]:
    """Percentiles of microsecond samples, expressed in ``unit`` ("ms" or "us")."""
    scale = 1000.0 if unit == "ms" else 1.0
    values = np.asarray(values_us, dtype=np.float64) / scale
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    digits = 4 if unit == "ms" else 2
    return {
        "p50": round(float(p50), digits),
        "p95": round(float(p95), digits),
        "p99": round(float(p99), digits),
        "mean": round(float(values.mean()), digits),
        "n": len(values),
    }


def time_each(fn: Callable[[Any], object], inputs: Sequence[Any], warmup: int) -> list[float]:
    """Microseconds per call, one sample per input, after ``warmup`` untimed calls."""
    for i in range(warmup):
        fn(inputs[i % len(inputs)])
    samples: list[float] = []
    for item in inputs:
        t0 = time.perf_counter_ns()
        fn(item)
        samples.append((time.perf_counter_ns() - t0) / 1000.0)
    return samples


def naive_nearest(entries: Sequence[tuple[int, str]], query: int) -> tuple[int, str] | None:
    """The obvious pure-Python lookup the vectorized index replaces."""
    best: tuple[int, str] | None = None
    for h, label in entries:
        d = (h ^ query).bit_count()
        if best is None or d < best[0]:
            best = (d, label)
    return best


def bench_phash(frames: Sequence[Image], calls: int) -> dict[str, Any]:
    inputs = [frames[i % len(frames)] for i in range(calls)]
    phash_us = time_each(phash, inputs, warmup=50)
    grays = [np.asarray(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), dtype=np.uint8) for f in frames]
    gray_inputs = [grays[i % len(grays)] for i in range(calls)]
    two_stage_us = time_each(hashes._to_32x32, gray_inputs, warmup=50)
    one_stage_us = time_each(
        lambda g: cv2.resize(g, (32, 32), interpolation=cv2.INTER_AREA), gray_inputs, warmup=50
    )
    return {
        "phash_ms_per_frame": summarize(phash_us, "ms"),
        "resize_to_32x32_ms": {
            "two_stage_inter_area": summarize(two_stage_us, "ms"),
            "one_inter_area_call": summarize(one_stage_us, "ms"),
        },
    }


def bench_matching(size: int, queries: int, naive_budget: int) -> dict[str, Any]:
    rng = random.Random(SEED + size)
    entries = [(rng.getrandbits(64), f"img{i}.jpg") for i in range(size)]
    index = KnownBadIndex(entries)
    # Half the queries are near-duplicates of stored hashes, as real matches are.
    probes = [
        rng.getrandbits(64) if i % 2 else entries[rng.randrange(size)][0] ^ (1 << rng.randrange(64))
        for i in range(queries)
    ]
    vectorized_us = time_each(index.nearest, probes, warmup=20)
    # The Python loop is slow at 100,000 hashes: give it a budget of comparisons.
    naive_probes = probes[: max(5, min(queries, naive_budget // size))]
    naive_us = time_each(lambda q: naive_nearest(entries, q), naive_probes, warmup=2)
    agree = all(index.nearest(q) == naive_nearest(entries, q) for q in naive_probes)
    vec = summarize(vectorized_us, "us")
    naive = summarize(naive_us, "us")
    return {
        "index_size": size,
        "vectorized_us_per_lookup": vec,
        "python_loop_us_per_lookup": naive,
        "speedup_p50": round(float(naive["p50"]) / float(vec["p50"]), 1),
        "results_agree": agree,
    }


def bench_analyzer(frames: Sequence[Image], size: int, calls: int) -> dict[str, Any]:
    rng = random.Random(SEED)
    index = KnownBadIndex((rng.getrandbits(64), f"img{i}.jpg") for i in range(size))
    analyzer = HashAnalyzer(index, max_distance=8)
    inputs = [[frames[i % len(frames)]] for i in range(calls)]
    return {
        "index_size": size,
        "ms_per_frame": summarize(time_each(analyzer.analyze_batch, inputs, warmup=20), "ms"),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer samples, for a smoke run")
    args = parser.parse_args(argv)

    phash_calls = 300 if args.quick else 5000
    lookups = 200 if args.quick else 2000
    naive_budget = 300_000 if args.quick else 5_000_000

    frames = load_frames()
    affinity = getattr(os, "sched_getaffinity", None)
    setting = {
        "quick": bool(args.quick),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(affinity(0)) if affinity else None,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "opencv_threads": cv2.getNumThreads(),
        "popcount": (
            "numpy.bitwise_count" if hashes._native_bitwise_count is not None else "lookup table"
        ),
        "frame_size": f"{WIDTH}x{HEIGHT}",
        "frames": list(PHOTOS),
        "index_sizes": list(INDEX_SIZES),
        "phash_calls": phash_calls,
        "lookups_per_index": lookups,
        "python_loop_budget_comparisons": naive_budget,
    }
    report = {
        "benchmark": "livemod known-bad hashing",
        "setting": setting,
        **bench_phash(frames, phash_calls),
        "matching": [bench_matching(size, lookups, naive_budget) for size in INDEX_SIZES],
        "hash_analyzer": bench_analyzer(frames, INDEX_SIZES[-1], phash_calls // 5),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
