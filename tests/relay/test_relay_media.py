"""The relay on a real decoder and a real encoder: a marked clip is decoded by
``AvSource`` with the relay as its tap, decisions arrive as the vote would send them
(at the k-th hit, naming the first), the HLS output is read back as a viewer would,
and its pixels and samples are checked frame by frame. The same output is then
played in headless Chromium through a real player page (hls.js from npm,
tests/hls_player), every presented frame read back from a canvas."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from livemod.ingest.av_source import AvSource, SourceOptions
from livemod.messages import Decision, Region, VideoFrame
from livemod.relay.picture import slate
from livemod.relay.relay import Relay, RelaySettings
from livemod.sampling import FrameSampler
from tests.chromium import Chromium, open_page
from tests.conftest import TIMEOUT_SCALE
from tests.relay import marked

SAMPLE_FPS = 4.0
REGION = marked.INSET_REGION
INSET_S = (4.0, 7.0)
MUTE_SPAN = (2.0, 3.0)
PAUSE_S = (8.0, 9.0)


def decision(category: str, action: str, state: str, t: float, **kw: object) -> Decision:
    return Decision(
        key="u:r",
        category=category,
        action=action,  # type: ignore[arg-type]
        state=state,  # type: ignore[arg-type]
        confidence=0.9,
        tier="high",
        sources=("test",),
        media_time_s=t,
        t_trigger=time.time(),
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("relay") / "marked.mp4"
    marked.make(path, 10.0, INSET_S)
    return path


def script(t: float) -> tuple[dict[str, tuple[Region, ...]], list[Decision]]:
    """What analysis and the vote say at the sample at media time ``t`` (4 fps, k=3):
    the boxes seen, and the decisions made on this sample."""
    regions: dict[str, tuple[Region, ...]] = {}
    if INSET_S[0] <= t < INSET_S[1]:
        regions["sexual"] = (REGION,)
    out: list[Decision] = []
    if abs(t - (INSET_S[0] + 0.5)) < 1e-6:  # third hit: start, naming the first
        out.append(decision("sexual", "blur", "start", INSET_S[0], regions=(REGION,)))
    if abs(t - (INSET_S[1] + 0.75)) < 1e-6:  # fourth clean sample: stop
        out.append(decision("sexual", "blur", "stop", t))
    if abs(t - 3.25) < 1e-6:  # speech: the words at 2-3 s judged a little later
        out.append(decision("harassment", "mute", "start", 2.0, span_s=MUTE_SPAN))
    if abs(t - 3.5) < 1e-6:
        out.append(decision("harassment", "mute", "stop", 3.5))
    if abs(t - (PAUSE_S[0] + 0.25)) < 1e-6:
        out.append(decision("violence", "pause", "start", PAUSE_S[0]))
    if abs(t - PAUSE_S[1]) < 1e-6:
        out.append(decision("violence", "pause", "stop", PAUSE_S[1]))
    return regions, out


def run_relay(clip: Path, target: Path) -> Relay:
    relay = Relay(
        "s1",
        RelaySettings(target=str(target), delay_s=0.3, max_delay_s=5.0, lookahead_s=1.0),
    )
    sampler = FrameSampler(SAMPLE_FPS, SAMPLE_FPS)

    def deliver(frame: VideoFrame) -> None:
        t = round(frame.media_time_s * 4) / 4
        regions, decisions = script(t)
        for d in decisions:
            relay.decide(d)
        relay.observe(frame.media_time_s, regions)

    source = AvSource("s1", SourceOptions(url=str(clip)), sampler, deliver, tap=relay)
    relay.start()
    thread = threading.Thread(target=source.run)
    thread.start()
    thread.join(60)
    relay.close()
    return relay


@pytest.fixture(scope="module")
def relayed(clip: Path) -> tuple[Relay, Path]:
    """The clip relayed once to an HLS folder: the relay and the folder."""
    out = clip.parent / "hls"
    return run_relay(clip, out), out


def test_actions_cover_their_frames_from_the_onset_and_nothing_else(
    relayed: tuple[Relay, Path],
) -> None:
    relay, out = relayed
    status = relay.status()
    assert status["late_decisions"] == 0 and status["late_frames"] == 0
    assert status["frames_out"] == status["frames_in"] == 250
    viewed = marked.view(str(out / "index.m3u8"))
    assert len(viewed.frames) == 250
    times = viewed.source_times()
    assert abs(viewed.offset_s()) < 0.1  # output time is media time (plus the muxer's start)
    board = slate(marked.W, marked.H, "Stream paused")
    x0, y0, x1, y1 = marked.INSET
    previous: int | None = None
    for (_, img), src_t in zip(viewed.frames, times, strict=True):
        index = round(src_t * marked.FPS)
        if previous is not None:
            assert index == previous + 1, f"frame {index} after {previous}: not continuous"
        previous = index
        truth = marked.picture(index, None)
        box = img[y0:y1, x0:x1]
        if PAUSE_S[0] <= src_t < PAUSE_S[1]:
            # Paused: the slate, from the first hit (and the sample before it) on.
            assert marked.psnr(img, board) > 30, f"{src_t:.2f}s: not the slate"
            continue
        if PAUSE_S[0] - 0.3 < src_t <= PAUSE_S[1] + 0.05:
            continue  # between the last clean sample and the first hit: either is right
        assert marked.read_index(img) == index, f"{src_t:.2f}s: picture not passed through"
        if INSET_S[0] <= src_t < INSET_S[1]:
            # The photo is on screen: its box must be pixelated on every frame.
            photo = marked.make_inset()
            assert marked.psnr(box, photo) < 24, f"{src_t:.2f}s: flagged region visible"
            # ...and the rest of the picture is untouched.
            assert marked.psnr(img[:, :300], truth[:, :300]) > 27, f"{src_t:.2f}s: over-covered"
        elif not (INSET_S[0] - 0.3 < src_t <= INSET_S[1] + 0.8):
            # Outside the action (and its sample margins): untouched.
            assert marked.psnr(box, truth[y0:y1, x0:x1]) > 27, f"{src_t:.2f}s: treated"
    # The muted span (its words, padded, until the stop) is silent; the tone is
    # heard elsewhere in its on-phases.
    assert viewed.rms(MUTE_SPAN[0] - 0.1, 3.45) < 0.003
    assert viewed.rms(1.0, 1.45) > 0.2
    assert viewed.rms(4.05, 4.45) > 0.2
    # Paused: silent too.
    assert viewed.rms(PAUSE_S[0] + 0.05, PAUSE_S[1] - 0.05) < 0.003
    # A/V sync: every tone onset the viewer hears lines up with the pictures' clock.
    onsets = [t for t in viewed.onsets() if t > 0.5]
    assert onsets, "no tone onsets heard"
    for heard in onsets:
        source_s = heard + viewed.offset_s()
        drift = abs(source_s - round(source_s))
        assert drift < 0.04, f"audio {drift * 1000:.0f} ms off the video at {heard:.2f}s"
    assert status["treated_by_action"]["blur"] > 0
    assert np.isfinite(status["encode_ms_per_frame"])


PLAYER = Path(__file__).resolve().parents[1] / "hls_player"


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server(relayed: tuple[Relay, Path], tmp_path: Path) -> Iterator[str]:
    """One loopback web server: the player page and its hls.js, and the HLS folder."""
    _, hls = relayed
    root = tmp_path / "www"
    root.mkdir()
    (root / "player").symlink_to(PLAYER)
    (root / "hls").symlink_to(hls)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


async def test_the_hls_output_plays_in_a_browser_with_the_pause_covered(
    server: str, tmp_path: Path
) -> None:
    if not (PLAYER / "node_modules" / "hls.js" / "dist" / "hls.min.js").exists():
        pytest.fail("tests/hls_player is not installed: run scripts/setup.sh (npm ci)")
    browser = Chromium(tmp_path)
    browser.start()
    try:
        page, ws = await open_page(browser)
        try:
            await page.goto(
                f"{server}/player/player.html?src=/hls/index.m3u8",
                "window.state === 'playing' || window.failure",
            )
            for _ in range(int(30 * TIMEOUT_SCALE / 0.25)):
                state = await page.evaluate("[window.state, window.failure]")
                if state[0] == "ended" or state[1]:
                    break
                await asyncio.sleep(0.25)
            failure = await page.evaluate("window.failure")
            seen = await page.evaluate("window.seen")
        finally:
            await ws.close()
    finally:
        browser.stop()
    assert failure is None, failure
    assert state[0] == "ended", state
    offsets = sorted(f["index"] / marked.FPS - f["t"] for f in seen if f["index"] is not None)
    assert len(offsets) > 50, f"the player showed {len(seen)} frames, {len(offsets)} readable"
    offset = offsets[len(offsets) // 2]
    inside = outside = 0
    for frame in seen:
        src_t = frame["t"] + offset
        if PAUSE_S[0] <= src_t < PAUSE_S[1] - 0.05:
            inside += 1
            assert frame["index"] is None and frame["mean"] < 60, (src_t, frame)
        elif src_t < PAUSE_S[0] - 0.5 or src_t > PAUSE_S[1] + 0.5:
            outside += 1
            assert frame["index"] is not None, (src_t, frame)
            assert abs(frame["index"] - src_t * marked.FPS) <= 1.5, (src_t, frame)
    assert inside >= 5 and outside >= 50, (inside, outside)
