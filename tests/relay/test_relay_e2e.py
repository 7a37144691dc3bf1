"""End to end: a real daemon relays a stream to the ``safe`` application of a real
nginx-rtmp, a viewer plays it, and the pictures and sound it got are checked.

The clip shows a known-bad picture from 4 s to 7 s (its hash list is the daemon's):
the policy pauses it, so every frame of that window must reach the viewer as the
slate, silent, and every frame well outside it unchanged.
"""

from __future__ import annotations

import json
import subprocess
import sqlite3
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from livemod.relay.picture import slate
from tests.conftest import TIMEOUT_SCALE, DaemonProcess, free_port
from tests.nginx import NginxRtmp
from tests.relay import marked

pytestmark = pytest.mark.e2e

BAD_S = (4.0, 7.0)
DURATION_S = 11.0
FAST = {
    "LIVEMOD_VISION__MODELS": "[]",  # the hash list alone decides here
    "LIVEMOD_OCR__ENABLED": "false",
    "LIVEMOD_ASR__ENABLED": "false",
}


@pytest.fixture
def flagged_clip(tmp_path: Path) -> Path:
    """Under the test's folder: the daemon reads files under its workdir's parent."""
    path = tmp_path / "flagged.mp4"
    marked.make(path, DURATION_S, BAD_S, full=True)
    return path


