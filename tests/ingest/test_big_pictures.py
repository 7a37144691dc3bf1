"""Inputs larger than ``ingest.max_pixels`` (a 7680x4320 clip) are moderated: decoded
on one picture set, scaled down before analysis, and the daemon's memory comes back
once the session is over."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import websockets

from livemod.ingest.av_source import AvSource, SourceOptions
from livemod.messages import VideoFrame
from livemod.sampling import FrameSampler
from tests.app.test_e2e import collect_until_end, post_stream
from tests.conftest import DaemonProcess

pytestmark = pytest.mark.e2e

W8K, H8K = 7680, 4320
FRAMES = 12
MAX_PIXELS = 3840 * 2160


@pytest.fixture(scope="module")
def clip_8k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("big") / "8k.mp4"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi",
         "-i", f"testsrc2=size={W8K}x{H8K}:rate=10", "-frames:v", str(FRAMES),
         "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path)],
        check=True,
    )  # fmt: skip
    return path


def test_big_pictures_reach_analysis_scaled_down(clip_8k: Path) -> None:
    frames: list[VideoFrame] = []
    source = AvSource(
        "big",
        SourceOptions(url=str(clip_8k), max_pixels=MAX_PIXELS),
        FrameSampler(30.0, 30.0),
        frames.append,
    )
    end = source.run()
    assert end.reason == "eof" and end.frames_decoded == FRAMES, end
    assert len(frames) == FRAMES
    for frame in frames:
        assert frame.width * frame.height <= MAX_PIXELS
        assert max(frame.width, frame.height) <= 640
        assert (frame.source_width, frame.source_height) == (W8K, H8K)


@pytest.mark.parametrize(
    ("size", "threaded_pixels", "want", "threads"),
    [
        ((640, 360), 1920 * 1080, "NONE", 1),  # one stream among many: one thread
        ((640, 360), 0, "AUTO", 0),  # threads for every picture: FFmpeg decides
        ((W8K, H8K), 1920 * 1080, "SLICE", 0),  # above max_pixels: slice threads
    ],
)
def test_decode_threads_follow_the_picture_size(
    tmp_path: Path, clip_8k: Path, size: tuple[int, int], threaded_pixels: int, want: str,
    threads: int,
) -> None:  # fmt: skip
    import av

    path = clip_8k
    if size != (W8K, H8K):
        path = tmp_path / "small.mp4"
        subprocess.run(
            ["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi",
             "-i", f"testsrc2=size={size[0]}x{size[1]}:rate=10", "-frames:v", "3",
             "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path)],
            check=True,
        )  # fmt: skip
    options = SourceOptions(url=str(path), max_pixels=MAX_PIXELS, threaded_pixels=threaded_pixels)
    source = AvSource("t", options, FrameSampler(4.0, 8.0), lambda frame: None)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert source._thread_type(stream) == want
        assert stream.codec_context.thread_count == threads
    # And the clip decodes whole that way.
    frames: list[VideoFrame] = []
    end = AvSource("t", options, FrameSampler(30.0, 30.0), frames.append).run()
    assert end.reason == "eof" and end.frames_decoded == len(frames) > 0


def resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def daemon(tmp_path: Path, known_bad_dir: Path) -> Iterator[DaemonProcess]:
    env = {"LIVEMOD_VISION__MODELS": "[]", "LIVEMOD_OCR__ENABLED": "false"}
    proc = DaemonProcess(tmp_path, known_bad_dir, extra_env=env)
    proc.start()
    try:
        yield proc
    finally:
        if proc.proc is not None and proc.proc.poll() is None:
            proc.stop()


async def test_memory_comes_back_after_a_big_input(
    daemon: DaemonProcess, clip_8k: Path, benign_clip: Path
) -> None:
    assert daemon.proc is not None
    pid = daemon.proc.pid
    async with (
        websockets.connect(f"{daemon.ws}?room_id=big") as ws,
        aiohttp.ClientSession() as http,
    ):

        async def run(clip: Path) -> dict[str, object]:
            created = await post_stream(
                http, daemon.base, url=str(clip), user_id="bo", room_id="big", realtime=False
            )
            return (await collect_until_end(ws, created["id"], 120))[-1]

        # A small clip first: libraries, decoders and the store are warm when measured.
        await run(benign_clip)
        await asyncio.sleep(0.5)
        before = resident_mb(pid)
        ended = await run(clip_8k)
        await asyncio.sleep(0.5)
        after = resident_mb(pid)
    assert ended["state"] == "ended" and ended["frames"] == FRAMES, ended
    # One 7680x4320 picture set is ~50 MB per picture; per decode thread it stayed
    # resident until restart (~270 MB measured). What remains is the allocator's slack.
    assert after - before < 100, f"resident {before:.0f} MB -> {after:.0f} MB"
