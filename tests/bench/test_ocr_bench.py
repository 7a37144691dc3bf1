"""benchmarks/ocr.py --quick runs and prints one JSON document of the documented shape."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import TIMEOUT_SCALE

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "ocr.py"


def test_ocr_benchmark_quick() -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick"],
        capture_output=True,
        text=True,
        timeout=240 * TIMEOUT_SCALE,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert {"machine", "models", "det_limit_side_len", "sample_fps", "ocr_fps"} <= set(
        out["setting"]
    )
    cost = out["cost_per_frame"]
    for key in ("det_ms", "rec_ms", "total_ms", "rec_ms_boxes_unchanged"):
        p = cost["livemod"][key]
        assert p["n"] > 0 and 0 <= p["p50"] <= p["p95"] <= p["p99"]
    assert cost["baseline_rapidocr_defaults"]["total_ms"]["n"] > 0
    assert cost["ratio_total_p50_baseline_over_livemod"] > 0
    for clip in ("talking_head", "scrolling_text"):
        gate = out["gating"][clip]
        assert gate["samples"] > 0 and 1 <= gate["ocr_runs"] <= gate["samples"]
        assert 0.0 <= gate["gated_fraction"] < 1.0
        assert gate["baseline_every_sample_ocr_ms_total"] > 0
    for run in out["onset_to_event"].values():
        assert {"onsets", "detected", "onset_to_event_ms", "event_latency_ms"} <= set(run)
    assert {"onset_to_event_ms_p50", "gated_fraction_talking_head"} <= set(out["summary"])
