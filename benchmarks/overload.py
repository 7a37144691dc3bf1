"""Overload: at twice the sustainable load, livemod's latency stays bounded (it drops
stale frames and counts them) while the naive baseline's grows without limit.

First the sustainable number of real-time streams S is found (as in latency.py, on
a shorter clip) unless ``--sustainable`` gives it; then 2·S streams run for the
length of a longer clip. Arrival → analyzed latency is reported per time window
with its least-squares growth (ms of latency per second of run; the first and last
window are left out as warm-up and wind-down), next to the drops. The naive
baseline (every frame, one thread, no drops) gets the same 2·S streams for a short
while, in the same run.

Prints one JSON document.

    .venv/bin/python benchmarks/overload.py [--quick] [--sustainable S]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loadgen import (
    Harness,
    machine,
    make_clip,
    make_config,
    run_baseline,
    slope_ms_per_s,
    summarize_baseline,
    summarize_level,
    sustained,
    windows,
)

GROWTH_LIMIT_MS_PER_S = 50.0
"""Bounded: latency grows by less than 5% of elapsed time once warmed up."""


async def calibrate(harness: Harness, workdir: Path, quick: bool) -> tuple[int, list[Any]]:
    clip, _ = make_clip(workdir, 1 if quick else 2, name="calibrate.mp4")
    found, tried = 0, []
    for n in range(1, (2 if quick else 16) + 1):
        level = summarize_level(await harness.run_streams(clip, n, f"cal{n}"), clip)
        ok = sustained(level)
        tried.append(
            {
                "streams": n,
                "p95_ms": level["arrival_to_analyzed_ms"]["p95"],
                "drop_rate": level["drop_rate"],
                "sustained": ok,
            }
        )
        print(f"overload: calibrate {n} streams -> {ok}", file=sys.stderr, flush=True)
        if not ok:
            break
        found = n
    return max(found, 1), tried


def growth(analyzed_at: Sequence[float], latencies: Sequence[float], edge_s: float) -> float | None:
    """Latency growth over run time, leaving out the first ``edge_s`` (queues filling)
    and the last (streams ending, load falling)."""
    if not analyzed_at:
        return None
    lo, hi = min(analyzed_at) + edge_s, max(analyzed_at) - edge_s
    kept = [(t, v) for t, v in zip(analyzed_at, latencies, strict=True) if lo <= t <= hi]
    return slope_ms_per_s([t for t, _ in kept], [v for _, v in kept])


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    host = machine()  # before the load, so its load average is the machine's own
    clip, known_bad = make_clip(workdir, 2 if args.quick else 9, name="overload.mp4")
    config = make_config(workdir, known_bad, threads=args.threads, workers=args.workers)
    harness = Harness(config)
    await harness.open()
    window_s = 2.0 if args.quick else 5.0
    try:
        if args.sustainable:
            sustainable, calibration = args.sustainable, []
        else:
            sustainable, calibration = await calibrate(harness, workdir, args.quick)
        n = 2 * sustainable
        print(f"overload: {n} streams for {clip.duration_s} s", file=sys.stderr, flush=True)
        live = await harness.run_streams(clip, n, "over")
        base = run_baseline(
            harness,
            clip,
            n,
            drain_cap_s=0.0,
            backlog_cap=1000,
            load_cap_s=3.0 if args.quick else 12.0,
        )
    finally:
        await harness.close()
    level = summarize_level(live, clip)
    live_growth = growth(live.analyzed_at, live.latencies_s, window_s)
    base_growth = growth(base.analyzed_at, base.latencies_s, 0.0)
    baseline = summarize_baseline(base)
    baseline["windows"] = windows(base.analyzed_at, base.latencies_s, 1.0 if args.quick else 2.0)
    baseline["latency_growth_ms_per_s"] = base_growth
    bounded = live_growth is not None and live_growth < GROWTH_LIMIT_MS_PER_S
    return {
        "benchmark": "livemod overload",
        "setting": {
            "machine": host,
            "quick": args.quick,
            "sustainable_streams": sustainable,
            "sustainable_from": "--sustainable" if args.sustainable else "calibration (below)",
            "overload_streams": n,
            "clip": clip.describe(),
            "sampling_fps": config.sampling.fps,
            "boost": "off: a true 4 fps",
            "models": harness.daemon.analysis.names,
            "ocr": "off",
            "onnx_threads_per_call": config.vision.threads,
            "analysis_workers": config.vision.workers,
            "queue_frames_per_stream": config.ingest.queue_frames,
            "window_s": window_s,
            "bounded_if": f"latency growth < {GROWTH_LIMIT_MS_PER_S:g} ms per s of run, first"
            " and last window left out",
        },
        "calibration": calibration,
        "summary": {
            "overload_streams": n,
            "bounded": bounded,
            "latency_growth_ms_per_s": live_growth,
            "arrival_to_analyzed_ms": level["arrival_to_analyzed_ms"],
            "drop_rate": level["drop_rate"],
            "inserts_detected": level["inserts_detected"],
            "baseline_latency_growth_ms_per_s": base_growth,
            "baseline_arrival_to_analyzed_ms_max": baseline["arrival_to_analyzed_ms"]["max"],
        },
        "livemod": {**level, "windows": windows(live.analyzed_at, live.latencies_s, window_s)},
        "baseline": baseline,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="short clips, at most 4 streams")
    parser.add_argument("--sustainable", type=int, default=0, help="skip the calibration")
    parser.add_argument("--threads", type=int, default=1, help="ONNX intra-op threads per call")
    parser.add_argument("--workers", type=int, default=2, help="analysis calls at once")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="livemod-overload-") as tmp:
        result = asyncio.run(run(args, Path(tmp)))
    # Other work on the machine skews the numbers: say how busy it was.
    result["setting"]["machine"]["loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
