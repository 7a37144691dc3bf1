"""Metric names and labels are an interface: dashboards and alerts query them."""

from __future__ import annotations

import re

import pytest
from prometheus_client.metrics import MetricWrapperBase

from livemod import metrics

# name (as exported) -> (type, label names). Renaming or relabelling one of these
# breaks configs/grafana/livemod.json and operators' alerts: change it on purpose.
STABLE = {
    "livemod_stage_latency_seconds": ("histogram", ("stage",)),
    "livemod_model_inference_seconds": ("histogram", ("model",)),
    "livemod_event_latency_seconds": ("histogram", ("action",)),
    "livemod_sample_latency_seconds": ("histogram", ()),
    "livemod_analysis_lag_seconds": ("gauge", ()),
    "livemod_frames_decoded_total": ("counter", ("source",)),
    "livemod_frames_sampled_total": ("counter", ()),
    "livemod_drops_total": ("counter", ("stage", "reason")),
    "livemod_queue_depth": ("gauge", ("queue",)),
    "livemod_sessions_active": ("gauge", ("source",)),
    "livemod_sessions_ended_total": ("counter", ("outcome",)),
    "livemod_actions_total": ("counter", ("action", "category", "state")),
    "livemod_events_total": ("counter", ("type",)),
    "livemod_websocket_subscribers": ("gauge", ()),
    "livemod_model_loaded": ("gauge", ("model",)),
    "livemod_escalations_total": ("counter", ("outcome",)),
    "livemod_escalation_latency_seconds": ("histogram", ()),
    "livemod_llm_breaker_state": ("gauge", ("state",)),
}

# Label names that can only take a bounded set of values. A user, room or stream id
# (or a URL) would make one time series per viewer: never a label.
BOUNDED_LABELS = {
    "stage", "model", "action", "category", "source", "reason", "queue", "outcome",
    "state", "type", "device", "mode", "event", "result", "step", "kind", "server", "call",
    "precision", "list", "part",
}  # fmt: skip
UNIT_SUFFIXES = ("_seconds", "_frames", "_bytes", "_total", "_info", "_ratio")
UNITLESS_GAUGES = {
    "livemod_queue_depth",
    "livemod_sessions_active",
    "livemod_websocket_subscribers",
    "livemod_model_loaded",
    "livemod_llm_breaker_state",
    "livemod_store_spooled_events",
    "livemod_known_bad_entries",
    "livemod_cluster_log_spooled_events",
    "livemod_cluster_redis_up",
}


def exported() -> dict[str, tuple[str, tuple[str, ...]]]:
    out = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            desc = value.describe()[0]
            name = desc.name + ("_total" if desc.type == "counter" else "")
            out[name] = (desc.type, tuple(value._labelnames))
    return out


def test_stable_metrics_keep_their_names_types_and_labels() -> None:
    found = exported()
    for name, spec in STABLE.items():
        assert name in found, f"{name} is gone"
        assert found[name] == spec, f"{name}: {found[name]} != {spec}"


@pytest.mark.parametrize("name", sorted(exported()))
def test_every_metric_follows_the_conventions(name: str) -> None:
    kind, labels = exported()[name]
    assert re.fullmatch(r"livemod_[a-z][a-z0-9_]*", name)
    assert set(labels) <= BOUNDED_LABELS, f"{name} has unbounded label(s)"
    if kind == "counter":
        assert name.endswith("_total")
    elif name not in UNITLESS_GAUGES:
        assert name.endswith(UNIT_SUFFIXES), f"{name}: name should end with its unit"


def test_label_vocabularies_are_declared() -> None:
    assert {"decode", "sample", "analyze", "policy", "emit"} <= set(metrics.STAGES)
    assert {"analysis_queue", "inference", "websocket"} <= set(metrics.QUEUES)
    # Known label sets exist from the start, so dashboards show zero, not "no data".
    text = metrics_text()
    assert 'livemod_drops_total{reason="stale_frame",stage="analysis_queue"} 0.0' in text
    assert 'livemod_escalations_total{outcome="breaker_open"} 0.0' in text


def metrics_text() -> str:
    from prometheus_client import generate_latest

    return generate_latest().decode()


def test_breaker_state_is_one_hot() -> None:
    metrics.set_breaker_state("open")
    text = metrics_text()
    assert 'livemod_llm_breaker_state{state="open"} 1.0' in text
    assert 'livemod_llm_breaker_state{state="closed"} 0.0' in text
    metrics.set_breaker_state("closed")
    assert 'livemod_llm_breaker_state{state="closed"} 1.0' in metrics_text()
    with pytest.raises(ValueError, match="unknown breaker state"):
        metrics.set_breaker_state("melted")
