"""benchmarks/relay.py --quick: one short relayed stream judged by its pixels."""

from __future__ import annotations

from tests.bench.test_benchmarks import assert_percentiles, run_quick


def test_relay_quick() -> None:
    out = run_quick("relay", 120)
    setting = out["setting"]
    assert setting["clip"]["resolution"] == "640x360" and setting["violations"] == 4
    exposure = out["exposure"]
    assert exposure["frames_out"] > 0
    # Not a timing: the zero-exposure guarantee, judged on the output's pixels.
    assert exposure["exposed_frames"] == 0 and exposure["exposed_audio_blocks_20ms"] == 0
    assert exposure["over_treated_s"] >= 0
    assert_percentiles(out["delay_s"])
    assert {"relay_cpu_s_per_stream_s", "ffmpeg_copy_cpu_s_per_stream_s"} <= set(out["cpu"])
