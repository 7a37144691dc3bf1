"""``livemod top``: the pure view (metrics parsing, quantiles, rendering) and a
``--once`` snapshot of a real daemon moderating a real-time clip."""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import websockets
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from livemod.app.topview import Histogram as Hist
from livemod.app.topview import parse_metrics, render
from tests.conftest import BAD_START, TIMEOUT_SCALE, DaemonProcess, free_port


def test_quantile_interpolates_inside_the_bucket_like_promql() -> None:
    # 10 observations: 4 in (0, 0.1], 4 in (0.1, 0.5], 2 in (0.5, +Inf].
    h = Hist(((0.1, 4.0), (0.5, 8.0), (math.inf, 10.0)), 10.0, 3.0)
    assert h.quantile(0.2) == pytest.approx(0.05)
    assert h.quantile(0.6) == pytest.approx(0.3)
    assert h.quantile(0.95) == 0.5  # in +Inf: the last finite bound, as PromQL
    assert Hist((), 0.0, 0.0).quantile(0.5) is None


def test_minus_gives_the_observations_between_two_scrapes() -> None:
    old = Hist(((0.1, 4.0), (math.inf, 4.0)), 4.0, 0.2)
    new = Hist(((0.1, 4.0), (math.inf, 6.0)), 6.0, 2.2)
    recent = new.minus(old)
    assert recent.count == 2.0 and recent.buckets == ((0.1, 0.0), (math.inf, 2.0))
    # A counter reset (the daemon restarted) shows the new life, not negatives.
    assert old.minus(new) is old


def exposition() -> str:
    reg = CollectorRegistry()
    h = Histogram(
        "livemod_stage_latency_seconds", "x", ["stage"], buckets=(0.01, 0.1, 1.0), registry=reg
    )
    for v in (0.005, 0.05, 0.05, 0.5):
        h.labels("decode").observe(v)
    Counter("livemod_drops_total", "x", ["stage", "reason"], registry=reg).labels(
        "analysis_queue", "stale_frame"
    ).inc(3)
    Counter("livemod_actions_total", "x", ["action", "category", "state"], registry=reg).labels(
        "pause", "known_bad", "start"
    ).inc()
    Gauge("livemod_analysis_lag_seconds", "x", registry=reg).set(0.25)
    Gauge("other_metric", "ignored", registry=reg).set(1)
    return generate_latest(reg).decode()


def test_parse_and_render_a_real_exposition() -> None:
    view = parse_metrics(exposition())
    assert "other_metric" not in view.values
    assert view.value("livemod_drops_total", stage="analysis_queue", reason="stale_frame") == 3
    hist = view.histograms["livemod_stage_latency_seconds"][(("stage", "decode"),)]
    assert hist.count == 4 and hist.quantile(0.5) == pytest.approx(0.055)
    stream = {
        "id": "abc123",
        "user_id": "u1",
        "room_id": "r1",
        "source": "rtmp",
        "status": "live",
        "samples": 40,
        "drops": 3,
        "lag_s": 0.25,
        "risk_score": 0.97,
        "severity": "critical",
        "standing_actions": [{"category": "known_bad", "action": "pause", "tier": "high"}],
    }
    action = {
        "seq": 7,
        "ts": 0.0,
        "action": "pause",
        "state": "start",
        "category": "known_bad",
        "tier": "high",
        "room_id": "r1",
        "user_id": "u1",
        "media_time_s": 5.2,
        "latency_ms": 310.0,
    }
    screen = render(
        base="http://127.0.0.1:8080",
        health={"version": "0.1.0", "uptime_s": 12.0},
        streams=[stream],
        metrics=view,
        previous=None,
        actions=[action],
        window="since start",
    )
    assert "abc123" in screen and "pause:known_bad" in screen
    assert "stage decode" in screen and "55.0" in screen  # p50 in ms
    assert "analysis lag (worst live stream): 0.250 s" in screen
    assert "analysis_queue/stale_frame 3" in screen
    assert "actions started: pause/known_bad 1" in screen
    assert "#7" in screen and "latency 310 ms" in screen


@pytest.mark.e2e
async def test_top_once_shows_a_live_session_and_its_action(
    daemon: DaemonProcess, violation_clip: Path
) -> None:
    async with (
        websockets.connect(f"{daemon.ws}?room_id=top-room") as ws,
        aiohttp.ClientSession() as http,
    ):
        body = {"url": str(violation_clip), "user_id": "top-user", "room_id": "top-room"}
        async with http.post(f"{daemon.base}/v1/streams", json=body) as resp:
            created = await resp.json()
            assert resp.status == 201, created

        async def first_action() -> dict[str, Any]:
            async for raw in ws:
                event: dict[str, Any] = json.loads(raw)
                if event["type"] == "action":
                    return event
            raise AssertionError("event stream closed")

        action = await asyncio.wait_for(first_action(), (BAD_START + 30) * TIMEOUT_SCALE)
        # The clip runs 14 s: the session is still live while top looks at it.
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "livemod",
            "top",
            "--once",
            "--url",
            daemon.base,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(os.environ),
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60 * TIMEOUT_SCALE)
    assert proc.returncode == 0, err.decode()
    screen = out.decode()
    assert "\x1b[" not in screen  # --once prints plain text
    row = next(line for line in screen.splitlines() if line.startswith(created["id"]))
    assert "top-user" in row and "top-room" in row and "live" in row
    assert "pause:known_bad" in row
    assert "stage analyze" in screen and "model vision:nudenet" in screen
    assert "event pause" in screen
    assert "analysis lag (worst live stream)" in screen
    recent = screen.split("RECENT ACTIONS", 1)[1]
    assert f"#{action['seq']}" in recent and "known_bad" in recent


async def test_top_says_clearly_when_the_daemon_is_unreachable() -> None:
    port = free_port()  # nothing listens there
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "livemod",
        "top",
        "--once",
        "--url",
        f"http://127.0.0.1:{port}",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60 * TIMEOUT_SCALE)
    assert proc.returncode == 2
    assert f"cannot reach livemod at http://127.0.0.1:{port}" in err.decode()
