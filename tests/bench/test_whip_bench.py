"""The WHIP benchmark's quick mode runs and prints one JSON document with its setting."""

from __future__ import annotations

from tests.bench.test_benchmarks import assert_percentiles, run_quick


def test_whip_quick() -> None:
    out = run_quick("whip", 150)
    setting = out["setting"]
    assert {"machine", "clip", "models", "sampling_fps", "ice"} <= set(setting)
    assert setting["quick"] is True and setting["sampling_fps"] == 4.0
    first = out["first_frame"]
    for key in (
        "whip_post_to_first_analyzed_ms",
        "whip_post_to_ice_connected_ms",
        "baseline_file_post_to_first_analyzed_ms",
    ):
        assert_percentiles(first[key])
    assert first["whip_post_to_first_analyzed_ms"]["n"] == 1
    one = out["event_latency_one_stream_ms"]
    assert_percentiles(one["whip"])
    assert_percentiles(one["file"])
    (level,) = out["capacity"]["levels"]
    assert level["publishers"] == level["started"] == 2
    assert level["samples_per_s_per_stream"]["min"] > 0
    assert isinstance(out["capacity"]["sustained_publishers"], int)
    baseline = out["capacity"]["baseline_file_pull_at_last_level"]
    assert baseline["kind"] == "file" and baseline["started"] == 2
    assert_percentiles(baseline["event_latency_ms"])
    assert {"first_analyzed_p50_whip_over_file", "event_latency_p95_whip_over_file"} <= set(
        out["ratios"]
    )
