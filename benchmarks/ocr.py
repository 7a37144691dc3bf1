"""On-screen text (OCR): cost per frame, how much the gate saves, onset → event latency.

Three measurements, each against a baseline measured in the same run:

1. Cost per 640x360 frame, detection and recognition apart, on captioned photos, a
   printed page and photos without text; baseline: RapidOCR's own pipeline with its
   defaults (detector input upscaled to 736 on the short side, angle classifier on),
   on one thread as livemod's. Also recognition when the boxes did not change.
2. The gate on two generated clips sampled as a new stream is (8 fps): a talking head
   with a lower-third caption, and a news ticker scrolling over a photo. Fraction of
   samples gated off, and OCR milliseconds spent against OCR on every sample.
3. Text onset → action event (a phone number caption appearing at known times on a
   talking head, played in real time through the daemon's session, vision models
   on): gated OCR (the defaults) against OCR on every sample.

Prints one JSON document.

    .venv/bin/python benchmarks/ocr.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from loadgen import machine, percentiles

from livemod.app.build import build_analyzers
from livemod.config import Config
from livemod.events.hub import EventHub
from livemod.ingest.av_source import AvSource, SourceOptions
from livemod.messages import FrameAnalysis, Image, VideoFrame
from livemod.ocr.engine import OcrEngine, OcrOptions
from livemod.ocr.stage import OcrStage, StageSettings, build_ocr_stage
from livemod.pipeline.analysis import AnalysisService
from livemod.pipeline.session import Session, SessionInfo
from livemod.policy.taxonomy import load_policy
from livemod.policy.vote import VoteEngine
from livemod.sampling import FrameSampler
from livemod.store import Store
from livemod.testing.media import fit, photo
from livemod.testing.text import Caption, captioned, make_text_clip, page_frame, talking_head
from livemod.text.judge import TextPolicy
from livemod.vision.manifest import load_manifest

SAMPLE_FPS = 8.0  # what a stream's first minute is sampled at (sampling.boost_fps)
CAPTIONS = [
    ["Call me tonight 555-867-5309"],
    ["Welcome back everyone", "Live from the kitchen"],
    ["Thanks for watching!", "Follow for more", "New videos every Friday"],
]


def cost_frames(quick: bool) -> dict[str, Image]:
    from skimage import data

    frames = {f"caption_{len(c)}_lines": captioned(c) for c in CAPTIONS}
    frames["talking_head_caption"] = captioned(["Cooking with Anna"], background="astronaut")
    frames["printed_page"] = page_frame()
    frames["photo_no_text"] = fit(photo("coffee"))
    frames["busy_photo_no_text"] = fit(np.stack([data.camera()] * 3, axis=-1))
    frames["talking_head_no_text"] = fit(talking_head(0.3, (1280, 720)))
    if quick:
        keep = ("caption_1_lines", "printed_page", "talking_head_no_text")
        return {k: v for k, v in frames.items() if k in keep}
    return frames


def measure_cost(engine: OcrEngine, frames: dict[str, Image], reps: int) -> dict[str, Any]:
    from rapidocr_onnxruntime import RapidOCR

    baseline = RapidOCR(intra_op_num_threads=1, inter_op_num_threads=1)
    det: list[float] = []
    rec: list[float] = []
    total: list[float] = []
    reused_rec: list[float] = []
    base_det: list[float] = []
    base_rec: list[float] = []
    base_total: list[float] = []
    per_frame: dict[str, Any] = {}
    from livemod.ocr.lines import LineMemory

    for name, image in frames.items():
        engine.read(image)  # warm up this frame's shapes
        bgr = np.ascontiguousarray(image[:, :, ::-1])
        baseline(bgr)
        mine: list[float] = []
        for _ in range(reps):
            memory = LineMemory()
            started = time.perf_counter()
            reading = engine.read(image, memory)
            total.append((time.perf_counter() - started) * 1000.0)
            mine.append(total[-1])
            det.append(reading.det_ms)
            rec.append(reading.rec_ms)
            again = engine.read(image, memory)
            reused_rec.append(again.rec_ms)
            started = time.perf_counter()
            _, elapse = baseline(bgr)
            base_total.append((time.perf_counter() - started) * 1000.0)
            if elapse:
                base_det.append(elapse[0] * 1000.0)
                base_rec.append(sum(elapse[1:]) * 1000.0)
        per_frame[name] = {
            "lines": len(reading.lines),
            "ms_p50": round(statistics.median(mine), 1),
        }
    p50 = statistics.median
    return {
        "frames": len(frames),
        "reps": reps,
        "livemod": {
            "det_ms": percentiles(det),
            "rec_ms": percentiles(rec),
            "total_ms": percentiles(total),
            "rec_ms_boxes_unchanged": percentiles(reused_rec),
        },
        "baseline_rapidocr_defaults": {
            "det_ms_frames_with_text": percentiles(base_det),
            "rec_and_cls_ms_frames_with_text": percentiles(base_rec),
            "total_ms": percentiles(base_total),
        },
        "ratio_total_p50_baseline_over_livemod": round(p50(base_total) / p50(total), 2),
        "per_frame": per_frame,
    }


def sampled_frames(clip: Path) -> list[VideoFrame]:
    """The clip decoded and sampled exactly as a session does (scaled to 640)."""
    frames: list[VideoFrame] = []
    sampler = FrameSampler(SAMPLE_FPS, SAMPLE_FPS)
    source = AvSource("bench", SourceOptions(url=str(clip)), sampler, frames.append)
    end = source.run()
    if end.reason == "error":
        raise RuntimeError(end.error)
    return frames


async def measure_gate(
    engine: OcrEngine, policy: TextPolicy, frames: list[VideoFrame], every_kth: int
) -> dict[str, Any]:
    stage = OcrStage(engine, policy, StageSettings())
    ocr_ms = 0.0
    try:
        for frame in frames:
            gate = stage.stream_gate("bench")
            before = gate.counts.run if gate else 0
            started = time.perf_counter()
            await stage.analyze(frame)
            gate = stage.stream_gate("bench")
            if gate is not None and gate.counts.run > before:
                ocr_ms += (time.perf_counter() - started) * 1000.0
    finally:
        stage.close()
    assert gate is not None
    every = 0.0
    # The baseline: OCR on every sample, nothing reused (quick mode times every k-th
    # sample and scales up).
    for frame in frames[::every_kth]:
        started = time.perf_counter()
        engine.read(frame.image)
        every += (time.perf_counter() - started) * 1000.0
    every *= len(frames) / len(frames[::every_kth])
    c = gate.counts
    return {
        "samples": len(frames),
        "ocr_runs": c.run,
        "gated_fraction": round(c.gated_fraction, 3),
        "gated_by_reason": {"rate": c.rate, "unchanged": c.unchanged, "busy": c.busy},
        "ocr_ms_total": round(ocr_ms, 1),
        "baseline_every_sample_ocr_ms_total": round(every, 1),
        "baseline_timed_every_kth_sample": every_kth,
        "compute_ratio_baseline_over_gated": round(every / ocr_ms, 2) if ocr_ms else None,
    }


async def measure_onsets(
    config: Config, clip: Path, onsets: list[float], workdir: Path
) -> dict[str, Any]:
    analysis = AnalysisService(
        build_analyzers(config), workers=config.vision.workers, stages=[build_ocr_stage(config)]
    )
    store = Store(workdir / "bench.db", workdir / "evidence")
    await store.open()
    offsets: list[float] = []

    def record(a: FrameAnalysis) -> None:
        offsets.append(a.frame.t_arrival - a.frame.media_time_s)

    try:
        info = SessionInfo("onsets", "bench-user", "bench-room", str(clip), realtime=True)
        engine = VoteEngine(load_policy(config.policy))
        hub = EventHub(store)
        session = Session(info, config, analysis, engine, hub, on_analysis=record)
        await session.run()
    finally:
        analysis.close()
        await store.close()
    origin = statistics.median(offsets)  # wall clock of media time 0
    starts = [e for e in session.actions if e["state"] == "start" and e["category"] == "contact"]
    latencies: list[float] = []
    for onset in onsets:
        answer = [e for e in starts if onset - 0.05 <= e["media_time_s"] <= onset + 2.0]
        if answer:
            latencies.append((answer[0]["ts"] - (origin + onset)) * 1000.0)
    return {
        "onsets": len(onsets),
        "detected": len(latencies),
        "false_starts": len(starts) - len(latencies),
        "onset_to_event_ms": percentiles(latencies),
        "event_latency_ms": percentiles([e["latency_ms"] for e in starts]),
        "samples": session.samples,
        "drops": session.drops,
    }


def bench_config(workdir: Path, *, gated: bool) -> Config:
    ocr: dict[str, Any] = {"enabled": True}
    if not gated:
        ocr.update(fps=SAMPLE_FPS, change_threshold=0.0)
    return Config.model_validate({"store": {"path": str(workdir / "x.db")}, "ocr": ocr})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="short clips, few repetitions")
    args = parser.parse_args(argv)
    quick = args.quick
    size = (640, 360) if quick else (1280, 720)
    gate_s = 3.0 if quick else 20.0
    n_onsets = 1 if quick else 8
    kth = 4 if quick else 1
    engine = OcrEngine.from_manifest(load_manifest(), OcrOptions())
    policy = TextPolicy.load()
    defaults = Config().ocr
    out: dict[str, Any] = {
        "setting": {
            "machine": machine(),
            "quick": quick,
            "analysis_resolution": "640x360",
            "source_resolution": f"{size[0]}x{size[1]}",
            "models": ["ppocr-v4-det", "ppocr-v4-rec"],
            "threads": 1,
            "det_limit_side_len": defaults.det_limit_side_len,
            "sample_fps": SAMPLE_FPS,
            "ocr_fps": defaults.fps,
            "change_threshold": defaults.change_threshold,
        }
    }
    out["cost_per_frame"] = measure_cost(engine, cost_frames(quick), 1 if quick else 5)
    with tempfile.TemporaryDirectory(prefix="livemod-ocr-bench-") as tmp:
        work = Path(tmp)
        head = make_text_clip(
            work / "talking_head.mp4",
            gate_s,
            [Caption("Cooking with Anna - live", 0.0, gate_s, x="40", y="h-th-40")],
            background="talking_head",
            size=size,
        )
        ticker = make_text_clip(
            work / "ticker.mp4",
            gate_s,
            [
                Caption(
                    "Markets close higher as rain moves east; local team wins the cup final"
                    " in extra time; roadworks on the ring road until Friday",
                    0.0,
                    gate_s,
                    x="w-mod(t*160,w+tw)",
                    y="h-th-30",
                    size=size[1] // 18,
                ),
            ],
            background="photo",
            photo="coffee",
            size=size,
        )
        out["gating"] = {
            "talking_head": asyncio.run(measure_gate(engine, policy, sampled_frames(head), kth)),
            "scrolling_text": asyncio.run(
                measure_gate(engine, policy, sampled_frames(ticker), kth)
            ),
        }
        onsets = [2.0 + 4.0 * i + 0.08 * (i % 4) for i in range(n_onsets)]
        captions = [
            Caption(
                f"Call me tonight 555-867-53{i:02d}", t, t + 2.0, y="h-th-50", size=size[1] // 20
            )
            for i, t in enumerate(onsets)
        ]
        clip = make_text_clip(
            work / "onsets.mp4", onsets[-1] + 2.5, captions, background="talking_head", size=size
        )
        gated = asyncio.run(measure_onsets(bench_config(work, gated=True), clip, onsets, work))
        every = asyncio.run(measure_onsets(bench_config(work, gated=False), clip, onsets, work))
        out["onset_to_event"] = {"gated": gated, "baseline_ocr_every_sample": every}
    g, b = gated["onset_to_event_ms"], every["onset_to_event_ms"]
    out["summary"] = {
        "ocr_ms_per_frame_p50": out["cost_per_frame"]["livemod"]["total_ms"]["p50"],
        "det_ms_p50": out["cost_per_frame"]["livemod"]["det_ms"]["p50"],
        "rec_ms_p50": out["cost_per_frame"]["livemod"]["rec_ms"]["p50"],
        "gated_fraction_talking_head": out["gating"]["talking_head"]["gated_fraction"],
        "gated_fraction_scrolling_text": out["gating"]["scrolling_text"]["gated_fraction"],
        "onset_to_event_ms_p50": g["p50"],
        "onset_to_event_ms_p95": g["p95"],
        "onset_to_event_ms_p50_baseline": b["p50"],
    }
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    cv2.setNumThreads(1)
    raise SystemExit(main())
