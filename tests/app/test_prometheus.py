"""Debian's real Prometheus scrapes a real daemon that moderated a clip; every metric
the Grafana dashboard queries has data, and every dashboard query evaluates."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import websockets
import yaml

from livemod.testing import media as testmedia
from tests.conftest import TIMEOUT_SCALE, DaemonProcess, free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "configs" / "grafana" / "livemod.json"
SCRAPE_CONFIG = ROOT / "configs" / "prometheus.yml"
# Grafana's variables, as Grafana would expand them for a short range.
GRAFANA_VARS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "5m"}


def dashboard_queries() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    assert exprs, "the dashboard has no queries"
    return exprs


def expand(expr: str) -> str:
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    return expr


def metric_names(expr: str) -> set[str]:
    names = set(re.findall(r"\blivemod_[a-z0-9_]+", expr))
    # A histogram is stored as its _bucket/_sum/_count series.
    return names


@pytest.fixture(scope="module")
def short_clip(media_dir: Path) -> Path:
    """4.5 s: pattern, the known-bad picture from 1 s to 3 s, pattern."""
    clip = media_dir / "prometheus.mp4"
    if not clip.exists():
        bad = testmedia.photo(testmedia.KNOWN_BAD_PHOTO)
        testmedia.make_clip(
            clip,
            [
                testmedia.Segment(1.0, None),
                testmedia.Segment(2.0, bad),
                testmedia.Segment(1.5, None),
            ],
        )
    return clip


class Prometheus:
    """``prometheus`` on a free loopback port, scraping one daemon every second."""

    def __init__(self, workdir: Path, target_port: int) -> None:
        self.port = free_port()
        self.workdir = workdir
        config = yaml.safe_load(SCRAPE_CONFIG.read_text())
        config["global"]["scrape_interval"] = "1s"
        config["global"]["evaluation_interval"] = "1s"
        job = config["scrape_configs"][0]
        job["static_configs"][0]["targets"] = [f"127.0.0.1:{target_port}"]
        self.config = workdir / "prometheus.yml"
        self.config.write_text(yaml.safe_dump(config))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        binary = shutil.which("prometheus")
        assert binary, "prometheus is not installed (scripts/setup.sh installs it)"
        log = open(self.workdir / "prometheus.log", "wb")  # noqa: SIM115 - lives with the process
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={self.config}",
                f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        return (self.workdir / "prometheus.log").read_text(errors="replace")[-3000:]


@pytest.fixture
def prometheus(tmp_path: Path, daemon: DaemonProcess) -> Iterator[Prometheus]:
    prom = Prometheus(tmp_path, daemon.http_port)
    prom.start()
    try:
        yield prom
    finally:
        prom.stop()


async def query(http: aiohttp.ClientSession, prom: Prometheus, expr: str) -> list[Any]:
    async with http.get(f"{prom.base}/api/v1/query", params={"query": expr}) as resp:
        body = await resp.json()
    assert resp.status == 200 and body["status"] == "success", (expr, body)
    result: list[Any] = body["data"]["result"]
    return result


async def wait_for(
    http: aiohttp.ClientSession, prom: Prometheus, expr: str, timeout: float
) -> list[Any]:
    deadline = time.monotonic() + timeout * TIMEOUT_SCALE
    while True:
        try:
            result = await query(http, prom, expr)
            if result:
                return result
        except aiohttp.ClientError:
            pass  # not listening yet
        assert prom.proc is not None and prom.proc.poll() is None, prom.log()
        assert time.monotonic() < deadline, f"no data for {expr}: {prom.log()}"
        await asyncio.sleep(0.5)


async def test_every_dashboard_metric_has_data_in_prometheus(
    daemon: DaemonProcess, prometheus: Prometheus, short_clip: Path
) -> None:
    async with aiohttp.ClientSession() as http:
        # The daemon is up before the clip starts, so scrapes see it in motion.
        await wait_for(http, prometheus, 'up{job="livemod"} == 1', 30)
        async with websockets.connect(f"{daemon.ws}?user_id=prom-user") as ws:
            body = {
                "url": str(short_clip),
                "user_id": "prom-user",
                "room_id": "prom-room",
                "realtime": True,
            }
            async with http.post(f"{daemon.base}/v1/streams", json=body) as resp:
                created = await resp.json()
                assert resp.status == 201, created

            async def until_ended() -> list[dict[str, Any]]:
                events = []
                async for raw in ws:
                    event = json.loads(raw)
                    events.append(event)
                    if event["type"] == "session" and event["state"] in ("ended", "error"):
                        return events
                return events

            events = await asyncio.wait_for(until_ended(), 60 * TIMEOUT_SCALE)
        assert events[-1]["state"] == "ended", events[-1]
        assert any(e["type"] == "action" for e in events), "the known-bad insert gave no action"

        # A scrape after the session ended, and a few seconds of history for rate().
        await wait_for(http, prometheus, "livemod_sessions_ended_total >= 1", 30)
        await asyncio.sleep(2.0)

        missing = []
        for name in sorted(set().union(*(metric_names(e) for e in dashboard_queries()))):
            if not await query(http, prometheus, name):
                missing.append(name)
        assert not missing, f"dashboard metrics without data: {missing}"
        for expr in dashboard_queries():
            assert await query(http, prometheus, expand(expr)), f"no result: {expr}"

        # Bounded labels: nothing about this stream's user, room or id in any series.
        series = await query(http, prometheus, '{__name__=~"livemod_.+"}')
        assert len(series) > 50
        private = {"prom-user", "prom-room", created["id"]}
        leaked = [s["metric"] for s in series if private & set(s["metric"].values())]
        assert not leaked, leaked
