"""End to end: a real daemon relays two streams to the ``safe`` application of a real
nginx-rtmp, viewers play them, and the pictures and sound they got are checked.

* ``cam``: ffmpeg publishes to nginx-rtmp with ``?relay=1``; ``on_publish`` reaches the
  daemon, which pulls the stream and relays it to ``safe/cam``;
* ``room1``: ``POST /v1/streams {"relay": true}`` on a file, relayed to ``safe/room1``.

Both clips show a known-bad picture from 3 s to 5.5 s (its hash list is the daemon's):
the policy pauses it, so every frame of that window must reach the viewer as the
slate, silent, and every frame well outside it unchanged.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
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

BAD_S = (3.0, 5.5)
DURATION_S = 8.5
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


class Viewer(threading.Thread):
    """Plays one output from before it starts to its end."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.viewed: marked.Viewed | None = None
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self.viewed = marked.view(self.url, timeout_s=20 * TIMEOUT_SCALE)
        except BaseException as exc:
            self.error = exc


def check_pixels(view: marked.Viewed) -> None:
    """Every frame of the flagged window is the slate, silent; the rest passes."""
    assert len(view.frames) > DURATION_S * marked.FPS * 0.8, len(view.frames)
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


def test_viewers_of_the_safe_output_never_see_the_flagged_window(
    tmp_path: Path, known_bad_dir: Path, flagged_clip: Path
) -> None:
    http_port = free_port()
    hook = f"http://127.0.0.1:{http_port}/hooks/nginx-rtmp"
    nginx = NginxRtmp(tmp_path / "nginx", hook_url=hook)
    nginx.start()
    safe = f"rtmp://127.0.0.1:{nginx.rtmp_port}/safe"
    daemon = DaemonProcess(
        tmp_path / "d",
        known_bad_dir,
        http_port=http_port,
        extra_env={**FAST, "LIVEMOD_RELAY__OUTPUT": safe + "/{room_id}"},
    )
    daemon.workdir.mkdir()
    publisher = None
    try:
        daemon.start()
        # Viewers wait on nginx before the relay publishes, as players would.
        viewers = [Viewer(f"{safe}/cam"), Viewer(f"{safe}/room1")]
        time.sleep(0.5)
        publisher = subprocess.Popen(
            ["ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-i", str(flagged_clip),
             "-c", "copy", "-f", "flv", nginx.publish_url("cam", "user_id=gina&relay=1")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        created = post(
            daemon.base,
            "/v1/streams",
            {"url": str(flagged_clip), "user_id": "u1", "room_id": "room1", "relay": True},
        )
        assert isinstance(created["relay"], dict)
        assert created["relay"]["output"] == f"{safe}/room1"
        streams = get(daemon.base, "/v1/streams")["streams"]
        assert isinstance(streams, list)
        by_room = {s["room_id"]: s for s in streams}
        deadline = time.monotonic() + 15 * TIMEOUT_SCALE
        while "cam" not in by_room and time.monotonic() < deadline:
            time.sleep(0.3)
            by_room = {s["room_id"]: s for s in get(daemon.base, "/v1/streams")["streams"]}  # type: ignore[attr-defined]
        assert by_room["cam"]["relay"]["output"] == f"{safe}/cam", by_room
        sid = created["id"]
        deadline = time.monotonic() + 60 * TIMEOUT_SCALE
        summary = get(daemon.base, f"/v1/streams/{sid}")
        while summary["status"] != "ended" and time.monotonic() < deadline:
            time.sleep(0.5)
            summary = get(daemon.base, f"/v1/streams/{sid}")
        publisher.wait(timeout=(DURATION_S + 20) * TIMEOUT_SCALE)
        for viewer in viewers:
            viewer.join(40 * TIMEOUT_SCALE)
        with urllib.request.urlopen(daemon.base + "/metrics", timeout=10) as resp:
            exported = resp.read().decode()
    finally:
        if publisher is not None and publisher.poll() is None:
            publisher.kill()
        if daemon.proc is not None:
            daemon.stop()
        nginx.stop()
    status = summary["relay"]
    assert isinstance(status, dict), summary
    actions = [(a["action"], a["state"]) for a in summary["actions"]]  # type: ignore[union-attr]
    assert ("pause", "start") in actions, (actions, daemon.log())
    assert status["late_decisions"] == 0 and status["frames_treated"] > 0, status
    for viewer in viewers:
        assert viewer.error is None, (viewer.url, viewer.error)
        assert viewer.viewed is not None, viewer.url
        check_pixels(viewer.viewed)
    assert 'livemod_relay_treated_frames_total{action="pause"}' in exported
    assert "livemod_relay_delay_seconds_count" in exported
    with sqlite3.connect(daemon.workdir / "livemod.db") as db:
        rows = db.execute("SELECT body FROM events").fetchall()
    relay_events = [e for e in map(json.loads, (r[0] for r in rows)) if e["type"] == "relay"]
    for room in ("cam", "room1"):
        states = [e["state"] for e in relay_events if e["room_id"] == room]
        assert states[0] == "started" and states[-1] == "ended", (room, states)