def post(base: str, path: str, body: dict[str, object]) -> dict[str, object]:
    req = urllib.request.Request(
        base + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return dict(json.loads(resp.read()))


def get(base: str, path: str) -> dict[str, object]:
    with urllib.request.urlopen(base + path, timeout=10) as resp:
        return dict(json.loads(resp.read()))


def test_viewers_of_the_safe_output_never_see_the_flagged_window(
    tmp_path: Path, known_bad_dir: Path, flagged_clip: Path
) -> None:
    nginx = NginxRtmp(tmp_path / "nginx")
    nginx.start()
    safe = f"rtmp://127.0.0.1:{nginx.rtmp_port}/safe"
    daemon = DaemonProcess(
        tmp_path / "d",
        known_bad_dir,
        extra_env={**FAST, "LIVEMOD_RELAY__OUTPUT": safe + "/{room_id}"},
    )
    daemon.workdir.mkdir()
    viewed: list[marked.Viewed] = []
    errors: list[BaseException] = []

    def viewer() -> None:
        try:
            viewed.append(marked.view(f"{safe}/room1", timeout_s=20 * TIMEOUT_SCALE))
        except BaseException as exc:
            errors.append(exc)

    try:
        daemon.start()
        watcher = threading.Thread(target=viewer, daemon=True)
        watcher.start()  # waiting on nginx before the relay publishes, as a viewer would
        time.sleep(0.5)
        created = post(
            daemon.base,
            "/v1/streams",
            {"url": str(flagged_clip), "user_id": "u1", "room_id": "room1", "relay": True},
        )
        sid = created["id"]
        relay = created["relay"]
        assert isinstance(relay, dict) and relay["output"] == f"{safe}/room1"
        deadline = time.monotonic() + 60 * TIMEOUT_SCALE
        summary = get(daemon.base, f"/v1/streams/{sid}")
        while summary["status"] != "ended" and time.monotonic() < deadline:
            time.sleep(0.5)
            summary = get(daemon.base, f"/v1/streams/{sid}")
        watcher.join(40 * TIMEOUT_SCALE)
        with urllib.request.urlopen(daemon.base + "/metrics", timeout=10) as resp:
            exported = resp.read().decode()
    finally:
        if daemon.proc is not None:
            daemon.stop()
        nginx.stop()
    assert not errors, errors
    assert 'livemod_relay_treated_frames_total{action="pause"}' in exported
    assert "livemod_relay_delay_seconds_count" in exported
    with sqlite3.connect(daemon.workdir / "livemod.db") as db:
        rows = db.execute("SELECT body FROM events").fetchall()
    states = [e["state"] for e in map(json.loads, (r[0] for r in rows)) if e["type"] == "relay"]
    assert states[0] == "started" and states[-1] == "ended", states
    status = summary["relay"]
    assert isinstance(status, dict), summary
    actions = [(a["action"], a["state"]) for a in summary["actions"]]  # type: ignore[union-attr]
    assert ("pause", "start") in actions, (actions, daemon.log())
    assert status["late_decisions"] == 0 and status["frames_treated"] > 0, status
    view = viewed[0]
    total = round(DURATION_S * marked.FPS)
    assert len(view.frames) >= total - 2, (len(view.frames), status)
    check_pixels(view)


def check_pixels(view: marked.Viewed) -> None:
    """Every frame of the flagged window is the slate, silent; the rest passes."""
    board = slate(marked.W, marked.H, "Stream paused")
    times = view.source_times()
    exposed = []
    for (_, img), src_t in zip(view.frames, times, strict=True):
        index = round(src_t * marked.FPS)
        if BAD_S[0] <= src_t < BAD_S[1]:
            if marked.psnr(img, board) < 30:
                exposed.append(round(src_t, 2))
        elif src_t < BAD_S[0] - 0.5 or src_t > BAD_S[1] + 1.5:
            assert marked.read_index(img) == index, f"{src_t:.2f}s: not passed through"
    assert exposed == [], f"flagged frames that reached the viewer: {exposed}"
    # The pause is silent; the tone plays before it.
    offset = view.offset_s()
    assert view.rms(BAD_S[0] - offset + 0.05, BAD_S[1] - offset - 0.05) < 0.003
    assert view.rms(1.0 - offset, 1.45 - offset) > 0.2


def test_a_publish_asking_for_the_relay_is_relayed_to_the_safe_application(
    tmp_path: Path, known_bad_dir: Path, flagged_clip: Path
) -> None:
    """ffmpeg publishes to nginx-rtmp with ``?relay=1``; on_publish reaches the daemon,
    which pulls the stream and relays it to ``safe/{room_id}``; a viewer plays that."""
    http_port = free_port()
    nginx = NginxRtmp(tmp_path / "nginx", hook_url=f"http://127.0.0.1:{http_port}/hooks/nginx-rtmp")
    nginx.start()
    safe = f"rtmp://127.0.0.1:{nginx.rtmp_port}/safe"
    daemon = DaemonProcess(
        tmp_path / "d",
        known_bad_dir,
        http_port=http_port,
        extra_env={**FAST, "LIVEMOD_RELAY__OUTPUT": safe + "/{room_id}"},
    )
    daemon.workdir.mkdir()
    viewed: list[marked.Viewed] = []
    errors: list[BaseException] = []

    def viewer() -> None:
        try:
            viewed.append(marked.view(f"{safe}/cam", timeout_s=20 * TIMEOUT_SCALE))
        except BaseException as exc:
            errors.append(exc)

    publisher = None
    try:
        daemon.start()
        watcher = threading.Thread(target=viewer, daemon=True)
        watcher.start()
        time.sleep(0.5)
        publisher = subprocess.Popen(
            ["ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-i", str(flagged_clip),
             "-c", "copy", "-f", "flv", nginx.publish_url("cam", "user_id=gina&relay=1")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 15 * TIMEOUT_SCALE
        streams: list[dict[str, object]] = []
        while not streams and time.monotonic() < deadline:
            time.sleep(0.5)
            streams = get(daemon.base, "/v1/streams")["streams"]  # type: ignore[assignment]
        publisher.wait(timeout=(DURATION_S + 20) * TIMEOUT_SCALE)
        watcher.join(40 * TIMEOUT_SCALE)
    finally:
        if publisher is not None and publisher.poll() is None:
            publisher.kill()
        if daemon.proc is not None:
            daemon.stop()
        nginx.stop()
    assert not errors, errors
    assert viewed and len(viewed[0].frames) > DURATION_S * marked.FPS * 0.8, daemon.log()
    assert streams and isinstance(streams[0]["relay"], dict), streams
    assert streams[0]["relay"]["output"] == f"{safe}/cam"
    check_pixels(viewed[0])
