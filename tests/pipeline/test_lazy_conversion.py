"""Decoded samples travel as their 4:2:0 planes; only the ones a model reads are converted.

The change measures read the planes, and a sample that reuses its scores is never
converted to RGB; what the models see and what the policy decides are the same as with
every sample converted at decode time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
import numpy as np
import pytest
from prometheus_client import REGISTRY

from livemod.app.build import build_analyzers
from livemod.config import load_config
from livemod.ingest.av_source import Converter, to_video_frame
from livemod.messages import FrameAnalysis, Image, VideoFrame
from livemod.ocr import gate as ocr_gate
from livemod.paths import DEFAULT_POLICY
from livemod.pipeline import gating
from livemod.pipeline.analysis import AnalysisService
from livemod.policy.taxonomy import load_policy
from livemod.policy.vote import VoteEngine
from livemod.testing.corpus import Picture, benign_pictures, camera, write_clip
from livemod.testing.media import KNOWN_BAD_PHOTO, fit, photo

FPS = 24


def _scenes() -> Iterator[tuple[float, Picture, Image]]:
    """A still, a camera pan over real photographs, the known-bad picture cut in, a still."""
    still = Picture("astronaut", "photo", fit(photo("astronaut")))
    bad = Picture("bad", "violation", fit(photo(KNOWN_BAD_PHOTO)))
    n = 0
    for _ in range(2 * FPS):
        yield n / FPS, still, still.image
        n += 1
    for _, pic, image in camera(benign_pictures()[:6], 4.0, FPS, seed=3):
        yield n / FPS, pic, image
        n += 1
    for _ in range(2 * FPS):
        yield n / FPS, bad, bad.image
        n += 1
    for _ in range(2 * FPS):
        yield n / FPS, still, still.image
        n += 1


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("lazy") / "scenes.mp4"
    write_clip(path, _scenes(), FPS)
    return path


def decoded(
    path: Path, every: int = 6, max_side: int = 640
) -> list[tuple[av.VideoFrame, VideoFrame]]:
    """Every ``every``-th decoded frame (4 a second at 24 fps) with its sample."""
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))[::every]
    return [
        (f, to_video_frame(f, "s", i, i * every / FPS, 1000.0 + i * every / FPS, max_side))
        for i, f in enumerate(frames)
    ]


def _conversions() -> float:
    key = "livemod_stage_latency_seconds_count"
    return REGISTRY.get_sample_value(key, {"stage": "convert"}) or 0.0


def test_a_sample_is_converted_on_first_read_to_what_decoding_gave(clip: Path) -> None:
    raw, frame = decoded(clip)[3]
    assert frame.planes is not None and not frame.converted
    assert (frame.width, frame.height) == (640, 360)
    assert frame.planes.y.shape == (360, 640) and frame.planes.u.shape == (180, 320)
    converted = _conversions()
    image = frame.image
    assert frame.converted and frame.image is image
    # The deferred conversion is timed where it happens, once.
    assert _conversions() == converted + 1
    assert np.array_equal(image, raw.to_ndarray(format="rgb24"))


def test_a_picture_larger_than_analysis_needs_is_scaled_at_once(clip: Path) -> None:
    raw, frame = decoded(clip, max_side=320)[3]
    assert frame.planes is None and frame.converted
    assert frame.image.shape == (180, 320, 3) and frame.scale == (2.0, 2.0)
    assert np.array_equal(frame.image, raw.to_ndarray(format="rgb24", width=320, height=180))


def test_one_converter_serves_a_stream_from_any_thread(clip: Path) -> None:
    """The stream's kept scaler gives what each frame's own ``to_ndarray`` gave, also
    when several threads convert its samples at once."""
    raws = [raw for raw, _ in decoded(clip, every=3)]
    converter = Converter()
    sizes = [(640, 360), (320, 180)]

    def convert(i: int) -> bool:
        raw, size = raws[i], sizes[i % 2]
        expected = raw.to_ndarray(format="rgb24", width=size[0], height=size[1])
        return bool(np.array_equal(converter.rgb(raw, size), expected))

    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(convert, range(len(raws))))


def test_full_range_pictures_are_converted_at_once(clip: Path) -> None:
    raw, _ = decoded(clip)[3]
    full = raw.reformat(format="yuvj420p")
    frame = to_video_frame(full, "s", 0, 0.0, 0.0, 640)
    assert frame.planes is None and frame.converted


def test_a_frame_needs_a_picture_or_its_conversion() -> None:
    with pytest.raises(ValueError):
        VideoFrame("s", 0, 0.0, 0.0)


def test_thumbnails_from_planes_match_the_converted_picture(clip: Path) -> None:
    for _, frame in decoded(clip):
        colour, grey = gating.frame_thumbnail(frame), ocr_gate.frame_thumbnail(frame)
        rgb = frame.image
        colour_diff = np.abs(colour - gating.thumbnail(rgb))
        grey_diff = np.abs(grey.astype(np.int16) - ocr_gate.thumbnail(rgb))
        assert colour.shape == (36, 64, 3) and grey.shape == (72, 128)
        # Rounding and chroma placement: far under the gates' 12-level cell deltas.
        assert colour_diff.max() <= 6 and colour_diff.mean() < 1.0
        assert grey_diff.max() <= 6 and grey_diff.mean() < 1.0


def _decisions(analyses: list[FrameAnalysis]) -> list[tuple[str, str, str, float]]:
    engine = VoteEngine(load_policy(DEFAULT_POLICY))
    out: list[tuple[str, str, str, float]] = []
    for a in analyses:
        out += [
            (d.category, d.action, d.state, round(d.media_time_s, 2))
            for d in engine.update("u:r", a)
        ]
    return out


async def test_reused_samples_are_never_converted_and_decide_the_same(
    clip: Path, known_bad_dir: Path
) -> None:
    env = {"LIVEMOD_KNOWN_BAD__PATHS": json.dumps([str(known_bad_dir)])}
    config = load_config(None, environ=env)
    analyzers = build_analyzers(config)
    lazy = [frame for _, frame in decoded(clip)]
    eager = [
        VideoFrame(f.stream_id, f.index, f.media_time_s, f.t_arrival, f.image.copy())
        for _, f in decoded(clip)
    ]
    planes_service = AnalysisService(analyzers, workers=2, capacity=config.capacity)
    rgb_service = AnalysisService(analyzers, workers=2, capacity=config.capacity)
    try:
        got = [await planes_service.analyze(f) for f in lazy]
        reference = [await rgb_service.analyze(f) for f in eager]
        stats, ref_stats = planes_service.stream_stats("s"), rgb_service.stream_stats("s")
    finally:
        planes_service.close()
        rgb_service.close()
    assert stats is not None and ref_stats is not None
    assert stats["reused"] >= len(lazy) // 2
    # Only the samples the models (or known-bad matching) ran on were converted.
    assert sum(f.converted for f in lazy) == stats["fresh"]
    assert _decisions(got) == _decisions(reference)
    assert any(d[:3] == ("known_bad", "pause", "start") for d in _decisions(got))
    assert abs(stats["fresh"] - ref_stats["fresh"]) <= 1
