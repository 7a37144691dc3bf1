"""Shared harness of the latency and overload benchmarks: clips with known-bad inserts
at known times, N real-time streams through the daemon's own parts, and the naive
baseline (every frame, one thread, no sampling, no drops) fed the same load.

The streams run in this process exactly as in ``livemod serve``: the daemon's
analysis service (same analyzers, workers, batching), vote engine, event hub and
SQLite store; one decode thread per stream pacing the file in real time. Only the
HTTP and WebSocket servers are left out, which no frame passes through.
"""

from __future__ import annotations

import asyncio
import os
import platform
import queue
import resource
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnxruntime as ort

from livemod.app.daemon import Daemon, build_analyzers
from livemod.config import Config
from livemod.ingest.av_source import AvSource, SourceOptions
from livemod.messages import FrameAnalysis, VideoFrame
from livemod.pipeline.session import Session, SessionInfo
from livemod.sampling import FrameSampler
from livemod.testing import media as testmedia

SOURCE_FPS = 25
SIZE = testmedia.SIZE
INSERT_S = 1.0
# Onsets off the 0.25 s sampling grid by different amounts, so the wait for the next
# sample after an onset varies as it would for real content.
ONSET_PHASES = (0.04, 0.12, 0.20, 0.08, 0.16, 0.24)


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": sys.version.split()[0],
        "onnxruntime": ort.__version__,
        "loadavg_1m_at_start": round(load[0], 2) if load else None,
    }


def percentiles(values: Sequence[float], digits: int = 1) -> dict[str, float | int | None]:
    """p50/p95/p99/mean/max of ``values`` and how many there were."""
    if not values:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "mean": None, "max": None}
    arr = np.asarray(values, dtype=np.float64)
    p50, p95, p99 = np.percentile(arr, [50, 95, 99])
    return {
        "n": len(values),
        "p50": round(float(p50), digits),
        "p95": round(float(p95), digits),
        "p99": round(float(p99), digits),
        "mean": round(float(arr.mean()), digits),
        "max": round(float(arr.max()), digits),
    }


@dataclass(frozen=True, slots=True)
class Clip:
    path: Path
    duration_s: float
    onsets: tuple[float, ...]
    insert_s: float = INSERT_S

    def describe(self) -> dict[str, Any]:
        return {
            "duration_s": self.duration_s,
            "source_fps": SOURCE_FPS,
            "resolution": f"{SIZE[0]}x{SIZE[1]}",
            "codec": "H.264 (libx264 veryfast, zerolatency, GOP 50)",
            "known_bad_onsets_s": list(self.onsets),
            "known_bad_insert_s": self.insert_s,
        }

    def onset_before(self, media_time_s: float) -> float | None:
        """The insert a start event at ``media_time_s`` answers (None: a false positive)."""
        for onset in reversed(self.onsets):
            if onset - 0.05 <= media_time_s <= onset + self.insert_s + 0.05:
                return onset
        return None


def make_clip(folder: Path, inserts: int, name: str = "clip.mp4") -> tuple[Clip, Path]:
    """A clip with ``inserts`` one-second known-bad inserts, one every 4 s, benign
    pattern and photos between; and the known-bad folder that lists the picture."""
    bad = testmedia.photo(testmedia.KNOWN_BAD_PHOTO)
    known_bad = folder / "known_bad"
    known_bad.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(known_bad / "bad.png"), bad[:, :, ::-1])
    benign = [None, testmedia.photo("astronaut"), None, testmedia.photo("coffee"), None]
    segments: list[testmedia.Segment] = []
    onsets: list[float] = []
    frames = 0
    for i in range(inserts):
        target = 2.0 + 4.0 * i + ONSET_PHASES[i % len(ONSET_PHASES)]
        lead = round(target * SOURCE_FPS) - frames
        segments.append(testmedia.Segment(lead / SOURCE_FPS, benign[i % len(benign)]))
        frames += lead
        onsets.append(round(frames / SOURCE_FPS, 2))
        segments.append(testmedia.Segment(INSERT_S, bad))
        frames += round(INSERT_S * SOURCE_FPS)
    segments.append(testmedia.Segment(2.0, None))
    path = folder / name
    duration = testmedia.make_clip(path, segments, fps=SOURCE_FPS)
    return Clip(path, round(duration, 2), tuple(onsets)), known_bad


def make_config(
    workdir: Path,
    known_bad: Path,
    *,
    threads: int,
    workers: int,
    boost: bool = False,
    ocr: bool = False,
    vision: dict[str, Any] | None = None,
) -> Config:
    """The embedded defaults, with boost off so every stream is sampled at a true 4 fps
    (``boost``: keep the suspicious-content boost to 8 fps, as the daemon does), and
    OCR off unless ``ocr`` (the clips carry no text; it would only add its cost).
    ``vision``: more vision keys (providers, batch_size, batch_wait_ms, precision)."""
    # boost_fps = fps as well: a hit pulls the next sample in to the boost interval
    # even when boost_suspicious_s is 0.
    sampling: dict[str, float] = {"boost_initial_s": 0.0}
    if not boost:
        sampling.update(boost_suspicious_s=0.0, boost_fps=Config().sampling.fps)
    return Config.model_validate(
        {
            "known_bad": {"paths": [str(known_bad)]},
            "store": {"path": str(workdir / "bench.db")},
            "sampling": sampling,
            "vision": {"threads": threads, "workers": workers, **(vision or {})},
            "ingest": {"max_sessions": 1000},
            "ocr": {"enabled": ocr},
        }
    )


