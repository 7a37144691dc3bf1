"""``livemod scan`` with speech: a long talk read faster than real time, judged whole.

A 40-second talk (espeak-ng, longer than the 30 s audio buffer) ends in a threat. The
scan reads the file many times faster than real time; every sentence is transcribed
and the threat is muted over its span. (The backpressure that guarantees this however
fast the file is read is tested on the ASR service itself, in tests/speech/test_asr_batch.py.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from livemod.app.scan import render_text, scan
from livemod.config import load_config
from livemod.testing import speech as ts
from tests.conftest import TIMEOUT_SCALE

TALK = ts.EVERYDAY
THREAT = ts.THREAT


@pytest.fixture(scope="module")
def talk_clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ts.Placed, int]:
    parts = [ts.Part(seconds=1.0)]
    for sentence in TALK:
        parts += [ts.Part(sentence), ts.Part(seconds=1.2, noise=0.02)]
    parts += [ts.Part(THREAT), ts.Part(seconds=1.5)]
    track, placed = ts.compose(parts)
    assert len(track) / 16000 > 35.0  # longer than the 30 s audio buffer
    clip = tmp_path_factory.mktemp("scan-speech") / "talk.mp4"
    ts.mux_clip(clip, track)
    words = sum(len(ts.words_of(p.part.text)) for p in placed if p.part.text)
    return clip, next(p for p in placed if p.part.text == THREAT), words


async def test_scan_transcribes_a_long_talk_and_mutes_the_threat(
    talk_clip: tuple[Path, ts.Placed, int],
) -> None:
    clip, threat, spoken_words = talk_clip
    # Speech only (no vision models to pace the decoder): the file is read as fast as
    # it decodes, dozens of times real time.
    config = load_config(
        None, environ={"LIVEMOD_ASR__ENABLED": "true", "LIVEMOD_VISION__MODELS": "[]"}
    )
    report = await scan(config, str(clip))
    assert report["status"] == "ok", report["error"]
    assert report["audio"] == "moderated"
    speech = report["speech"]
    # Every sentence reached Whisper: the transcript holds at least the words a 25 %
    # word error rate allows (the bar of the other speech tests; losing the buffer's
    # overflow would cost far more).
    assert speech["words"] >= 0.75 * spoken_words, (speech, spoken_words)
    assert speech["hits"] >= 1
    mutes = [a for a in report["actions"] if a["action"] == "mute" and a["state"] == "start"]
    assert [m["category"] for m in mutes] == ["violence"]
    span = mutes[0]["span_s"]
    assert span[0] == pytest.approx(threat.speech_start_s, abs=0.6)
    assert span[1] <= threat.end_s + 0.6
    assert "speech:" in render_text(report)


def test_scan_cli_reports_speech(talk_clip: tuple[Path, ts.Placed, int], tmp_path: Path) -> None:
    clip, _, _ = talk_clip
    out = subprocess.run(
        [sys.executable, "-m", "livemod", "scan", str(clip), "--json"],
        env={**os.environ, "LIVEMOD_ASR__ENABLED": "true"},
        capture_output=True,
        text=True,
        timeout=300 * TIMEOUT_SCALE,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    assert report["speech"]["words"] > 0
    assert any(a["action"] == "mute" for a in report["actions"])
