"""``lower_priority``: background threads and decoding yield the cores to the rest of the
daemon."""

from __future__ import annotations

import os
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from livemod.app.scan import scan
from livemod.budget import lower_priority
from livemod.config import load_config
from livemod.ingest.av_source import AvSource, SourceOptions
from livemod.messages import FrameAnalysis
from livemod.ocr.stage import OcrStage, StageSettings
from livemod.sampling import FrameSampler


def nice_of_this_thread() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_a_lowered_thread_runs_nicer_and_the_others_do_not_change() -> None:
    before = nice_of_this_thread()
    with ThreadPoolExecutor(1, initializer=lower_priority, initargs=(5,)) as pool:
        lowered = pool.submit(nice_of_this_thread).result()
    with ThreadPoolExecutor(1, initializer=lower_priority, initargs=(0,)) as pool:
        unchanged = pool.submit(nice_of_this_thread).result()
    assert lowered == min(19, before + 5)
    assert unchanged == before and nice_of_this_thread() == before


def test_ocr_workers_run_at_the_configured_nice() -> None:
    before = nice_of_this_thread()
    # The stage's pool never touches the engine or policy until a frame is offered.
    stage = OcrStage(None, None, StageSettings(nice=7))  # type: ignore[arg-type]
    try:
        assert stage._pool.submit(nice_of_this_thread).result() == min(19, before + 7)
    finally:
        stage.close()


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two seconds of 320x180 H.264."""
    path = tmp_path_factory.mktemp("nice") / "clip.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25",
         "-t", "2", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path)],
        check=True,
    )  # fmt: skip
    return path


def test_decoding_threads_run_at_the_configured_nice(clip: Path) -> None:
    """A real file decoded by ``AvSource``: each frame is handed on from the decoding
    thread, which runs ``ingest.nice`` lower than the thread that started it."""
    before = nice_of_this_thread()
    seen: list[int] = []
    source = AvSource(
        "nice",
        SourceOptions(url=str(clip), nice=3),
        FrameSampler(4.0, 4.0),
        lambda frame: seen.append(nice_of_this_thread()),
    )
    assert source.run().reason == "eof"
    assert seen and set(seen) == {min(19, before + 3)}
    assert nice_of_this_thread() == before


async def test_a_scan_decodes_at_full_priority(clip: Path) -> None:
    """``livemod scan`` (a file read with backpressure) waits for the analysis anyway:
    its decoding thread keeps the daemon's priority whatever ``ingest.nice`` says."""
    config = load_config(
        None, environ={"LIVEMOD_VISION__MODELS": "[]", "LIVEMOD_INGEST__NICE": "6"}
    )
    seen: list[int] = []

    def on_sample(_: FrameAnalysis) -> None:
        # Called on the event loop while the decoding thread (av-<stream id>) runs.
        for thread in threading.enumerate():
            if thread.name.startswith("av-") and thread.native_id is not None:
                seen.append(os.getpriority(os.PRIO_PROCESS, thread.native_id))

    report = await scan(config, str(clip), on_sample=on_sample)
    assert report["status"] == "ok"
    assert seen and set(seen) == {nice_of_this_thread()}
