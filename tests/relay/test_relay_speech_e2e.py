"""Speech holds the relay end to end: a real daemon transcribes a spoken threat with
Whisper (on a shared CPU, so its words commit later than the relay's 1 s delay) while
relaying the stream to HLS; the viewer hears the benign sentence and silence over
the threat."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
import websockets

from livemod.testing import speech as ts
from tests.app.test_e2e import collect_until_end, post_stream
from tests.conftest import TIMEOUT_SCALE, DaemonProcess
from tests.relay import marked

pytestmark = pytest.mark.e2e

THREAT = "I will kill you tonight."
BENIGN = "The weather today is sunny and warm."


async def test_a_spoken_threat_is_silent_in_the_relayed_output(
    tmp_path: Path, known_bad_dir: Path
) -> None:
    track, placed = ts.compose(
        [
            ts.Part(seconds=1.0),
            ts.Part(BENIGN),
            ts.Part(seconds=1.5),
            ts.Part(THREAT),
            ts.Part(seconds=2.0),
        ]
    )
    clip = tmp_path / "threat.mp4"
    ts.mux_clip(clip, track)
    benign, threat = (next(p for p in placed if p.part.text == s) for s in (BENIGN, THREAT))
    hls = tmp_path / "hls"
    daemon = DaemonProcess(
        tmp_path,
        known_bad_dir,
        extra_env={
            "LIVEMOD_ASR__ENABLED": "true",
            "LIVEMOD_OCR__ENABLED": "false",
            "LIVEMOD_VISION__MODELS": "[]",
            "LIVEMOD_RELAY__OUTPUT": f"{hls}/{{room_id}}",
            # Shorter than Whisper's lag here (its words commit ~2 s after they are
            # said): the relay must hold for speech. On two shared cores the lag may
            # grow much longer: hold up to 30 s rather than count late frames.
            "LIVEMOD_RELAY__DELAY_S": "1.0",
            "LIVEMOD_RELAY__MAX_DELAY_S": "30",
        },
    )
    daemon.start()
    try:
        async with (
            websockets.connect(f"{daemon.ws}?room_id=talk") as ws,
            aiohttp.ClientSession() as http,
        ):
            created = await post_stream(
                http,
                daemon.base,
                url=str(clip),
                user_id="carol",
                room_id="talk",
                realtime=True,
                relay=True,
            )
            events = await collect_until_end(ws, created["id"], 90 * TIMEOUT_SCALE)
            relay: dict[str, object] = {}
            for _ in range(round(60 * TIMEOUT_SCALE)):  # the relay drains after the end
                async with http.get(f"{daemon.base}/v1/streams/{created['id']}") as resp:
                    relay = (await resp.json())["relay"]
                if relay["state"] == "ended":
                    break
                await asyncio.sleep(0.5)
    finally:
        daemon.stop()
    mutes = [e for e in events if e["type"] == "action" and e["action"] == "mute"]
    assert [m["state"] for m in mutes] == ["start", "stop"], events
    lo, hi = mutes[0]["span_s"]
    assert relay["state"] == "ended" and relay["late_decisions"] == 0, relay
    assert relay["late_frames"] == 0 and relay["holds"] >= 1, relay  # it waited for speech

    viewed = await asyncio.to_thread(marked.view, str(hls / "talk" / "index.m3u8"))
    # Output time is media time (the clip's first frame is at 0).
    assert viewed.rms(lo, hi) < 0.002, (lo, hi)  # the threat: silent
    assert viewed.rms(threat.speech_start_s + 0.1, threat.speech_end_s - 0.3) < 0.002
    heard = viewed.rms(benign.speech_start_s, benign.speech_end_s)
    assert heard > 0.02, heard  # the benign sentence plays
