"""Streams through the micro-batcher: latency and sustained streams per batch policy.

S simulated streams each submit one 640x360 frame every 1/fps seconds (no decode:
this isolates inference and batching) to the AnalysisService with every configured
analyzer (hash, NudeNet, open_nsfw). For each batch policy it reports
submit → analyzed latency p50/p95/p99 per stream count and the largest count whose
p95 stays under 1 s. The first policy (batch of 1, no wait: the CPU default) is the
baseline the others are compared with, in the same run.

    .venv/bin/python benchmarks/batching.py [--quick] [--providers auto|cpu|cuda]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnxruntime as ort

from livemod.app.build import build_analyzers
from livemod.config import load_config
from livemod.messages import VideoFrame
from livemod.pipeline.analysis import AnalysisService
from livemod.testing.media import fit, photo
from livemod.vision.batching import BatchPolicy

P95_BUDGET_MS = 1000.0


def pct(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0}
    p50, p95, p99 = np.percentile(np.asarray(values), [50, 95, 99])
    return {"p50": round(float(p50), 1), "p95": round(float(p95), 1), "p99": round(float(p99), 1)}


async def run_load(
    service: AnalysisService, streams: int, fps: float, seconds: float
) -> dict[str, Any]:
    pictures = [fit(photo(n)) for n in ("astronaut", "coffee", "chelsea", "rocket")]
    latencies: list[float] = []
    interval = 1.0 / fps

    async def stream(sid: int) -> None:
        # Streams start spread over one interval, as independent publishers would.
        await asyncio.sleep(interval * sid / streams)
        start = time.perf_counter()
        tasks = []
        for i in range(int(seconds * fps)):
            due = start + i * interval
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            frame = VideoFrame(f"s{sid}", i, i * interval, time.time(), pictures[(sid + i) % 4])
            tasks.append(asyncio.create_task(timed(frame)))
        await asyncio.gather(*tasks)

    async def timed(frame: VideoFrame) -> None:
        t0 = time.perf_counter()
        await service.analyze(frame)
        latencies.append((time.perf_counter() - t0) * 1000.0)

    cpu0 = time.process_time()
    wall0 = time.perf_counter()
    await asyncio.gather(*(stream(s) for s in range(streams)))
    wall = time.perf_counter() - wall0
    return {
        "streams": streams,
        "frames": len(latencies),
        "latency_ms": pct(latencies),
        "frames_per_s": round(len(latencies) / wall, 1),
        "cpu_s_per_stream_s": round((time.process_time() - cpu0) / (streams * seconds), 3),
    }


async def bench_policy(
    analyzers: list[Any],
    policy: BatchPolicy,
    workers: int,
    counts: Sequence[int],
    fps: float,
    seconds: float,
) -> dict[str, Any]:
    service = AnalysisService(analyzers, workers=workers, batch=policy)
    levels = []
    sustained = 0
    try:
        await run_load(service, 1, fps, min(seconds, 1.0))  # warm-up
        for n in counts:
            level = await run_load(service, n, fps, seconds)
            levels.append(level)
            if level["latency_ms"]["p95"] < P95_BUDGET_MS:
                sustained = n
            else:
                break
    finally:
        service.close()
    return {
        "policy": {"max_batch": policy.max_batch, "max_wait_ms": policy.max_wait_s * 1000},
        "sustained_streams": sustained,
        "levels": levels,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--providers", default="auto", choices=["auto", "cpu", "cuda", "tensorrt"])
    parser.add_argument("--fps", type=float, default=4.0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    seconds = 2.0 if args.quick else 8.0
    counts = [1, 2] if args.quick else [1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 24, 32, 48, 64]
    policies = [BatchPolicy(1, 0.0), BatchPolicy(4, 0.005), BatchPolicy(8, 0.005)]
    if args.quick:
        policies = policies[:2]
    config = load_config(
        None,
        environ={"LIVEMOD_VISION__PROVIDERS": args.providers},
    )
    analyzers = build_analyzers(config)
    results = [
        asyncio.run(bench_policy(analyzers, p, args.workers, counts, args.fps, seconds))
        for p in policies
    ]
    base = results[0]["sustained_streams"] or 1
    for r in results:
        r["sustained_ratio_vs_batch1"] = round(r["sustained_streams"] / base, 2)
    doc = {
        "benchmark": "livemod micro-batching",
        "setting": {
            "machine": {
                "cpu_count": os.cpu_count(),
                "platform": platform.platform(),
                "processor": platform.machine(),
                "python": sys.version.split()[0],
            },
            "onnxruntime": ort.__version__,
            "providers_available": ort.get_available_providers(),
            "providers_used": AnalysisService(analyzers, workers=1).providers(),
            "analyzers": [a.name for a in analyzers],
            "fps_per_stream": args.fps,
            "resolution": "640x360",
            "seconds_per_level": seconds,
            "workers": args.workers,
            "threads_per_call": config.vision.threads,
            "p95_budget_ms": P95_BUDGET_MS,
            "quick": args.quick,
        },
        "baseline": "batch of 1, no wait (the CPU default)",
        "results": results,
    }
    json.dump(doc, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
