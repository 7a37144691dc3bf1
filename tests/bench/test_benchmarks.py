"""Every benchmark's quick mode runs and prints one JSON document with its setting.

The numbers themselves are not asserted (that is what the full runs are for); the
shape is, so docs/benchmarks.md and operators' scripts can rely on it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from livemod.vision.kinds import ANALYZER_KINDS
from livemod.vision.manifest import load_manifest
from tests.conftest import TIMEOUT_SCALE

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def run_quick(name: str, timeout: float, *args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(BENCH / f"{name}.py"), "--quick", *args],
        capture_output=True,
        text=True,
        timeout=timeout * TIMEOUT_SCALE,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(proc.stdout)  # exactly one JSON document
    return result


def assert_percentiles(p: dict[str, Any]) -> None:
    assert {"n", "p50", "p95", "p99"} <= set(p)
    if p["n"]:
        assert 0 <= p["p50"] <= p["p95"] <= p["p99"]


def test_latency_quick() -> None:
    out = run_quick("latency", 120)
    setting = out["setting"]
    assert {"machine", "streams_tested", "clip", "sampling_fps", "models"} <= set(setting)
    assert setting["sampling_fps"] == 4.0 and "hash" in setting["models"]
    assert setting["clip"]["resolution"] == "640x360"
    summary = out["summary"]
    one = summary["one_stream"]
    for key in ("arrival_to_analyzed_ms", "event_latency_ms", "onset_to_event_ms"):
        assert_percentiles(one[key])
    assert one["arrival_to_analyzed_ms"]["n"] > 0
    assert isinstance(summary["sustained_streams"], int)
    assert {"compute_ratio_from_costs", "sustained_streams_vs_baseline_capacity"} <= set(
        summary["ratios"]
    )
    costs = out["costs_ms_per_frame"]
    assert costs["decode"]["frames"] > 0
    for model in setting["models"]:
        assert_percentiles(costs[model])
    baseline = out["baseline"]
    assert baseline["frames_analyzed"] > 0 and baseline["capacity_streams"] > 0
    for level in out["levels"]:
        assert {"drops", "drop_rate", "cpu_ms_per_stream_s", "inserts_detected"} <= set(level)


def test_overload_quick() -> None:
    out = run_quick("overload", 120)
    assert out["setting"]["overload_streams"] == 2 * out["setting"]["sustainable_streams"]
    summary = out["summary"]
    assert isinstance(summary["bounded"], bool)
    assert_percentiles(summary["arrival_to_analyzed_ms"])
    assert out["livemod"]["windows"] and out["baseline"]["windows"]
    assert out["baseline"]["frames_offered"] > out["baseline"]["frames_analyzed"]


@pytest.mark.parametrize(
    ("name", "keys"),
    [("models", {"setting", "results"}), ("hashing", {"setting", "phash_ms_per_frame"})],
)
def test_cost_benchmarks_quick(name: str, keys: set[str]) -> None:
    out = run_quick(name, 90)
    assert keys <= set(out)


def test_asr_batch_quick() -> None:
    out = run_quick("asr_batch", 240)
    assert out["setting"]["device"] == "cpu"
    assert out["baseline"]["windows_per_s"] > 0
    assert [r["batch"] for r in out["results"]] == [1, 2]
    for r in out["results"]:
        assert_percentiles(r["call_ms"])
        assert r["windows"] == 2


def test_batching_quick() -> None:
    out = run_quick("batching", 120)
    policies = [r["policy"] for r in out["results"]]
    assert policies[0] == {"max_batch": 1, "max_wait_ms": 0.0}  # the baseline: CPU default
    for r in out["results"]:
        assert r["levels"] and r["levels"][0]["frames"] > 0
        assert_percentiles({"n": r["levels"][0]["frames"], **r["levels"][0]["latency_ms"]})
    assert out["results"][0]["sustained_ratio_vs_batch1"] == 1.0


def test_decode_quick() -> None:
    out = run_quick("decode", 60)
    (row,) = [r for r in out["results"] if r["resolution"] == "640x360"]
    assert row["software"]["frames_per_s"] > 0
    # Every hardware device is either measured or says why it could not be used.
    for hw in row["hardware"].values():
        assert hw["available"] or hw["reason"]


def test_gpu_mode_quick() -> None:
    # No GPU here: the GPU part says why it did not run, the CPU figures are measured.
    out = run_quick("gpu", 480)
    gpu = out["setting"]["gpu"]
    assert gpu["available"] or gpu["reason"]
    summary = out["summary"]
    # Every vision model of the manifest, whatever its kind (not only NudeNet and open_nsfw).
    vision = {spec.name for spec in load_manifest() if spec.kind in ANALYZER_KINDS}
    assert set(summary["models"]["cpu"]) == vision
    for model, by_batch in summary["models"]["cpu"].items():
        assert set(by_batch) == {"1", "2"}, model
        assert all(fps > 0 for fps in by_batch.values())
    assert summary["streams"]["cpu"]["sustained_streams_4fps"] >= 1
    assert summary["asr"]["cpu"]["windows_per_s_by_batch"]["2"] > 0
    if gpu["available"]:
        assert "error" not in summary["models"]["cuda_fp16"]
        assert summary["streams"]["cuda"]["sustained_streams_4fps"] >= 1


def test_handoff_quick() -> None:
    """benchmarks/handoff.py --quick: RGB at admission against samples handed on as
    planes, over the capacity mix. The JSON's shape, not its numbers."""
    out = run_quick("handoff", 180)
    assert out["setting"]["mix"] == ["talking_head", "gameplay", "slideshow", "real_clip"]
    for clip in out["clips"]:
        assert clip["samples"] >= 70  # 8 fps over 10 s
        # Both ways see the same thumbnails within a few levels: the gate decides alike.
        assert abs(clip["fresh"]["rgb"] - clip["fresh"]["planes"]) <= 1
        assert clip["fresh"]["planes"] < clip["samples"]
    for way in ("rgb", "planes"):
        assert_percentiles(out["per_sample_ms"][way])
    assert set(out["ms_per_stream_s"]) == {"decode", "rgb", "planes"}
    assert out["ratio_rgb_to_planes"] > 0
    sizes = [(c["source"], c["to"]) for c in out["conversion"]]
    assert sizes == [
        ("640x360", "640x360"),
        ("1280x720", "640x360"),
        ("1920x1080", "640x360"),
    ]
    for c in out["conversion"]:
        assert c["same_pixels"], c  # the kept scaler converts exactly as to_ndarray did
        assert_percentiles(c["to_ndarray_ms"])
        assert_percentiles(c["converter_ms"])
