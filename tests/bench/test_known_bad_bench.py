"""benchmarks/known_bad.py --quick: the JSON it prints, both matchers side by side."""

from __future__ import annotations

from tests.bench.test_benchmarks import assert_percentiles, run_quick


def test_known_bad_quick() -> None:
    out = run_quick("known_bad", 240)
    assert out["setting"]["quick"] is True and out["setting"]["pdq_max_distance"] == 31
    table = out["robustness"]["per_transform"]
    assert {"fit_black_bars", "mirror", "inset_40_tl", "h264_crf38", "crop_10"} <= set(table)
    for row in table.values():
        assert row["pictures"] >= 4
        assert 0.0 <= row["phash_match_rate"] <= 1.0 and 0.0 <= row["pdq_match_rate"] <= 1.0
    # What the new matcher is for: bars and mirrors, which the old pHash misses.
    assert table["fit_black_bars"]["pdq_match_rate"] == 1.0
    assert table["mirror"]["pdq_match_rate"] == 1.0
    # And what the listed pictures' views are for: crops and caption bars.
    assert table["crop_10"]["pdq_match_rate"] == 1.0
    assert table["caption_bar"]["pdq_match_rate"] == 1.0
    assert out["benign"]["pdq_false_matches"] == 0
    assert out["robustness"]["other_photos"]["pdq"] == 0
    # Keypoints (features.py) beside the boxes, and what they cost against none.
    assert "pdq_without_features_match_rate" in table["inset_40_tl"]
    for key in ("every_sample", "every_2nd_sample", "every_sample_16_pictures"):
        assert_percentiles(out["feature_cost"][key]["cpu_ms_per_sample"])
        assert out["feature_cost"][key]["ratio_cpu_p50"] > 0
    sizes = [row["entries"] for row in out["cost"]]
    assert sizes == [1_000, 10_000]
    for row in out["cost"]:
        assert_percentiles(row["ms_per_sample"])
        assert_percentiles(row["search_ms_per_sample"])
        assert row["ratio_p50_vs_before"] > 0 and row["search_speedup_vs_brute_force_p50"] > 0
        # Multi-index hashing finds what brute force finds, on the samples' own queries.
        assert row["search_same_as_brute_force"] is True and row["matched_samples"] == 4
