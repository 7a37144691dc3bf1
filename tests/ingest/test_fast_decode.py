"""``ingest.fast_decode``: analysis skips the pictures no other picture refers to
(B-frames), keeps its sampling rate and clock, and never skips for the relay's tap."""

from __future__ import annotations

import subprocess
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from livemod.ingest.av_source import AvSource, SourceOptions
from livemod.messages import VideoFrame
from livemod.sampling import FrameSampler
from livemod.testing.corpus import Picture, camera, write_clip
from livemod.testing.media import photo

FPS = 25
SECONDS = 4


def encode(dst: Path, *x264: str) -> Path:
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi",
         "-i", f"testsrc2=size=320x240:rate={FPS}", "-t", str(SECONDS),
         "-c:v", "libx264", "-preset", "veryfast", *x264, "-pix_fmt", "yuv420p", str(dst)],
        check=True,
    )  # fmt: skip
    return dst


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("fast")
    return {
        "bframes": encode(folder / "b.mp4", "-bf", "2", "-g", "50"),
        "zerolatency": encode(folder / "z.mp4", "-tune", "zerolatency", "-g", "50"),
    }


class Tap:
    def __init__(self) -> None:
        self.frames = 0

    def video(self, frame: Any, media_time_s: float) -> None:
        self.frames += 1

    def audio(self, frame: Any, media_time_s: float) -> None:
        pass


def run(path: Path, fps: float, *, tap: Tap | None = None, **opts: Any) -> tuple[int, list[float]]:
    frames: list[VideoFrame] = []
    sampler = FrameSampler(fps, fps)
    source = AvSource("f", SourceOptions(url=str(path), **opts), sampler, frames.append)
    if tap is not None:
        source.set_tap(tap)
    end = source.run()
    assert end.reason == "eof", end.error
    assert end.frames_sampled == len(frames)
    return end.frames_decoded, [f.media_time_s for f in frames]


def test_b_frames_are_skipped_and_the_rate_kept(clips: dict[str, Path]) -> None:
    total = FPS * SECONDS
    full, full_times = run(clips["bframes"], 4.0, fast_decode=False)
    fast, fast_times = run(clips["bframes"], 4.0)
    assert full == total
    # x264 with two B-frames: most B-frames are not referred to and are not decoded.
    assert fast < 0.75 * total
    # The sampler still takes 4 a second: the first decoded frame due (within its half
    # a frame of tolerance), at most the two skipped frames late.
    assert len(fast_times) == len(full_times) == 4 * SECONDS
    for i, t in enumerate(fast_times):
        assert i * 0.25 - 1 / FPS <= t <= i * 0.25 + 3 / FPS, (i, t)
    assert all(a < b for a, b in pairwise(fast_times))


def test_a_stream_without_b_frames_decodes_every_frame(clips: dict[str, Path]) -> None:
    decoded, _ = run(clips["zerolatency"], 4.0)
    assert decoded == FPS * SECONDS


def test_the_relay_tap_sees_every_frame(clips: dict[str, Path]) -> None:
    """A relayed stream is decoded whole: viewers see every frame."""
    tap = Tap()
    decoded, _ = run(clips["bframes"], 4.0, tap=tap)
    assert decoded == tap.frames == FPS * SECONDS


def test_the_capacity_mix_with_b_frames_has_them(tmp_path: Path) -> None:
    """``benchmarks/capacity.py --bframes 2`` writes its clips through ``write_clip``: they
    carry B-frames, which fast decoding skips (and zerolatency clips none)."""
    frames = list(camera([Picture("astronaut", "photo", photo("astronaut"))], 2.0, FPS))
    with_b = write_clip(tmp_path / "b.mp4", iter(frames), FPS, bframes=2)
    without = write_clip(tmp_path / "z.mp4", iter(frames), FPS)
    assert with_b == without == len(frames) / FPS
    decoded_b, _ = run(tmp_path / "b.mp4", 4.0)
    decoded_z, _ = run(tmp_path / "z.mp4", 4.0)
    assert decoded_z == len(frames)
    assert decoded_b < 0.8 * len(frames)
