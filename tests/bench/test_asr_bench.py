"""The speech benchmark's quick mode runs and prints one JSON document with its setting."""

from __future__ import annotations

from tests.bench.test_benchmarks import assert_percentiles, run_quick


def test_asr_quick() -> None:
    out = run_quick("asr", 180)
    setting = out["setting"]
    assert {"machine", "model", "streams_tested", "track_s", "speech_s_per_stream"} <= set(setting)
    assert setting["streams_tested"] == [1] and setting["quick"] is True
    (run,) = out["runs"]
    assert run["threats"] == 1 and run["false_actions"] == 0
    for key in ("sentence_end_to_mute_s", "transcript_lag_s"):
        assert_percentiles(run[key])
    assert run["transcript_lag_s"]["n"] > 0 and run["cpu_s_per_speech_s"] > 0
    # Under the CPU budget (asr.max_cpu): skips counted per stream, Whisper's own CPU rate.
    assert len(run["skipped_windows_per_stream"]) == 1 and run["whisper_cpu_s_per_s"] > 0
    assert 0 < setting["max_cpu_share_of_cores"] <= 1
    assert_percentiles(out["baseline_fixed_chunks"]["sentence_end_to_detection_s"])
    decoding = out["decoding"]
    assert setting["sized_windows"] is True and decoding["sentences"] > 0
    for mode in ("padded_30s", "sized"):
        assert decoding[mode]["cpu_s_per_speech_s"] > 0 and 0 <= decoding[mode]["wer"] <= 1
    summary = out["summary"]
    assert isinstance(summary["sustained_streams_lag_p95_under_2s"], int)
    assert {"ratio_latency_p50_vs_baseline", "ratio_cpu_per_audio_vs_baseline"} <= set(summary)
