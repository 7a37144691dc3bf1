"""The moderated relay: exposure, over-treatment, delay exactness, CPU per stream.

Setting: a 640x360, 25 fps clip with a 440 Hz tone, whose every frame carries its
index as a barcode (tests/relay/marked.py), showing a mix of violations: a photo in a
box (regional blur), the photo in a box under a non-regional category (whole-picture
blur), the photo full frame (pause) and a spoken span (mute). The clip is decoded in
real time by ``AvSource`` with the relay as its tap; samples at 4 fps go through a
simulated analysis (fixed latency) and the policy's vote (k=3 of n=5, clear after 4
clean samples; speech decided 0.5 s after the words), whose decisions feed the relay
exactly as the session does. The HLS output is read back and judged by its pixels
and samples:

* exposure: frames of a violation's window that reached the output untreated, and
  tone blocks (20 ms) of a muted span that were heard (target 0);
* over-treatment: seconds of frames outside every window that were treated;
* delay: arrival to output per frame, p50/p95/p99, against ``delay_s``;
* CPU: process CPU seconds per stream-second of the relay (decode every frame,
  treat, encode H.264 + AAC), against ``ffmpeg -c copy`` (a plain delay/copy relay)
  and an ffmpeg libx264 re-encode of the same clip, measured in the same run; the
  full mode adds 720p and several streams at once (sustained: every stream's p99
  delay within 0.25 s of ``delay_s`` and no late frame).

    .venv/bin/python benchmarks/relay.py [--quick]
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from livemod.ingest.av_source import AvSource, SourceOptions
from livemod.messages import Decision, Region, VideoFrame
from livemod.relay.output import EncoderSettings
from livemod.relay.picture import slate
from livemod.relay.relay import Relay, RelaySettings
from livemod.sampling import FrameSampler
from tests.relay import marked

FPS_SAMPLE = 4.0
K, N, CLEAR = 3, 5, 4
ANALYSIS_LATENCY_S = 0.15
ASR_LAG_S = 0.5
REGION = marked.INSET_REGION


@dataclass(frozen=True)
class Violation:
    category: str
    action: str
    start: float
    end: float
    shown: str
    """inset, full, or audio"""
    regional: bool = False


MIX = [
    Violation("sexual", "blur", 1.5, 3.0, "inset", regional=True),
    Violation("weapons", "blur", 4.0, 5.0, "inset"),
    Violation("violence", "pause", 6.5, 7.5, "full"),
    Violation("harassment", "mute", 9.0, 9.8, "audio"),
]
MIX_S = 11.0


def mix(repeats: int) -> list[Violation]:
    return [
        Violation(v.category, v.action, v.start + r * MIX_S, v.end + r * MIX_S, v.shown, v.regional)
        for r in range(repeats)
        for v in MIX
    ]


@dataclass
class _Cat:
    window: deque[tuple[float, bool]] = field(default_factory=lambda: deque(maxlen=N))
    active: bool = False
    clean: int = 0


class Vote:
    """The policy's rolling vote over the ground truth, as the sampler sees it."""

    def __init__(self, violations: list[Violation]) -> None:
        self.violations = [v for v in violations if v.shown != "audio"]
        self.speech = [v for v in violations if v.shown == "audio"]
        self.cats: dict[str, _Cat] = {}

    def step(self, t: float) -> tuple[dict[str, tuple[Region, ...]], list[Decision]]:
        regions: dict[str, tuple[Region, ...]] = {}
        out: list[Decision] = []
        for name in dict.fromkeys(v.category for v in self.violations):
            mine = [v for v in self.violations if v.category == name]
            now = [v for v in mine if v.start <= t < v.end]
            v = now[0] if now else mine[0]
            cat = self.cats.setdefault(name, _Cat())
            hit = bool(now)
            if hit and v.regional:
                regions[v.category] = (REGION,)
            cat.window.append((t, hit))
            if cat.active and not hit:
                cat.clean += 1
                if cat.clean >= CLEAR:
                    cat.active, cat.clean = False, 0
                    cat.window.clear()
                    out.append(_decision(v, "stop", t))
            elif hit:
                cat.clean = 0
                hits = [s for s, h in cat.window if h]
                if not cat.active and len(hits) >= K:
                    cat.active = True
                    out.append(_decision(v, "start", hits[0], (REGION,) if v.regional else ()))
        for v in self.speech:
            if abs(t - (v.end + ASR_LAG_S)) < 0.125:
                out.append(_decision(v, "start", v.start, span=(v.start, v.end)))
            if abs(t - (v.end + ASR_LAG_S + 1.0)) < 0.125:
                out.append(_decision(v, "stop", t))
        return regions, out


