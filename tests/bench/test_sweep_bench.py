"""The LLM sweep benchmark's quick mode runs and reports one JSON document."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import TIMEOUT_SCALE

ROOT = Path(__file__).resolve().parents[2]


def test_quick_sweep_benchmark_prints_json() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "sweep.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=120 * TIMEOUT_SCALE,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert "STAND-IN" in report["setting"]["llm"]
    (run,) = report["runs"]
    assert run["llm_calls"] > 0 and run["calls_per_stream_hour"] > 0
    assert run["results"]["unsafe"] > 0 and run["results"]["error"] == 0
    assert run["action_starts_outside_windows"] == 0
    assert run["action_kinds"] == ["hate from llm:sweep"]
