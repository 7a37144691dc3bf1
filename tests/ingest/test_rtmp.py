"""RTMP ingest from a real nginx-rtmp: hooks start and stop sessions, enforcement
drops or holds the publisher, identity survives a re-publish, faults stay local.

Two stacks (nginx + daemon) per module run: one whose policy ends a known-bad
stream (with a shared stream key), one with the shipped policy, which pauses it.
Only the hash analyzer runs, so the machine's two cores are not the bottleneck.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import websockets
import yaml
from aiohttp import web

from livemod.paths import CONFIGS_DIR, DEFAULT_POLICY
from tests.conftest import BAD_START, TIMEOUT_SCALE, DaemonProcess, free_port
from tests.nginx import NginxRtmp

pytestmark = pytest.mark.e2e

SECRET = "s3cret-key"
SRS_API_PORT = free_port()
"""Where the end stack's daemon finds "SRS"'s HTTP API (served by one test)."""
FAST_ENV = {"LIVEMOD_VISION__MODELS": "[]", "LIVEMOD_OCR__ENABLED": "false"}


@dataclass
class Stack:
    nginx: NginxRtmp
    daemon: DaemonProcess
    publishers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def publish(
        self, clip: Path, room: str, query: str, *before_input: str, app: str | None = None
    ) -> subprocess.Popen[bytes]:
        """``ffmpeg -re`` pushing ``clip`` to ``live/room?query`` as FLV."""
        proc = subprocess.Popen(
            ["ffmpeg", "-nostdin", "-loglevel", "error", "-re", *before_input, "-i", str(clip),
             "-c", "copy", "-f", "flv", self.nginx.publish_url(room, query, app)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.publishers.append(proc)
        return proc

    def reap(self) -> None:
        for proc in self.publishers:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        self.publishers.clear()


def _stack(
    workdir: Path, known_bad: Path, env: dict[str, str], example: Path | None = None
) -> Iterator[Stack]:
    http_port = free_port()
    nginx = NginxRtmp(
        workdir / "nginx",
        hook_url=f"http://127.0.0.1:{http_port}/hooks/nginx-rtmp",
        example=example,
    )
    daemon = DaemonProcess(
        workdir,
        known_bad,
        http_port=http_port,
        extra_env={
            **FAST_ENV,
            "LIVEMOD_ENFORCE__ENABLED": "true",
            "LIVEMOD_ENFORCE__NGINX_CONTROL_URL": nginx.control_url,
            **env,
        },
    )
    stack = Stack(nginx, daemon)
    try:
        nginx.start()
        daemon.start()
        yield stack
    finally:
        stack.reap()
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.stop()
        nginx.stop()


@pytest.fixture(scope="module")
def end_stack(tmp_path_factory: pytest.TempPathFactory, known_bad_dir: Path) -> Iterator[Stack]:
    """known_bad → end; publishes need ``key=SECRET``."""
    work = tmp_path_factory.mktemp("rtmp-end")
    policy = yaml.safe_load(DEFAULT_POLICY.read_text())
    policy["categories"]["known_bad"]["actions"] = {"high": "end", "medium": "end", "low": "review"}
    (work / "policy.yaml").write_text(yaml.safe_dump(policy))
    env = {
        "LIVEMOD_POLICY": str(work / "policy.yaml"),
        "LIVEMOD_HOOKS__KEY_CHECK": "shared",
        "LIVEMOD_PUBLISH_SECRET": SECRET,
        "LIVEMOD_ENFORCE__SRS_API_URL": f"http://127.0.0.1:{SRS_API_PORT}",
    }
    yield from _stack(work, known_bad_dir, env)


@pytest.fixture(scope="module")
def pause_stack(tmp_path_factory: pytest.TempPathFactory, known_bad_dir: Path) -> Iterator[Stack]:
    """The shipped policy (known_bad → pause) behind the shipped nginx-rtmp.conf."""
    work = tmp_path_factory.mktemp("rtmp-pause")
    yield from _stack(work, known_bad_dir, {}, example=CONFIGS_DIR / "nginx-rtmp.conf")


@pytest.fixture(scope="module")
def steady_clip(media_dir: Path) -> Path:
    """A benign 4 s clip, looped by the publisher for as long as a test needs."""
    from livemod.testing import media as testmedia

    clip = media_dir / "steady.mp4"
    if not clip.exists():
        testmedia.make_clip(clip, [testmedia.Segment(4.0, None)])
    return clip


class Events:
    """Every event a WebSocket subscriber receives, collected in the background."""

    def __init__(self, ws: Any) -> None:
        self.items: list[dict[str, Any]] = []
        self._ws = ws
        self._task = asyncio.create_task(self._read())
        self._changed = asyncio.Event()

    async def _read(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in self._ws:
                self.items.append(json.loads(raw))
                self._changed.set()

    async def wait(
        self, pred: Callable[[dict[str, Any]], bool], timeout: float = 20.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout * TIMEOUT_SCALE
        while True:
            for event in self.items:
                if pred(event):
                    return event
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching event; got {self.items}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    def of(self, kind: str, **match: Any) -> list[dict[str, Any]]:
        return [
            e for e in self.items
            if e["type"] == kind and all(e.get(k) == v for k, v in match.items())
        ]  # fmt: skip

    def close(self) -> None:
        self._task.cancel()


def is_(kind: str, **match: Any) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e["type"] == kind and all(e.get(k) == v for k, v in match.items())


async def exited(proc: subprocess.Popen[bytes], timeout: float) -> int:
    deadline = time.monotonic() + timeout * TIMEOUT_SCALE
    while proc.poll() is None:
        if time.monotonic() > deadline:
            raise AssertionError("publisher still running")
        await asyncio.sleep(0.1)
    return proc.returncode


async def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout * TIMEOUT_SCALE
    while not await asyncio.to_thread(check):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def test_end_drops_the_publisher_and_refuses_its_return(
    end_stack: Stack, violation_clip: Path
) -> None:
    nginx, daemon = end_stack.nginx, end_stack.daemon
    async with websockets.connect(f"{daemon.ws}?room_id=stage") as ws:
        events = Events(ws)
        publisher = end_stack.publish(violation_clip, "stage", f"user_id=alice&key={SECRET}")
        started = await events.wait(is_("session", state="started"))
        assert started["user_id"] == "alice" and started["url"].startswith("rtmp://127.0.0.1")
        end = await events.wait(is_("action", action="end", state="start"), 30)
        assert end["category"] == "known_bad" and end["stream_id"] == started["stream_id"]
        assert BAD_START <= end["media_time_s"] <= BAD_START + 1.0
        enforced = await events.wait(is_("enforcement", action="end"))
        assert enforced["ok"] and enforced["operation"] == "drop/publisher"
        assert enforced["trigger_seq"] == end["seq"] and enforced["server"] == "nginx-rtmp"
        # The drop is real: the encoder loses its connection and nginx lists no publisher.
        assert await exited(publisher, 10) != 0
        assert "stage" not in await asyncio.to_thread(nginx.publishers)
        ended = await events.wait(is_("session", state="ended"))
        assert ended["stream_id"] == started["stream_id"]

        # Encoders reconnect by themselves: while the end stands, the room refuses them.
        again = end_stack.publish(violation_clip, "stage", f"user_id=alice&key={SECRET}")
        assert await exited(again, 10) != 0
        refused = await events.wait(is_("enforcement", action="refuse"))
        assert refused["ok"] and refused["room_id"] == "stage"
        assert len(events.of("session", state="started")) == 1
        events.close()
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{daemon.base}/v1/streams/{started['stream_id']}") as resp:
            summary = await resp.json()
    assert summary["status"] == "ended"


async def test_wrong_key_or_missing_user_is_refused(end_stack: Stack, steady_clip: Path) -> None:
    async with websockets.connect(f"{end_stack.daemon.ws}?room_id=keyroom") as ws:
        events = Events(ws)
        wrong = end_stack.publish(steady_clip, "keyroom", "user_id=bob&key=guess")
        anonymous = end_stack.publish(steady_clip, "keyroom", f"key={SECRET}")
        assert await exited(wrong, 10) != 0
        assert await exited(anonymous, 10) != 0
        await asyncio.sleep(0.5)
        assert events.of("session") == []
        events.close()
    log = end_stack.daemon.log()
    assert "bob" not in log  # user ids never reach log text


async def test_hook_faults_stay_local(end_stack: Stack, steady_clip: Path, tmp_path: Path) -> None:
    daemon, nginx = end_stack.daemon, end_stack.nginx
    async with (
        websockets.connect(daemon.ws) as ws,
        aiohttp.ClientSession() as http,
    ):
        events = Events(ws)
        steady = end_stack.publish(
            steady_clip, "steady", f"user_id=carol&key={SECRET}", "-stream_loop", "-1"
        )
        live = await events.wait(is_("session", state="started", room_id="steady"))

        # The hook hit with missing fields or a body that is not what it should be.
        hook = f"{daemon.base}/hooks/nginx-rtmp"
        async with http.post(hook, data={"call": "publish", "app": "live"}) as resp:
            assert resp.status == 400
            assert "'name' is missing" in (await resp.json())["error"]
        async with http.post(hook, data={"name": "x"}) as resp:
            assert resp.status == 400 and "'call'" in (await resp.json())["error"]
        async with http.post(f"{daemon.base}/hooks/srs", data=b"{not json") as resp:
            assert resp.status == 400 and "JSON" in (await resp.json())["error"]
        async with http.post(f"{daemon.base}/hooks/mediamtx", json={"event": "maybe"}) as resp:
            assert resp.status == 400 and "ready" in (await resp.json())["error"]

        # Garbage on the RTMP port: nginx drops it, no hook reaches the daemon.
        with socket.create_connection(("127.0.0.1", nginx.rtmp_port), timeout=5) as sock:
            sock.sendall(b"\x03" + bytes(range(256)) * 8)
        # A publisher whose stream has no video at all: its session ends with a clear error.
        audio = tmp_path / "tone.flv"
        await asyncio.to_thread(
            subprocess.run,
            ["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i",
             "sine=frequency=440:duration=8", "-c:a", "aac", str(audio)],
            check=True, timeout=60,
        )  # fmt: skip
        end_stack.publish(audio, "noisy", f"user_id=dave&key={SECRET}")
        failed = await events.wait(is_("session", state="error", room_id="noisy"), 30)
        assert "no video stream" in failed["error"]

        # The daemon and the other stream carried on.
        async with http.get(f"{daemon.base}/v1/streams/{live['stream_id']}") as resp:
            first = await resp.json()
        await asyncio.sleep(1.5)
        async with http.get(f"{daemon.base}/v1/streams/{live['stream_id']}") as resp:
            second = await resp.json()
        assert second["status"] == "live" and second["samples"] > first["samples"] > 0
        async with http.get(f"{daemon.base}/healthz") as resp:
            assert resp.status == 200
        assert steady.poll() is None
        steady.terminate()
        await events.wait(is_("session", state="ended", stream_id=live["stream_id"]))
        events.close()


async def test_nginx_restart_resumes_the_same_session(end_stack: Stack, steady_clip: Path) -> None:
    daemon, nginx = end_stack.daemon, end_stack.nginx
    query = f"user_id=erin&key={SECRET}"
    async with (
        websockets.connect(f"{daemon.ws}?room_id=restart") as ws,
        aiohttp.ClientSession() as http,
    ):
        events = Events(ws)
        first = end_stack.publish(steady_clip, "restart", query, "-stream_loop", "-1")
        started = await events.wait(is_("session", state="started"))
        sid = started["stream_id"]
        await asyncio.sleep(1.0)

        nginx.kill()  # a crash: no on_publish_done reaches the daemon
        assert await exited(first, 10) != 0
        await events.wait(is_("session", state="reconnecting", stream_id=sid))
        nginx.start()
        async with http.get(f"{daemon.base}/v1/streams/{sid}") as resp:
            before = (await resp.json())["samples"]
        end_stack.publish(steady_clip, "restart", query, "-stream_loop", "-1")
        await until(lambda: "restart" in nginx.publishers(), 10, "the re-publish")

        async def samples() -> int:
            async with http.get(f"{daemon.base}/v1/streams/{sid}") as resp:
                body = await resp.json()
            assert body["status"] == "live", body
            return int(body["samples"])

        deadline = time.monotonic() + 10 * TIMEOUT_SCALE
        while await samples() <= before + 4:
            assert time.monotonic() < deadline, "the session did not resume"
            await asyncio.sleep(0.3)
        # The same session carried on: no second start for the room.
        assert [e["stream_id"] for e in events.of("session", state="started")] == [sid]
        end_stack.reap()  # the encoder stops: on_publish_done ends the session
        ended = await events.wait(is_("session", state="ended", stream_id=sid))
        assert ended["reason"] == "eof"
        events.close()


async def test_pause_holds_the_publisher_and_a_republish_keeps_it(
    pause_stack: Stack, violation_clip: Path
) -> None:
    nginx, daemon = pause_stack.nginx, pause_stack.daemon
    async with websockets.connect(f"{daemon.ws}?room_id=show") as ws:
        events = Events(ws)
        first = pause_stack.publish(violation_clip, "show", "user_id=frank")
        started = await events.wait(is_("session", state="started"))
        pause = await events.wait(is_("action", action="pause", state="start"), 30)
        assert pause["stream_id"] == started["stream_id"]
        held = await events.wait(is_("enforcement", action="pause"))
        assert held["ok"] and held["operation"] == "redirect/publisher"
        await until(lambda: nginx.publishers() == ["show__paused"], 5, "the holding stream")

        # The encoder drops while paused and comes back: it lands on the holding
        # stream at once, its vote goes on, and the pause lifts when it is clean.
        first.kill()
        first.wait()
        await events.wait(is_("session", state="ended", stream_id=started["stream_id"]))
        pause_stack.publish(violation_clip, "show", "user_id=frank", "-ss", "6")
        second = await events.wait(
            lambda e: e["type"] == "session" and e["state"] == "started"
            and e["stream_id"] != started["stream_id"]
        )  # fmt: skip
        sid2 = second["stream_id"]
        rehold = await events.wait(is_("enforcement", action="pause", stream_id=sid2))
        assert rehold["ok"] and rehold["operation"] == "redirect on publish"
        assert "show__paused" in await asyncio.to_thread(nginx.publishers)
        stop = await events.wait(is_("action", action="pause", state="stop"), 30)
        assert stop["stream_id"] == second["stream_id"]
        resumed = await events.wait(is_("enforcement", action="resume"))
        assert resumed["ok"]
        await until(lambda: nginx.publishers() == ["show"], 5, "the room's own stream")
        assert len(events.of("action", action="pause", state="start")) == 1
        events.close()


async def test_srs_hooks_start_moderation_and_end_kicks_the_client(
    end_stack: Stack, violation_clip: Path
) -> None:
    """SRS's side is played by this test: it sends SRS's hook bodies and answers on
    SRS's HTTP API; the media comes from nginx (an application without hooks)."""
    daemon, nginx = end_stack.daemon, end_stack.nginx
    kicked: list[str] = []
    publisher = end_stack.publish(violation_clip, "srsroom", "", app="plain")
    hook = f"{daemon.base}/hooks/srs"
    body = {
        "server_id": "vid-test", "action": "on_publish", "client_id": 4242,
        "ip": "127.0.0.1", "vhost": "__defaultVhost__", "app": "plain",
        "tcUrl": f"rtmp://127.0.0.1:{nginx.rtmp_port}/plain", "stream": "srsroom",
        "param": f"?user_id=gina&key={SECRET}",
    }  # fmt: skip

    async def kick(request: web.Request) -> web.Response:
        kicked.append(request.match_info["id"])
        publisher.kill()  # what SRS does to a kicked client, then it reports it
        async with aiohttp.ClientSession() as http:
            await http.post(hook, json={**body, "action": "on_unpublish"})
        return web.json_response({"code": 0})

    app = web.Application()
    app.router.add_delete("/api/v1/clients/{id}", kick)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", SRS_API_PORT).start()
    try:
        async with (
            websockets.connect(f"{daemon.ws}?room_id=srsroom") as ws,
            aiohttp.ClientSession() as http,
        ):
            events = Events(ws)
            await until(lambda: "srsroom" in nginx.publishers(), 10, "the publisher")
            async with http.post(hook, json=body) as resp:
                assert resp.status == 200 and await resp.text() == "0"
            started = await events.wait(is_("session", state="started"))
            assert started["url"].startswith(f"rtmp://127.0.0.1:{nginx.rtmp_port}/plain/srsroom")
            await events.wait(is_("action", action="end", state="start"), 30)
            enforced = await events.wait(is_("enforcement", action="end"))
            assert enforced["ok"] and enforced["server"] == "srs"
            assert enforced["operation"] == "kick client" and kicked == ["4242"]
            ended = await events.wait(is_("session", state="ended"))
            assert ended["stream_id"] == started["stream_id"]
            # While the end stands, SRS's next on_publish for the room is refused.
            async with http.post(hook, json={**body, "client_id": 4243}) as resp:
                assert resp.status == 403
            events.close()
    finally:
        await runner.cleanup()