def _decision(
    v: Violation,
    state: str,
    t: float,
    regions: tuple[Region, ...] = (),
    span: tuple[float, float] | None = None,
) -> Decision:
    return Decision(
        key="u:r",
        category=v.category,
        action=v.action,  # type: ignore[arg-type]
        state=state,  # type: ignore[arg-type]
        confidence=0.9,
        tier="high",
        sources=("bench",),
        media_time_s=t,
        t_trigger=time.time(),
        regions=regions,
        span_s=span,
    )


class Analysis:
    """Delivers each sample's regions and decisions after a fixed latency."""

    def __init__(self, relay: Relay, vote: Vote, latency_s: float) -> None:
        self._relay, self._vote, self._latency = relay, vote, latency_s
        self._heap: list[tuple[float, int, float]] = []
        self._cond = threading.Condition()
        self._n = 0
        self._done = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def deliver(self, frame: VideoFrame) -> None:
        with self._cond:
            self._n += 1
            heapq.heappush(
                self._heap, (time.monotonic() + self._latency, self._n, frame.media_time_s)
            )
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._done = True
            self._cond.notify()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap and not self._done:
                    self._cond.wait()
                if not self._heap:
                    return
                due, _, t = self._heap[0]
                wait = due - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
            regions, decisions = self._vote.step(t)
            for d in decisions:
                self._relay.decide(d)
            self._relay.observe(t, regions)


def relay_once(clip: Path, out: Path, violations: list[Violation], delay_s: float) -> Relay:
    relay = Relay(
        "bench",
        RelaySettings(
            target=str(out),
            delay_s=delay_s,
            max_delay_s=delay_s + 5.0,
            lookahead_s=(N - 1) / FPS_SAMPLE,
            encoder=EncoderSettings(hls_list_size=0),  # keep every segment to judge
        ),
    )
    analysis = Analysis(relay, Vote(violations), ANALYSIS_LATENCY_S)
    sampler = FrameSampler(FPS_SAMPLE, FPS_SAMPLE)
    source = AvSource(
        "bench", SourceOptions(url=str(clip), realtime=True), sampler, analysis.deliver, tap=relay
    )
    relay.start()
    source.run()
    time.sleep(ANALYSIS_LATENCY_S * 2)
    analysis.close()
    relay.close()
    return relay


def judge(out: Path, violations: list[Violation]) -> dict[str, Any]:
    viewed = marked.view(str(out / "index.m3u8"))
    board = slate(marked.W, marked.H, "Stream paused")
    photo = marked.make_inset()
    x0, y0, x1, y1 = marked.INSET
    exposed: list[dict[str, Any]] = []
    over = 0
    frames = 0
    for (_, img), src_t in zip(viewed.frames, viewed.source_times(), strict=True):
        frames += 1
        index = round(src_t * marked.FPS)
        active = [v for v in violations if v.shown != "audio" and v.start <= src_t < v.end]
        readable = marked.read_index(img) == index
        box = img[y0:y1, x0:x1]
        slated = marked.psnr(img, board) > 30
        for v in active:
            if v.action == "pause":
                covered = slated
            elif v.regional:
                covered = marked.psnr(box, photo) < 24
            else:
                covered = not readable and marked.psnr(box, photo) < 24
            if not covered:
                exposed.append({"t": round(src_t, 3), "category": v.category})
        if not active and index >= 0:
            truth = marked.picture(index, None)
            treated = slated or not readable or marked.psnr(box, truth[y0:y1, x0:x1]) < 27
            over += int(treated)
    heard = 0
    offset = viewed.offset_s()
    for v in violations:
        if v.shown != "audio":
            continue
        t = v.start
        while t + 0.02 <= v.end:
            if (t % 1.0) < 0.48 and viewed.rms(t - offset, t - offset + 0.02) > 0.01:
                heard += 1
            t += 0.02
    return {
        "frames_out": frames,
        "exposed_frames": len(exposed),
        "exposed": exposed[:20],
        "exposed_audio_blocks_20ms": heard,
        "over_treated_s": round(over / marked.FPS, 3),
    }


def percentiles(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "p50": None, "p95": None, "p99": None}
    a = np.asarray(values)
    return {
        "n": len(values),
        "p50": round(float(np.percentile(a, 50)), 4),
        "p95": round(float(np.percentile(a, 95)), 4),
        "p99": round(float(np.percentile(a, 99)), 4),
    }


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def ffmpeg_cpu(clip: Path, args: list[str]) -> float:
    before = children_cpu()
    subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-loglevel",
            "error",
            "-i",
            str(clip),
            *args,
            "-f",
            "flv",
            "-y",
            os.devnull,
        ],
        check=True,
    )
    return children_cpu() - before


