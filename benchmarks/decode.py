"""Decode cost per frame: software (FFmpeg threads) against hardware decoding.

Decodes a generated H.264 clip (640x360 and 1280x720, 25 fps) with PyAV in software
and, for every hardware device type FFmpeg was built with, through ``HWAccel``;
a device that cannot be opened on this host is reported as unavailable.

    .venv/bin/python benchmarks/decode.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import av
import numpy as np
from av.codec.hwaccel import HWAccel, hwdevices_available

from livemod.testing import media as testmedia


def decode_ms(path: Path, hw: str | None) -> list[float]:
    kwargs: dict[str, Any] = {}
    if hw is not None:
        kwargs["hwaccel"] = HWAccel(device_type=hw, allow_software_fallback=False)
    times: list[float] = []
    with av.open(str(path), **kwargs) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        t0 = time.perf_counter()
        for frame in container.decode(stream):
            # Bring the picture to system memory, as analysis needs it.
            frame.to_ndarray(format="rgb24", width=640, height=360)
            t1 = time.perf_counter()
            times.append((t1 - t0) * 1000.0)
            t0 = t1
    return times


def summary(times: Sequence[float]) -> dict[str, float]:
    p50, p95, p99 = np.percentile(np.asarray(times), [50, 95, 99])
    return {
        "p50": round(float(p50), 3),
        "p95": round(float(p95), 3),
        "p99": round(float(p99), 3),
        "frames_per_s": round(1000.0 * len(times) / float(np.sum(times)), 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    seconds = 2.0 if args.quick else 10.0
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in ((640, 360), (1280, 720)):
            clip = Path(tmp) / f"clip_{size[0]}.mp4"
            testmedia.make_clip(clip, [testmedia.Segment(seconds, None)], size=size)
            software = summary(decode_ms(clip, None))
            row: dict[str, Any] = {
                "resolution": f"{size[0]}x{size[1]}",
                "software": software,
                "hardware": {},
            }
            for device in hwdevices_available():
                try:
                    hw = summary(decode_ms(clip, device))
                except (av.error.FFmpegError, OSError, ValueError, RuntimeError) as exc:
                    row["hardware"][device] = {"available": False, "reason": str(exc)}
                    continue
                hw["ratio_vs_software_p50"] = round(software["p50"] / hw["p50"], 2)
                row["hardware"][device] = {"available": True, **hw}
            results.append(row)
    doc = {
        "benchmark": "livemod decode",
        "setting": {
            "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
            "pyav": av.__version__,
            "clip": f"H.264 (libx264 veryfast), 25 fps, {seconds} s, test pattern",
            "includes": "decode and conversion to 640x360 RGB of every frame",
            "baseline": "software decoding with FFmpeg frame threads",
            "quick": args.quick,
        },
        "results": results,
    }
    json.dump(doc, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
