"""Escalation overhead and loss during an LLM outage.

Runs an in-process daemon (hash analyzer only, SQLite store in a temporary
folder, ``synchronous=FULL`` as in production) with the escalator pointed at the
scripted fake LLM on 127.0.0.1, which answers at once. So the time measured is
livemod's own: picking the event off the hub, JPEG-encoding the clip frames from
the session ring, the breaker and rate limiter, the HTTP round trip, parsing and
validating the verdict, and committing the ``escalation`` event.

- ``latency``: action event committed -> its ``escalation`` event received by a
  subscriber, one at a time, against a direct call baseline measured in the same
  run (the same request body POSTed with aiohttp to the same fake and parsed).
  ``overhead_ms`` is the difference of the two medians.
- ``throughput``: a burst of escalations at once; escalations per second.
- ``outage``: the LLM answers 500, then is gone (connection refused), then comes
  back, while escalations keep arriving. Every escalated action must get exactly
  one outcome; ``events_lost`` counts those that did not (must be 0).

    .venv/bin/python benchmarks/escalation.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import cv2
import numpy as np

from livemod.app.daemon import Daemon
from livemod.config import Config
from livemod.escalation.clip import jpeg
from livemod.escalation.escalator import Escalator
from livemod.escalation.llm import Clip
from livemod.events.hub import EventFilter, Subscription
from livemod.events.types import ActionEvent
from livemod.messages import FrameAnalysis, Signal, VideoFrame
from livemod.pipeline.session import Session, SessionInfo
from livemod.store import EvidenceInput
from livemod.testing.fake_llm import FakeLlm, Reply, unsafe
from livemod.testing.media import SIZE, fit, photo
from livemod.vision.hashes import HashAnalyzer, KnownBadIndex

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
CLIP_FRAMES = 4


def pct(values_ms: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(values_ms, dtype=np.float64)
    p50, p95, p99 = np.percentile(arr, [50, 95, 99])
    return {
        "p50": round(float(p50), 3),
        "p95": round(float(p95), 3),
        "p99": round(float(p99), 3),
        "mean": round(float(arr.mean()), 3),
        "n": len(values_ms),
    }


class Bench:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.sub: Subscription = daemon.hub.subscribe(EventFilter())
        self.frames = [fit(photo(name)) for name in PHOTOS]
        self.keys = 0

    async def escalate(self) -> dict[str, Any]:
        """One medium-tier action for a fresh key, through the vote, committed like a
        session commits it; the clip frames sit in the session's ring."""
        self.keys += 1
        user, stream = f"user{self.keys}", f"stream{self.keys}"
        d = self.daemon
        info = SessionInfo(stream, user, "room", "file:///dev/null")
        session = Session(info, d.config, d.analysis, d.engine, d.hub)
        d.sessions.adopt(session)
        body: dict[str, Any] | None = None
        evidence = None
        for i in range(3):
            t = time.time()
            frame = VideoFrame(stream, i, i / 4, t, self.frames[i % len(self.frames)])
            session.ring.push(frame)
            signals = (Signal("sexual", 0.8, "vision:bench"),)
            analysis = FrameAnalysis(frame, signals, {"bench": 0.8}, 1.0, t)
            for decision in d.engine.update(info.key, analysis):
                body = ActionEvent.of(decision, stream_id=stream, user_id=user, room_id="room")
                evidence = EvidenceInput(stream, "sexual", i / 4, {"bench": 0.8}, frame.image)
        assert body is not None
        return await d.hub.publish(body, evidence=evidence)

    async def outcome_of(self, seq: int) -> tuple[dict[str, Any], float]:
        while True:
            event = await self.sub.queue.get()
            if event["type"] == "escalation" and event["action_seq"] == seq:
                return event, time.perf_counter()

    def drain(self) -> list[dict[str, Any]]:
        out = []
        while not self.sub.queue.empty():
            out.append(self.sub.queue.get_nowait())
        return out


