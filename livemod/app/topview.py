"""What ``livemod top`` shows, as pure functions: parse ``/metrics``, estimate
quantiles from histogram buckets, render one screen of text.

No I/O here: ``livemod.app.top`` fetches, this module reads and formats.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Histogram:
    """Cumulative bucket counts (upper bound -> count), as Prometheus exports them."""

    buckets: tuple[tuple[float, float], ...]
    count: float
    total: float

    def minus(self, older: Histogram | None) -> Histogram:
        """The observations made since ``older`` (a previous scrape)."""
        if older is None or older.count > self.count:  # none, or the daemon restarted
            return self
        prev = dict(older.buckets)
        return Histogram(
            tuple((le, c - prev.get(le, 0.0)) for le, c in self.buckets),
            self.count - older.count,
            self.total - older.total,
        )

    def quantile(self, q: float) -> float | None:
        """Linear interpolation inside the bucket, as PromQL's histogram_quantile."""
        if self.count <= 0 or not self.buckets:
            return None
        rank = q * self.count
        lower_bound, lower_count = 0.0, 0.0
        for le, cum in self.buckets:
            if cum >= rank:
                if math.isinf(le):
                    return lower_bound  # beyond the last finite bucket: its bound
                width = cum - lower_count
                if width <= 0:
                    return le
                return lower_bound + (le - lower_bound) * (rank - lower_count) / width
            lower_bound, lower_count = le, cum
        return lower_bound


@dataclass(slots=True)
class MetricsView:
    """The livemod metrics of one scrape, keyed by metric name and label set."""

    histograms: dict[str, dict[Labels, Histogram]] = field(default_factory=dict)
    values: dict[str, dict[Labels, float]] = field(default_factory=dict)

    def value(self, name: str, **labels: str) -> float:
        return self.values.get(name, {}).get(_key(labels), 0.0)

    def by(self, name: str, label: str) -> dict[str, float]:
        """Values of a gauge or counter summed by one label."""
        out: dict[str, float] = {}
        for key, v in self.values.get(name, {}).items():
            lv = dict(key).get(label, "")
            out[lv] = out.get(lv, 0.0) + v
        return out


def _key(labels: Mapping[str, str]) -> Labels:
    return tuple(sorted(labels.items()))


def parse_metrics(text: str) -> MetricsView:
    """Read the ``livemod_*`` families of a Prometheus text exposition."""
    view = MetricsView()
    for family in text_string_to_metric_families(text):
        if not family.name.startswith("livemod_"):
            continue
        if family.type == "histogram":
            raw: dict[Labels, dict[str, Any]] = {}
            for s in family.samples:
                labels = {k: v for k, v in s.labels.items() if k != "le"}
                entry = raw.setdefault(_key(labels), {"buckets": [], "count": 0.0, "sum": 0.0})
                if s.name.endswith("_bucket"):
                    entry["buckets"].append((float(s.labels["le"]), float(s.value)))
                elif s.name.endswith("_count"):
                    entry["count"] = float(s.value)
                elif s.name.endswith("_sum"):
                    entry["sum"] = float(s.value)
            view.histograms[family.name] = {
                k: Histogram(tuple(sorted(e["buckets"])), e["count"], e["sum"])
                for k, e in raw.items()
            }
        else:
            # Keyed by sample name: the parser strips ``_total`` off counter families.
            for s in family.samples:
                if not s.name.endswith("_created"):
                    view.values.setdefault(s.name, {})[_key(s.labels)] = float(s.value)
    return view


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000.0:.1f}"


def _latency_rows(
    title: str, label: str, hists: Mapping[Labels, Histogram], older: Mapping[Labels, Histogram]
) -> Iterable[str]:
    for key, hist in sorted(hists.items()):
        recent = hist.minus(older.get(key))
        if recent.count <= 0:
            continue
        name = f"{title} {dict(key).get(label, '')}".strip()
        yield (
            f"  {name:<28} {_ms(recent.quantile(0.5)):>9} {_ms(recent.quantile(0.95)):>9}"
            f" {int(recent.count):>9}"
        )


