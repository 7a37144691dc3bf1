"""benchmarks/cluster.py --quick: Redis's cost per vote and per event against the
embedded default, measured in one run, and the shared log's throughput."""

from __future__ import annotations

from tests.bench.test_benchmarks import assert_percentiles, run_quick


def test_cluster_quick() -> None:
    out = run_quick("cluster", 120)
    assert {"machine", "redis", "samples", "kills"} <= set(out["setting"])
    votes, events = out["vote_update"], out["event_append"]
    for p in (votes["embedded"], votes["redis"], events["embedded_sqlite"], events["redis_log"]):
        assert_percentiles(p)
    assert events["log_throughput"]["delivered_in_seq_order_once"] is True
    assert events["log_throughput"]["events_per_s"] > 0
    assert out["failover"] is None  # kills only in the full run
