"""The escalation benchmark's quick mode runs and reports one JSON document."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import TIMEOUT_SCALE

ROOT = Path(__file__).resolve().parents[2]


def test_quick_benchmark_prints_json_and_loses_nothing() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "escalation.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=180 * TIMEOUT_SCALE,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    latency = report["latency_ms"]
    assert {"p50", "p95", "p99"} <= set(latency["escalation"])
    assert latency["direct_call_baseline"]["n"] == report["setting"]["sequential_escalations"]
    assert report["throughput"]["escalations_per_s"] > 0
    outage = report["outage"]
    assert outage["events_lost"] == 0 and outage["duplicates"] == 0
    assert outage["escalation_events"] == outage["escalated_actions"] == 40
    assert "open" in outage["breaker_transitions"]
    assert outage["breaker_transitions"][-1] == "closed"
