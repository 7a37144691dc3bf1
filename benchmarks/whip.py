"""WHIP (WebRTC) ingest measured end to end, against file-pull ingest in the same run.

Setting: a real ``livemod serve`` (vision models + known-bad hashes, OCR off, 4 fps
with no boost, ICE on 127.0.0.1), fed by aiortc WHIP publishers in this process.
Each publisher sends a generated 640x360 H.264 clip (25 fps) without re-encoding
it (Annex B packets, paced in real time, looped with increasing timestamps): 1.5 s
of test pattern, then 1.5 s of a known-bad picture, over and over. Video only.

1. WHIP POST → first analyzed frame, over sequential publishes; with the POST
   round trip and ICE connection times. Baseline: ``POST /v1/streams`` of the same
   clip as a real-time file (PyAV pull), start → first analyzed frame.
2. Steady arrival → action event (``latency_ms`` of ``pause`` starts), one stream,
   against the same clip pulled as a file.
3. Capacity: N concurrent WHIP publishers (N = 1, 2, 4, 6, 8) for a fixed window
   each; N is sustained while the events' p95 latency stays under 1 s, every stream
   is analyzed at >= 90 % of 4 fps and fewer than 5 % of samples are dropped. The
   last N tried is then run again as file pulls (baseline), so a limit that is the
   machine's rather than WHIP's shows as such.

Prints one JSON document.

    .venv/bin/python benchmarks/whip.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import aiohttp
import av
import cv2
import websockets
from aiortc import MediaStreamTrack
from loadgen import machine, percentiles

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.feed import Feed
from livemod.ingest.whip.client import WhipClient
from livemod.testing import media as testmedia
from tests.conftest import DaemonProcess

FPS = 4.0
CLIP_FPS = 25
PATTERN_S, BAD_S = 1.5, 1.5
MODELS = ["nudenet-320n", "opennsfw"]
LOOPBACK = ["127.0.0.1"]


def prepare(work: Path) -> tuple[Path, Path, Path]:
    """The looped clip as mp4 (file baseline) and MPEG-TS (Annex B for WHIP)."""
    bad = testmedia.photo(testmedia.KNOWN_BAD_PHOTO)
    folder = work / "known_bad"
    folder.mkdir(parents=True)
    cv2.imwrite(str(folder / "bad.png"), bad[:, :, ::-1])
    segments = [testmedia.Segment(PATTERN_S, None), testmedia.Segment(BAD_S, bad)] * 10
    mp4, ts = work / "loop.mp4", work / "loop.ts"
    testmedia.make_clip(mp4, segments, fps=CLIP_FPS)
    testmedia.make_clip(ts, segments[:2], fps=CLIP_FPS)
    return mp4, ts, folder


class PacketLoop(MediaStreamTrack):
    """Sends a clip's H.264 packets as they are, paced in real time, looping with
    timestamps that keep increasing (what a camera would send)."""

    kind = "video"

    def __init__(self, ts_clip: Path) -> None:
        super().__init__()
        with av.open(str(ts_clip)) as container:
            stream = container.streams.video[0]
            self._packets = [bytes(p) for p in container.demux(stream) if p.size]
        self._n = 0
        self._start: float | None = None

    async def recv(self) -> av.Packet:  # type: ignore[override]
        i = self._n
        self._n += 1
        if self._start is None:
            self._start = time.monotonic()
        wait = self._start + i / CLIP_FPS - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        packet = av.Packet(self._packets[i % len(self._packets)])
        packet.pts = i
        packet.time_base = Fraction(1, CLIP_FPS)
        return packet


async def status(http: aiohttp.ClientSession, base: str, sid: str) -> dict[str, Any]:
    async with http.get(f"{base}/v1/streams/{sid}") as resp:
        data: dict[str, Any] = await resp.json()
        return data


async def whip_drops(http: aiohttp.ClientSession, base: str) -> float:
    """Frames the WHIP sources replaced in their one-slot mailbox (all streams)."""
    async with http.get(f"{base}/metrics") as resp:
        text = await resp.text()
    for line in text.splitlines():
        if line.startswith("livemod_drops_total{") and 'stage="whip"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def first_sample(http: aiohttp.ClientSession, base: str, sid: str) -> float | None:
    """Wall time the first analyzed sample was seen (polled every 10 ms)."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if (await status(http, base, sid))["samples"] >= 1:
            return time.time()
        await asyncio.sleep(0.01)
    return None


