"""Capacity: real-time 360p streams a real daemon sustains with its embedded defaults,
with change gating, the NudeNet cascade and adaptive rates (``capacity``) against the
same daemon with all three off (today's pipeline), on the same mix, in the same run.

The mix, 640x360 H.264 at 25 fps (GOP 2 s; zerolatency, no B-frames, or ``--bframes N``
as OBS sends by default), generated from pictures the installed packages ship (nothing
downloaded):

- ``talking_head``: a real photograph of a person (scikit-image's astronaut and
  camera man, matplotlib's Grace Hopper) whose head and shoulders sway a few pixels
  and whose mouth area flickers, on a still background;
- ``gameplay``: a real texture (brick, grass, gravel) scrolling at 80 px/s, three
  sprites moving across it and a HUD bar whose score changes;
- ``slideshow``: a screen share of pages, text and photographs, a slide every 5 s,
  a mouse cursor moving over it;
- ``real_clip``: the frames of scikit-image's real video GIF played as video, looped;

each with known-bad inserts (the listed picture, full frame or fitted with borders)
of 1.5 s at known times, onsets off the sampling grid by different amounts.

Every stream is started fresh through ``POST /v1/streams`` (a file read in real time)
on a real ``livemod serve`` (embedded defaults: the full vision set, OCR on, the
first-minute boost; ASR off, as the latency benchmark has it). N streams are
sustained when every stream started, every insert was caught, no sample was dropped
and the violation onset -> action p95 is at most 1 s. Levels rise until two in a row
fail (``--all-levels``: every level).

Per level: onset -> action (the action's ``latency_ms`` plus the media time from the
onset to its first voting sample), recall with the cause of each miss, drops,
samples, fresh / reused samples, and CPU per stream-second: the daemon process's CPU
time; per part of the pipeline the CPU seconds of the threads serving it
(``livemod_thread_cpu_seconds_total``: models, OCR, ingest (decode and RGB conversion),
the event loop (gates, votes, events), ...), which is what sizing needs; and the work
seconds the daemon's own histograms counted (decode, RGB conversion, change measure,
each model, OCR: wall time, waits for the cores and the GIL included).

``--talking LEVELS`` measures talking streams instead, on one daemon with the embedded
defaults, ASR on: each stream a talking head (known-bad inserts as above) with an AAC
track of espeak-ng speech (benign sentences, "I will kill you tonight." every ~10 s, a
different voice per stream). Per level: threats muted, end of the threat sentence ->
``mute`` (the action's ``latency_ms`` plus the media time from the sentence's end to its
deciding sample, as for the inserts), transcript lag (each commit's, from the daemon's
DEBUG log; and ``livemod_asr_lag_seconds`` bucket deltas), Whisper CPU per second of
speech (``livemod_asr_cpu_seconds_total``), the daemon's CPU per stream-second, skipped
ASR windows, and the video side as above. N talking streams are sustained when all
started, every threat was muted, lag p95 <= 2 s, mute p95 <= 1.5 s (<= 1.0 s at one
stream), no ASR window was skipped and no sample dropped. ``--quick --talking 1``: one
15 s stream.

Prints one JSON document.

    .venv/bin/python benchmarks/capacity.py [--quick] [--baseline-levels 1,2,3]
        [--gated-levels 4,8,12] [--seconds 24] [--all-levels]
    .venv/bin/python benchmarks/capacity.py --talking 1,2,4,6 [--talking-seconds 30]
        [--all-levels]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import cv2
import numpy as np
import websockets
from loadgen import machine, percentiles
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.feed import Feed
from livemod.messages import AUDIO_RATE, Image
from livemod.metrics import parse_stat
from livemod.testing import media as testmedia
from livemod.testing import speech as ts
from livemod.testing.corpus import Picture, Window, benign_pictures, with_inserts, write_clip
from tests.conftest import DaemonProcess

FPS = 25
SIZE = testmedia.SIZE
INSERT_S = 1.5
KINDS = ("talking_head", "gameplay", "slideshow", "real_clip")
PHASES = (0.04, 0.16, 0.28, 0.10, 0.22, 0.34, 0.07, 0.19)
OFF = {
    "LIVEMOD_CAPACITY__GATING__ENABLED": "false",
    "LIVEMOD_CAPACITY__CASCADE__ENABLED": "false",
    "LIVEMOD_CAPACITY__RATES__ENABLED": "false",
    "LIVEMOD_CAPACITY__BACKGROUND_STAGES": "false",
}
PREVIOUS = {
    "first": {
        "LIVEMOD_CAPACITY__GATING__REUSE_ALWAYS": "false",
        "LIVEMOD_CAPACITY__BACKGROUND_STAGES": "false",
    },
    "third": {
        "LIVEMOD_CAPACITY__GATING__RETURN_REFS": "0",
        "LIVEMOD_CAPACITY__CASCADE__ON_CUT": "true",
        "LIVEMOD_INGEST__THREADED_PIXELS": "0",
        "LIVEMOD_OCR__NICE": "0",
    },
    "fourth": {
        "LIVEMOD_CAPACITY__CASCADE__SETTLE_SCORES": "{}",
        "LIVEMOD_INGEST__FAST_DECODE": "false",
    },
}
"""Earlier gated pipelines ``--prev`` climbs beside the current one: ``first`` as first
built (known-bad hashed on every sample, OCR awaited); ``third`` after the third pass
(no cut-back reuse, NudeNet on every scene cut, FFmpeg's frame threads for every stream,
OCR at the daemon's priority; its thumbnails are this pass's, which are not switchable);
``fourth`` after the fourth (the models run beside known-bad matching, not after it; every
picture decoded)."""
PERSONS = ("astronaut", "camera", "grace_hopper")
PAGES = ("page", "text", "coffee", "chelsea", "clock", "hubble_deep_field")


def _cover(image: Image) -> Image:
    """Scale and crop a picture to fill the 16:9 frame."""
    w, h = SIZE
    ih, iw = image.shape[:2]
    scale = max(w / iw, h / ih)
    big = cv2.resize(image, (round(iw * scale) + 1, round(ih * scale) + 1))
    y, x = (big.shape[0] - h) // 2, (big.shape[1] - w) // 2
    return np.ascontiguousarray(big[y : y + h, x : x + w])


def _pictures() -> dict[str, Image]:
    return {p.name: p.image for p in benign_pictures()}


def talking_head(pictures: dict[str, Image], seconds: float, seed: int) -> Iterator[Any]:
    name = PERSONS[seed % len(PERSONS)]
    base = _cover(pictures.get(name, testmedia.photo("astronaut")))
    pic = Picture(name, "photo", base)
    x0, y0, bw, bh = 220, 30, 200, 250  # head and shoulders
    for i in range(round(seconds * FPS)):
        t = i / FPS
        img = base.copy()
        dx = round(3 * np.sin(2 * np.pi * 0.4 * t + seed))
        dy = round(2 * np.sin(2 * np.pi * 0.7 * t))
        img[y0 + 4 : y0 + bh - 4, x0 + 4 : x0 + bw - 4] = base[
            y0 + 4 - dy : y0 + bh - 4 - dy, x0 + 4 - dx : x0 + bw - 4 - dx
        ]
        # Speech: the mouth area darkens and lightens at syllable rate.
        mouth = img[y0 + 150 : y0 + 170, x0 + 80 : x0 + 120].astype(np.int16)
        mouth += int(18 * np.sin(2 * np.pi * 4.0 * t))
        img[y0 + 150 : y0 + 170, x0 + 80 : x0 + 120] = np.clip(mouth, 0, 255)
        yield t, pic, img


def gameplay(pictures: dict[str, Image], seconds: float, seed: int) -> Iterator[Any]:
    texture = pictures[("brick", "grass", "gravel")[seed % 3]]
    tile = cv2.resize(texture, (SIZE[1], SIZE[1]))
    strip = np.concatenate([tile] * (SIZE[0] // SIZE[1] + 2), axis=1)
    pic = Picture("gameplay", "drawn", strip)
    rng = np.random.default_rng(seed)
    sprites = rng.uniform(0, 1, (3, 4))
    for i in range(round(seconds * FPS)):
        t = i / FPS
        off = int(80 * t) % SIZE[1]
        img = np.ascontiguousarray(strip[:, off : off + SIZE[0]])
        for k, (sx, sy, vx, vy) in enumerate(sprites):
            x = int((sx * SIZE[0] + (vx - 0.5) * 300 * t) % (SIZE[0] - 40))
            y = int((sy * (SIZE[1] - 80) + (vy - 0.5) * 200 * t) % (SIZE[1] - 80)) + 40
            img[y : y + 32, x : x + 32] = ((255, 60, 60), (60, 255, 60), (60, 60, 255))[k]
        img[:28] = (20, 20, 30)
        score = int(t * 7)
        img[8:20, 10 : 10 + min(600, 4 * (score % 150))] = (240, 200, 0)
        yield t, pic, img


def slideshow(pictures: dict[str, Image], seconds: float, seed: int) -> Iterator[Any]:
    slides = [_cover(pictures[n]) for n in PAGES if n in pictures]
    for i in range(round(seconds * FPS)):
        t = i / FPS
        k = (int(t // 5.0) + seed) % len(slides)
        img = slides[k].copy()
        cx = int(300 + 120 * np.sin(0.5 * t + seed))
        cy = int(180 + 60 * np.cos(0.3 * t))
        img[cy : cy + 14, cx : cx + 10] = (255, 255, 255)  # the mouse cursor
        yield t, Picture(PAGES[k % len(PAGES)], "photo", slides[k]), img


def real_clip(pictures: dict[str, Image], seconds: float, seed: int) -> Iterator[Any]:
    frames = [
        _cover(img) for name, img in sorted(pictures.items()) if name.startswith("no_time_for")
    ]
    pic = Picture("no_time_for_that", "video", frames[0])
    for i in range(round(seconds * FPS)):
        t = i / FPS
        yield t, pic, frames[(int(t * 10) + seed) % len(frames)]


GENERATORS = {
    "talking_head": talking_head,
    "gameplay": gameplay,
    "slideshow": slideshow,
    "real_clip": real_clip,
}


def _known_bad(folder: Path) -> tuple[Image, Path]:
    """The known-bad picture and a folder listing it."""
    bad = testmedia.photo(testmedia.KNOWN_BAD_PHOTO)
    known_bad = folder / "known_bad"
    known_bad.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(known_bad / "bad.png"), bad[:, :, ::-1])
    return bad, known_bad


def _insert_windows(n: int, seconds: float) -> tuple[list[float], list[Window]]:
    """Clip ``n``'s insert onsets (off the sampling grid, on frame times) and windows."""
    phase = PHASES[n % len(PHASES)]
    starts = [4.0 + phase] if seconds < 16 else [6.0 + phase, 15.0 + phase]
    onsets = [round(round(s * FPS) / FPS, 2) for s in starts]
    windows = [
        Window("known_bad", s, s + INSERT_S, ("full", "fit")[(n + j) % 2])
        for j, s in enumerate(onsets)
    ]
    return onsets, windows