def render(
    *,
    base: str,
    health: Mapping[str, Any],
    streams: list[dict[str, Any]],
    metrics: MetricsView,
    previous: MetricsView | None,
    actions: list[dict[str, Any]],
    window: str,
) -> str:
    """One screen of text. Latency quantiles cover ``window`` (since ``previous``)."""
    older = previous or MetricsView()
    lines = [
        f"livemod top  {base}  version {health.get('version', '?')}"
        f"  up {health.get('uptime_s', 0):.0f} s  sessions {len(streams)}"
        f"  subscribers {int(metrics.value('livemod_websocket_subscribers'))}",
        "",
        f"{'STREAM':<17}{'USER':<14}{'ROOM':<14}{'SOURCE':<7}{'STATUS':<9}"
        f"{'SAMPLES':>8}{'DROPS':>7}{'LAG s':>7}{'RISK':>6}  SEVERITY  STANDING",
    ]
    for s in streams:
        standing = ",".join(f"{a['action']}:{a['category']}" for a in s.get("standing_actions", []))
        lines.append(
            f"{s['id'][:16]:<17}{str(s['user_id'])[:13]:<14}{str(s['room_id'])[:13]:<14}"
            f"{s.get('source', '')[:6]:<7}{s['status'][:8]:<9}{s.get('samples', 0):>8}"
            f"{s.get('drops', 0):>7}{s.get('lag_s', 0.0):>7.2f}{s.get('risk_score', 0.0):>6.2f}"
            f"  {s.get('severity', ''):<9} {standing or '-'}"
        )
    if not streams:
        lines.append("  (no live sessions)")
    lines += ["", f"{'LATENCY (' + window + ')':<30} {'p50 ms':>9} {'p95 ms':>9} {'count':>9}"]
    for title, name, label in (
        ("stage", "livemod_stage_latency_seconds", "stage"),
        ("model", "livemod_model_inference_seconds", "model"),
        ("arrival->analyzed", "livemod_sample_latency_seconds", ""),
        ("event", "livemod_event_latency_seconds", "action"),
    ):
        lines += _latency_rows(
            title, label, metrics.histograms.get(name, {}), older.histograms.get(name, {})
        )
    lag = metrics.value("livemod_analysis_lag_seconds")
    queues = metrics.by("livemod_queue_depth", "queue")
    drops = {
        f"{dict(k).get('stage')}/{dict(k).get('reason')}": v
        for k, v in metrics.values.get("livemod_drops_total", {}).items()
    }
    lines += [
        "",
        f"analysis lag (worst live stream): {lag:.3f} s",
        "queues: " + ("  ".join(f"{k} {int(v)}" for k, v in sorted(queues.items())) or "-"),
        "drops:  " + ("  ".join(f"{k} {int(v)}" for k, v in sorted(drops.items())) or "-"),
    ]
    started = {
        f"{dict(k).get('action')}/{dict(k).get('category')}": v
        for k, v in metrics.values.get("livemod_actions_total", {}).items()
        if dict(k).get("state") == "start"
    }
    lines.append(
        "actions started: "
        + ("  ".join(f"{k} {int(v)}" for k, v in sorted(started.items())) or "none")
    )
    lines += ["", "RECENT ACTIONS"]
    for e in actions:
        when = time.strftime("%H:%M:%S", time.localtime(float(e.get("ts", 0.0))))
        latency = e.get("latency_ms")
        lines.append(
            f"  #{e.get('seq')} {when} {e.get('action', ''):<6} {e.get('state', ''):<5}"
            f" {e.get('category', ''):<10} {e.get('tier', ''):<6}"
            f" {e.get('room_id')}/{e.get('user_id')}  media {float(e.get('media_time_s', 0)):.2f} s"
            f"  latency {'-' if latency is None else f'{latency:.0f} ms'}"
        )
    if not actions:
        lines.append("  (none yet)")
    return "\n".join(lines) + "\n"
