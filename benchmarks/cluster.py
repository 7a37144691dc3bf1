"""Several instances on one Redis: what Redis costs, and how fast a session moves.

Setting: Debian's redis-server on 127.0.0.1 (AOF, ``appendfsync everysec``), started
by the benchmark in a temporary folder; everything on one machine, loopback only.

1. Vote update per sample: the vote engine with its in-memory default against the
   same engine on Redis (compare-and-set Lua script), the same samples, in this run.
2. Event append: ``EventHub.publish`` on the embedded store (SQLite) against the hub
   on the Redis Streams log (INCR + XADD in one script), one publisher, in this run;
   and the log's throughput: 8 concurrent publishers, events/s until a subscriber on
   a second hub has received them all.
3. Failover (full mode only): two ``livemod serve`` instances (hash matching only),
   nginx-rtmp and an ffmpeg publisher; the owner of the pulled stream is killed with
   SIGKILL, the time to the first analyzed frame on the survivor is measured, the
   killed one is started again, and so on ``--kills`` times. A subscriber that follows
   the survivor (reconnecting with ``?since=``) counts events lost and duplicated.

Prints one JSON document.

    .venv/bin/python benchmarks/cluster.py [--quick] [--kills N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import cv2
import numpy as np
import redis
import redis.asyncio as aioredis
import websockets
from loadgen import machine, percentiles

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from livemod.cluster.eventlog import RedisEventLog
from livemod.cluster.node import PLACED_HEADER
from livemod.cluster.votes import RedisVoteStore
from livemod.events.hub import EventFilter, EventHub
from livemod.events.types import SessionEvent
from livemod.messages import FrameAnalysis, Signal, VideoFrame
from livemod.paths import DEFAULT_POLICY
from livemod.policy.taxonomy import load_policy
from livemod.policy.vote import VoteEngine
from livemod.store import Store
from livemod.testing import media as testmedia
from tests.conftest import DaemonProcess
from tests.nginx import NginxRtmp
from tests.redis_server import RedisServer

IMG = np.zeros((4, 4, 3), np.uint8)


# -- 1. votes ----------------------------------------------------------------------------


def vote_samples(n: int) -> list[FrameAnalysis]:
    rng = np.random.default_rng(3)
    out = []
    for i in range(n):
        score = float(rng.choice([0.0, 0.3, 0.7, 0.97]))
        signals = (Signal("violence", score, "vision:x"),) if score else ()
        frame = VideoFrame("s", i, i / 4, 100.0 + i / 4, IMG)
        out.append(FrameAnalysis(frame, signals, {}, 1.0, 100.0 + i / 4))
    return out


def time_votes(engine: VoteEngine, samples: list[FrameAnalysis], keys: int) -> list[float]:
    out = []
    for i, sample in enumerate(samples):
        t = time.perf_counter()
        engine.update(f"u{i % keys}:r", sample)
        out.append((time.perf_counter() - t) * 1e6)
    return out


def bench_votes(server: RedisServer, n: int) -> dict[str, Any]:
    policy = load_policy(DEFAULT_POLICY)
    samples = vote_samples(n)
    client = redis.Redis.from_url(server.url, socket_timeout=1.0)
    memory = time_votes(VoteEngine(policy), samples, 10)
    shared = time_votes(VoteEngine(policy, store=RedisVoteStore(client)), samples, 10)
    client.close()
    pm, pr = percentiles(memory), percentiles(shared)
    return {
        "unit": "us per sample",
        "embedded": pm,
        "redis": pr,
        "added_p50_us": round(float(pr["p50"] or 0) - float(pm["p50"] or 0), 1),
        "ratio_p50": round(float(pr["p50"] or 0) / max(float(pm["p50"] or 1e-9), 1e-9), 1),
    }


# -- 2. events ---------------------------------------------------------------------------


async def open_hub(
    folder: Path, url: str | None, origin: str, queue_size: int = 1024
) -> tuple[EventHub, Any]:
    folder.mkdir(parents=True)  # noqa: ASYNC240 - set-up, before anything is timed
    store = Store(folder / "livemod.db", folder / "evidence")
    await store.open()
    client = None
    log = None
    if url is not None:
        client = aioredis.Redis.from_url(url, socket_timeout=5.0)
        log = RedisEventLog(client)
    hub = EventHub(store, shared_log=log, origin=origin, queue_size=queue_size)
    await hub.open()
    return hub, client


async def close_hub(hub: EventHub, client: Any) -> None:
    await hub.close()
    if client is not None:
        await client.aclose()
    await hub.store.close()


def event(i: int) -> SessionEvent:
    return SessionEvent(state="started", stream_id=f"s{i}", user_id="u", room_id="r")


async def time_appends(hub: EventHub, n: int) -> list[float]:
    out = []
    for i in range(n):
        t = time.perf_counter()
        await hub.publish(event(i))
        out.append((time.perf_counter() - t) * 1e6)
    return out


async def bench_events(work: Path, server: RedisServer, n: int, burst: int) -> dict[str, Any]:
    embedded, c0 = await open_hub(work / "embedded", None, "solo")
    a, ca = await open_hub(work / "a", server.url, "a")
    # The subscriber's queue holds the whole burst: it measures the log, not a drop.
    b, cb = await open_hub(work / "b", server.url, "b", queue_size=burst + n + 16)
    try:
        pe = percentiles(await time_appends(embedded, n))
        pr = percentiles(await time_appends(a, n))
        # b has mirrored the appends above before the burst is timed.
        bridge = a.shared_log
        assert bridge is not None
        appended = await bridge.log.last_seq()
        for _ in range(2400):
            if await b.store.last_seq() >= appended:
                break
            await asyncio.sleep(0.05)
        sub = b.subscribe(EventFilter())
        started = time.perf_counter()

        async def publisher(k: int) -> None:
            for i in range(burst // 8):
                await a.publish(event(k * 100_000 + i))

        seqs: list[int] = []

        async def receive() -> None:
            while len(seqs) < (burst // 8) * 8:
                seqs.append(int((await sub.queue.get())["seq"]))

        receiver = asyncio.create_task(receive())
        await asyncio.gather(*(publisher(k) for k in range(8)))
        async with asyncio.timeout(120):
            await receiver
        got = len(seqs)
        elapsed = time.perf_counter() - started
        ordered = seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    finally:
        for hub, client in ((embedded, c0), (a, ca), (b, cb)):
            await close_hub(hub, client)
    return {
        "unit": "us per publish",
        "embedded_sqlite": pe,
        "redis_log": pr,
        "added_p50_us": round(float(pr["p50"] or 0) - float(pe["p50"] or 0), 1),
        "ratio_p50": round(float(pr["p50"] or 0) / max(float(pe["p50"] or 1e-9), 1e-9), 2),
        "log_throughput": {
            "publishers": 8,
            "events": got,
            "events_per_s": round(got / elapsed, 1),
            "delivered_in_seq_order_once": ordered,
        },
    }


# -- 3. failover -------------------------------------------------------------------------

FAST_ENV = {
    "LIVEMOD_VISION__MODELS": "[]",
    "LIVEMOD_OCR__ENABLED": "false",
    "LIVEMOD_ASR__ENABLED": "false",
}


def daemon(work: Path, name: str, known_bad: Path, url: str) -> DaemonProcess:
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    env = {**FAST_ENV, "LIVEMOD_CLUSTER__REDIS_URL": url, "LIVEMOD_CLUSTER__INSTANCE_ID": name}
    return DaemonProcess(folder, known_bad, extra_env=env)


async def follow(ws_url: str, since: int, seqs: list[int], stop: asyncio.Event) -> None:
    async with websockets.connect(f"{ws_url}?since={since}") as ws:
        while not stop.is_set():
            try:
                message = await asyncio.wait_for(ws.recv(), 0.2)
            except TimeoutError:
                continue
            seqs.append(int(json.loads(message)["seq"]))


async def bench_failover(work: Path, server: RedisServer, kills: int) -> dict[str, Any]:
    bad = testmedia.photo(testmedia.KNOWN_BAD_PHOTO)
    known_bad = work / "known_bad"
    known_bad.mkdir(parents=True)
    cv2.imwrite(str(known_bad / "bad.png"), bad[:, :, ::-1])
    clip = work / "loop.mp4"
    testmedia.make_clip(clip, [testmedia.Segment(2.0, None), testmedia.Segment(2.0, bad)])
    nginx = NginxRtmp(work / "nginx")
    nginx.start()
    publisher = subprocess.Popen(  # noqa: ASYNC220 - set-up, before anything is timed
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1",
         "-i", str(clip), "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-an",
         "-f", "flv", nginx.publish_url("bench", app="plain")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    nodes = {n: daemon(work, n, known_bad, server.url) for n in ("a", "b")}
    times: list[float] = []
    seqs: list[int] = []
    try:
        for node in nodes.values():
            node.start()
        async with aiohttp.ClientSession() as http:
            body = {
                "url": f"rtmp://127.0.0.1:{nginx.rtmp_port}/plain/bench",
                "user_id": "u",
                "room_id": "bench",
            }
            headers = {PLACED_HEADER: "bench"}
            async with http.post(f"{nodes['a'].base}/v1/streams", json=body, headers=headers) as r:
                sid = (await r.json())["id"]
            owner, other = "a", "b"
            for _ in range(kills):
                await live_on(http, nodes[owner], sid, 30.0)
                stop = asyncio.Event()
                since = seqs[-1] if seqs else 0
                watcher = asyncio.create_task(follow(nodes[other].ws, since, seqs, stop))
                await asyncio.sleep(1.0)
                proc = nodes[owner].proc
                assert proc is not None
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                killed = time.monotonic()
                await live_on(http, nodes[other], sid, 30.0, fresh=True)
                times.append(time.monotonic() - killed)
                await asyncio.sleep(1.0)
                stop.set()
                await watcher
                nodes[owner] = daemon(work, owner, known_bad, server.url)
                nodes[owner].workdir = work / f"{owner}-{len(times)}"
                nodes[owner].workdir.mkdir()
                nodes[owner].start()
                owner, other = other, owner
            # The whole log, read back from one instance.
            replay: list[int] = []
            stop = asyncio.Event()
            task = asyncio.create_task(follow(nodes[owner].ws, 0, replay, stop))
            await asyncio.sleep(2.0)
            stop.set()
            await task
    finally:
        for node in nodes.values():
            if node.proc is not None and node.proc.poll() is None:
                node.stop()
        publisher.kill()
        publisher.wait()
        nginx.stop()
    followed = sorted(set(seqs))
    expected = set(range(followed[0], followed[-1] + 1)) if followed else set()
    return {
        "kills": kills,
        "kill_to_first_analyzed_frame_s": percentiles(times, 2),
        "events_followed": len(seqs),
        "events_lost": len(expected - set(seqs)),
        "events_duplicated": len(seqs) - len(set(seqs)),
        "log_replay_contiguous": replay == list(range(1, len(replay) + 1)),
    }


async def live_on(
    http: aiohttp.ClientSession, node: DaemonProcess, sid: str, timeout: float, fresh: bool = False
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            async with http.get(f"{node.base}/v1/streams/{sid}") as resp:
                if resp.status == 200:
                    status = await resp.json()
                    if status["status"] == "live" and status.get("samples", 0) > 0:
                        return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.05 if fresh else 0.2)
    raise RuntimeError(f"session {sid} not live on {node.base} in {timeout} s")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="livemod-cluster-bench-") as tmp:
        work = Path(tmp)
        server = RedisServer(work / "redis")
        server.start()
        try:
            votes = bench_votes(server, args.samples)
            events = await bench_events(work / "events", server, args.samples, args.burst)
            # The failover runs on an empty Redis: its log is its own events.
            redis.Redis.from_url(server.url).flushall()
            failover = (
                await bench_failover(work / "failover", server, args.kills) if args.kills else None
            )
        finally:
            server.stop()
    return {
        "setting": {
            "machine": machine(),
            "redis": "redis-server on 127.0.0.1, appendonly yes, appendfsync everysec",
            "samples": args.samples,
            "burst_events": args.burst,
            "kills": args.kills,
            "note": "one machine for Redis, instances and publishers; loopback only",
        },
        "vote_update": votes,
        "event_append": events,
        "failover": failover,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="votes and events only, small")
    parser.add_argument("--kills", type=int, default=None, help="owners killed (full: 20)")
    args = parser.parse_args()
    if args.kills is None:
        args.kills = 0 if args.quick else 20
    args.samples = 300 if args.quick else 5000
    args.burst = 400 if args.quick else 8000
    result = asyncio.run(run(args))
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