class Publishing:
    """Starts WHIP publishers and file pulls; ends them all."""

    def __init__(self, daemon: DaemonProcess, ts_clip: Path, mp4_clip: Path) -> None:
        self.base = daemon.base
        self._ts, self._mp4 = ts_clip, mp4_clip
        self.clients: list[WhipClient] = []

    async def whip(self, room: str) -> tuple[WhipClient, float]:
        client = WhipClient(f"{self.base}/whip/{room}?user_id=b-{room}", ice_addresses=LOOPBACK)
        self.clients.append(client)
        t0 = time.time()
        await client.publish(PacketLoop(self._ts), codec="H264")
        return client, (time.time() - t0) * 1000.0

    async def pull(self, http: aiohttp.ClientSession, room: str) -> str:
        body = {"url": str(self._mp4), "user_id": f"b-{room}", "room_id": room, "realtime": True}
        async with http.post(f"{self.base}/v1/streams", json=body) as resp:
            return str((await resp.json())["id"])

    async def end(self, http: aiohttp.ClientSession, sid: str, client: WhipClient | None) -> None:
        if client is not None:
            await client.delete()
        else:
            async with http.delete(f"{self.base}/v1/streams/{sid}"):
                pass


async def first_frames(pub: Publishing, feed: Feed, n: int, http: Any) -> dict[str, Any]:
    post_ms, ice_ms, to_first, pull_first = [], [], [], []
    for i in range(n):
        room = f"ff-{i}"
        t0 = time.time()
        client, post = await pub.whip(room)
        started = await feed.first(10, type="session", state="started", room_id=room)
        assert started is not None, "WHIP session did not start"
        sid = started["stream_id"]
        await asyncio.wait_for(client.connected.wait(), 10)
        ice_ms.append((time.time() - t0) * 1000.0)
        first = await first_sample(http, pub.base, sid)
        if first is not None:
            to_first.append((first - t0) * 1000.0)
        post_ms.append(post)
        await pub.end(http, sid, client)
        room = f"ffp-{i}"
        t0 = time.time()
        sid = await pub.pull(http, room)
        first = await first_sample(http, pub.base, sid)
        if first is not None:
            pull_first.append((first - t0) * 1000.0)
        await pub.end(http, sid, None)
    return {
        "publishes": n,
        "whip_post_to_first_analyzed_ms": percentiles(to_first),
        "whip_post_round_trip_ms": percentiles(post_ms),
        "whip_post_to_ice_connected_ms": percentiles(ice_ms),
        "baseline_file_post_to_first_analyzed_ms": percentiles(pull_first),
    }


def start_latencies(feed: Feed, sids: set[str], t0: float, t1: float) -> list[float]:
    return [
        float(e["latency_ms"])
        for at, e in feed.events
        if e.get("type") == "action"
        and e.get("state") == "start"
        and e.get("stream_id") in sids
        and t0 <= at <= t1
    ]


async def steady(pub: Publishing, feed: Feed, window: float, http: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"window_s": window}
    for kind in ("whip", "file"):
        room = f"steady-{kind}"
        client = None
        if kind == "whip":
            client, _ = await pub.whip(room)
            started = await feed.first(10, type="session", state="started", room_id=room)
            assert started is not None
            sid = started["stream_id"]
        else:
            sid = await pub.pull(http, room)
        t0 = time.time()
        await asyncio.sleep(window)
        out[kind] = percentiles(start_latencies(feed, {sid}, t0, time.time()))
        await pub.end(http, sid, client)
    return out


