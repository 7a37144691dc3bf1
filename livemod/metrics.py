"""Prometheus instruments, defined once here and used where the work happens.

Labels are bounded: stage, model, action, category, source, reason. Never a
user, room or stream id.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0)

STAGE_SECONDS = Histogram(
    "livemod_stage_latency_seconds",
    "Time spent in one pipeline stage per item",
    ["stage"],
    buckets=_LATENCY_BUCKETS,
)
MODEL_SECONDS = Histogram(
    "livemod_model_inference_seconds",
    "Time of one analyzer call (a batch), pre- and post-processing included",
    ["model"],
    buckets=_LATENCY_BUCKETS,
)
EVENT_LATENCY = Histogram(
    "livemod_event_latency_seconds",
    "Arrival of the triggering sample to the action event's commit",
    ["action"],
    buckets=_LATENCY_BUCKETS,
)
ANALYSIS_LAG = Gauge(
    "livemod_analysis_lag_seconds",
    "Arrival to analysis done of the most recent sample (worst stream)",
)
FRAMES_DECODED = Counter("livemod_frames_decoded_total", "Video frames decoded", ["source"])
FRAMES_SAMPLED = Counter("livemod_frames_sampled_total", "Frames admitted by the fps gate")
DROPS = Counter("livemod_drops_total", "Items dropped, by stage and reason", ["stage", "reason"])
QUEUE_DEPTH = Gauge("livemod_queue_depth", "Items waiting, summed over streams", ["queue"])
SESSIONS_ACTIVE = Gauge("livemod_sessions_active", "Sessions being moderated", ["source"])
SESSIONS_ENDED = Counter("livemod_sessions_ended_total", "Sessions ended, by outcome", ["outcome"])
ACTIONS = Counter("livemod_actions_total", "Action events emitted", ["action", "category", "state"])
EVENTS = Counter("livemod_events_total", "Events committed, by type", ["type"])
WS_SUBSCRIBERS = Gauge("livemod_websocket_subscribers", "Connected event subscribers")
MODELS_LOADED = Gauge("livemod_model_loaded", "1 when the model loaded and verified", ["model"])