def config(tmp: Path, llm: FakeLlm, **llm_cfg: Any) -> Config:
    return Config.model_validate(
        {
            "http": {"port": 0},
            "websocket": {"port": 0, "queue_size": 100_000},
            "store": {"path": str(tmp / "bench.db")},
            "vision": {"models": []},
            # Not measured here; off so that only escalation shares the loop.
            "hooks": {"enabled": False},
            "whip": {"enabled": False},
            "llm": {
                "base_url": llm.base_url,
                "model": "fake",
                "rate_per_s": 0,
                "clip_frames": CLIP_FRAMES,
                "queue_size": 100_000,
                "sweep_interval_s": 0,  # the sweep: benchmarks/sweep.py
                **llm_cfg,
            },
        }
    )


async def start(cfg: Config) -> Daemon:
    daemon = Daemon(cfg, analyzers=[HashAnalyzer(KnownBadIndex.load([]), 8)])
    await daemon.start()
    return daemon


async def bench_latency(tmp: Path, n: int, burst: int) -> dict[str, Any]:
    async with FakeLlm(Reply(verdict=unsafe("sexual", "blur"))) as llm:
        daemon = await start(config(tmp / "latency", llm, max_concurrency=4))
        try:
            bench = Bench(daemon)
            esc = next(c for c in daemon.components if isinstance(c, Escalator))
            for _ in range(5):  # warm-up: connections, code paths
                event = await bench.escalate()
                await bench.outcome_of(event["seq"])
            full: list[float] = []
            for _ in range(n):
                event = await bench.escalate()
                committed = time.perf_counter()
                outcome, done = await bench.outcome_of(event["seq"])
                assert outcome["outcome"] == "confirmed", outcome
                full.append((done - committed) * 1000.0)

            # The baseline: the same request, straight to the same endpoint.
            images = bench.frames[:CLIP_FRAMES]
            jpeg_ms: list[float] = []
            for _ in range(n):
                t0 = time.perf_counter()
                jpegs = tuple(jpeg(img, 512) for img in images)
                jpeg_ms.append((time.perf_counter() - t0) * 1000.0)
            clip = Clip("s", "sexual", "blur", "medium", 0.8, ("vision:bench",), 0.5, jpegs)
            body = json.dumps(esc.client.request_body(clip))
            direct: list[float] = []
            async with aiohttp.ClientSession() as http:
                for i in range(n + 5):
                    t0 = time.perf_counter()
                    async with http.post(
                        esc.client.url, data=body, headers={"Content-Type": "application/json"}
                    ) as resp:
                        answer = await resp.json()
                    json.loads(answer["choices"][0]["message"]["content"])
                    if i >= 5:
                        direct.append((time.perf_counter() - t0) * 1000.0)

            bench.drain()
            t0 = time.perf_counter()
            seqs = [(await bench.escalate())["seq"] for _ in range(burst)]
            pending = set(seqs)
            while pending:
                event = await bench.sub.queue.get()
                if event["type"] == "escalation":
                    pending.discard(event["action_seq"])
            burst_s = time.perf_counter() - t0
        finally:
            await daemon.stop()
    full_p, direct_p = pct(full), pct(direct)
    return {
        "latency_ms": {
            "escalation": full_p,
            "direct_call_baseline": direct_p,
            "jpeg_encode_clip": pct(jpeg_ms),
            "overhead_ms_p50": round(full_p["p50"] - direct_p["p50"], 3),
            "overhead_ms_p95": round(full_p["p95"] - direct_p["p95"], 3),
            "ratio_p50": round(full_p["p50"] / direct_p["p50"], 2),
        },
        "throughput": {
            "escalations": burst,
            "seconds": round(burst_s, 3),
            "escalations_per_s": round(burst / burst_s, 1),
            "max_concurrency": 4,
        },
        "request_body_bytes": len(body),
    }