async def capacity_level(
    pub: Publishing, feed: Feed, n: int, window: float, http: Any, kind: str = "whip"
) -> Any:
    """N concurrent streams of ``kind`` (``whip`` publishers or ``file`` pulls)."""
    rooms = [f"cap{kind}{n}-{i}" for i in range(n)]
    clients: list[WhipClient] = []
    if kind == "whip":
        clients = [client for client, _ in await asyncio.gather(*(pub.whip(r) for r in rooms))]
    else:
        await asyncio.gather(*(pub.pull(http, room) for room in rooms))
    sids: list[str] = []
    for room in rooms:
        started = await feed.first(15, type="session", state="started", room_id=room)
        if started is not None:
            sids.append(started["stream_id"])
    await asyncio.sleep(3.0)  # past the first frames and the first vote
    before = {sid: await status(http, pub.base, sid) for sid in sids}
    mailbox0 = await whip_drops(http, pub.base)
    t0 = time.time()
    cpu0 = time.process_time()
    await asyncio.sleep(window)
    t1 = time.time()
    publisher_cpu = time.process_time() - cpu0
    after = {sid: await status(http, pub.base, sid) for sid in sids}
    mailbox = await whip_drops(http, pub.base) - mailbox0
    if kind == "whip":
        await asyncio.gather(*(client.delete() for client in clients))
    else:
        await asyncio.gather(*(pub.end(http, sid, None) for sid in sids))
    rates, dropped, sampled = [], 0, 0
    for sid in sids:
        got = after[sid]["samples"] - before[sid]["samples"]
        rates.append(got / (t1 - t0))
        sampled += got
        dropped += after[sid]["drops"] - before[sid]["drops"]
    dropped += int(mailbox)
    drop_rate = dropped / max(1, sampled + dropped)
    lat = percentiles(start_latencies(feed, set(sids), t0, t1))
    ok = (
        len(sids) == n
        and lat["p95"] is not None
        and float(lat["p95"]) < 1000.0
        and min(rates, default=0.0) >= 0.9 * FPS
        and drop_rate < 0.05
    )
    return {
        "kind": kind,
        "publishers": n,
        "started": len(sids),
        "event_latency_ms": lat,
        "samples_per_s_per_stream": {
            "min": round(min(rates, default=0.0), 2),
            "mean": round(sum(rates) / len(rates), 2) if rates else 0.0,
        },
        "drop_rate": round(drop_rate, 4),
        "publisher_cpu_s_per_stream_s": round(publisher_cpu / (n * (t1 - t0)), 3),
        "sustained": ok,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="livemod-whip-bench-"))
    env = {
        "LIVEMOD_WHIP__ICE_ADDRESSES": json.dumps(LOOPBACK),
        "LIVEMOD_VISION__MODELS": json.dumps(MODELS),
        "LIVEMOD_OCR__ENABLED": "false",
        "LIVEMOD_SAMPLING__FPS": str(FPS),
        "LIVEMOD_SAMPLING__BOOST_FPS": str(FPS),
        "LIVEMOD_SAMPLING__BOOST_INITIAL_S": "0",
        "LIVEMOD_SAMPLING__BOOST_SUSPICIOUS_S": "0",
        "LIVEMOD_LOG_LEVEL": "WARNING",
    }
    try:
        mp4, ts, known_bad = prepare(work / "media")
        daemon = DaemonProcess(work, known_bad, extra_env=env)
        daemon.start(timeout=120)
        try:
            async with (
                websockets.connect(daemon.ws, max_queue=None) as ws,
                aiohttp.ClientSession() as http,
            ):
                feed = Feed(ws)
                pub = Publishing(daemon, ts, mp4)
                first = await first_frames(pub, feed, args.publishes, http)
                one = await steady(pub, feed, args.window, http)
                levels: list[dict[str, Any]] = []
                for n in args.levels:
                    levels.append(await capacity_level(pub, feed, n, args.window, http))
                    if not levels[-1]["sustained"]:
                        break
                # The same load through file-pull ingest: what the machine gives any source.
                last = levels[-1]["publishers"]
                file_level = await capacity_level(pub, feed, last, args.window, http, "file")
        finally:
            daemon.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    sustained = max((lv["publishers"] for lv in levels if lv["sustained"]), default=0)
    whip_first = first["whip_post_to_first_analyzed_ms"]["p50"]
    file_first = first["baseline_file_post_to_first_analyzed_ms"]["p50"]
    whip_p95, file_p95 = one["whip"]["p95"], one["file"]["p95"]
    return {
        "benchmark": "whip",
        "setting": {
            "machine": machine(),
            "publisher": "aiortc WhipClient in the benchmark process, H.264 sent undecoded",
            "ice": "host candidates 127.0.0.1 only (whip.ice_addresses), no STUN/TURN",
            "clip": {
                "resolution": f"{testmedia.SIZE[0]}x{testmedia.SIZE[1]}",
                "fps": CLIP_FPS,
                "codec": "H.264 libx264 veryfast zerolatency, GOP 50 (2 s)",
                "loop": f"{PATTERN_S} s pattern + {BAD_S} s known-bad picture",
            },
            "models": ["hash", *MODELS],
            "ocr": False,
            "sampling_fps": FPS,
            "vision_threads": 1,
            "vision_workers": 2,
            "window_s": args.window,
            "quick": args.quick,
            "note": "shared 2-core machine: publishers and other work run beside the daemon",
        },
        "first_frame": first,
        "event_latency_one_stream_ms": one,
        "capacity": {
            "levels": levels,
            "sustained_publishers": sustained,
            "baseline_file_pull_at_last_level": file_level,
        },
        "ratios": {
            "first_analyzed_p50_whip_over_file": (
                round(whip_first / file_first, 2) if whip_first and file_first else None
            ),
            "event_latency_p95_whip_over_file": (
                round(whip_p95 / file_p95, 2) if whip_p95 and file_p95 else None
            ),
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (tests use it)")
    args = parser.parse_args()
    args.publishes = 1 if args.quick else 5
    args.window = 4.0 if args.quick else 15.0
    args.levels = [2] if args.quick else [1, 2, 4, 6, 8]
    print(json.dumps(asyncio.run(run(args)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
