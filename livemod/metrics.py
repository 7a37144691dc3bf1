"""Prometheus instruments, defined once here and used where the work happens.

Labels are bounded: stage, model, action, category, source, reason, queue,
outcome, state. Never a user, room or stream id. ``tests/test_metrics.py`` lists
every name and label set: dashboards and alerts depend on them, so a change there
is a deliberate one.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0)
# Decode and sampling cost a millisecond or two per frame: finer buckets at the low end.
_STAGE_BUCKETS = (0.0005, 0.001, 0.0025, *_LATENCY_BUCKETS)

STAGES = (
    "decode", "sample", "convert", "gate", "analyze", "policy", "emit", "ocr", "asr", "text",
    "escalation", "beside",
)  # fmt: skip
"""Values of the ``stage`` label: ``decode`` one packet (decode thread), ``sample``
the fps gate plus the hand-off of an admitted frame (its RGB conversion too, when that
is not deferred), ``convert`` the deferred RGB conversion of a sample handed on as its
planes (on first read, by the reading thread), ``analyze`` every frame
analyzer on one sample (wall time, they run side by side), ``policy`` the vote,
``emit`` committing and publishing an action event, ``gate`` the change measure of one
sample (capacity.gating), ``beside`` a refresh's or a scheduled detector's wait from its
launch beside the stream to its result (wall time: it yields to other samples); the rest
as their parts land."""

STAGE_SECONDS = Histogram(
    "livemod_stage_latency_seconds",
    "Time spent in one pipeline stage per item",
    ["stage"],
    buckets=_STAGE_BUCKETS,
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
    "Arrival to analysis done of each live stream's latest sample, worst stream"
    " (the daemon computes it at scrape time)",
)
SAMPLE_LATENCY = Histogram(
    "livemod_sample_latency_seconds",
    "Arrival of a sampled frame to its analysis done (queueing included)",
    buckets=_LATENCY_BUCKETS,
)
FRAMES_DECODED = Counter("livemod_frames_decoded_total", "Video frames decoded", ["source"])
FRAMES_SAMPLED = Counter("livemod_frames_sampled_total", "Frames admitted by the fps gate")
DROPS = Counter("livemod_drops_total", "Items dropped, by stage and reason", ["stage", "reason"])
QUEUES = ("analysis_queue", "inference", "websocket", "escalation", "review", "webhook_outbox")
"""Values of the ``queue`` label: sampled frames waiting per stream (summed),
analyzer calls submitted and not finished, events buffered for subscribers,
clips waiting for the LLM, open human reviews, webhook deliveries not yet done."""
QUEUE_DEPTH = Gauge("livemod_queue_depth", "Items waiting, summed over streams", ["queue"])
SESSIONS_ACTIVE = Gauge("livemod_sessions_active", "Sessions being moderated", ["source"])
SESSIONS_ENDED = Counter("livemod_sessions_ended_total", "Sessions ended, by outcome", ["outcome"])
ACTIONS = Counter("livemod_actions_total", "Action events emitted", ["action", "category", "state"])
EVENTS = Counter("livemod_events_total", "Events committed, by type", ["type"])
WS_SUBSCRIBERS = Gauge("livemod_websocket_subscribers", "Connected event subscribers")
MODELS_LOADED = Gauge("livemod_model_loaded", "1 when the model loaded and verified", ["model"])

ESCALATION_OUTCOMES = ("violation", "benign", "uncertain", "error", "timeout", "breaker_open")
"""Values of the ``outcome`` label of ``livemod_escalations_total``."""
ESCALATIONS = Counter(
    "livemod_escalations_total", "Clips escalated to the LLM, by outcome", ["outcome"]
)
ESCALATION_SECONDS = Histogram(
    "livemod_escalation_latency_seconds",
    "Escalation request to verdict (or failure)",
    buckets=(*_LATENCY_BUCKETS, 20.0, 30.0, 60.0),
)
BREAKER_STATES = ("closed", "open", "half_open")
LLM_BREAKER_STATE = Gauge(
    "livemod_llm_breaker_state", "1 for the LLM circuit breaker's current state", ["state"]
)


def set_breaker_state(state: str) -> None:
    """Mark ``state`` (one of ``BREAKER_STATES``) as the breaker's current state."""
    if state not in BREAKER_STATES:
        raise ValueError(f"unknown breaker state {state!r}")
    for name in BREAKER_STATES:
        LLM_BREAKER_STATE.labels(name).set(1.0 if name == state else 0.0)


