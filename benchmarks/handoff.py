"""What a sampled frame costs between the decoder and the models: RGB at decode time
against samples handed on as their 4:2:0 planes.

Plays each clip of the capacity mix (talking head, gameplay-like motion, slideshow, real
video, each with known-bad inserts; 640x360, 30 fps, H.264) through PyAV and the
sampler at the first-minute boost rate (8 fps, the embedded default). For every admitted
frame, on one thread, in the same run:

- ``rgb``: the frame converted to RGB when admitted (as before), then the gate's colour
  thumbnail and OCR's grey thumbnail computed from the RGB picture, and the change
  gate's decision (``capacity.gating`` as shipped);
- ``planes``: views of the frame's planes, both thumbnails from the planes, the gate's
  decision, and the RGB conversion only for the samples the gate sends to the models.

Decoding is shared and reported beside them. CPU time of the thread (``process_time``),
per sample and per stream-second, and the ratio. OCR's own reads (at most one a second
a stream, fewer under load) convert the samples they read in both ways and are left out.

``conversion`` times the RGB conversion alone at 360p, 720p and 1080p (camera footage
over real photographs, scaled to 640 px where larger): ``av.VideoFrame.to_ndarray``, which
sets up a scaler with its own threads for every frame (the daemon's way before), against
the stream's ``Converter`` (one scaler kept, one thread), and checks the pixels are the
same.

    .venv/bin/python benchmarks/handoff.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
from capacity import make_mix
from loadgen import machine, percentiles

from livemod.config import load_config
from livemod.ingest.av_source import Converter, frame_planes, to_video_frame
from livemod.ocr import gate as ocr_gate
from livemod.pipeline import gating
from livemod.pipeline.analysis import gate_policy
from livemod.pipeline.gating import Fresh, StreamGate
from livemod.sampling import FrameSampler
from livemod.testing.corpus import benign_pictures, camera, write_clip

BOOST_FPS = 8.0


def _rgb_way(frame: Any, t: float, gate: StreamGate) -> bool:
    image = frame.to_ndarray(format="rgb24")
    ocr_gate.thumbnail(image)
    return isinstance(gate.decide(t, gating.thumbnail(image)), Fresh)


def _planes_way(frame: Any, i: int, t: float, gate: StreamGate, converter: Converter) -> bool:
    video = to_video_frame(frame, "s", i, t, 0.0, 640, converter=converter)
    thumb = gating.frame_thumbnail(video)
    ocr_gate.frame_thumbnail(video)
    fresh = isinstance(gate.decide(t, thumb), Fresh)
    if fresh:
        _ = video.image  # what the models (and known-bad hashing) read
    return fresh


def play(path: Path, gates: tuple[StreamGate, StreamGate]) -> dict[str, Any]:
    sampler = FrameSampler(BOOST_FPS, BOOST_FPS)
    converter = Converter()
    decode_s = 0.0
    rgb_ms: list[float] = []
    planes_ms: list[float] = []
    fresh_rgb = fresh = frames = 0
    duration = 0.0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "NONE"  # the daemon's choice at 360p: one thread per stream
        decoding = iter(container.decode(stream))
        while True:
            started = time.process_time()
            frame = next(decoding, None)
            decode_s += time.process_time() - started
            if frame is None:
                break
            frames += 1
            t = float(frame.time)
            duration = max(duration, t)
            if not sampler.admit(t):
                continue
            assert frame_planes(frame) is not None, "the mix is 4:2:0, limited range"
            i = len(rgb_ms)
            # Each way goes first on every other sample: neither always finds the
            # planes in cache.
            for way in (0, 1) if i % 2 == 0 else (1, 0):
                started = time.process_time()
                if way == 0:
                    fresh_rgb += _rgb_way(frame, t, gates[0])
                    rgb_ms.append((time.process_time() - started) * 1000.0)
                else:
                    fresh += _planes_way(frame, i, t, gates[1], converter)
                    planes_ms.append((time.process_time() - started) * 1000.0)
    seconds = duration + 1.0 / float(stream.average_rate or 30)
    return {
        "seconds": seconds,
        "frames": frames,
        "decode_s": decode_s,
        "rgb_ms": rgb_ms,
        "planes_ms": planes_ms,
        "fresh": fresh,
        "fresh_rgb": fresh_rgb,
    }


SIZES = ((640, 360), (1280, 720), (1920, 1080))


def conversion(folder: Path, seconds: float) -> list[dict[str, Any]]:
    """RGB conversion of every decoded frame, one ``to_ndarray`` each against one kept
    ``Converter``, at each of ``SIZES`` (scaled to 640 px wide where larger)."""
    out: list[dict[str, Any]] = []
    for size in SIZES:
        path = folder / f"camera-{size[1]}p.mp4"
        write_clip(path, camera(benign_pictures(), seconds, 30, seed=5, size=size), 30, size)
        with av.open(str(path)) as container:
            frames = list(container.decode(video=0))
        target = (640, round(640 * size[1] / size[0] / 2) * 2)
        converter = Converter()
        each: list[float] = []
        kept: list[float] = []
        same = True
        for frame in frames:
            started = time.process_time()
            if target == size:
                old = frame.to_ndarray(format="rgb24")
            else:
                old = frame.to_ndarray(format="rgb24", width=target[0], height=target[1])
            each.append((time.process_time() - started) * 1000.0)
            started = time.process_time()
            new = converter.rgb(frame, target)
            kept.append((time.process_time() - started) * 1000.0)
            same = same and bool(np.array_equal(old, new))
        out.append(
            {
                "source": f"{size[0]}x{size[1]}",
                "to": f"{target[0]}x{target[1]}",
                "frames": len(frames),
                "to_ndarray_ms": percentiles(each, 3),
                "converter_ms": percentiles(kept, 3),
                "ratio_p50": round(float(np.median(each) / max(np.median(kept), 1e-9)), 2),
                "same_pixels": same,
            }
        )
    return out


def _per_stream_s(total_ms: float, seconds: float) -> float:
    return round(total_ms / seconds, 2)


def run(quick: bool) -> dict[str, Any]:
    capacity = load_config(None, environ={}).capacity
    seconds = 10.0 if quick else 24.0
    out: list[dict[str, Any]] = []
    totals = {"seconds": 0.0, "decode_ms": 0.0, "rgb_ms": 0.0, "planes_ms": 0.0}
    rgb_all: list[float] = []
    planes_all: list[float] = []
    with tempfile.TemporaryDirectory(prefix="livemod-handoff-") as tmp:
        clips, _ = make_mix(Path(tmp), seconds, 1)
        for clip in clips:
            gates = (
                StreamGate(gate_policy(capacity), _no_cascade()),
                StreamGate(gate_policy(capacity), _no_cascade()),
            )
            r = play(Path(clip["path"]), gates)
            rgb, planes = sum(r["rgb_ms"]), sum(r["planes_ms"])
            out.append(
                {
                    "kind": clip["kind"],
                    "seconds": round(r["seconds"], 2),
                    "samples": len(r["rgb_ms"]),
                    "fresh": {"rgb": r["fresh_rgb"], "planes": r["fresh"]},
                    "decode_ms_per_stream_s": _per_stream_s(1000.0 * r["decode_s"], r["seconds"]),
                    "rgb_ms_per_stream_s": _per_stream_s(rgb, r["seconds"]),
                    "planes_ms_per_stream_s": _per_stream_s(planes, r["seconds"]),
                }
            )
            totals["seconds"] += r["seconds"]
            totals["decode_ms"] += 1000.0 * r["decode_s"]
            totals["rgb_ms"] += rgb
            totals["planes_ms"] += planes
            rgb_all += r["rgb_ms"]
            planes_all += r["planes_ms"]
        converted = conversion(Path(tmp), 2.0 if quick else 6.0)
    s = totals["seconds"]
    return {
        "setting": {
            "machine": machine(),
            "mix": [c["kind"] for c in clips],
            "clip_s": seconds,
            "video": "640x360, 30 fps, H.264 (libx264 veryfast, zerolatency), known-bad inserts",
            "sample_fps": BOOST_FPS,
            "gate": "capacity.gating as shipped (embedded defaults)",
            "measure": "thread CPU (process_time) per sampled frame, one thread",
            "rgb": "RGB at admission, both change thumbnails from RGB, the gate's decision "
            "(the baseline)",
            "planes": "plane views, both thumbnails from the planes, the gate's decision, "
            "RGB (the stream's Converter) only for samples the gate sends to the models",
        },
        "clips": out,
        "per_sample_ms": {
            "rgb": percentiles(rgb_all, 3),
            "planes": percentiles(planes_all, 3),
        },
        "ms_per_stream_s": {
            "decode": _per_stream_s(totals["decode_ms"], s),
            "rgb": _per_stream_s(totals["rgb_ms"], s),
            "planes": _per_stream_s(totals["planes_ms"], s),
        },
        "ratio_rgb_to_planes": round(totals["rgb_ms"] / max(totals["planes_ms"], 1e-9), 2),
        "conversion": converted,
    }


def _no_cascade() -> gating.CascadePolicy:
    return gating.CascadePolicy(enabled=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 s clips instead of 24 s")
    args = parser.parse_args()
    print(json.dumps(run(args.quick), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
