"""Speech moderation end to end: the real daemon, clips spoken by espeak-ng, real time.

The vision models and OCR are switched off here so that Whisper has the two
cores this suite shares; the hash analyzer still samples every video frame.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import websockets

from livemod.testing import speech as ts
from tests.app.test_e2e import collect_until_end, post_stream
from tests.conftest import DaemonProcess

pytestmark = pytest.mark.e2e

THREAT = "I will kill you tonight."
SPEECH_ENV = {
    "LIVEMOD_ASR__ENABLED": "true",
    "LIVEMOD_OCR__ENABLED": "false",
    "LIVEMOD_VISION__MODELS": "[]",
}


@pytest.fixture(scope="module")
def threat_clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ts.Placed]:
    track, placed = ts.compose(
        [
            ts.Part(seconds=1.0),
            ts.Part("The weather today is sunny and warm."),
            ts.Part(seconds=1.5, noise=0.05),
            ts.Part(THREAT),
            ts.Part(seconds=1.5),
            ts.Part("Please open the window before dinner."),
            ts.Part(seconds=1.5),
        ]
    )
    clip = tmp_path_factory.mktemp("speech") / "threat.mp4"
    ts.mux_clip(clip, track)
    return clip, next(p for p in placed if p.part.text == THREAT)


@pytest.fixture
def speech_daemon(tmp_path: Path, known_bad_dir: Path) -> Iterator[DaemonProcess]:
    proc = DaemonProcess(tmp_path, known_bad_dir, extra_env=dict(SPEECH_ENV))
    proc.start()
    try:
        yield proc
    finally:
        if proc.proc is not None and proc.proc.poll() is None:
            proc.stop()


async def test_spoken_threat_is_muted_over_its_span(
    speech_daemon: DaemonProcess, threat_clip: tuple[Path, ts.Placed]
) -> None:
    clip, threat = threat_clip
    d = speech_daemon
    async with (
        websockets.connect(f"{d.ws}?room_id=talk") as ws,
        aiohttp.ClientSession() as http,
    ):
        created = await post_stream(
            http, d.base, url=str(clip), user_id="carol", room_id="talk", realtime=True
        )
        events = await collect_until_end(ws, created["id"], 90)
        actions = [e for e in events if e["type"] == "action"]
        # Benign speech, noise and silence around it give no action at all.
        assert [(a["action"], a["state"], a["category"]) for a in actions] == [
            ("mute", "start", "violence"),
            ("mute", "stop", "violence"),
        ], events
        start, stop = actions
        assert start["sources"] == ["asr"] and start["tier"] == "high"
        lo, hi = start["span_s"]
        # "I will kill you": from the first word to at least the threat's end - "tonight".
        assert threat.speech_start_s - 0.4 <= lo <= threat.speech_start_s + 0.4
        assert lo < hi <= threat.speech_end_s + 0.5
        assert stop["span_s"] == start["span_s"] and stop["evidence_id"] == start["evidence_id"]
        assert lo - 0.3 <= start["media_time_s"] <= lo + 0.3
        assert stop["media_time_s"] >= hi
        assert 0 < start["latency_ms"] < 15000

        eid = start["evidence_id"]
        async with http.get(f"{d.base}/v1/evidence/{eid}") as resp:
            evidence: dict[str, Any] = await resp.json()
        assert "kill you" in evidence["text"].lower()
        assert evidence["scores"] == {"text:threat_intent": 0.97}
        assert evidence["audio"] == f"/v1/evidence/{eid}/audio"
        async with http.get(f"{d.base}{evidence['audio']}") as resp:
            wav = await resp.read()
            assert resp.status == 200 and wav[:4] == b"RIFF"
        # About the span, 16 kHz 16-bit mono.
        assert (hi - lo) * 32000 <= len(wav) <= (hi - lo + 1.0) * 32000 + 44
        async with http.get(f"{d.base}/v1/evidence/{eid}/image") as resp:
            assert resp.status == 404

        async with http.get(f"{d.base}/v1/streams/{created['id']}") as resp:
            summary = await resp.json()
        assert summary["audio"] == "moderated" and summary["severity"] == "critical"
        # What of the speech was transcribed; partial only once windows were skipped.
        tr = summary["transcription"]
        assert tr["decodes"] >= 1 and tr["words"] >= 4 and tr["hits"] >= 1, tr
        assert tr["partial"] == (tr["skipped_windows"] > 0), tr
        assert any(lo - 0.3 <= t <= hi for t in summary["flagged_media_times"])
        async with http.get(f"{d.base}/metrics") as resp:
            metrics = await resp.text()
    lag_count = [
        ln for ln in metrics.splitlines() if ln.startswith("livemod_asr_lag_seconds_count")
    ]
    assert lag_count and float(lag_count[0].split()[-1]) > 0
    # What was said is in the evidence, never in the log.
    assert "kill" not in d.log().lower()


async def test_missing_or_corrupt_audio_leaves_video_moderated(
    speech_daemon: DaemonProcess, tmp_path: Path
) -> None:
    silent = tmp_path / "no-audio.mp4"
    ts.mux_clip(silent, None, 4.0)
    broken = tmp_path / "corrupt-audio.mkv"
    ts.mux_clip(broken, None, 4.0, corrupt_audio=True)
    benign = tmp_path / "benign.mp4"
    track, _ = ts.compose([ts.Part(seconds=0.5), ts.Part("My brother plays the guitar.")])
    ts.mux_clip(benign, track, 4.0)
    d = speech_daemon
    async with websockets.connect(d.ws) as ws, aiohttp.ClientSession() as http:
        ids = {}
        for name, clip in (("silent", silent), ("broken", broken), ("benign", benign)):
            created = await post_stream(
                http, d.base, url=str(clip), user_id=name, room_id="r", realtime=True
            )
            ids[created["id"]] = name
        events: list[dict[str, Any]] = []
        ended: set[str] = set()

        async def run() -> None:
            async for raw in ws:
                event = json.loads(raw)
                events.append(event)
                if event["type"] == "session" and event["state"] in ("ended", "error"):
                    ended.add(event["stream_id"])
                    if ended == set(ids):
                        return

        await asyncio.wait_for(run(), 90)
    by_name = {name: [e for e in events if e["stream_id"] == sid] for sid, name in ids.items()}
    for name in ("silent", "broken"):
        states = [e["state"] for e in by_name[name]]
        assert states == ["started", "audio_unmoderated", "ended"], by_name[name]
        ended_event = by_name[name][-1]
        assert ended_event["reason"] == "eof" and ended_event["samples"] >= 16
    reasons = {name: by_name[name][1]["reason"] for name in ("silent", "broken")}
    assert reasons["silent"] == "the source has no audio track"
    assert reasons["broken"].startswith("audio track undecodable")
    # Speech without anything flagged: no action, no warning about audio.
    assert [e["state"] for e in by_name["benign"]] == ["started", "ended"]
