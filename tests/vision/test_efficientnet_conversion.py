"""The committed EfficientNet-Lite0 ONNX file is what scripts/convert_efficientnet_lite0.py
makes from the packaged PyTorch weights (pinned torch 2.13.0, dynamo exporter)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from livemod.paths import REPO_ROOT
from livemod.vision.manifest import load_manifest, sha256_file
from tests.conftest import TIMEOUT_SCALE

SCRIPT = REPO_ROOT / "scripts" / "convert_efficientnet_lite0.py"


def test_committed_file_equals_the_conversion(tmp_path: Path) -> None:
    out = tmp_path / "efficientnet-lite0.onnx"
    # The script keeps its throw-away venv (torch) in ~/.cache/livemod/convert-venv, so
    # only the first run on a machine installs torch.
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900 * TIMEOUT_SCALE,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    (spec,) = [s for s in load_manifest() if s.name == "efficientnet-lite0"]
    committed = REPO_ROOT / str(spec.path)
    assert report["sha256"] == sha256_file(out) == sha256_file(committed) == spec.sha256
    assert report["max_abs_diff_vs_torch"] < 1e-5
