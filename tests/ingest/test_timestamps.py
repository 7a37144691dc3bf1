"""Timestamps that restart, jump and wrap: content after the discontinuity is moderated.

The clips are made with ffmpeg the way they happen in the field: MPEG-TS segments
back to back (what the ``concat:`` protocol reads, and what an encoder that
reconnected leaves behind), ``-output_ts_offset`` for a jump, and an offset close
to 2^33 / 90 kHz for the 33-bit MPEG-TS wrap.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from prometheus_client import REGISTRY

from livemod.ingest.av_source import AvSource, SourceOptions
from livemod.ingest.timeline import MPEGTS_WRAP_S
from livemod.messages import AUDIO_RATE, AudioChunk, AudioUnavailable, VideoFrame
from livemod.sampling import FrameSampler
from livemod.testing import media as testmedia
from tests.conftest import BAD_START, TIMEOUT_SCALE

PATTERN_S = 10.0
FPS = 25


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args], check=True)


def to_ts(src: Path, dst: Path, offset_s: float | None = None) -> Path:
    """Remux into MPEG-TS, its timestamps shifted by ``offset_s``."""
    shift = ["-output_ts_offset", str(offset_s)] if offset_s is not None else []
    ffmpeg("-i", str(src), "-c", "copy", *shift, "-f", "mpegts", str(dst))
    return dst


def back_to_back(dst: Path, *parts: Path) -> Path:
    """The bytes of one segment after the other, as ``concat:a.ts|b.ts`` reads them
    (the ffmpeg command line would rewrite the timestamps on the way through)."""
    dst.write_bytes(b"".join(p.read_bytes() for p in parts))
    return dst


def start_s(path: Path) -> float:
    """The first video timestamp of a clip, as its demuxer gives it."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.start_time is not None and stream.time_base is not None
        return float(stream.start_time * stream.time_base)


@pytest.fixture(scope="module")
def ts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("timestamps")


@pytest.fixture(scope="module")
def pattern_ts(ts_dir: Path) -> Path:
    mp4 = ts_dir / "pattern.mp4"
    testmedia.make_clip(mp4, [testmedia.Segment(PATTERN_S, None)], fps=FPS)
    return to_ts(mp4, ts_dir / "pattern.ts")


@pytest.fixture(scope="module")
def violation_ts(ts_dir: Path, violation_clip: Path) -> Path:
    return to_ts(violation_clip, ts_dir / "violation.ts")