def concurrent(clip: Path, tmp: Path, streams: int, delay_s: float) -> dict[str, Any]:
    relays: list[Relay] = []
    threads = []

    def one(i: int) -> None:
        relays.append(relay_once(clip, tmp / f"c{streams}-{i}", [], delay_s))

    started_cpu = time.process_time()
    for i in range(streams):
        threads.append(threading.Thread(target=one, args=(i,)))
        threads[-1].start()
    for th in threads:
        th.join()
    cpu = time.process_time() - started_cpu
    p99s = [percentiles(list(r.delays))["p99"] or 0.0 for r in relays]
    late = sum(r.late_frames for r in relays)
    return {
        "streams": streams,
        "p99_delay_s_worst": round(max(p99s), 3),
        "late_frames": late,
        "cpu_s": round(cpu, 2),
        "sustained": max(p99s) <= delay_s + 0.25 and late == 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one short stream (seconds)")
    args = parser.parse_args()
    repeats = 1 if args.quick else 3
    delay_s = 2.0 if args.quick else 3.0
    duration = MIX_S * repeats
    violations = mix(repeats)
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        clip = tmp / "mix.mp4"
        marked.make(
            clip,
            duration,
            None,
            windows=[(v.start, v.end, v.shown) for v in violations if v.shown != "audio"],
        )
        cpu0 = time.process_time()
        wall0 = time.monotonic()
        relay = relay_once(clip, tmp / "hls", violations, delay_s)
        cpu = time.process_time() - cpu0
        wall = time.monotonic() - wall0
        judged = judge(tmp / "hls", violations)
        copy_cpu = ffmpeg_cpu(clip, ["-c", "copy"])
        x264_cpu = ffmpeg_cpu(
            clip,
            [
                "-c:v",
                "libx264",
                "-preset",
                "veryfast",
                "-tune",
                "zerolatency",
                "-threads",
                "1",
                "-c:a",
                "aac",
            ],
        )
        status = relay.status()
        per_stream = cpu / duration
        result = {
            "setting": {
                "machine": {
                    "cpu_count": os.cpu_count(),
                    "platform": platform.platform(),
                    "python": sys.version.split()[0],
                    "loadavg_1m_at_start": round(os.getloadavg()[0], 2),
                },
                "clip": {"resolution": "640x360", "fps": marked.FPS, "duration_s": duration},
                "violations": len(violations),
                "sampling_fps": FPS_SAMPLE,
                "vote": {"k": K, "n": N, "clear_after": CLEAR},
                "analysis_latency_s": ANALYSIS_LATENCY_S,
                "delay_s": delay_s,
                "encoder": "libx264 veryfast zerolatency, 1 thread, crf 23; aac 128k",
                "quick": args.quick,
            },
            "exposure": judged,
            "delay_s": percentiles(list(relay.delays)),
            "relay": {
                k: status[k]
                for k in (
                    "frames_in",
                    "frames_out",
                    "frames_treated",
                    "holds",
                    "late_frames",
                    "late_decisions",
                    "encode_ms_per_frame",
                )
            },
            "cpu": {
                "relay_cpu_s_per_stream_s": round(per_stream, 4),
                "ffmpeg_copy_cpu_s_per_stream_s": round(copy_cpu / duration, 4),
                "ffmpeg_x264_cpu_s_per_stream_s": round(x264_cpu / duration, 4),
                "ratio_relay_to_copy": round(per_stream / max(copy_cpu / duration, 1e-6), 1),
                "ratio_relay_to_ffmpeg_x264": round(per_stream / max(x264_cpu / duration, 1e-6), 2),
                "streams_by_cpu_estimate": int((os.cpu_count() or 1) / max(per_stream, 1e-6)),
                "wall_s": round(wall, 2),
            },
        }
        if not args.quick:
            clip720 = tmp / "mix720.mp4"
            subprocess.run(
                [
                    "ffmpeg",
                    "-nostdin",
                    "-loglevel",
                    "error",
                    "-i",
                    str(clip),
                    "-vf",
                    "scale=1280:720",
                    "-c:v",
                    "libx264",
                    "-preset",
                    "veryfast",
                    "-c:a",
                    "copy",
                    "-y",
                    str(clip720),
                ],
                check=True,
            )
            cpu0 = time.process_time()
            relay_once(clip720, tmp / "hls720", [], delay_s)
            cpu720 = (time.process_time() - cpu0) / duration
            result["cpu"]["relay_720p_cpu_s_per_stream_s"] = round(cpu720, 4)
            result["cpu"]["ffmpeg_copy_720p_cpu_s_per_stream_s"] = round(
                ffmpeg_cpu(clip720, ["-c", "copy"]) / duration, 4
            )
            result["sustained_360p"] = [concurrent(clip, tmp, n, delay_s) for n in (2, 4)]
            result["sustained_720p"] = [concurrent(clip720, tmp, n, delay_s) for n in (1, 2)]
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