def make_mix(
    folder: Path, seconds: float, variants: int, bframes: int = 0
) -> tuple[list[dict[str, Any]], Path]:
    """The clips of the mix (each kind in ``variants`` phases) and the known-bad folder;
    ``bframes``: B-frames in a row (0: x264 zerolatency, none)."""
    pictures = _pictures()
    bad, known_bad = _known_bad(folder)
    clips: list[dict[str, Any]] = []
    for v in range(variants):
        for k, kind in enumerate(KINDS):
            n = v * len(KINDS) + k
            onsets, windows = _insert_windows(n, seconds)
            path = folder / f"{kind}-{v}.mp4"
            frames = GENERATORS[kind](pictures, seconds, n)
            duration = write_clip(path, with_inserts(frames, windows, bad), FPS, bframes=bframes)
            clips.append(
                {
                    "kind": kind,
                    "path": str(path),
                    "duration_s": round(duration, 2),
                    "onsets_s": onsets,
                    "variants": [w.variant for w in windows],
                }
            )
    return clips, known_bad


def _metric_sums(text: str) -> dict[str, float]:
    """Histogram sums (work seconds) per stage and model, and counters we report."""
    out: dict[str, float] = {}
    pattern = re.compile(
        r"^(livemod_stage_latency_seconds_sum|livemod_model_inference_seconds_sum|"
        r"livemod_stage_latency_seconds_bucket|livemod_stage_latency_seconds_count|"
        r"livemod_samples_gated_total|livemod_drops_total|livemod_cascade_decisions_total|"
        r"livemod_rate_decisions_total|livemod_thread_cpu_seconds_total|livemod_ocr_runs_total)"
        r"(?:\{([^}]*)\})? ([0-9.e+-]+)$"
    )
    for line in text.splitlines():
        m = pattern.match(line)
        if m:
            out[f"{m.group(1)}{{{m.group(2) or ''}}}"] = float(m.group(3))
    return out