@dataclass(slots=True)
class LevelRun:
    """Raw results of N livemod streams over one clip."""

    streams: int
    analyzed_at: list[float] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    samples: int = 0
    drops: int = 0
    errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    cpu_s: float = 0.0


def cpu_seconds() -> float:
    """CPU time of this process, all threads (user + system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Harness:
    """The daemon's parts, built once and shared by every level of a benchmark."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.analyzers = build_analyzers(config)
        self.daemon = Daemon(config, self.analyzers)

    async def open(self) -> None:
        await self.daemon.store.open()

    async def close(self) -> None:
        self.daemon.analysis.close()
        await self.daemon.store.close()

    async def run_streams(self, clip: Clip, n: int, tag: str) -> LevelRun:
        """``n`` real-time streams of ``clip``, starts spread over one sampling period."""
        run = LevelRun(streams=n)
        d = self.daemon

        def record(analysis: FrameAnalysis) -> None:
            run.analyzed_at.append(analysis.t_analyzed)
            run.latencies_s.append(analysis.t_analyzed - analysis.frame.t_arrival)

        sessions = [
            Session(
                SessionInfo(
                    id=f"{tag}-{i}",
                    user_id=f"user{i}",
                    room_id=f"{tag}-room{i}",
                    url="file://" + str(clip.path),
                    realtime=True,
                ),
                self.config,
                d.analysis,
                d.engine,
                d.hub,
                on_analysis=record,
            )
            for i in range(n)
        ]
        period = 1.0 / self.config.sampling.fps

        async def one(i: int, session: Session) -> None:
            await asyncio.sleep(period * i / n)
            end = await session.run()
            if end.error:
                run.errors.append(end.error)

        cpu0, t0 = cpu_seconds(), time.monotonic()
        await asyncio.gather(*(one(i, s) for i, s in enumerate(sessions)))
        run.wall_s, run.cpu_s = time.monotonic() - t0, cpu_seconds() - cpu0
        for s in sessions:
            run.samples += s.samples
            run.drops += s.drops
            run.events.extend(e for e in s.actions if e.get("type") == "action")
        return run


def summarize_level(run: LevelRun, clip: Clip) -> dict[str, Any]:
    """Latency percentiles (ms), detection of the inserts, drops, CPU per stream."""
    starts = [e for e in run.events if e["state"] == "start" and e["category"] == "known_bad"]
    onset_ms: list[float] = []
    detected: set[tuple[str, float]] = set()
    for e in starts:
        onset = clip.onset_before(float(e["media_time_s"]))
        if onset is not None:
            onset_ms.append(float(e["latency_ms"]) + (float(e["media_time_s"]) - onset) * 1000.0)
            detected.add((e["stream_id"], onset))
    offered = run.samples + run.drops
    video_s = run.streams * clip.duration_s
    return {
        "streams": run.streams,
        "arrival_to_analyzed_ms": percentiles([v * 1000.0 for v in run.latencies_s]),
        "event_latency_ms": percentiles([float(e["latency_ms"]) for e in run.events]),
        "event_latency_ms_start": percentiles([float(e["latency_ms"]) for e in starts]),
        "onset_to_event_ms": percentiles(onset_ms),
        "inserts_detected": f"{len(detected)}/{run.streams * len(clip.onsets)}",
        "other_events": sorted(
            {f"{e['action']}:{e['category']}" for e in run.events if e["category"] != "known_bad"}
        ),
        "samples_analyzed": run.samples,
        "samples_per_stream_s": round(run.samples / video_s, 2) if video_s else None,
        "drops": run.drops,
        "drop_rate": round(run.drops / offered, 4) if offered else 0.0,
        "cpu_cores_used": round(run.cpu_s / run.wall_s, 3) if run.wall_s else None,
        "cpu_ms_per_stream_s": round(1000.0 * run.cpu_s / video_s, 1) if video_s else None,
        "wall_s": round(run.wall_s, 2),
        "errors": run.errors,
    }


def sustained(level: dict[str, Any], p95_ms: float = 1000.0, max_drop_rate: float = 0.05) -> bool:
    p95 = level["arrival_to_analyzed_ms"]["p95"]
    return (
        not level["errors"]
        and p95 is not None
        and p95 < p95_ms
        and level["drop_rate"] < max_drop_rate
    )


@dataclass(slots=True)
class BaselineRun:
    streams: int
    analyzed_at: list[float] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)
    frames_offered: int = 0
    frames_analyzed: int = 0
    backlog_left: int = 0
    stopped_early: str | None = None
    load_s: float = 0.0
    wall_s: float = 0.0
    cpu_s: float = 0.0


