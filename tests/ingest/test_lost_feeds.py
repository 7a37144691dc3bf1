"""A feed that dies mid-stream (its server killed, its connection cut) ends the session
as ``error`` with ``reason: input_lost``; a feed that ends cleanly stays ``ended``/``eof``.

The feeds are real: an HTTP server on loopback sending an ffmpeg-made MPEG-TS, and a
real nginx-rtmp with an ffmpeg publisher, pulled with a plain ``POST /v1/streams``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import websockets

from livemod.ingest.av_source import INPUT_LOST, SourceOptions
from livemod.ingest.reconnect import PullControl, ReconnectingSource
from livemod.messages import VideoFrame
from livemod.sampling import FrameSampler
from tests.app.test_e2e import collect_until_end, post_stream
from tests.conftest import TIMEOUT_SCALE, DaemonProcess
from tests.nginx import NginxRtmp

pytestmark = pytest.mark.e2e

FAST_ENV = {
    "LIVEMOD_VISION__MODELS": "[]",
    "LIVEMOD_OCR__ENABLED": "false",
    # A silent RTMP pull (nginx-rtmp's way of saying the publisher left) ends sooner.
    "LIVEMOD_INGEST__READ_TIMEOUT_S": "2",
}
CHUNK = 188 * 100


@pytest.fixture(scope="module")
def feed_ts(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """8 s of 320x240 H.264 at 25 fps in MPEG-TS, a keyframe every second."""
    path = tmp_path_factory.mktemp("feeds") / "feed.ts"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi",
         "-i", "testsrc2=size=320x240:rate=25", "-t", "8", "-c:v", "libx264",
         "-preset", "ultrafast", "-g", "25", "-f", "mpegts", str(path)],
        check=True,
    )  # fmt: skip
    return path.read_bytes()


@pytest.fixture
def daemon(tmp_path: Path, known_bad_dir: Path) -> Iterator[DaemonProcess]:
    proc = DaemonProcess(tmp_path, known_bad_dir, extra_env=FAST_ENV)
    proc.start()
    try:
        yield proc
    finally:
        if proc.proc is not None and proc.proc.poll() is None:
            proc.stop()


@contextlib.asynccontextmanager
async def ts_server(data: bytes, *, cut_after: float | None) -> AsyncIterator[int]:
    """Serves ``data`` as a live HTTP MPEG-TS (chunked, paced a little). With
    ``cut_after`` (a fraction of ``data``) the connection is reset there, as when the
    serving process dies; without, the stream ends with its final chunk."""
    tasks: set[asyncio.Task[None]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            end = len(data) if cut_after is None else int(len(data) * cut_after)
            for i in range(0, end, CHUNK):
                piece = data[i : min(i + CHUNK, end)]
                writer.write(b"%x\r\n%b\r\n" % (len(piece), piece))
                await writer.drain()
                await asyncio.sleep(0.02)
            if cut_after is None:
                writer.write(b"0\r\n\r\n")
                await writer.drain()
            else:
                # SO_LINGER 0: close sends a reset, as the kernel does for a killed
                # process that left unread data behind.
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except ConnectionError:
            pass
        finally:
            writer.close()
            tasks.discard(task)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def session_end(daemon: DaemonProcess, url: str, room: str) -> list[dict[str, Any]]:
    async with (
        websockets.connect(f"{daemon.ws}?room_id={room}") as ws,
        aiohttp.ClientSession() as http,
    ):
        created = await post_stream(http, daemon.base, url=url, user_id="lee", room_id=room)
        return await collect_until_end(ws, created["id"], 40)


async def test_http_feed_cut_mid_stream_is_input_lost(
    daemon: DaemonProcess, feed_ts: bytes
) -> None:
    async with ts_server(feed_ts, cut_after=0.5) as port:
        events = await session_end(daemon, f"http://127.0.0.1:{port}/live.ts", "cut")
    last = events[-1]
    assert last["state"] == "error" and last["reason"] == "input_lost", last
    assert "lost" in last["error"]


async def test_http_feed_that_ends_cleanly_is_eof(daemon: DaemonProcess, feed_ts: bytes) -> None:
    async with ts_server(feed_ts, cut_after=None) as port:
        events = await session_end(daemon, f"http://127.0.0.1:{port}/live.ts", "clean")
    last = events[-1]
    assert last["state"] == "ended" and last["reason"] == "eof", last
    assert last["frames"] == 200


async def test_hook_pull_that_cannot_get_its_feed_back_is_input_lost(feed_ts: bytes) -> None:
    """A hook-started pull retries while its publisher is live (no publish_done came,
    as when the server died); when it gives up, the feed was lost."""
    frames: list[VideoFrame] = []
    loop = asyncio.get_running_loop()
    got_frames = asyncio.Event()

    def deliver(frame: VideoFrame) -> None:  # on the decode thread
        frames.append(frame)
        loop.call_soon_threadsafe(got_frames.set)

    async with ts_server(feed_ts, cut_after=0.3) as port:
        url = f"http://127.0.0.1:{port}/live.ts"
        control = PullControl(url, give_up_s=1.0, backoff_s=0.1, backoff_max_s=0.2)
        source = ReconnectingSource(
            "hooked",
            SourceOptions(url=url, open_timeout_s=2.0, read_timeout_s=2.0),
            FrameSampler(4.0, 4.0),
            deliver,
            control,
        )
        task = asyncio.create_task(asyncio.to_thread(source.run))
        # The first attempt gets frames, then the server goes away for good.
        await asyncio.wait_for(got_frames.wait(), 20 * TIMEOUT_SCALE)
    end = await asyncio.wait_for(task, 30 * TIMEOUT_SCALE)
    assert end.reason == "error" and end.cause == INPUT_LOST, end
    assert end.frames_decoded > 0 and "gave up reconnecting" in (end.error or "")


def publish(nginx: NginxRtmp, room: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-f", "lavfi",
         "-i", "testsrc2=size=320x240:rate=25", *args, "-c:v", "libx264",
         "-preset", "ultrafast", "-g", "25", "-f", "flv", nginx.publish_url(room, app="plain")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


async def until_publishing(nginx: NginxRtmp, room: str) -> None:
    deadline = asyncio.get_running_loop().time() + 10 * TIMEOUT_SCALE
    while room not in await asyncio.to_thread(nginx.publishers):
        assert asyncio.get_running_loop().time() < deadline, "publisher never showed up"
        await asyncio.sleep(0.1)


async def test_rtmp_server_killed_mid_stream_is_input_lost(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    nginx = NginxRtmp(tmp_path / "nginx")
    nginx.start()
    publisher = publish(nginx, "killed")
    try:
        await until_publishing(nginx, "killed")
        async with (
            websockets.connect(f"{daemon.ws}?room_id=killed") as ws,
            aiohttp.ClientSession() as http,
        ):
            url = f"rtmp://127.0.0.1:{nginx.rtmp_port}/plain/killed"
            created = await post_stream(http, daemon.base, url=url, user_id="lee", room_id="killed")
            await asyncio.sleep(2.0)
            nginx.kill()
            events = await collect_until_end(ws, created["id"], 15)
    finally:
        publisher.kill()
        publisher.wait()
        nginx.kill()
    assert any(e.get("state") == "started" for e in events)
    last = events[-1]
    assert last["state"] == "error" and last["reason"] == "input_lost", last


async def test_rtmp_publisher_that_finishes_is_eof(daemon: DaemonProcess, tmp_path: Path) -> None:
    nginx = NginxRtmp(tmp_path / "nginx")
    nginx.start()
    publisher = publish(nginx, "done", "-t", "4")
    try:
        await until_publishing(nginx, "done")
        url = f"rtmp://127.0.0.1:{nginx.rtmp_port}/plain/done"
        events = await session_end(daemon, url, "done")
    finally:
        publisher.kill()
        publisher.wait()
        nginx.kill()
    last = events[-1]
    assert last["state"] == "ended" and last["reason"] == "eof", last
    assert last["frames"] > 0