async def test_speech_over_rtmp_is_moderated(
    tmp_path_factory: pytest.TempPathFactory, known_bad_dir: Path
) -> None:
    """The audio of an RTMP publish reaches speech moderation: a threat is muted."""
    from livemod.testing import speech as ts

    work = tmp_path_factory.mktemp("rtmp-speech")
    track, _ = ts.compose(
        [ts.Part(seconds=1.0), ts.Part("I will kill you tonight."), ts.Part(seconds=4.0)]
    )
    clip = work / "threat.mp4"
    ts.mux_clip(clip, track)
    stacks = _stack(work, known_bad_dir, {"LIVEMOD_ASR__ENABLED": "true"})
    stack = next(stacks)
    try:
        async with websockets.connect(f"{stack.daemon.ws}?room_id=talkroom") as ws:
            events = Events(ws)
            stack.publish(clip, "talkroom", "user_id=carol")
            mute = await events.wait(is_("action", action="mute", state="start"), 60)
            assert mute["category"] == "violence" and mute["sources"] == ["asr"]
            assert events.of("session", state="audio_unmoderated") == []
            events.close()
    finally:
        stacks.close()


def test_rtmp_benchmark_quick_mode_prints_one_json_document() -> None:
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "rtmp.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=240 * TIMEOUT_SCALE,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["setting"]["machine"]["cpu_count"] and out["setting"]["sampling_fps"] == 4.0
    held = out["first_frame"]["held_on_publish"]["spawn_to_first_analyzed_ms"]
    naive = out["first_frame"]["baseline_answer_at_once"]["spawn_to_first_analyzed_ms"]
    assert held["n"] == naive["n"] == 2 and held["p50"] <= held["p95"]
    assert [lv["streams"] for lv in out["capacity"]["levels"]][:1] == [1]
    assert isinstance(out["capacity"]["sustained_streams"], int)
    assert "first_frame_p50_baseline_over_held" in out["ratios"]