def run_baseline(
    harness: Harness,
    clip: Clip,
    n: int,
    *,
    drain_cap_s: float,
    backlog_cap: int = 1500,
    load_cap_s: float | None = None,
) -> BaselineRun:
    """The naive pipeline under the same real-time load: every decoded frame of ``n``
    paced streams goes into one unbounded queue, one thread analyzes them in order.

    It never drops, so its latency grows while it is overloaded. To bound the run,
    the feed stops at ``load_cap_s`` or when ``backlog_cap`` frames wait (memory),
    and the backlog is worked off for at most ``drain_cap_s``; what is left is
    reported, not hidden."""
    run = BaselineRun(streams=n)
    frames: queue.SimpleQueue[VideoFrame | None] = queue.SimpleQueue()
    stop_feed = threading.Event()
    lock = threading.Lock()

    def deliver(frame: VideoFrame) -> None:
        with lock:
            run.frames_offered += 1
        frames.put(frame)
        if frames.qsize() >= backlog_cap and not stop_feed.is_set():
            run.stopped_early = f"backlog reached {backlog_cap} frames"
            stop_feed.set()

    sources = [
        AvSource(
            f"baseline-{i}",
            SourceOptions(url="file://" + str(clip.path), realtime=True),
            FrameSampler(1000.0, 1000.0),  # admits every frame: no sampling
            deliver,
        )
        for i in range(n)
    ]

    def worker() -> None:
        while True:
            frame = frames.get()
            if frame is None:
                return
            result = harness.daemon.analysis.analyze_sync(frame)
            run.analyzed_at.append(result.t_analyzed)
            run.latencies_s.append(result.t_analyzed - frame.t_arrival)
            run.frames_analyzed += 1

    cpu0, t0 = cpu_seconds(), time.monotonic()
    analyst = threading.Thread(target=worker, name="baseline-analysis")
    analyst.start()
    feeders = [
        threading.Thread(target=s.run, name=f"baseline-decode-{i}") for i, s in enumerate(sources)
    ]
    for f in feeders:
        f.start()
    deadline = t0 + load_cap_s if load_cap_s is not None else None
    while any(f.is_alive() for f in feeders):
        if stop_feed.wait(0.05) or (deadline is not None and time.monotonic() > deadline):
            if not stop_feed.is_set():
                run.stopped_early = f"load stopped after {load_cap_s} s"
            for s in sources:
                s.stop()
            break
    for f in feeders:
        f.join()
    run.load_s = time.monotonic() - t0
    drain_until = time.monotonic() + drain_cap_s
    while frames.qsize() and time.monotonic() < drain_until:
        time.sleep(0.05)
    run.backlog_left = frames.qsize()
    # Abandon what is left: empty the queue, then stop the worker.
    while True:
        try:
            frames.get_nowait()
        except queue.Empty:
            break
    frames.put(None)
    analyst.join()
    run.wall_s, run.cpu_s = time.monotonic() - t0, cpu_seconds() - cpu0
    return run


def summarize_baseline(run: BaselineRun) -> dict[str, Any]:
    fps = run.frames_analyzed / run.wall_s if run.wall_s else 0.0
    return {
        "streams": run.streams,
        "what": "every decoded frame, one analysis thread, all analyzers in sequence, no drops",
        "arrival_to_analyzed_ms": percentiles([v * 1000.0 for v in run.latencies_s]),
        "frames_offered": run.frames_offered,
        "frames_analyzed": run.frames_analyzed,
        "frames_left_unanalyzed": run.backlog_left,
        "stopped_early": run.stopped_early,
        "analyzed_fps": round(fps, 2),
        "capacity_streams": round(fps / SOURCE_FPS, 3),
        "cpu_ms_per_video_s": (
            round(1000.0 * run.cpu_s * SOURCE_FPS / run.frames_analyzed, 1)
            if run.frames_analyzed
            else None
        ),
        "load_s": round(run.load_s, 2),
        "wall_s": round(run.wall_s, 2),
    }


def windows(
    analyzed_at: Sequence[float], latencies_s: Sequence[float], width_s: float
) -> list[dict[str, Any]]:
    """Arrival→analyzed latency per window of run time (when each sample was analyzed):
    does it stay flat or grow?"""
    if not analyzed_at:
        return []
    t0 = min(analyzed_at)
    buckets: dict[int, list[float]] = {}
    for t, lat in zip(analyzed_at, latencies_s, strict=True):
        buckets.setdefault(int((t - t0) // width_s), []).append(lat * 1000.0)
    return [{"from_s": round(k * width_s, 1), **percentiles(v)} for k, v in sorted(buckets.items())]


def slope_ms_per_s(analyzed_at: Sequence[float], latencies_s: Sequence[float]) -> float | None:
    """Least-squares growth of latency over run time (0: bounded; near 1000: the
    pipeline falls behind real time by nearly a second every second)."""
    if len(analyzed_at) < 3:
        return None
    x = np.asarray(analyzed_at, dtype=np.float64)
    y = np.asarray(latencies_s, dtype=np.float64) * 1000.0
    slope = np.polyfit(x - x.min(), y, 1)[0]
    return round(float(slope), 1)