# Known label sets start at zero, so a dashboard shows "none" rather than "no data"
# and rate() has a starting point before the first drop or action.
for _stage, _reason in (
    ("decode", "corrupt_packet"),
    ("analysis_queue", "stale_frame"),
    ("websocket", "slow_subscriber"),
):
    DROPS.labels(_stage, _reason)
for _queue in QUEUES:
    QUEUE_DEPTH.labels(_queue)
for _outcome in ESCALATION_OUTCOMES:
    ESCALATIONS.labels(_outcome)
BATCH_SIZE = Histogram(
    "livemod_batch_size_frames",
    "Frames (vision) or audio windows (whisper) per inference call",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
INFERENCE_DEVICE = Gauge(
    "livemod_inference_device_info",
    "1 for the device the vision models run on (cpu, cuda, tensorrt)",
    ["device"],
)
MODEL_PRECISION = Gauge(
    "livemod_model_precision_info",
    "1 for the precision each vision model runs at (fp32, fp16)",
    ["model", "precision"],
)

FALLBACK_MODES = ("fail_open", "fail_closed", "degraded")
ESCALATION_FALLBACKS = Counter(
    "livemod_escalation_fallbacks_total",
    "Escalations settled by a fallback because the LLM gave no verdict, by mode",
    ["mode"],
)
REVIEW_EVENTS = ("queued", "claimed", "uphold", "overturn", "escalate")
REVIEWS = Counter("livemod_reviews_total", "Human review queue activity, by event", ["event"])
WEBHOOK_RESULTS = ("delivered", "failed", "dropped")
"""``failed``: one attempt failed (it is retried); ``dropped``: given up after
``webhooks.give_up_after_s``."""
WEBHOOK_DELIVERIES = Counter(
    "livemod_webhook_deliveries_total", "Webhook delivery attempts, by result", ["result"]
)
SWEEP_RESULTS = ("unsafe", "safe", "uncertain", "error", "timeout", "breaker_open")
SWEEP_REQUESTS = Counter(
    "livemod_llm_sweep_requests_total", "LLM sweep looks at a stream, by result", ["result"]
)
SWEEP_SKIPPED = Counter(
    "livemod_llm_sweep_skipped_total",
    "Due sweep looks not sent at once, by reason (budget, concurrency, breaker_open)",
    ["reason"],
)
SWEEP_SECONDS = Histogram(
    "livemod_llm_sweep_latency_seconds",
    "Sweep request to verdict (or failure)",
    buckets=(*_LATENCY_BUCKETS, 20.0, 30.0, 60.0),
)
for _result in SWEEP_RESULTS:
    SWEEP_REQUESTS.labels(_result)
for _mode in FALLBACK_MODES:
    ESCALATION_FALLBACKS.labels(_mode)
for _event in REVIEW_EVENTS:
    REVIEWS.labels(_event)
for _result in WEBHOOK_RESULTS:
    WEBHOOK_DELIVERIES.labels(_result)

OCR_GATE_REASONS = ("rate", "unchanged", "busy", "budget", "motion")
"""``rate``: sooner than ``ocr.fps`` allows; ``unchanged``: the picture moved less than
``ocr.change_threshold`` since the stream's last OCR; ``busy``: every OCR worker was
taken; ``budget``: ``ocr.max_cpu`` was spent, or a fairer stream waits for it. The
fraction gated off is gated / (gated + runs)."""
OCR_RUNS = Counter("livemod_ocr_runs_total", "Sampled frames that went through OCR")
OCR_CPU = Counter("livemod_ocr_cpu_seconds_total", "CPU seconds charged to OCR against ocr.max_cpu")
OCR_GATED = Counter(
    "livemod_ocr_gated_total", "Sampled frames the OCR gate let pass unread, by reason", ["reason"]
)
OCR_SECONDS = Histogram(
    "livemod_ocr_seconds",
    "Time of one OCR step on one frame: det (detection), rec (recognition), qr",
    ["step"],
    buckets=_STAGE_BUCKETS,
)
OCR_BOXES = Counter(
    "livemod_ocr_boxes_total",
    "Detected text boxes: recognized, or reused (content unchanged since the last reading)",
    ["outcome"],
)
for _reason in OCR_GATE_REASONS:
    OCR_GATED.labels(_reason)
for _step in ("det", "rec", "qr"):
    OCR_SECONDS.labels(_step)
for _outcome in ("recognized", "reused"):
    OCR_BOXES.labels(_outcome)
DROPS.labels("ocr", "error")

# Speech moderation (livemod/speech/service.py, livemod/speech/moderator.py).
ASR_LAG = Histogram(
    "livemod_asr_lag_seconds",
    "Arrival of a word's audio to its commit in the transcript: how far speech"
    " moderation trails real time",
    # Finer around the 2 s that operators size speech by (transcript lag p95).
    buckets=(0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0, 5.0, 10.0),
)
ASR_BEHIND = Gauge(
    "livemod_asr_behind_seconds",
    "Audio received but not yet transcribed when the latest decode finished",
)
ASR_DECODES = Counter(
    "livemod_asr_decodes_total",
    "Windows decoded by Whisper: partial (speech goes on) or final",
    ["kind"],
)
ASR_COALESCED = Counter(
    "livemod_asr_coalesced_total",
    "Decode requests merged into one already queued for the same stream",
)
ASR_REJECTED = Counter(
    "livemod_asr_rejected_segments_total",
    "Transcript segments dropped by the hallucination guard (no speech, repetition)",
)
ASR_SKIPPED = Counter(
    "livemod_asr_skipped_windows_total",
    "Decodes given up because the speech waited past asr.max_delay_s (CPU budget, load):"
    " that stream's speech moderation is partial (GET /v1/streams/{id})",
)
ASR_SKIPPED_SECONDS = Counter(
    "livemod_asr_skipped_seconds_total", "Seconds of voice never transcribed (skipped windows)"
)
ASR_CPU_SECONDS = Counter(
    "livemod_asr_cpu_seconds_total", "CPU seconds charged to Whisper against asr.max_cpu"
)
for _kind in ("partial", "final"):
    ASR_DECODES.labels(_kind)
QUEUE_DEPTH.labels("asr")
DROPS.labels("audio", "corrupt_packet")
DROPS.labels("asr", "queue_full")
DROPS.labels("escalation", "replay_expired")

# Streaming-server hooks and enforcement (livemod/app/hooks.py).
HOOK_CALLS = Counter(
    "livemod_hook_calls_total",
    "Streaming-server hook calls, by server and call",
    ["server", "call"],
)
ENFORCEMENTS = Counter(
    "livemod_enforcements_total",
    "Actions enforced on a streaming server, by server, action and outcome",
    ["server", "action", "outcome"],
)
RECONNECTS = Counter(
    "livemod_ingest_reconnects_total", "Live pulls reopened while their publisher was live"
)
TIMESTAMP_DISCONTINUITIES = Counter(
    "livemod_timestamp_discontinuities_total",
    "Jumps in a source's timestamps mapped onto the session timeline: backward (a restart),"
    " forward (beyond ingest.max_ts_jump_s) or wrap (MPEG-TS 33-bit)",
    ["kind"],
)
for _kind in ("backward", "forward", "wrap"):
    TIMESTAMP_DISCONTINUITIES.labels(_kind)

# Storage faults (livemod/events/hub.py, livemod/store.py): decisions are never lost,
# they wait in a bounded spool until the store takes them again.
STORE_WRITE_FAILURES = Counter(
    "livemod_store_write_failures_total",
    "Writes the store refused: event (the database) or evidence (the evidence folder)",
    ["kind"],
)
STORE_SPOOLED = Gauge(
    "livemod_store_spooled_events",
    "Events published but not yet committed, held in memory while storage fails",
)
STORE_SPOOL_DROPPED = Counter(
    "livemod_store_spool_dropped_total",
    "What the full spool dropped: evidence pictures first, then non-action events",
    ["kind"],
)
for _kind in ("event", "evidence"):
    STORE_WRITE_FAILURES.labels(_kind)
    STORE_SPOOL_DROPPED.labels(_kind)

# Known-bad lists (``list`` is a configured list's name: a handful per deployment).
KNOWN_BAD_ENTRIES = Gauge(
    "livemod_known_bad_entries", "Hashes in each loaded known-bad list", ["list"]
)
KNOWN_BAD_SKIPPED = Counter(
    "livemod_known_bad_images_skipped_total",
    "Images in known-bad list folders that could not be decoded, by list (each load)",
    ["list"],
)
KNOWN_BAD_RELOADS = Counter(
    "livemod_known_bad_reloads_total", "Known-bad list reloads, by result", ["result"]
)
KNOWN_BAD_MATCHES = Counter(
    "livemod_known_bad_matches_total", "Samples that matched a known-bad list, by list", ["list"]
)
for _result in ("ok", "failed"):
    KNOWN_BAD_RELOADS.labels(_result)

# Capacity (livemod.pipeline.gating, livemod.pipeline.rates). Per-stream counts are in
# the stream summary (``analysis``), never in a label.
GATE_OUTCOMES = ("fresh", "reused")
GATE_REASONS = ("first", "change", "cut", "age", "off", "unchanged")
"""``fresh``: the gated models ran (first sample, a change, a scene cut, the reused
scores reached ``max_reuse_s``, or gating off); ``reused``: the picture was unchanged.
Besides, ``refresh`` counts reused samples the models also ran on beside the stream
(``capacity.gating.background_refresh``; reason ``age`` or ``motion``)."""
SAMPLES_GATED = Counter(
    "livemod_samples_gated_total",
    "Analyzed samples by outcome: fresh (models ran) or reused (unchanged picture); "
    "refresh: reused, and the models ran on it beside the stream",
    ["outcome", "reason"],
)
CASCADE_DECISIONS = Counter(
    "livemod_cascade_decisions_total",
    "Model decisions on fresh samples: a region detector run (with why) or skipped (gate); "
    "any model skipped (settled) when a known-bad match settled the sample",
    ["model", "outcome", "reason"],
)
RATE_DECISIONS = Counter(
    "livemod_rate_decisions_total",
    "Adaptive sampling rate set for a stream, by state (boosted, normal, calm, shed)",
    ["state"],
)
for _outcome, _reasons in (
    ("fresh", GATE_REASONS[:5]),
    ("reused", GATE_REASONS[5:]),
    ("refresh", ("age", "motion")),
):
    for _reason in _reasons:
        SAMPLES_GATED.labels(_outcome, _reason)

# The moderated relay (livemod.relay): per-stream figures are in the stream summary.
RELAY_DELAY = Histogram(
    "livemod_relay_delay_seconds",
    "Wall time from a frame's arrival to its moderated output",
    buckets=(0.5, 1.0, 2.0, 2.5, 3.0, 3.1, 3.25, 3.5, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0),
)
RELAY_TREATED = Counter(
    "livemod_relay_treated_frames_total", "Relayed frames treated, by action", ["action"]
)
RELAY_HOLDS = Counter(
    "livemod_relay_holds_total", "Times a relay held its output because analysis lagged"
)
RELAY_LATE = Counter(
    "livemod_relay_late_total",
    "frame: left after max_delay_s before analysis reached it; decision: came after its"
    " first frames left",
    ["kind"],
)
RELAY_OUTPUT_FAILURES = Counter(
    "livemod_relay_output_failures_total", "Relay outputs that failed to open or broke"
)
for _kind in ("frame", "decision"):
    RELAY_LATE.labels(_kind)
RELAY_ENCODE_SECONDS = Histogram(
    "livemod_relay_encode_seconds",
    "Treating and encoding one relayed frame (with its audio)",
    buckets=_STAGE_BUCKETS,
)

# -- several instances (livemod/cluster) ---------------------------------------------

CLUSTER_TAKEOVERS = Counter(
    "livemod_cluster_takeovers_total",
    "Sessions this instance took over from an instance that died (or paused past its lease)",
)
CLUSTER_YIELDED = Counter(
    "livemod_cluster_yielded_total",
    "Sessions this instance stopped because another instance held their lease",
)
CLUSTER_VOTE_CONFLICTS = Counter(
    "livemod_cluster_vote_conflicts_total",
    "Vote updates run again because another instance changed the same key first",
)
CLUSTER_LOG_SPOOLED = Gauge(
    "livemod_cluster_log_spooled_events",
    "Events waiting for the shared log (Redis unreachable), in order",
)
CLUSTER_REDIS_UP = Gauge(
    "livemod_cluster_redis_up", "1 while this instance's heartbeats reach Redis, else 0"
)

# -- sizing: CPU seconds per pipeline part ----------------------------------------
#
# CPU time of the daemon's own threads, by the part of the pipeline each one serves.
#
# Stage histograms time work from the inside (wall time, waits for the GIL and the cores
# included: on a busy machine ten times the CPU some stages really use), so operators
# sizing a host read this instead: the kernel's count of CPU seconds per thread
# (``/proc/self/task/<tid>/stat``), each thread put in a part by its name. Python names
# its threads (``livemod-infer_0``, ``av-<stream>``); threads it did not start (FFmpeg's
# decoding threads, ``av:h264:df0``) are grouped by their kernel name. A thread that
# ended keeps its seconds in its part, so every part only grows (a counter). A thread that
# ends between two reads would take its last seconds with it, so the daemon's per-stream
# threads call ``retire_current_thread`` as they finish; only FFmpeg's own threads (pictures
# above ``ingest.threaded_pixels``) can still lose the time since the last read.
#
# Linux only: elsewhere nothing is reported.

PARTS = ("models", "ocr", "speech", "ingest", "relay", "event_loop", "store", "other")
"""Every part a thread is counted in (the metric's ``part`` label values)."""

_BY_PREFIX = (
    ("livemod-infer", "models"),
    ("livemod-ocr", "ocr"),
    ("livemod-asr", "speech"),
    ("av-", "ingest"),
    ("av:", "ingest"),  # FFmpeg's own decoding threads (kernel name)
    ("decode-", "ingest"),
    ("pull-", "ingest"),
    ("whip-audio-", "ingest"),
    ("relay-", "relay"),
    ("livemod-store", "store"),
    ("MainThread", "event_loop"),
)
_TASK = Path("/proc/self/task")


def part_of(name: str) -> str:
    """The part a thread named ``name`` works for (``other`` when none claims it)."""
    for prefix, part in _BY_PREFIX:
        if name.startswith(prefix):
            return part
    return "other"


def parse_stat(text: str, ticks_per_s: float) -> float:
    """User plus system CPU seconds from one ``/proc/.../stat`` line (the name between
    parentheses may hold spaces and parentheses, so fields are counted after the last)."""
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / ticks_per_s


class ThreadCpu:
    """CPU seconds per part: the live threads' counts plus those of threads that ended."""

    def __init__(self, task_dir: Path = _TASK) -> None:
        self._task_dir = task_dir
        self._ticks = float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0
        self._seen: dict[int, tuple[str, float]] = {}
        self._ended = dict.fromkeys(PARTS, 0.0)
        self._retired: set[int] = set()
        """Threads that counted themselves out and may still be finishing."""
        self._lock = threading.Lock()

    def retire(self, tid: int, name: str, cpu_s: float) -> None:
        """Thread ``tid`` is ending with ``cpu_s`` seconds: count them in its part now."""
        with self._lock:
            self._ended[part_of(name)] += cpu_s
            self._retired.add(tid)
            self._seen.pop(tid, None)

    def parts(self) -> dict[str, float]:
        """CPU seconds so far, by part (every part of ``PARTS``; all zero off Linux)."""
        named = {t.native_id: t.name for t in threading.enumerate() if t.native_id}
        read = {tid: (cpu, comm) for tid, cpu, comm in self._read()}
        with self._lock:
            self._retired &= read.keys()  # the ones gone need no more skipping
            now = {
                tid: (part_of(named.get(tid, comm)), cpu)
                for tid, (cpu, comm) in read.items()
                if tid not in self._retired
            }
            for tid, (part, cpu) in self._seen.items():
                # Gone, or the id reused by a younger thread: the old one's time is final.
                if tid not in now or now[tid][1] < cpu:
                    self._ended[part] += cpu
            self._seen = now
            totals = dict(self._ended)
        for part, cpu in now.values():
            totals[part] += cpu
        return totals

    def _read(self) -> Iterator[tuple[int, float, str]]:
        try:
            tids = os.listdir(self._task_dir)
        except OSError:
            return
        for entry in tids:
            if not entry.isdigit():
                continue
            task = self._task_dir / entry
            try:
                stat = (task / "stat").read_text()
                comm = (task / "comm").read_text().strip()
            except OSError:
                continue  # ended between the listing and the read: counted next time
            yield int(entry), parse_stat(stat, self._ticks), comm


THREADS = ThreadCpu()
"""The process's count (the exported metric reads it)."""


def retire_current_thread() -> None:
    """Count the calling thread's CPU seconds now, as it finishes (call it last)."""
    me = threading.current_thread()
    THREADS.retire(threading.get_native_id(), me.name, time.thread_time())


class ThreadCpuCollector(Collector):
    """``livemod_thread_cpu_seconds_total{part}``, read when Prometheus scrapes."""

    def __init__(self, source: ThreadCpu = THREADS) -> None:
        self._source = source

    def describe(self) -> Iterable[CounterMetricFamily]:
        yield self._family()  # the name, without reading /proc at registration

    def collect(self) -> Iterable[CounterMetricFamily]:
        family = self._family()
        for part, seconds in self._source.parts().items():
            family.add_metric([part], seconds)
        yield family

    @staticmethod
    def _family() -> CounterMetricFamily:
        return CounterMetricFamily(
            "livemod_thread_cpu_seconds",
            "CPU seconds of the daemon's threads, by the pipeline part they serve",
            labels=["part"],
        )


THREAD_CPU = ThreadCpuCollector()
"""``livemod_thread_cpu_seconds_total{part}``: the kernel's CPU seconds per thread,
grouped by the part each thread serves (``PARTS``)."""
REGISTRY.register(THREAD_CPU)