def _cpu_s(pid: int) -> float:
    """The daemon process's CPU seconds so far (user plus system)."""
    return parse_stat(Path(f"/proc/{pid}/stat").read_text(), os.sysconf("SC_CLK_TCK"))


def _parts(before: dict[str, float], after: dict[str, float], stream_s: float) -> dict[str, Any]:
    parts: dict[str, float] = {}
    for key, value in after.items():
        delta = value - before.get(key, 0.0)
        m = re.match(r"livemod_stage_latency_seconds_sum\{stage=\"(\w+)\"\}", key)
        if m and m.group(1) in ("decode", "sample", "convert", "gate", "ocr"):
            # The hand-off of a sample and its deferred conversion are one part.
            renamed = {"sample": "conversion", "convert": "conversion", "gate": "change_measure"}
            name = renamed.get(m.group(1), m.group(1))
            parts[name] = parts.get(name, 0.0) + delta
        m = re.match(r"livemod_model_inference_seconds_sum\{model=\"([^\"]+)\"\}", key)
        if m:
            parts[m.group(1)] = delta
    return {k: round(1000.0 * v / stream_s, 2) for k, v in sorted(parts.items())}


def _beside(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """Work run beside the streams (background refreshes, scheduled detector runs): how
    many, and their wait from launch to result (mean; p50 and p95 as the upper edge of
    the histogram bucket that holds them)."""
    stage = 'stage="beside"'
    count = sum(_deltas(before, after, "livemod_stage_latency_seconds_count{" + stage).values())
    total = sum(_deltas(before, after, "livemod_stage_latency_seconds_sum{" + stage).values())
    edges: list[tuple[float, float]] = []
    for labels, delta in _deltas(before, after, "livemod_stage_latency_seconds_bucket").items():
        m = re.search(r'le="([^"]+)"', labels)
        if stage in labels and m:
            edges.append((float(m.group(1)), delta))
    edges.sort()

    def upper(q: float) -> float | None:
        le = next((le for le, n in edges if count and n >= q * count), math.inf)
        return 1000.0 * le if math.isfinite(le) else None

    return {
        "n": round(count),
        "mean_ms": round(1000.0 * total / count, 1) if count else None,
        "p50_le_ms": upper(0.5),
        "p95_le_ms": upper(0.95),
    }


def _counts(before: dict[str, float], after: dict[str, float], prefix: str) -> dict[str, int]:
    """Counter deltas by label set (``{outcome="fresh"}``), rounded, the zeros left out."""
    out: dict[str, int] = {}
    for labels, delta in _deltas(before, after, prefix).items():
        if round(delta):
            out[labels] = round(delta)
    return out


def _deltas(before: dict[str, float], after: dict[str, float], prefix: str) -> dict[str, float]:
    """Counter deltas by label set, unrounded."""
    return {
        key[len(prefix) :]: value - before.get(key, 0.0)
        for key, value in after.items()
        if key.startswith(prefix)
    }


THREAD_CPU = "livemod_thread_cpu_seconds_total"


async def _metrics(http: aiohttp.ClientSession, base: str) -> dict[str, float]:
    async with http.get(f"{base}/metrics") as resp:
        return _metric_sums(await resp.text())


async def _play(
    http: aiohttp.ClientSession,
    base: str,
    feed: Feed,
    clips: list[dict[str, Any]],
    n: int,
    prefix: str,
    stagger_s: float = 0.0,
) -> tuple[list[tuple[str, dict[str, Any]]], dict[str, Any]]:
    """Start ``n`` streams of ``clips`` through ``POST /v1/streams`` at once (or spread
    evenly over ``stagger_s``), wait until each has ended (or a minute past the longest
    clip) and read their summaries."""
    streams: list[tuple[str, dict[str, Any]]] = []
    for i in range(n):
        if i and stagger_s > 0:
            await asyncio.sleep(stagger_s / n)
        clip = clips[i % len(clips)]
        body = {"url": clip["path"], "user_id": f"{prefix}{n}-{i}", "room_id": f"r{n}-{i}"}
        async with http.post(f"{base}/v1/streams", json={**body, "realtime": True}) as resp:
            data = await resp.json()
            if resp.status == 201:
                streams.append((data["id"], clip))
    ended: set[str] = set()
    deadline = time.monotonic() + max(c["duration_s"] for c in clips) + 60.0
    while len(ended) < len(streams) and time.monotonic() < deadline:
        for _, e in feed.events:
            if e.get("type") == "session" and e.get("state") in ("ended", "error"):
                ended.add(e["stream_id"])
        await asyncio.sleep(0.2)
    summaries = {}
    for sid, _ in streams:
        async with http.get(f"{base}/v1/streams/{sid}") as resp:
            summaries[sid] = await resp.json()
    return streams, summaries


async def run_level(
    daemon: DaemonProcess,
    clips: list[dict[str, Any]],
    n: int,
    timeline_s: float = 0.0,
    stagger_s: float = 0.0,
) -> dict[str, Any]:
    """N streams of the mix started at once; waits for all to end. ``timeline_s`` > 0:
    the daemon's drops and queues are also read that often (a diagnostic: each read
    costs the daemon a metrics page)."""
    assert daemon.proc is not None
    base = daemon.base
    async with websockets.connect(daemon.ws) as ws, aiohttp.ClientSession() as http:
        feed = Feed(ws)
        before, cpu0, t0 = await _metrics(http, base), _cpu_s(daemon.proc.pid), time.time()
        line: list[list[float]] = []
        watch = asyncio.create_task(_timeline(http, base, timeline_s, line)) if timeline_s else None
        try:
            streams, summaries = await _play(http, base, feed, clips, n, "u", stagger_s)
        finally:
            if watch is not None:
                watch.cancel()
        after, cpu1 = await _metrics(http, base), _cpu_s(daemon.proc.pid)
    stream_s = sum(c["duration_s"] for _, c in streams) or 1.0
    extra: dict[str, Any] = {"wall_s": round(time.time() - t0, 1)}
    if timeline_s:
        columns = ["t_s", "drops", "queued_samples", "model_calls"]
        extra["timeline"] = {"columns": columns, "rows": line}
    return _summarize(n, streams, feed, summaries, (before, after), cpu1 - cpu0, stream_s) | extra


async def _timeline(
    http: aiohttp.ClientSession, base: str, every_s: float, rows: list[list[float]]
) -> None:
    """Append (seconds since start, drops so far, samples queued, model calls pending)."""
    t0 = time.monotonic()
    first: float | None = None
    while True:
        async with http.get(f"{base}/metrics") as resp:
            text = await resp.text()
        drops = queued = calls = 0.0
        for metric in text_string_to_metric_families(text):
            for sample in metric.samples:
                if sample.name == "livemod_drops_total" and sample.labels["stage"] == (
                    "analysis_queue"
                ):
                    drops += sample.value
                elif sample.name == "livemod_queue_depth":
                    if sample.labels["queue"] == "analysis_queue":
                        queued = sample.value
                    elif sample.labels["queue"] == "inference":
                        calls = sample.value
        first = drops if first is None else first
        rows.append([round(time.monotonic() - t0, 2), drops - first, queued, calls])
        await asyncio.sleep(every_s)


def _summarize(
    n: int,
    streams: Sequence[tuple[str, dict[str, Any]]],
    feed: Feed,
    summaries: dict[str, dict[str, Any]],
    sums: tuple[dict[str, float], dict[str, float]],
    cpu_s: float,
    stream_s: float,
) -> dict[str, Any]:
    starts = [e for _, e in feed.events if e.get("type") == "action" and e.get("state") == "start"]
    onset_ms: dict[str, list[float]] = {}
    by_insert: dict[int, list[float]] = {}
    misses: list[dict[str, Any]] = []
    other: dict[str, int] = {}
    caught = total = 0
    for sid, clip in streams:
        mine = [e for e in starts if e.get("stream_id") == sid]
        used: set[int] = set()
        for nth, onset in enumerate(clip["onsets_s"]):
            total += 1
            hit = next(
                (
                    e
                    for e in mine
                    if e["category"] == "known_bad"
                    and onset - 0.05 <= float(e["media_time_s"]) <= onset + INSERT_S + 0.3
                ),
                None,
            )
            if hit is None:
                s = summaries.get(sid, {})
                misses.append(
                    {
                        "kind": clip["kind"],
                        "onset_s": onset,
                        "stream_samples": s.get("samples"),
                        "stream_drops": s.get("drops"),
                        "gating": s.get("gating"),
                        "cause": "no known_bad action within the insert",
                    }
                )
                continue
            caught += 1
            used.add(id(hit))
            delay = float(hit["latency_ms"]) + 1000.0 * (float(hit["media_time_s"]) - onset)
            onset_ms.setdefault("known_bad", []).append(delay)
            by_insert.setdefault(nth, []).append(delay)
        for e in mine:
            if id(e) not in used:
                key = f"{e['category']}:{e['action']}"
                other[key] = other.get(key, 0) + 1
    drops = sum(int(s.get("drops") or 0) for s in summaries.values())
    samples = sum(int(s.get("samples") or 0) for s in summaries.values())
    gating = {"fresh": 0, "reused": 0, "detector_runs": 0, "detector_skips": 0}
    for s in summaries.values():
        for k, v in (s.get("gating") or {}).items():
            gating[k] = gating.get(k, 0) + int(v)
    p = {cat: percentiles(v) for cat, v in onset_ms.items()}
    all_delays = [d for v in onset_ms.values() for d in v]
    p95 = percentiles(all_delays)["p95"]
    before, after = sums
    return {
        "streams": n,
        "started": len(streams),
        "violations": total,
        "caught": caught,
        "misses": misses,
        "other_action_starts": other,
        "onset_to_action_ms": p,
        "onset_to_action_p95_ms": p95,
        # Started at once (no --stagger), a level's nth inserts all come together.
        "onset_to_action_by_insert_ms": {
            str(nth + 1): percentiles(v) for nth, v in sorted(by_insert.items())
        },
        "drops": drops,
        "samples": samples,
        "samples_per_stream_s": round(samples / stream_s, 2),
        "gating": gating,
        "gated_samples": _counts(before, after, "livemod_samples_gated_total"),
        "cascade": _counts(before, after, "livemod_cascade_decisions_total"),
        "rate_decisions": _counts(before, after, "livemod_rate_decisions_total"),
        "beside": _beside(before, after),
        "cpu_ms_per_stream_s": round(1000.0 * cpu_s / stream_s, 1),
        "cpu_ms_per_sample": round(1000.0 * cpu_s / samples, 1) if samples else None,
        "work_ms_per_stream_s": _parts(before, after, stream_s),
        "thread_cpu_ms_per_stream_s": {
            labels.split('"')[1]: round(1000.0 * seconds / stream_s, 1)
            for labels, seconds in _deltas(before, after, THREAD_CPU).items()
        },
        # OCR keeps to ocr.max_cpu and yields in a burst: how often each stream was read.
        "ocr_reads_per_stream_min": round(
            60.0 * sum(_deltas(before, after, "livemod_ocr_runs_total").values()) / stream_s, 2
        ),
        "sustained": len(streams) == n
        and caught == total
        and drops == 0
        and p95 is not None
        and float(p95) <= 1000.0,
    }


async def climb(
    work: Path,
    known_bad: Path,
    clips: list[dict[str, Any]],
    levels: Sequence[int],
    env: dict[str, str],
    *,
    stop: bool = True,
    name: str = "",
    timeline_s: float = 0.0,
    stagger_s: float = 0.0,
) -> dict[str, Any]:
    """Levels in order on one daemon until two in a row are not sustained (one failure
    on a shared machine can be a neighbour's burst)."""
    folder = work / (name or ("off" if env else "on"))
    folder.mkdir()
    daemon = DaemonProcess(
        folder,
        known_bad,
        extra_env={"LIVEMOD_ASR__ENABLED": "false", "LIVEMOD_LOG_LEVEL": "WARNING", **env},
    )
    daemon.start(timeout=180)
    results: list[dict[str, Any]] = []
    try:
        for n in levels:
            level = await run_level(daemon, clips, n, timeline_s, stagger_s)
            results.append(level)
            if stop and len(results) >= 2 and not any(r["sustained"] for r in results[-2:]):
                break
    finally:
        daemon.stop()
    sustained = max((r["streams"] for r in results if r["sustained"]), default=0)
    return {"sustained_streams": sustained, "levels": results}


def _compare(off: dict[str, Any], on: dict[str, Any]) -> dict[str, Any]:
    """Onset -> action with gating on against off, at the highest level both sustained."""
    both = {r["streams"]: r for r in off["levels"] if r["sustained"]}
    shared = [r for r in on["levels"] if r["streams"] in both and r["sustained"]]
    if not shared:
        return {"level": None}
    g = shared[-1]
    b = both[g["streams"]]
    out: dict[str, Any] = {"level": g["streams"], "by_category": {}}
    for cat, pg in g["onset_to_action_ms"].items():
        pb = b["onset_to_action_ms"].get(cat, {})
        if pg.get("p95") is None or pb.get("p95") is None:
            continue
        out["by_category"][cat] = {
            "off_p95_ms": pb["p95"],
            "on_p95_ms": pg["p95"],
            "difference_ms": round(pg["p95"] - pb["p95"], 1),
            "sample_period_ms": 250.0,
        }
    return out


def _cpu_ratio(off: dict[str, Any], on: dict[str, Any]) -> dict[str, Any]:
    """Daemon CPU per stream-second, off / on, at each level both pipelines ran: the
    efficiency ratio, steadier than the sustained count on a shared machine."""
    on_by = {r["streams"]: r for r in on["levels"]}
    out = {}
    for r in off["levels"]:
        g = on_by.get(r["streams"])
        if g is not None and g["cpu_ms_per_sample"] and r["cpu_ms_per_sample"]:
            out[str(r["streams"])] = {
                "per_stream_s": round(r["cpu_ms_per_stream_s"] / g["cpu_ms_per_stream_s"], 2),
                "per_sample": round(r["cpu_ms_per_sample"] / g["cpu_ms_per_sample"], 2),
                "samples_analyzed": round(g["samples"] / max(1, r["samples"]), 2),
            }
    return out


async def media_delays(clips: Sequence[dict[str, Any]], known_bad: Path) -> dict[str, Any]:
    """Gating's own delay, free of CPU load: ``livemod scan`` (backpressure, every sample
    analyzed) of each clip with capacity on and off; per insert and category, the media
    time of the action's first voting sample, on minus off."""
    from livemod.app.scan import scan
    from livemod.config import load_config

    base = {
        "LIVEMOD_KNOWN_BAD__PATHS": json.dumps([str(known_bad)]),
        "LIVEMOD_ASR__ENABLED": "false",
    }
    rows: list[dict[str, Any]] = []
    by_cat: dict[str, list[float]] = {}
    for clip in clips:
        firsts: dict[str, dict[tuple[str, float], float]] = {}
        for name, env in (("off", OFF), ("on", {})):
            report = await scan(load_config(None, environ={**base, **env}), clip["path"])
            firsts[name] = {}
            for e in report["actions"]:
                if e.get("state") != "start":
                    continue
                t = float(e["media_time_s"])
                onset = next(
                    (o for o in clip["onsets_s"] if o - 0.05 <= t <= o + INSERT_S + 0.3), None
                )
                key = (str(e["category"]), onset if onset is not None else round(t, 1))
                firsts[name].setdefault(key, t)
        for key in sorted(set(firsts["off"]) | set(firsts["on"])):
            t_off, t_on = firsts["off"].get(key), firsts["on"].get(key)
            delay = None if t_off is None or t_on is None else round(1000 * (t_on - t_off), 1)
            rows.append(
                {"kind": clip["kind"], "category": key[0], "at_s": key[1], "off_s": t_off,
                 "on_s": t_on, "on_minus_off_ms": delay}
            )  # fmt: skip
            if delay is not None:
                by_cat.setdefault(key[0], []).append(delay)
    return {
        "rows": rows,
        "by_category": {c: percentiles(v) for c, v in by_cat.items()},
        "missed_by_gated": [r for r in rows if r["on_s"] is None],
        "missed_by_baseline": [r for r in rows if r["off_s"] is None],
        "sample_period_ms": {"boosted": 125.0, "normal": 250.0},
    }


# -- talking streams: 360p talking heads with espeak-ng speech, ASR on ----------------

THREAT = ts.THREAT
BENIGN = (
    *ts.EVERYDAY[:5],
    "Let us talk about cooking pasta with fresh tomatoes.",
)
VOICES = (("en-us", 160), ("en-gb", 140), ("en-us+f3", 170), ("en-gb-x-rp", 155))
"""espeak-ng voices and speeds, one per stream in turn (Whisper tiny.en hears the threat
in each: checked by hand, "kill you" in every transcript)."""
THREAT_EVERY_S = 10.0
LAG_LIMIT_S = 2.0
_ASR = re.compile(r"^(livemod_asr_\w+?)(?:\{([^}]*)\})? ([0-9.e+-]+|\+Inf)$")


def _voiced(audio: np.ndarray[Any, Any]) -> tuple[float, float]:
    loud = np.flatnonzero(np.abs(audio) > 0.02)
    if not len(loud):
        return 0.0, 0.0
    return loud[0] / AUDIO_RATE, (loud[-1] + 1) / AUDIO_RATE


def talk_track(
    seconds: float, voice: str, wpm: int, first_threat_s: float, seed: int
) -> tuple[np.ndarray[Any, Any], list[ts.Placed]]:
    """Benign sentences with pauses (silence or light noise), a threat every ~10 s from
    ``first_threat_s``; every sentence ends at least 2 s before the track does."""
    rng = np.random.default_rng(seed)
    pieces: list[np.ndarray[Any, Any]] = [np.zeros(AUDIO_RATE // 2, np.float32)]
    placed: list[ts.Placed] = []
    t, i, next_threat = 0.5, seed, first_threat_s
    while True:
        text = THREAT if t >= next_threat else BENIGN[i % len(BENIGN)]
        audio = ts.speak(text, voice=voice, words_per_minute=wpm)
        duration = len(audio) / AUDIO_RATE
        if t + duration > seconds - 2.0:
            break
        v0, v1 = _voiced(audio)
        placed.append(ts.Placed(ts.Part(text), t, t + duration, t + v0, t + v1))
        pieces.append(audio)
        t += duration
        if text == THREAT:
            next_threat += THREAT_EVERY_S
        else:
            i += 1
        gap = round(0.7 * AUDIO_RATE)
        noise = 0.02 if i % 2 else 0.0
        pieces.append((rng.standard_normal(gap) * noise).astype(np.float32))
        t += gap / AUDIO_RATE
    track = np.concatenate(pieces)
    track = np.pad(track, (0, max(0, round(seconds * AUDIO_RATE) - len(track))))
    return np.clip(track, -1.0, 1.0).astype(np.float32), placed


def _mux(video: Path, audio: np.ndarray[Any, Any], out: Path) -> None:
    """The H.264 video as is, the speech as AAC (mono, 16 kHz), into one MP4."""
    raw = out.with_suffix(".f32")
    raw.write_bytes(audio.astype("<f4").tobytes())
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(video),
         "-f", "f32le", "-ar", str(AUDIO_RATE), "-ac", "1", "-i", str(raw),
         "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac", "-b:a", "64k",
         "-shortest", str(out)],
        check=True,
    )  # fmt: skip
    raw.unlink()
    video.unlink()


def make_talking(folder: Path, seconds: float, count: int) -> tuple[list[dict[str, Any]], Path]:
    """``count`` talking-head clips (known-bad inserts as in the mix) with speech tracks,
    each its own person, phase and voice, and the known-bad folder."""
    pictures = _pictures()
    bad, known_bad = _known_bad(folder)
    clips: list[dict[str, Any]] = []
    for n in range(count):
        onsets, windows = _insert_windows(n, seconds)
        path = folder / f"talking-{n}.mp4"
        video = folder / f"talking-{n}.video.mp4"
        frames = talking_head(pictures, seconds, n)
        duration = write_clip(video, with_inserts(frames, windows, bad), FPS)
        voice, wpm = VOICES[n % len(VOICES)]
        track, placed = talk_track(duration, voice, wpm, 3.0 + 0.6 * (n % 4), n)
        _mux(video, track, path)
        threats = [p for p in placed if p.part.text == THREAT]
        clips.append(
            {
                "kind": "talking_head",
                "path": str(path),
                "duration_s": round(duration, 2),
                "onsets_s": onsets,
                "variants": [w.variant for w in windows],
                "voice": f"{voice} {wpm} wpm",
                "speech_s": round(sum(p.speech_end_s - p.speech_start_s for p in placed), 2),
                "threats_s": [
                    (round(p.speech_start_s, 2), round(p.speech_end_s, 2)) for p in threats
                ],
            }
        )
    return clips, known_bad


def _asr_metrics(text: str) -> dict[str, float]:
    """The daemon's ``livemod_asr_*`` series, keyed ``name{labels}``."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = _ASR.match(line)
        if m:
            out[f"{m.group(1)}{{{m.group(2) or ''}}}"] = float(m.group(3))
    return out


def _lag_quantiles(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """Transcript lag from the ``livemod_asr_lag_seconds`` histogram's bucket deltas over
    the level: p50/p95 interpolated within their bucket (as Prometheus'
    ``histogram_quantile``), the bucket p95 falls in, and the share of words at most
    1.5 s and 2.5 s late."""
    buckets: list[tuple[float, float]] = []
    for key, value in after.items():
        m = re.match(r'livemod_asr_lag_seconds_bucket\{le="([^"]+)"\}', key)
        if m:
            buckets.append((float(m.group(1)), value - before.get(key, 0.0)))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0.0
    count_key = "livemod_asr_lag_seconds_count{}"
    sum_key = "livemod_asr_lag_seconds_sum{}"
    out: dict[str, Any] = {"n": round(total)}
    if not total:
        return out | {"p50": None, "p95": None, "p95_bucket": None}
    for q in (0.5, 0.95):
        rank, lo, prev = q * total, 0.0, 0.0
        for le, cum in buckets:
            if cum >= rank:
                if le == float("inf"):
                    value: float | None = None  # past the last finite bound
                else:
                    share = (rank - prev) / (cum - prev) if cum > prev else 1.0
                    value = round(lo + (le - lo) * share, 3)
                out[f"p{round(q * 100)}"] = value
                if q == 0.95:
                    out["p95_bucket"] = [lo, None if le == float("inf") else le]
                break
            lo, prev = le, cum
    cum_at = dict(buckets)
    for bound in (1.5, 2.5):
        if bound in cum_at:
            out[f"share_le_{bound}s"] = round(cum_at[bound] / total, 3)
    n = after.get(count_key, 0.0) - before.get(count_key, 0.0)
    if n:
        out["mean"] = round((after.get(sum_key, 0.0) - before.get(sum_key, 0.0)) / n, 3)
    return out


def _logged_lags(text: str, stream_ids: set[str]) -> list[float]:
    """The lag of each transcript commit with words (what ``livemod_asr_lag_seconds``
    observes), from the speech moderator's DEBUG lines ``transcript committed``."""
    lags: list[float] = []
    for line in text.splitlines():
        if "transcript committed" not in line:
            continue
        sid = re.search(r"stream_id='([^']*)'", line)
        lag = re.search(r"\blag_s=([0-9.]+)", line)
        empty = line.rstrip().endswith(("transcript=''", 'transcript=""'))
        if sid and lag and sid.group(1) in stream_ids and not empty:
            lags.append(float(lag.group(1)))
    return lags


def _delta(before: dict[str, float], after: dict[str, float], key: str) -> float:
    return after.get(key, 0.0) - before.get(key, 0.0)


def _speech(
    streams: Sequence[tuple[str, dict[str, Any]]],
    feed: Feed,
    summaries: dict[str, dict[str, Any]],
    asr: tuple[dict[str, float], dict[str, float]],
    n: int,
    logged_lags: Sequence[float],
) -> dict[str, Any]:
    """Threats muted, end of the threat sentence -> mute, transcript lag, Whisper CPU."""
    mutes = [
        e
        for _, e in feed.events
        if e.get("type") == "action" and e.get("state") == "start" and e.get("action") == "mute"
    ]
    delays: list[float] = []
    missed: list[dict[str, Any]] = []
    used: set[int] = set()
    total = 0
    for sid, clip in streams:
        mine = [e for e in mutes if e.get("stream_id") == sid]
        for start, end in clip["threats_s"]:
            total += 1

            def covers(e: dict[str, Any], start: float = start, end: float = end) -> bool:
                span = e.get("span_s")
                if span:
                    return float(span[0]) <= end + 0.3 and float(span[1]) >= start - 0.3
                return start - 0.5 <= float(e["media_time_s"]) <= end + 3.0

            hit = next((e for e in mine if id(e) not in used and covers(e)), None)
            if hit is None:
                missed.append({"voice": clip["voice"], "threat_s": [start, end]})
                continue
            used.add(id(hit))
            # As for the inserts: the action's latency from the arrival of its deciding
            # sample, plus the media time from the sentence's end to that sample.
            delays.append(float(hit["latency_ms"]) / 1000.0 + float(hit["media_time_s"]) - end)
    before, after = asr
    speech_s = sum(c["speech_s"] for _, c in streams) or 1.0
    whisper_cpu = _delta(before, after, "livemod_asr_cpu_seconds_total{}")
    transcription = [s.get("transcription") or {} for s in summaries.values()]
    hist = _lag_quantiles(before, after)
    # Each commit's own lag from the daemon's log when there is one; else the buckets.
    lag = percentiles(logged_lags, 3) | {"source": "log"} if logged_lags else hist
    mute = percentiles(delays, 3)
    skipped = round(_delta(before, after, "livemod_asr_skipped_windows_total{}"))
    return {
        "threats": total,
        "threats_muted": total - len(missed),
        "missed_threats": missed,
        "other_mutes": len([e for e in mutes if id(e) not in used]),
        "sentence_end_to_mute_s": mute,
        "transcript_lag_s": lag,
        "transcript_lag_histogram_s": hist,
        "speech_s": round(speech_s, 2),
        "whisper_cpu_s": round(whisper_cpu, 2),
        "whisper_cpu_s_per_speech_s": round(whisper_cpu / speech_s, 3),
        "skipped_windows": skipped,
        "skipped_voice_s": round(_delta(before, after, "livemod_asr_skipped_seconds_total{}"), 2),
        "decodes": {
            k: round(_delta(before, after, f'livemod_asr_decodes_total{{kind="{k}"}}'))
            for k in ("partial", "final")
        },
        "partial_streams": sum(1 for t in transcription if t.get("partial")),
        "words": sum(int(t.get("words") or 0) for t in transcription),
        "speech_ok": total > 0
        and not missed
        and lag.get("p95") is not None
        and float(lag["p95"]) <= LAG_LIMIT_S
        and mute["p95"] is not None
        and float(mute["p95"]) <= (1.0 if n == 1 else 1.5)
        and skipped == 0,
    }


async def run_talking_level(
    daemon: DaemonProcess, clips: list[dict[str, Any]], n: int
) -> dict[str, Any]:
    """N talking streams started at once; waits for all to end."""
    assert daemon.proc is not None
    base = daemon.base
    async with websockets.connect(daemon.ws) as ws, aiohttp.ClientSession() as http:
        feed = Feed(ws)
        load0 = os.getloadavg()
        async with http.get(f"{base}/metrics") as resp:
            text0 = await resp.text()
        log = daemon.workdir / "daemon.log"
        log_at = log.stat().st_size if log.exists() else 0
        cpu0, t0 = _cpu_s(daemon.proc.pid), time.time()
        streams, summaries = await _play(http, base, feed, clips, n, "t")
        async with http.get(f"{base}/metrics") as resp:
            text1 = await resp.text()
        cpu1 = _cpu_s(daemon.proc.pid)
        load1 = os.getloadavg()
    stream_s = sum(c["duration_s"] for _, c in streams) or 1.0
    sums = (_metric_sums(text0), _metric_sums(text1))
    video = _summarize(n, streams, feed, summaries, sums, cpu1 - cpu0, stream_s)
    with log.open("rb") as f:
        f.seek(log_at)
        lags = _logged_lags(f.read().decode(errors="replace"), {sid for sid, _ in streams})
    asr = (_asr_metrics(text0), _asr_metrics(text1))
    speech = _speech(streams, feed, summaries, asr, n, lags)
    video_ok = bool(video.pop("sustained"))
    # Speech actions are the speech part's to count; the video part counts the rest.
    others = video["other_action_starts"]
    others.pop("violence:mute", None)
    return {
        "streams": n,
        "started": video["started"],
        "speech": speech,
        "video": {k: v for k, v in video.items() if k not in ("streams", "started")},
        "video_sustained": video_ok,
        "cpu_ms_per_stream_s": video["cpu_ms_per_stream_s"],
        "loadavg_1m": [round(load0[0], 2), round(load1[0], 2)],
        "wall_s": round(time.time() - t0, 1),
        "sustained": len(streams) == n and bool(speech["speech_ok"]) and video["drops"] == 0,
    }


async def run_talking(args: argparse.Namespace) -> dict[str, Any]:
    """Talking streams on one daemon with the embedded defaults (ASR on)."""
    levels: list[int] = [1] if args.quick else args.talking
    seconds = 15.0 if args.quick else args.talking_seconds
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="livemod-capacity-talking-") as tmp:
        work = Path(tmp)
        clips, known_bad = make_talking(work / "media", seconds, max(levels))
        folder = work / "talking"
        folder.mkdir()
        # The suite's DaemonProcess turns speech off; ASR on here is the embedded default.
        daemon = DaemonProcess(
            folder,
            known_bad,
            # DEBUG: the speech moderator logs each transcript commit with its lag (a
            # line per sentence or so; the vision path logs little at this level).
            extra_env={"LIVEMOD_ASR__ENABLED": "true", "LIVEMOD_LOG_LEVEL": "DEBUG"},
        )
        daemon.start(timeout=180)
        results: list[dict[str, Any]] = []
        try:
            for n in levels:
                results.append(await run_talking_level(daemon, clips, n))
                failed = [r for r in results[-2:] if not r["sustained"]]
                if not args.all_levels and len(results) >= 2 and len(failed) == 2:
                    break
        finally:
            daemon.stop()
    sustained = max((r["streams"] for r in results if r["sustained"]), default=0)
    return {
        "benchmark": "capacity --talking",
        "setting": {
            "machine": machine(),
            "loadavg_at_start": [round(x, 2) for x in load],
            "note": "the load average at start is recorded: other work on the host raises it",
            "daemon": "livemod serve, embedded defaults (ASR on: Whisper tiny.en int8, the "
            "text judge; all vision models, OCR on, first-minute boost); streams via "
            "POST /v1/streams, files read in real time",
            "clips": [
                {k: c[k] for k in ("voice", "duration_s", "speech_s", "threats_s", "onsets_s")}
                for c in clips
            ],
            "video": "640x360 H.264 25 fps talking head, known-bad inserts of 1.5 s",
            "audio": f"espeak-ng, AAC 16 kHz mono; benign sentences, {THREAT!r} every "
            f"~{THREAT_EVERY_S:.0f} s",
            "sentence_end_to_mute": "the mute's latency_ms (from the arrival of its deciding "
            "sample) + media time from the sentence's last voiced sample to that sample",
            "transcript_lag": "per transcript commit with words, from the daemon's DEBUG "
            "log (transcript committed lag_s=); also livemod_asr_lag_seconds bucket deltas, "
            "interpolated within the bucket",
            "sustained_rule": "all started, every threat muted, transcript lag p95 <= 2 s, "
            "end of sentence -> mute p95 <= 1.0 s at 1 stream and <= 1.5 s above, no skipped "
            "ASR window, no video drop",
            "levels": levels,
            "quick": bool(args.quick),
        },
        "levels": results,
        "summary": {
            "sustained_talking_streams": sustained,
            "table": [
                {
                    "streams": r["streams"],
                    "muted": f"{r['speech']['threats_muted']}/{r['speech']['threats']}",
                    "mute_p50_s": r["speech"]["sentence_end_to_mute_s"]["p50"],
                    "mute_p95_s": r["speech"]["sentence_end_to_mute_s"]["p95"],
                    "lag_p95_s": r["speech"]["transcript_lag_s"].get("p95"),
                    "lag_p95_histogram_s": r["speech"]["transcript_lag_histogram_s"].get("p95"),
                    "whisper_cpu_per_speech_s": r["speech"]["whisper_cpu_s_per_speech_s"],
                    "daemon_cpu_ms_per_stream_s": r["cpu_ms_per_stream_s"],
                    "skipped_windows": r["speech"]["skipped_windows"],
                    "video_samples": r["video"]["samples"],
                    "video_drops": r["video"]["drops"],
                    "inserts_caught": f"{r['video']['caught']}/{r['video']['violations']}",
                    "onset_to_action_p95_ms": r["video"]["onset_to_action_p95_ms"],
                    "loadavg_1m": r["loadavg_1m"],
                    "sustained": r["sustained"],
                }
                for r in results
            ],
        },
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="livemod-capacity-") as tmp:
        work = Path(tmp)
        seconds = 10.0 if args.quick else args.seconds
        clips, known_bad = make_mix(work / "media", seconds, 1 if args.quick else 2, args.bframes)
        scanned = clips[:1] if args.quick else clips[: len(KINDS)]
        delays = None if args.no_scan else await media_delays(scanned, known_bad)
        stop = not args.all_levels
        every, stagger = args.timeline, args.stagger
        off = await climb(
            work, known_bad, clips, args.baseline_levels, OFF, stop=stop, stagger_s=stagger
        )
        on = await climb(
            work,
            known_bad,
            clips,
            args.gated_levels,
            {},
            stop=stop,
            timeline_s=every,
            stagger_s=stagger,
        )
        prev = None
        if args.prev or args.prev_env:
            levels = args.gated_levels
            env = {**PREVIOUS.get(args.prev or "", {}), **dict(args.prev_env)}
            prev = await climb(
                work,
                known_bad,
                clips,
                levels,
                env,
                stop=stop,
                name="prev",
                timeline_s=every,
                stagger_s=stagger,
            )
    ratio = (
        round(on["sustained_streams"] / off["sustained_streams"], 2)
        if off["sustained_streams"]
        else None
    )
    return {
        "setting": {
            "machine": machine(),
            "note": "the load average at start is in machine: other work on the host raises it",
            "daemon": "livemod serve, embedded defaults (all vision models, OCR on, "
            "first-minute boost), ASR off; streams via POST /v1/streams, files read in real time",
            "baseline": "the same daemon with capacity.gating, cascade, rates and "
            "background_stages off",
            "mix": [
                {k: c[k] for k in ("kind", "duration_s", "onsets_s", "variants")} for c in clips
            ],
            "codec": "H.264, libx264 veryfast, GOP 2 s, "
            + (f"{args.bframes} B-frames in a row" if args.bframes else "zerolatency, no B-frames"),
            "insert_s": INSERT_S,
            "sustained_rule": "all started, every insert caught, no drops, onset->action p95 <= 1s",
            "start": (
                f"a level's streams started evenly over {args.stagger:g} s"
                if args.stagger
                else "a level's streams started at once"
            ),
        },
        "baseline": off,
        "gated": on,
        **(
            {"gated_prev": prev, "prev": args.prev, "prev_env": dict(args.prev_env)}
            if prev is not None
            else {}
        ),
        "gating_delay_scan": delays,
        "summary": {
            "baseline_sustained": off["sustained_streams"],
            "gated_sustained": on["sustained_streams"],
            "ratio": ratio,
            "latency_gating_on_vs_off": _compare(off, on),
            "cpu_per_stream_s_ratio": _cpu_ratio(off, on),
            **(
                {"cpu_per_stream_s_ratio_prev_vs_gated": _cpu_ratio(prev, on)}
                if prev is not None
                else {}
            ),
        },
    }