async def bench_outage(tmp: Path, per_phase: int) -> dict[str, Any]:
    llm = FakeLlm(Reply(verdict=unsafe("sexual", "blur")))
    await llm.start()
    port = llm.port
    daemon = await start(
        config(
            tmp / "outage",
            llm,
            timeout_s=0.5,
            retries=1,
            retry_base_s=0.01,
            breaker_failures=5,
            breaker_window_s=10,
            breaker_cooldown_s=0.3,
            fallback_default="fail_closed",
        )
    )
    bench = Bench(daemon)
    escalated: list[int] = []
    phases: dict[str, int] = {}
    events: list[dict[str, Any]] = []
    try:

        async def phase(name: str) -> None:
            for _ in range(per_phase):
                escalated.append((await bench.escalate())["seq"])
                await asyncio.sleep(0.005)
            phases[name] = per_phase

        await phase("healthy")
        llm.default = Reply("status", status=500)
        await phase("http_500")
        await llm.close()  # the endpoint disappears: connection refused
        await phase("unreachable")
        llm = FakeLlm(Reply(verdict=unsafe("sexual", "blur")))
        await llm.start(port)
        await asyncio.sleep(0.4)  # past the cooldown: the next call is the probe
        await phase("recovered")
        # Wait (bounded) until every escalated action has its outcome.
        deadline = time.monotonic() + 60
        settled: set[int] = set()
        while not set(escalated) <= settled and time.monotonic() < deadline:
            try:
                event = await asyncio.wait_for(bench.sub.queue.get(), 1.0)
            except TimeoutError:
                continue
            events.append(event)
            if event["type"] == "escalation":
                settled.add(event["action_seq"])
    finally:
        await daemon.stop()
        await llm.close()
    events += bench.drain()
    outcomes = [e for e in events if e["type"] == "escalation"]
    settled_seqs = [e["action_seq"] for e in outcomes]
    by: dict[str, int] = {}
    for e in outcomes:
        label = f"{e['outcome']}/{e['error'] or 'ok'}"
        by[label] = by.get(label, 0) + 1
    return {
        "phases": phases,
        "escalated_actions": len(escalated),
        "escalation_events": len(outcomes),
        "events_lost": len(set(escalated) - set(settled_seqs)),
        "duplicates": len(settled_seqs) - len(set(settled_seqs)),
        "outcomes": dict(sorted(by.items())),
        "breaker_transitions": [e["state"] for e in events if e["type"] == "breaker"],
        "review_items": len([e for e in events if e["type"] == "review"]),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (tests)")
    args = parser.parse_args(argv)
    # The outage phase fails on purpose; its warnings are not the report.
    logging.getLogger("livemod").setLevel(logging.ERROR)
    n = 20 if args.quick else 300
    burst = 20 if args.quick else 200
    per_phase = 10 if args.quick else 60
    affinity = getattr(os, "sched_getaffinity", None)
    setting = {
        "quick": bool(args.quick),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(affinity(0)) if affinity else None,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": sys.version.split()[0],
        "aiohttp": aiohttp.__version__,
        "opencv": cv2.__version__,
        "llm": "livemod.testing.fake_llm on 127.0.0.1, instant answers (openai protocol)",
        "clip": f"{CLIP_FRAMES} frames {SIZE[0]}x{SIZE[1]} -> JPEG, longest side 512",
        "store": "SQLite WAL, synchronous=FULL, temporary folder",
        "sequential_escalations": n,
    }
    with tempfile.TemporaryDirectory() as tmp:
        latency = asyncio.run(bench_latency(Path(tmp), n, burst))
        outage = asyncio.run(bench_outage(Path(tmp), per_phase))
    report = {
        "benchmark": "livemod escalation",
        "setting": setting,
        **latency,
        "outage": outage,
    }
    print(json.dumps(report, indent=2))
    return 0 if outage["events_lost"] == 0 and outage["duplicates"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
