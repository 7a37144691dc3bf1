"""The LLM sweep at fleet scale: calls per stream-hour, request size, and recall on what
the LLM is shown, against a stand-in LLM.

What is real: the sweep stage (``livemod.escalation.sweep``), its planner and budget, the
escalator's client, breaker and retries, JPEG encoding, HTTP to the fake LLM on 127.0.0.1
(``livemod.testing.fake_llm``, the chat-completions protocol), and the rolling vote and
policy (``VoteEngine`` with ``configs/policy.yaml``), which turn held sweep signals into
actions and tell the sweep which streams are suspicious.

What is a stand-in: the LLM. It "sees" a marker this benchmark paints into the frames of
labelled windows (a magenta square standing for a hate symbol) and calls those images
``hate`` with confidence 0.85, everything else safe, and it answers at once. So the recall
here is the sweep's *coverage* (was the LLM asked while the violation was on screen, and
did the vote act on its answer), an upper bound for a real model's recall; time runs on a
virtual clock, 4 samples a second per stream (no boost), LLM latency zero.

Each stream plays fitted real photographs (scikit-image); every ~10 minutes a window of
10-90 s shows the marker. Settings: the default budget with few streams, and a crowd that
wants more looks than the budget allows.

    .venv/bin/python benchmarks/sweep.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import cv2
import numpy as np

from livemod.config import Config, LlmConfig, load_config
from livemod.escalation.guard import GuardedLlm
from livemod.escalation.llm import LlmClient
from livemod.escalation.sweep import LlmSweep
from livemod.messages import FrameAnalysis, Image, VideoFrame
from livemod.policy.taxonomy import load_policy
from livemod.policy.vote import VoteEngine
from livemod.testing.fake_llm import SAFE, FakeLlm, Reply, Seen, unsafe
from livemod.testing.media import SIZE, fit, photo

FPS = 4.0
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "horse", "camera")
MARKER = (255, 0, 255)
MARKER_SIDE = 90
"""Pixels of the marker square on a 640x360 frame (3.5 % of the picture)."""


@dataclass(frozen=True, slots=True)
class Window:
    stream: int
    start_s: float
    end_s: float


def marked(image: Image, rng: random.Random) -> Image:
    out = image.copy()
    x = rng.randrange(0, SIZE[0] - MARKER_SIDE)
    y = rng.randrange(0, SIZE[1] - MARKER_SIDE)
    out[y : y + MARKER_SIDE, x : x + MARKER_SIDE] = MARKER
    return out


def sees_marker(seen: Seen) -> Reply:
    """The stand-in's judgement: a marker anywhere in the image is hate."""
    for data in seen.jpegs():
        bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
        b, g, r = (bgr[:, :, i].astype(np.int16) for i in range(3))
        magenta = (r > 200) & (b > 200) & (g < 70)
        if float(magenta.mean()) > 0.005:
            return Reply(verdict=unsafe("hate", "review", 0.85))
    return Reply(verdict=dict(SAFE))


def windows_for(streams: int, seconds: float, rng: random.Random) -> list[Window]:
    out = []
    for s in range(streams):
        t = rng.uniform(20.0, 300.0)
        while t < seconds - 10.0:
            length = rng.uniform(10.0, 90.0)
            out.append(Window(s, round(t, 2), round(min(t + length, seconds), 2)))
            t += length + rng.uniform(300.0, 900.0)
    return out


class VirtualClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def run(config: Config, streams: int, seconds: float, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    pictures = [fit(photo(name), SIZE) for name in PHOTOS]
    windows = windows_for(streams, seconds, rng)
    marked_pictures = [marked(p, rng) for p in pictures]
    policy = load_policy(config.policy)
    engine = VoteEngine(policy)
    clock = VirtualClock()
    starts: list[tuple[int, float, str, tuple[str, ...]]] = []
    async with FakeLlm() as llm, aiohttp.ClientSession() as http:
        llm.responder = sees_marker
        cfg = config.model_copy(
            update={
                "llm": LlmConfig(
                    **{
                        **config.llm.model_dump(),
                        "base_url": llm.base_url,
                        "model": "stand-in",
                        # Its token bucket would sleep in real time on the virtual clock;
                        # at 5 a second it is far above the sweep's own budget anyway.
                        "rate_per_s": 0,
                    }
                )
            }
        )
        guard = GuardedLlm(
            cfg.llm, clock=clock, rng=random.Random(seed), on_change=lambda old, new: None
        )
        guard.attach(LlmClient(http, cfg.llm, categories=list(policy.categories)))
        sweep = LlmSweep(cfg, clock=clock)
        sweep.attach(guard)
        sweep.open(policy.categories, lambda sid: engine.suspicious(f"u{sid}:r"))
        by_stream: dict[int, list[Window]] = {}
        for w in windows:
            by_stream.setdefault(w.stream, []).append(w)
        shot = [rng.randrange(len(pictures)) for _ in range(streams)]
        started = time.perf_counter()
        step = 1.0 / FPS
        ticks = int(seconds * FPS)
        for tick in range(ticks):
            t = tick * step
            clock.now = t
            for s in range(streams):
                if tick % int(8 * FPS) == 0:  # a cut every 8 s
                    shot[s] = rng.randrange(len(pictures))
                inside = any(w.start_s <= t < w.end_s for w in by_stream.get(s, ()))
                image = marked_pictures[shot[s]] if inside else pictures[shot[s]]
                frame = VideoFrame(str(s), tick, t, t, image)
                result = await sweep.analyze(frame)
                analysis = FrameAnalysis(frame, result.signals, result.scores, 0.0, t)
                for d in engine.update(f"u{s}:r", analysis):
                    if d.state == "start":
                        starts.append((s, d.media_time_s, d.category, d.sources))
            await sweep.settle()
        wall_s = time.perf_counter() - started
        await sweep.stop()
        sizes = [len(json.dumps(seen.body)) for seen in llm.seen]
    caught = []
    for w in windows:
        hit = next(
            (a for a in starts if a[0] == w.stream and w.start_s <= a[1] <= w.end_s + 1.0), None
        )
        caught.append((w, hit))
    outside = [
        a
        for a in starts
        if not any(w.stream == a[0] and w.start_s <= a[1] <= w.end_s + 1.0 for w in windows)
    ]
    hours = streams * seconds / 3600.0
    interval = cfg.llm.sweep_interval_s

    def recall(rows: Sequence[tuple[Window, Any]]) -> float | None:
        return round(sum(1 for _, h in rows if h) / len(rows), 3) if rows else None

    short = [(w, h) for w, h in caught if w.end_s - w.start_s < interval]
    long = [(w, h) for w, h in caught if w.end_s - w.start_s >= interval]
    exposure = [h[1] - w.start_s for w, h in caught if h]
    return {
        "streams": streams,
        "simulated_s": seconds,
        "stream_hours": round(hours, 3),
        "llm_calls": len(sizes),
        "calls_per_stream_hour": round(len(sizes) / hours, 1) if hours else None,
        "request_bytes_mean": round(float(np.mean(sizes))) if sizes else 0,
        "results": dict(sweep.results),
        "missed_looks": dict(sweep.plan.skipped),
        "windows": len(windows),
        "recall_on_what_the_llm_sees": recall(caught),
        f"recall_windows_under_{interval:g}s": recall(short),
        f"recall_windows_{interval:g}s_or_longer": recall(long),
        "exposure_s": _pct(exposure),
        "action_kinds": sorted({f"{a[2]} from {'+'.join(a[3])}" for a in starts}),
        "action_starts": len(starts),
        "action_starts_outside_windows": len(outside),
        "wall_s": round(wall_s, 1),
    }


def _pct(values: Sequence[float]) -> dict[str, float | int]:
    if not values:
        return {"n": 0}
    p50, p95 = np.percentile(np.asarray(values), [50, 95])
    return {"n": len(values), "p50": round(float(p50), 2), "p95": round(float(p95), 2)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (tests)")
    args = parser.parse_args(argv)
    logging.getLogger("livemod").setLevel(logging.ERROR)
    base = load_config(None)
    # A base_url is required by the config's own checks; the run points it at the fake.
    config = base.model_copy(
        update={
            "llm": LlmConfig(
                **{**base.llm.model_dump(), "base_url": "http://127.0.0.1:9/v1", "model": "x"}
            )
        }
    )
    settings = [(4, 180.0)] if args.quick else [(20, 3600.0), (100, 600.0)]
    runs = [asyncio.run(run(config, n, seconds, seed=7 + n)) for n, seconds in settings]
    c = config.llm
    report = {
        "benchmark": "livemod LLM sweep",
        "setting": {
            "quick": bool(args.quick),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "python": platform.python_version(),
            "llm": "STAND-IN: livemod.testing.fake_llm on 127.0.0.1, answers at once; calls "
            "an image hate when it holds the benchmark's marker square, else safe",
            "clock": "virtual; 4 samples a second per stream, no boost",
            "sweep": {
                "interval_s": c.sweep_interval_s,
                "suspicious_interval_s": c.sweep_suspicious_interval_s,
                "per_minute": c.sweep_per_minute,
                "concurrency": c.sweep_concurrency,
                "frames": c.sweep_frames,
                "hold_s": c.sweep_hold_s,
                "categories": list(c.sweep_categories),
            },
        },
        "runs": runs,
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
