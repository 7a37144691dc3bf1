"""``livemod scan`` reports and never relays, whatever ``relay.enabled`` says."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import TIMEOUT_SCALE
from tests.relay import marked


def test_a_scan_with_relay_enabled_does_not_relay(tmp_path: Path, known_bad_dir: Path) -> None:
    clip = tmp_path / "flagged.mp4"
    marked.make(clip, 4.0, (1.0, 2.5), full=True)
    hls = tmp_path / "hls"
    env = {
        **os.environ,
        "LIVEMOD_RELAY__ENABLED": "true",
        "LIVEMOD_RELAY__OUTPUT": f"{hls}/{{room_id}}",
        "LIVEMOD_KNOWN_BAD__PATHS": json.dumps([str(known_bad_dir)]),
        "LIVEMOD_VISION__MODELS": "[]",  # the hash list alone decides here
        "LIVEMOD_OCR__ENABLED": "false",
        "LIVEMOD_ASR__ENABLED": "false",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "livemod", "scan", str(clip), "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120 * TIMEOUT_SCALE,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert ("pause", "start") in [(a["action"], a["state"]) for a in report["actions"]], report
    assert not any(hls.rglob("*.m3u8")) and not any(hls.rglob("*.ts")), list(hls.rglob("*"))
    assert "relay" not in proc.stderr.lower(), proc.stderr
