"""Storage faults for real: the database or the evidence folder on a small tmpfs that
fills up during a live session. Nothing decided may be lost: the action still reaches
subscribers, moderation goes on, ``/healthz`` says ``degraded``, and once space is back
the spooled events are committed in order with the ``seq`` they were published with.

(Timestamp jumps, the third probe case of this family, live in tests/ingest.)
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import websockets

from tests.app.test_e2e import post_stream
from tests.conftest import BAD_START, EVENT_VALIDATOR, TIMEOUT_SCALE, DaemonProcess


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs (the suite runs as root), unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> None:
    """Take every free byte of ``disk`` (``free`` gives them back)."""
    for name, size in (("filler", 1 << 20), ("filler-tail", 512)):
        fd = os.open(disk / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            while True:
                os.write(fd, b"\0" * size)
        except OSError:
            pass  # full (smaller writes may still fit: the tail takes those)
        finally:
            os.close(fd)


def free(disk: Path) -> None:
    for name in ("filler", "filler-tail"):
        (disk / name).unlink(missing_ok=True)


async def next_event(ws: Any, want: Any, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout * TIMEOUT_SCALE
    while True:
        left = deadline - time.monotonic()
        assert left > 0, "event not seen in time"
        event = json.loads(await asyncio.wait_for(ws.recv(), left))
        EVENT_VALIDATOR.validate(event)
        if want(event):
            return dict(event)


async def play_and_fill(
    ws: Any, http: aiohttp.ClientSession, daemon: DaemonProcess, clip: Path, who: str, disk: Path
) -> tuple[str, dict[str, Any]]:
    """Play ``clip`` live as ``who`` (user and room), fill ``disk`` once the session has
    started, and return the stream id and the known-bad insert's action start."""
    created = await post_stream(
        http, daemon.base, url=str(clip), user_id=who, room_id=who, realtime=True
    )
    await next_event(ws, lambda e: e.get("state") == "started", 20)
    fill(disk)
    start = await next_event(
        ws, lambda e: e["type"] == "action" and e["state"] == "start", 30 + BAD_START
    )
    return str(created["id"]), start


async def health(http: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    async with http.get(f"{base}/healthz") as resp:
        assert resp.status == 200
        body: dict[str, Any] = await resp.json()
        return body


async def test_full_disk_under_the_store_spools_then_commits_in_order(
    tmp_path: Path, known_bad_dir: Path, violation_clip: Path, small_disk: Path
) -> None:
    daemon = DaemonProcess(
        tmp_path,
        known_bad_dir,
        extra_env={
            "LIVEMOD_STORE__PATH": str(small_disk / "livemod.db"),
            "LIVEMOD_STORE__EVIDENCE_DIR": str(tmp_path / "evidence"),
            "LIVEMOD_STORE__RETRY_S": "0.2",
        },
    )
    daemon.start()
    try:
        async with (
            websockets.connect(daemon.ws) as ws,
            aiohttp.ClientSession() as http,
        ):
            sid, start = await play_and_fill(
                ws, http, daemon, violation_clip, "full-disk", small_disk
            )
            # Decided and delivered, not stored yet.
            assert start["action"] == "pause" and start["category"] == "known_bad"
            assert start["stored"] is False
            failed = await next_event(ws, lambda e: e["type"] == "store", 10)
            assert failed["state"] == "failed" and "full" in failed["reason"]
            assert failed["seq"] == start["seq"] + 1

            status = await health(http, daemon.base)
            assert status["status"] == "degraded"
            assert any("store" in reason for reason in status["degraded"])
            async with http.post(
                f"{daemon.base}/v1/streams",
                json={"url": str(violation_clip), "user_id": "bob", "room_id": "other"},
            ) as resp:
                # A new session needs the database: a clear JSON 503, not a traceback.
                assert resp.status == 503
                assert "storage unavailable" in (await resp.json())["error"]

            # Moderation goes on while the disk is full: the pause is lifted too.
            stop = await next_event(
                ws, lambda e: e["type"] == "action" and e["state"] == "stop", 30
            )
            assert stop["stored"] is False and stop["seq"] > start["seq"]

            free(small_disk)
            recovered = await next_event(
                ws, lambda e: e["type"] == "store" and e["state"] == "recovered", 20
            )
            assert recovered["spooled"] >= 3 and recovered["dropped_events"] == 0
            assert "stored" not in recovered
            ended = await next_event(
                ws, lambda e: e.get("stream_id") == sid and e.get("state") == "ended", 30
            )
            assert "stored" not in ended

        # Everything published is in the store, in order, with the same seq: a replay
        # from 0 is gap-free and shows the spooled events as they were published.
        async with websockets.connect(f"{daemon.ws}?since=0") as replay:
            seen: list[dict[str, Any]] = []
            while not seen or seen[-1]["seq"] < ended["seq"]:
                seen.append(json.loads(await asyncio.wait_for(replay.recv(), 10)))
        seqs = [e["seq"] for e in seen]
        assert seqs == list(range(1, ended["seq"] + 1))
        by_seq = {e["seq"]: e for e in seen}
        assert {k: v for k, v in start.items() if k != "stored"} == by_seq[start["seq"]]
        assert by_seq[failed["seq"]]["state"] == "failed"
        for event in seen:
            EVENT_VALIDATOR.validate(event)
        assert daemon_health(daemon)["status"] == "ok"
    finally:
        free(small_disk)
        daemon.stop()


def daemon_health(daemon: DaemonProcess) -> dict[str, Any]:
    with urllib.request.urlopen(f"{daemon.base}/healthz", timeout=5) as resp:
        body: dict[str, Any] = json.loads(resp.read())
        return body


async def test_full_evidence_folder_keeps_moderating_without_pictures(
    tmp_path: Path, known_bad_dir: Path, violation_clip: Path, small_disk: Path
) -> None:
    daemon = DaemonProcess(
        tmp_path,
        known_bad_dir,
        extra_env={"LIVEMOD_STORE__EVIDENCE_DIR": str(small_disk / "evidence")},
    )
    daemon.start()
    try:
        async with (
            websockets.connect(daemon.ws) as ws,
            aiohttp.ClientSession() as http,
        ):
            sid, start = await play_and_fill(
                ws, http, daemon, violation_clip, "full-evidence", small_disk
            )
            assert start["action"] == "pause" and start["evidence"] == "unavailable"
            assert "stored" not in start  # the database is fine: committed at once
            note = await next_event(ws, lambda e: e["type"] == "store", 10)
            assert note["state"] == "evidence_failed" and "No space" in note["reason"]
            status = await health(http, daemon.base)
            assert status["status"] == "degraded"
            assert any(reason.startswith("evidence") for reason in status["degraded"])
            async with http.get(f"{daemon.base}/v1/evidence/{start['evidence_id']}") as resp:
                record = await resp.json()
                # The scores are kept for the appeal, the picture could not be.
                assert resp.status == 200 and record["category"] == "known_bad"
            async with http.get(f"{daemon.base}/v1/evidence/{start['evidence_id']}/image") as r:
                assert r.status == 404
            ended = await next_event(
                ws, lambda e: e.get("stream_id") == sid and e.get("state") == "ended", 40
            )
            assert ended["reason"] == "eof"
    finally:
        free(small_disk)
        daemon.stop()
