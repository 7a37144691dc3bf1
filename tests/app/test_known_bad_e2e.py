"""Known-bad matching end to end: ffmpeg-made clips that show the listed picture the
way streams do (letterboxed, mirrored, inset), through ``livemod scan``; list reloads
on a real daemon, over HTTP and SIGHUP, while it moderates."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import cv2
import numpy as np
import pytest

from livemod.messages import Image
from livemod.testing import media as testmedia
from livemod.vision import pdq
from tests.conftest import TIMEOUT_SCALE, DaemonProcess

pytestmark = pytest.mark.e2e

W, H = 640, 360
BAD_AT = (3.0, 6.0)
TOKEN = "s3cret-token"
HASH_ONLY = {"LIVEMOD_VISION__MODELS": "[]"}


def fitted(pic: Image, scale: float = 1.0, corner: str | None = None, background: int = 0) -> Image:
    """``pic`` fitted to the frame (aspect kept) at ``scale``, on a flat background,
    centred or in a corner (a picture shown inside a screen share)."""
    s = min(W / pic.shape[1], H / pic.shape[0]) * scale
    pw, ph = round(pic.shape[1] * s), round(pic.shape[0] * s)
    frame = np.full((H, W, 3), background, np.uint8)
    x, y = (W - pw) // 2, (H - ph) // 2
    if corner == "br":
        x, y = W - pw - 16, H - ph - 16
    frame[y : y + ph, x : x + pw] = cv2.resize(pic, (pw, ph), interpolation=cv2.INTER_AREA)
    return frame


def shown(how: str) -> Image:
    bad = testmedia.photo(testmedia.KNOWN_BAD_PHOTO)
    if how == "letterboxed":
        return fitted(bad)
    if how == "mirrored":
        return fitted(np.ascontiguousarray(bad[:, ::-1]))
    assert how == "inset"
    # On a light page: the rocket's night sky is as dark as black bars, and no
    # border trim can tell them apart (benchmarks/known_bad.py: scale_*).
    return fitted(bad, 0.45, corner="br", background=225)


def clip(folder: Path, how: str) -> Path:
    path = folder / f"{how}.mp4"
    if not path.exists():
        testmedia.make_clip(
            path,
            [
                testmedia.Segment(BAD_AT[0], None),
                testmedia.Segment(BAD_AT[1] - BAD_AT[0], shown(how), how),
                testmedia.Segment(2.0, None),
            ],
        )
    return path


def livemod(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "livemod", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=180 * TIMEOUT_SCALE,
        check=False,
    )


@pytest.mark.parametrize("how", ["letterboxed", "mirrored", "inset"])
def test_scan_catches_the_listed_picture_as_streams_show_it(
    media_dir: Path, known_bad_dir: Path, how: str
) -> None:
    env = {"LIVEMOD_KNOWN_BAD__PATHS": json.dumps([str(known_bad_dir)]), **HASH_ONLY}
    proc = livemod("scan", str(clip(media_dir, how)), "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    starts = [a for a in report["actions"] if a["state"] == "start"]
    assert [(a["action"], a["category"]) for a in starts] == [("pause", "known_bad")]
    # Within the vote window of the picture's appearance.
    assert BAD_AT[0] <= starts[0]["media_time_s"] <= BAD_AT[0] + 1.0
    flagged = report["flagged_media_times"]
    assert flagged and all(BAD_AT[0] <= t <= BAD_AT[1] + 0.3 for t in flagged)


def test_scan_matches_pdq_lists_in_every_format(media_dir: Path, tmp_path: Path) -> None:
    h = pdq.pdq(testmedia.photo(testmedia.KNOWN_BAD_PHOTO)).hex()
    (tmp_path / "te.tsv").write_text(f"hash\tindicator_id\n{h}\t4242\n", encoding="utf-8")
    (tmp_path / "hma.csv").write_text(
        f"signal_type,signal_value,bank_content_id\npdq,{h},77\n", encoding="utf-8"
    )
    (tmp_path / "plain.pdq").write_text(f"{h} case-9\n", encoding="utf-8")
    for name in ("te.tsv", "hma.csv", "plain.pdq"):
        env = {
            "LIVEMOD_KNOWN_BAD__PATHS": "[]",
            "LIVEMOD_KNOWN_BAD__LISTS": json.dumps(
                [{"name": "partner", "paths": [str(tmp_path / name)]}]
            ),
            **HASH_ONLY,
        }
        proc = livemod("scan", str(clip(media_dir, "letterboxed")), "--json", env=env)
        assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stdout)
        assert [a["category"] for a in report["actions"]][:1] == ["known_bad"], name


def test_a_malformed_list_stops_start_up_naming_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "list.pdq"
    bad.write_text("# ok\n" + "ab" * 31 + "\n", encoding="utf-8")
    env = {"LIVEMOD_KNOWN_BAD__PATHS": json.dumps([str(bad)]), **HASH_ONLY}
    proc = livemod("scan", str(tmp_path / "missing.mp4"), env=env)
    assert proc.returncode != 0
    assert "list.pdq, line 2" in proc.stderr


# -- reloads on a live daemon --------------------------------------------------------


def metric(daemon: DaemonProcess, name: str) -> float | None:
    with urllib.request.urlopen(f"{daemon.base}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


ENTRIES = 'livemod_known_bad_entries{list="default"}'


def append(path: Path, line: str) -> None:
    path.write_text(path.read_text(encoding="utf-8") + line + "\n", encoding="utf-8")


def replace(path: Path, line: str) -> None:
    path.write_text(line + "\n", encoding="utf-8")


@pytest.fixture
def listed(tmp_path: Path) -> Path:
    path = tmp_path / "lists" / "bad.pdq"
    path.parent.mkdir()
    path.write_text(f"{pdq.pdq(testmedia.photo('coffee')).hex()} coffee\n", encoding="utf-8")
    return path


@pytest.fixture
def reload_daemon(tmp_path: Path, listed: Path) -> Iterator[DaemonProcess]:
    work = tmp_path / "d"
    work.mkdir()
    proc = DaemonProcess(work, listed, extra_env={"LIVEMOD_HTTP__TOKEN": TOKEN, **HASH_ONLY})
    proc.start()
    yield proc
    proc.stop()


async def reload(http: aiohttp.ClientSession, daemon: DaemonProcess, token: str | None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.post(f"{daemon.base}/v1/known-bad/reload", headers=headers) as resp:
        return resp.status, await resp.json()


async def test_reload_over_http_is_token_protected_and_keeps_the_old_list_on_error(
    reload_daemon: DaemonProcess, listed: Path
) -> None:
    async with aiohttp.ClientSession() as http:
        assert (await reload(http, reload_daemon, None))[0] == 401
        append(listed, f"{pdq.pdq(testmedia.photo('rocket')).hex()} rocket")
        status, body = await reload(http, reload_daemon, TOKEN)
        assert status == 200, body
        assert body == {"lists": [{"name": "default", "entries": 2}], "entries": 2}
        append(listed, "zz-not-a-hash")
        status, body = await reload(http, reload_daemon, TOKEN)
        assert status == 422 and "bad.pdq, line 3" in body["error"]
        assert "old lists stay" in body["error"]
    assert metric(reload_daemon, ENTRIES) == 2.0
    assert metric(reload_daemon, 'livemod_known_bad_reloads_total{result="failed"}') == 1.0


def test_sighup_reloads_the_lists(reload_daemon: DaemonProcess, listed: Path) -> None:
    assert metric(reload_daemon, ENTRIES) == 1.0
    append(listed, f"{pdq.pdq(testmedia.photo('rocket')).hex()} rocket")
    assert reload_daemon.proc is not None
    reload_daemon.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 20 * TIMEOUT_SCALE
    while metric(reload_daemon, ENTRIES) != 2.0:
        assert time.monotonic() < deadline, reload_daemon.log()
        time.sleep(0.1)


async def test_reloads_under_load_lose_no_match(
    reload_daemon: DaemonProcess, listed: Path, tmp_path: Path
) -> None:
    replace(listed, f"{pdq.pdq(testmedia.photo('rocket')).hex()} rocket")
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        assert (await reload(http, reload_daemon, TOKEN))[0] == 200
        body = {
            "url": str(clip(tmp_path, "mirrored")),  # under the daemon's file roots
            "user_id": "u1",
            "room_id": "r1",
            "realtime": True,
        }
        async with http.post(f"{reload_daemon.base}/v1/streams", json=body) as resp:
            assert resp.status == 201, await resp.text()
            sid = (await resp.json())["id"]
        reloads = 0
        deadline = time.monotonic() + 60 * TIMEOUT_SCALE
        while True:
            status, _ = await reload(http, reload_daemon, TOKEN)
            assert status == 200
            reloads += 1
            async with http.get(f"{reload_daemon.base}/v1/streams/{sid}") as resp:
                summary = await resp.json()
            if summary["status"] == "ended":
                break
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    assert reloads >= 10
    starts = [a for a in summary["actions"] if a["state"] == "start"]
    assert [a["category"] for a in starts] == ["known_bad"]
    assert BAD_AT[0] <= starts[0]["media_time_s"] <= BAD_AT[0] + 1.0
