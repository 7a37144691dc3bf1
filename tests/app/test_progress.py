"""``livemod scan``'s progress bar: drawn on a terminal's stderr, never elsewhere."""

from __future__ import annotations

import io
import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import numpy as np

from livemod.app.progress import ProgressBar, probe_duration, render
from livemod.messages import FrameAnalysis, VideoFrame
from tests.conftest import TIMEOUT_SCALE


def analysis(media_time_s: float) -> FrameAnalysis:
    frame = VideoFrame("s", 0, media_time_s, 0.0, np.zeros((4, 4, 3), dtype=np.uint8))
    return FrameAnalysis(frame, (), {}, 1.0, 0.0)


def test_render_with_and_without_a_known_duration() -> None:
    line = render(7.0, 14.0, 28, 2.0, width=10)
    assert line.startswith("scan [#####-----]  50%  7.0/14.0 s")
    assert "28 samples" in line and "3.5x" in line
    live = render(7.0, None, 28, 2.0)
    assert "7.0 s of media" in live and "[" not in live


def test_bar_redraws_at_most_every_interval_and_ends_its_line() -> None:
    now = [0.0]
    out = io.StringIO()
    bar = ProgressBar(out, 10.0, interval_s=0.5, clock=lambda: now[0])
    for i in range(10):
        now[0] = i * 0.1
        bar.update(analysis(i * 0.5))
    assert out.getvalue().count("\r") == 2  # at 0.0 s and 0.5 s
    bar.close()
    text = out.getvalue()
    assert text.endswith("\n") and "100%" in text.splitlines()[-1]
    assert bar.samples == 10


def test_probe_duration(benign_clip: Path, tmp_path: Path) -> None:
    assert probe_duration(str(benign_clip)) == 6.0
    assert probe_duration("rtmp://127.0.0.1/live/x") is None  # never opened
    (tmp_path / "junk.mp4").write_bytes(b"junk")
    assert probe_duration(str(tmp_path / "junk.mp4")) is None


def scan(clip: Path, stderr: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "livemod", "scan", str(clip), "--json"],
        stdout=subprocess.PIPE,
        stderr=stderr,
    )


def test_scan_draws_the_bar_on_a_terminal_only(benign_clip: Path) -> None:
    master, slave = pty.openpty()
    proc = scan(benign_clip, slave)
    os.close(slave)
    out, _ = proc.communicate(timeout=120 * TIMEOUT_SCALE)
    terminal = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed its end
            break
        if not chunk:
            break
        terminal += chunk
    os.close(master)
    assert proc.returncode == 0
    report = json.loads(out)  # stdout is the report and nothing else
    assert report["status"] == "ok"
    assert b"scan [" in terminal and b"100%" in terminal

    proc = scan(benign_clip, subprocess.PIPE)
    out, err = proc.communicate(timeout=120 * TIMEOUT_SCALE)
    assert proc.returncode == 0 and json.loads(out)["status"] == "ok"
    assert b"scan [" not in err and b"\r" not in err