def scan(clip: Path, known_bad_dir: Path) -> tuple[dict[str, Any], str]:
    env = {**os.environ, "LIVEMOD_KNOWN_BAD__PATHS": json.dumps([str(known_bad_dir)])}
    proc = subprocess.run(
        [sys.executable, "-m", "livemod", "scan", str(clip), "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=180 * TIMEOUT_SCALE,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), proc.stderr


def assert_caught_after_the_jump(
    report: dict[str, Any], stderr: str, *, session_bad_s: float, source_bad_s: float
) -> None:
    assert report["status"] == "ok", report["error"]
    actions = report["actions"]
    assert [(a["action"], a["state"], a["category"]) for a in actions] == [
        ("pause", "start", "known_bad"),
        ("pause", "stop", "known_bad"),
    ]
    start = actions[0]
    # media_time_s is the session's timeline, source_time_s what the source stamped.
    assert session_bad_s <= start["media_time_s"] <= session_bad_s + 1.0
    assert start["source_time_s"] == pytest.approx(source_bad_s, abs=1.0)
    times = [s["media_time_s"] for s in report["samples"]]
    assert all(a < b for a, b in pairwise(times)), "not monotonic"
    # Sampled at 4-8 fps all the way through: 14 s of the clip after the jump.
    assert sum(t > PATTERN_S for t in times) >= 14 * 4
    assert "source timestamps jumped" in stderr and "stream_id='scan'" in stderr


def test_a_timestamp_restart_is_moderated(
    ts_dir: Path, pattern_ts: Path, violation_ts: Path, known_bad_dir: Path
) -> None:
    clip = back_to_back(ts_dir / "restart.ts", pattern_ts, violation_ts)
    report, stderr = scan(clip, known_bad_dir)
    assert report["frames_decoded"] == (PATTERN_S + 14) * FPS
    assert_caught_after_the_jump(
        report,
        stderr,
        session_bad_s=PATTERN_S + BAD_START,
        source_bad_s=start_s(violation_ts) + BAD_START,
    )
    assert stderr.count("source timestamps jumped") == 1 and "kind='backward'" in stderr


def test_a_forward_jump_is_moderated(
    ts_dir: Path, pattern_ts: Path, violation_clip: Path, known_bad_dir: Path
) -> None:
    late = to_ts(violation_clip, ts_dir / "violation_late.ts", offset_s=3600.0)
    clip = back_to_back(ts_dir / "jump.ts", pattern_ts, late)
    report, stderr = scan(clip, known_bad_dir)
    assert_caught_after_the_jump(
        report,
        stderr,
        session_bad_s=PATTERN_S + BAD_START,
        source_bad_s=start_s(late) + BAD_START,
    )
    assert stderr.count("source timestamps jumped") == 1 and "kind='forward'" in stderr


def test_the_mpegts_wrap_is_moderated(ts_dir: Path, pattern_ts: Path, known_bad_dir: Path) -> None:
    # 10 s of pattern, then a feed 26.5 h old: 10 s before the wrap, the known-bad
    # picture 5 s after it. The demuxer unwraps a wrap near a file's own start, not
    # one of a stream it joined long before (nor the next one): that is what this is.
    bad = testmedia.photo(testmedia.KNOWN_BAD_PHOTO)
    feed = ts_dir / "feed.mp4"
    testmedia.make_clip(
        feed,
        [
            testmedia.Segment(PATTERN_S + BAD_START, None),
            testmedia.Segment(3.0, bad),
            testmedia.Segment(3.0, None),
        ],
        fps=FPS,
    )
    muxdelay = 1.4  # ffmpeg's MPEG-TS muxer starts its timestamps here
    wrapping = to_ts(feed, ts_dir / "wrapping.ts", offset_s=MPEGTS_WRAP_S - PATTERN_S - muxdelay)
    clip = back_to_back(ts_dir / "wrap.ts", pattern_ts, wrapping)
    report, stderr = scan(clip, known_bad_dir)
    assert report["frames_decoded"] == (PATTERN_S + PATTERN_S + BAD_START + 6) * FPS
    assert_caught_after_the_jump(
        report,
        stderr,
        session_bad_s=2 * PATTERN_S + BAD_START,
        source_bad_s=(start_s(wrapping) + PATTERN_S + BAD_START) % MPEGTS_WRAP_S,
    )
    assert "kind='forward'" in stderr and "kind='wrap'" in stderr


# -- the decode thread itself: audio and video on one timeline ------------------------


def lavfi_ts(dst: Path, video: str, audio: str) -> Path:
    ffmpeg(
        "-f", "lavfi", "-i", video, "-f", "lavfi", "-i", audio, "-t", "4",
        "-c:v", "libx264", "-g", "25", "-pix_fmt", "yuv420p", "-c:a", "aac", "-ar", "48000",
        "-f", "mpegts", str(dst),
    )  # fmt: skip
    return dst


def av_source(url: str, frames: list[VideoFrame], audio: list[AudioChunk], **opts: Any) -> AvSource:
    def on_audio(item: AudioChunk | AudioUnavailable) -> None:
        if isinstance(item, AudioChunk):
            audio.append(item)

    # 30 fps admits every frame of a 25 fps source, all of them decoded.
    sampler = FrameSampler(30.0, 30.0)
    opts.setdefault("fast_decode", False)
    return AvSource("av", SourceOptions(url=url, **opts), sampler, frames.append, on_audio)


def jumps(kind: str) -> float:
    value = REGISTRY.get_sample_value("livemod_timestamp_discontinuities_total", {"kind": kind})
    return value or 0.0


def test_audio_and_video_stay_aligned_across_a_restart(
    ts_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A flash and a tone start together 2 s after a restart: they still do."""
    first = lavfi_ts(
        ts_dir / "av1.ts", "color=c=gray:s=320x240:r=25:d=4", "anullsrc=r=48000:cl=mono"
    )
    second = lavfi_ts(
        ts_dir / "av2.ts",
        "color=c=black:s=320x240:r=25:d=4,drawbox=c=white:t=fill:enable='gte(t,2)'",
        "sine=f=1000:r=48000:d=4,volume=volume=0:enable='lt(t,2)'",
    )
    clip = back_to_back(ts_dir / "av.ts", first, second)
    before = jumps("backward")
    frames: list[VideoFrame] = []
    audio: list[AudioChunk] = []
    with caplog.at_level(logging.WARNING, logger="livemod.ingest.av_source"):
        end = av_source(str(clip), frames, audio).run()
    assert end.reason == "eof", end.error
    assert jumps("backward") == before + 1
    [record] = [r for r in caplog.records if r.getMessage().startswith("source timestamps")]
    assert record.__dict__["stream_id"] == "av" and record.__dict__["kind"] == "backward"

    times = [f.media_time_s for f in frames]
    assert len(frames) == 200 and all(a < b for a, b in pairwise(times))
    starts = [c.media_time_s for c in audio]
    assert all(a < b for a, b in pairwise(starts))
    gaps = [b.media_time_s - a.end_s for a, b in pairwise(audio)]
    assert max(abs(g) for g in gaps) < 0.1, "audio lost its place at the restart"

    flash = next(f for f in frames if f.image.mean() > 128)
    samples = np.concatenate([c.samples for c in audio])
    onset = audio[0].media_time_s + int(np.argmax(np.abs(samples) > 0.05)) / AUDIO_RATE
    assert flash.media_time_s == pytest.approx(6.0, abs=0.1)
    assert onset == pytest.approx(flash.media_time_s, abs=0.05)
    assert flash.source_time_s == pytest.approx(start_s(second) + 2.0, abs=0.05)


def test_a_paced_file_neither_stalls_nor_bursts_at_a_jump(ts_dir: Path) -> None:
    part = ts_dir / "short.mp4"
    testmedia.make_clip(part, [testmedia.Segment(2.0, None)], fps=FPS)
    clip = back_to_back(
        ts_dir / "paced.ts",
        to_ts(part, ts_dir / "short.ts"),
        to_ts(part, ts_dir / "short_late.ts", offset_s=3600.0),
    )
    frames: list[VideoFrame] = []
    source = av_source(str(clip), frames, [], realtime=True)
    started = time.monotonic()
    worker = threading.Thread(target=source.run, daemon=True)
    worker.start()
    worker.join(30 * TIMEOUT_SCALE)
    took = time.monotonic() - started
    source.stop()
    assert not worker.is_alive(), "the paced decode stalled at the jump"
    assert len(frames) == 100
    # Paced at its own rate on both sides of the jump: 4 s of video in about 4 s.
    assert 3.5 <= took <= 8.0 * TIMEOUT_SCALE
