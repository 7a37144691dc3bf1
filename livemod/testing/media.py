"""Synthesized test media: clips built with PyAV from generated pictures and the
photographs that ship inside scikit-image. Nothing is downloaded or checked in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import cast

import av
import numpy as np
from av.video.stream import VideoStream

from livemod.messages import Image
from livemod.vision.reference import SIZE
from livemod.vision.reference import fit as fit
from livemod.vision.reference import photo as photo


@dataclass(frozen=True, slots=True)
class Segment:
    """``duration_s`` of a still picture (stretched to the frame) or, with
    ``picture=None``, of a moving test pattern."""

    duration_s: float
    picture: Image | None = None
    label: str = ""


def pattern(t: float, size: tuple[int, int] = SIZE) -> Image:
    """Colour bars with a box sweeping across, so consecutive frames differ."""
    w, h = size
    bars = np.array(
        [
            [192, 192, 192],
            [192, 192, 0],
            [0, 192, 192],
            [0, 192, 0],
            [192, 0, 192],
            [192, 0, 0],
            [0, 0, 192],
        ],
        dtype=np.uint8,
    )
    cols = (np.arange(w) * len(bars) // w).astype(np.intp)
    img = np.ascontiguousarray(np.broadcast_to(bars[cols][None, :, :], (h, w, 3)))
    x = int((t * 120) % max(1, w - 60))
    img[h // 2 - 30 : h // 2 + 30, x : x + 60] = (255, 255, 255)
    return img


def make_clip(
    path: Path,
    segments: Sequence[Segment],
    *,
    fps: int = 25,
    size: tuple[int, int] = SIZE,
    codec: str = "libx264",
    gop: int = 50,
) -> float:
    """Encode the segments into ``path`` (container from the suffix); return duration."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = 0.0
    with av.open(str(path), mode="w") as out:
        stream = cast(VideoStream, out.add_stream(codec, rate=fps))
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, fps)
        if codec == "libx264":
            stream.options = {"preset": "veryfast", "tune": "zerolatency", "g": str(gop)}
        index = 0
        for seg in segments:
            still = fit(seg.picture, size) if seg.picture is not None else None
            for _ in range(round(seg.duration_s * fps)):
                img = still if still is not None else pattern(index / fps, size)
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                frame.pts = index
                for packet in stream.encode(frame):
                    out.mux(packet)
                index += 1
        for packet in stream.encode():
            out.mux(packet)
        t = index / fps
    return t


def demo_segments(known_bad: Image) -> list[Segment]:
    """The demo clip: benign photos and patterns, the known-bad picture at 11-15 s."""
    return [
        Segment(4.0, None, "pattern"),
        Segment(4.0, photo("astronaut"), "astronaut"),
        Segment(3.0, photo("coffee"), "coffee"),
        Segment(4.0, known_bad, "known-bad"),
        Segment(4.0, photo("chelsea"), "chelsea"),
        Segment(5.0, None, "pattern"),
    ]


KNOWN_BAD_PHOTO = "rocket"
"""The stand-in for a known-bad image: a benign photo listed as known-bad."""
