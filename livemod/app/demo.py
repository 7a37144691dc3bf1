"""``livemod demo``: the daemon moderating a generated sample stream, live.

Builds a 24 s clip (test patterns, photographs shipped in scikit-image, a
known-bad stand-in at 11-15 s, and espeak-ng talk with a spoken threat at 17 s, which
speech moderation, on by default, mutes), starts ``livemod serve`` on its embedded defaults
(only the known-bad folder and the store location are set, through environment
variables), feeds the clip in real time and prints each event as it arrives.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import cv2
import numpy as np
import websockets

from livemod.messages import AUDIO_RATE
from livemod.testing import media as testmedia
from livemod.testing import speech as testspeech

TALK = (
    (1.0, "Welcome to the stream, everyone."),
    (5.0, "This coffee is really good today."),
    (17.0, testspeech.THREAT),
    (21.0, "Thanks for watching, see you tomorrow."),
)
"""What is said in the demo clip, and when (media seconds)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prepare(workdir: Path) -> tuple[Path, Path]:
    """Write the clip and the known-bad folder; return their paths."""
    bad = testmedia.photo(testmedia.KNOWN_BAD_PHOTO)
    folder = workdir / "known_bad"
    folder.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / f"{testmedia.KNOWN_BAD_PHOTO}.png"), bad[:, :, ::-1])
    clip = workdir / "clip.mp4"
    segments = testmedia.demo_segments(bad)
    testmedia.make_clip(clip, segments)
    _add_speech(clip, sum(s.duration_s for s in segments))
    return clip, folder


def _add_speech(clip: Path, seconds: float) -> bool:
    """Lay the ``TALK`` sentences (espeak-ng) under the clip as its AAC audio track."""
    if shutil.which("espeak-ng") is None or shutil.which("ffmpeg") is None:
        print("espeak-ng or ffmpeg missing: the demo clip has no speech")
        return False
    track = np.zeros(round(seconds * AUDIO_RATE), np.float32)
    for at_s, text in TALK:
        said = testspeech.speak(text)
        i = round(at_s * AUDIO_RATE)
        track[i : i + len(said)] = said[: len(track) - i]
    raw = clip.with_suffix(".f32")
    raw.write_bytes(track.tobytes())
    talking = clip.with_name("clip-talk.mp4")
    pcm = ["-f", "f32le", "-ar", str(AUDIO_RATE), "-ac", "1", "-i", str(raw)]
    mapping = ["-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac", "-shortest"]
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-i", str(clip), *pcm, *mapping, str(talking)],
        check=True,
    )
    talking.replace(clip)
    raw.unlink()
    return True


async def _wait_healthy(base: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {proc.returncode}")
            try:
                async with http.get(f"{base}/healthz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError("daemon did not become healthy")


def _line(event: dict[str, Any]) -> str:
    if event["type"] == "action":
        regions = f" regions={len(event['regions'])}" if event.get("regions") else ""
        return (
            f"[seq {event['seq']:>3}] ACTION {event['action']:<6} {event['state']:<5}"
            f" category={event['category']} tier={event['tier']} conf={event['confidence']}"
            f" media_t={event['media_time_s']:.2f}s latency={event['latency_ms']:.0f}ms"
            f" sources={','.join(event['sources'])}{regions} evidence={event.get('evidence_id')}"
        )
    extra = {k: v for k, v in event.items() if k not in ("seq", "type", "ts", "stream_id")}
    return f"[seq {event['seq']:>3}] SESSION {json.dumps(extra)}"


async def _drive(clip: Path, http_port: int, ws_port: int) -> int:
    base = f"http://127.0.0.1:{http_port}"
    async with websockets.connect(f"ws://127.0.0.1:{ws_port}/v1/events?room_id=demo-room") as ws:
        async with aiohttp.ClientSession() as http:
            body = {
                "url": str(clip),
                "user_id": "demo-user",
                "room_id": "demo-room",
                "realtime": True,
            }
            async with http.post(f"{base}/v1/streams", json=body) as resp:
                created = await resp.json()
                if resp.status != 201:
                    print(f"could not start the stream: {created}")
                    return 1
        print(
            f"moderating {clip.name} live as stream {created['id']} (24 s; known-bad at 11-15 s,"
            f" spoken threat at {TALK[2][0]:.0f} s)"
        )
        actions = 0
        async for raw in ws:
            event = json.loads(raw)
            print(_line(event), flush=True)
            actions += event["type"] == "action"
            if event["type"] == "session" and event["state"] in ("ended", "error"):
                break
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/v1/streams/{created['id']}") as resp:
                summary = await resp.json()
        print(
            f"done: {actions} action events, risk_score={summary.get('risk_score')}"
            f" severity={summary.get('severity')}"
        )
        if summary.get("transcription"):
            print(f"speech: {json.dumps(summary['transcription'])}")
        return 0 if actions else 1


def run_demo(workdir: Path) -> int:
    workdir = workdir.resolve()
    print("generating the sample clip ...", flush=True)
    clip, folder = prepare(workdir)
    http_port, ws_port = _free_port(), _free_port()
    env = dict(os.environ)
    env.update(
        {
            "LIVEMOD_KNOWN_BAD__PATHS": json.dumps([str(folder)]),
            "LIVEMOD_STORE__PATH": str(workdir / "livemod.db"),
            "LIVEMOD_HTTP__PORT": str(http_port),
            "LIVEMOD_WEBSOCKET__PORT": str(ws_port),
            # The sample clip is a local file: the daemon reads none outside its roots.
            "LIVEMOD_INGEST__FILE_ROOTS": json.dumps([str(workdir)]),
            "LIVEMOD_LOG_LEVEL": "WARNING",
        }
    )
    print(
        "starting the daemon (livemod serve, embedded defaults, this folder as its file root) ...",
        flush=True,
    )
    proc = subprocess.Popen([sys.executable, "-m", "livemod", "serve"], env=env)
    try:
        asyncio.run(_wait_healthy(f"http://127.0.0.1:{http_port}", proc, 60.0))
        return asyncio.run(_drive(clip, http_port, ws_port))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