def _env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not (key.startswith("LIVEMOD_") or key == "PYTHONPATH"):
        raise argparse.ArgumentTypeError(
            f"want LIVEMOD_SECTION__KEY=VALUE or PYTHONPATH=DIR, got {text!r}"
        )
    return key, value


def _levels(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one stream each, 10 s clips")
    parser.add_argument("--seconds", type=float, default=24.0, help="clip length (full mode)")
    parser.add_argument("--baseline-levels", type=_levels, default=[1, 2, 3, 4, 5, 6, 8])
    parser.add_argument(
        "--gated-levels", type=_levels, default=[2, 4, 6, 8, 10, 12, 16, 20, 24, 28]
    )
    parser.add_argument(
        "--all-levels", action="store_true", help="run every level, past failed ones too"
    )
    parser.add_argument(
        "--prev",
        nargs="?",
        const="first",
        default=None,
        choices=sorted(PREVIOUS),
        help="also climb an earlier gated pipeline: first (no known-bad reuse, OCR awaited; "
        "the default), third (no cut-back reuse, NudeNet on every cut, frame threads) or "
        "fourth (models beside known-bad matching, every picture decoded)",
    )
    parser.add_argument(
        "--prev-env",
        type=_env_pair,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="climb the earlier pipeline with this LIVEMOD_* override too (repeatable; "
        "alone: the current defaults with only these changed); PYTHONPATH=DIR climbs another "
        "build (a git worktree of an earlier commit: run from outside the checkout, as "
        "'python -m livemod' looks in the current directory first)",
    )
    parser.add_argument("--no-scan", action="store_true", help="skip the gating-delay scans")
    parser.add_argument(
        "--timeline",
        type=float,
        default=0.0,
        metavar="S",
        help="read the gated daemons' drops and queues every S seconds (a diagnostic)",
    )
    parser.add_argument(
        "--stagger",
        type=float,
        default=0.0,
        metavar="S",
        help="start a level's streams evenly over S seconds, not at once (copies of one "
        "clip then no longer cut and show their inserts in the same instant)",
    )
    parser.add_argument(
        "--bframes",
        type=int,
        default=0,
        help="encode the mix with this many B-frames in a row (OBS's x264 default: 2); "
        "0: zerolatency, none",
    )
    parser.add_argument(
        "--talking",
        type=_levels,
        default=None,
        metavar="LEVELS",
        help="talking streams instead: 360p talking heads with espeak-ng speech, ASR on "
        "(e.g. 1,2,4,6; with --quick: one 15 s stream)",
    )
    parser.add_argument(
        "--talking-seconds", type=float, default=30.0, help="talking clip length (full mode)"
    )
    args = parser.parse_args()
    if args.talking is not None:
        print(json.dumps(asyncio.run(run_talking(args)), indent=2))
        return 0
    if args.quick:
        args.baseline_levels, args.gated_levels = [1], [1]
    print(json.dumps(asyncio.run(run(args)), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
