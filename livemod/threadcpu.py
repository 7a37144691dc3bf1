"""CPU time of the daemon's own threads, by the part of the pipeline each one serves.

Stage histograms time work from the inside (wall time, waits for the GIL and the cores
included: on a busy machine ten times the CPU some stages really use), so operators
sizing a host read this instead: the kernel's count of CPU seconds per thread
(``/proc/self/task/<tid>/stat``), each thread put in a part by its name. Python names
its threads (``livemod-infer_0``, ``av-<stream>``); threads it did not start (FFmpeg's
decoding threads, ``av:h264:df0``) are grouped by their kernel name. A thread that
ended keeps its seconds in its part, so every part only grows (a counter). A thread that
ends between two reads would take its last seconds with it, so the daemon's per-stream
threads call ``retire_current_thread`` as they finish; only FFmpeg's own threads (pictures
above ``ingest.threaded_pixels``) can still lose the time since the last read.

Linux only: elsewhere nothing is reported.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

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
