"""What a real daemon refuses to open, and what it never tells: files outside
``ingest.file_roots``, internal hosts in every spelling, a hook's foreign ``tcurl``,
ids with a trailing newline; credentials in a pull URL are used but never shown."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import websockets
from aiohttp import web

from tests.app.test_e2e import collect_until_end
from tests.conftest import TIMEOUT_SCALE, DaemonProcess

pytestmark = pytest.mark.e2e

ALLOWED_NET = "127.0.0.2"
"""The one internal address this daemon may pull from (its ingest.allow_hosts)."""


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory, benign_clip: Path) -> Path:
    """``roots/media`` (the daemon's only file root) with a clip, a way back up, a
    symlink out and a FIFO; ``roots/outside.mp4`` beside it."""
    base = tmp_path_factory.mktemp("roots")
    media = base / "media"
    (media / "sub").mkdir(parents=True)
    shutil.copyfile(benign_clip, media / "clip.mp4")
    shutil.copyfile(benign_clip, base / "outside.mp4")
    (media / "link.mp4").symlink_to(base / "outside.mp4")
    os.mkfifo(media / "fifo")
    return base


@pytest.fixture(scope="module")
def strict(
    tmp_path_factory: pytest.TempPathFactory, known_bad_dir: Path, roots: Path
) -> Iterator[DaemonProcess]:
    """A daemon with the operator's defaults but one file root and one allowed host."""
    proc = DaemonProcess(
        tmp_path_factory.mktemp("strict"),
        known_bad_dir,
        extra_env={
            "LIVEMOD_VISION__MODELS": "[]",
            "LIVEMOD_OCR__ENABLED": "false",
            "LIVEMOD_HOOKS__HOLD_PUBLISH_S": "0",
            "LIVEMOD_INGEST__FILE_ROOTS": json.dumps([str(roots / "media")]),
            "LIVEMOD_INGEST__ALLOW_HOSTS": json.dumps([f"{ALLOWED_NET}/32"]),
        },
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


async def post(http: aiohttp.ClientSession, base: str, url: str, **ids: str) -> tuple[int, Any]:
    body = {"url": url, "user_id": ids.get("user_id", "u"), "room_id": ids.get("room_id", "r")}
    async with http.post(f"{base}/v1/streams", json=body) as resp:
        return resp.status, await resp.json()


async def test_files_outside_the_roots_get_one_answer(strict: DaemonProcess, roots: Path) -> None:
    media = roots / "media"
    refused = [
        "/etc/shadow",
        "/etc/passwd",
        "/proc/self/environ",
        "file:///etc/passwd",
        "file:/etc/passwd",
        "file://etc/passwd",
        str(roots / "outside.mp4"),
        f"{media}/../outside.mp4",
        str(media / "link.mp4"),
        str(media / "missing.mp4"),
        str(media / "fifo"),
        str(media),
    ]
    async with aiohttp.ClientSession() as http:
        answers = {}
        for url in refused:
            status, body = await post(http, strict.base, url)
            assert status == 422, (url, body)
            answers[url] = body["error"]
        # Missing and forbidden read the same: the API is no oracle for what exists.
        assert len(set(answers.values())) == 1, answers
        assert "not allowed or not found" in answers["/etc/passwd"]

        for url in (str(media / "clip.mp4"), f"file://{media}/sub/../clip.mp4"):
            status, body = await post(http, strict.base, url)
            assert status == 201, body
            assert body["url"] == f"file://{(media / 'clip.mp4').resolve()}"  # what is opened
            async with http.delete(f"{strict.base}/v1/streams/{body['id']}") as resp:
                assert resp.status == 200


async def test_internal_hosts_are_refused_in_every_spelling(strict: DaemonProcess) -> None:
    port = strict.http_port
    refused = [
        f"http://127.0.0.1:{port}/metrics",
        f"http://0x7f000001:{port}/metrics",
        f"http://2130706433:{port}/metrics",
        f"http://127.1:{port}/metrics",
        f"http://0177.0.0.1:{port}/metrics",
        f"http://[::ffff:127.0.0.1]:{port}/metrics",
        f"http://[::1]:{port}/metrics",
        f"http://localhost:{port}/metrics",
        f"http://0.0.0.0:{port}/metrics",
        "http://169.254.169.254/latest/meta-data/",
        "rtmp://10.0.0.1/live/x",
        "rtsp://192.168.0.10:554/cam",
        "http://100.64.0.1/x.m3u8",
        "http://[fe80::1]/x",
        "http://[::127.0.0.1]/x",
    ]
    async with aiohttp.ClientSession() as http:
        for url in refused:
            status, body = await post(http, strict.base, url)
            assert status == 422 and "is not allowed" in body["error"], (url, body)
        async with http.get(f"{strict.base}/v1/streams") as resp:
            assert (await resp.json())["streams"] == []


async def test_ids_with_a_trailing_newline_are_refused(strict: DaemonProcess, roots: Path) -> None:
    clip = str(roots / "media" / "clip.mp4")
    async with aiohttp.ClientSession() as http:
        for ids in ({"user_id": "u\n"}, {"room_id": "r\n"}, {"user_id": "u\r\nX-Forged: 1"}):
            status, body = await post(http, strict.base, clip, **ids)
            assert status == 422 and "1-128 letters" in body["error"], (ids, body)
        sdp = {"Content-Type": "application/sdp"}
        for path in ("/whip/room%0A?user_id=u", "/whip/room?user_id=u%0A"):
            async with http.post(f"{strict.base}{path}", data="v=0\r\n", headers=sdp) as resp:
                assert resp.status == 422 and "1-128 letters" in await resp.text(), path


@contextlib.asynccontextmanager
async def credential_checker() -> AsyncIterator[tuple[int, list[str]]]:
    """An HTTP server on 127.0.0.2 that asks for Basic auth and records what it gets."""
    seen: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        given = request.headers.get("Authorization")
        if given is None:
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="x"'})
        seen.append(given)
        return web.Response(status=404)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, ALLOWED_NET, 0)
    await site.start()
    try:
        yield runner.addresses[0][1], seen
    finally:
        await runner.cleanup()


async def test_credentials_are_used_but_never_shown(strict: DaemonProcess) -> None:
    secret = "s3cr3t-pw"
    async with (
        credential_checker() as (port, seen),
        websockets.connect(f"{strict.ws}?room_id=creds") as ws,
        aiohttp.ClientSession() as http,
    ):
        url = f"http://viewer:{secret}@{ALLOWED_NET}:{port}/live/index.m3u8"
        status, created = await post(http, strict.base, url, room_id="creds")
        assert status == 201, created
        masked = f"http://***@{ALLOWED_NET}:{port}/live/index.m3u8"
        assert created["url"] == masked
        async with http.get(f"{strict.base}/v1/streams") as resp:
            listed = [s for s in (await resp.json())["streams"] if s["id"] == created["id"]]
        assert all(s["url"] == masked for s in listed)
        events = await collect_until_end(ws, created["id"], 30)
        async with http.get(f"{strict.base}/v1/streams/{created['id']}") as resp:
            summary = await resp.json()
    # The daemon connected with the real credentials ...
    assert seen and seen[0] == "Basic " + base64.b64encode(f"viewer:{secret}".encode()).decode()
    # ... and no event, summary or log line shows them.
    started = next(e for e in events if e["state"] == "started")
    assert started["url"] == masked and events[-1]["state"] == "error"
    assert "***@" in events[-1]["error"], events[-1]
    assert secret not in json.dumps([events, summary, created]) and summary["url"] == masked
    await asyncio.sleep(0.5)  # the failure's log line
    assert secret not in strict.log() and "***@" in strict.log()


class Listener:
    """A TCP port that counts the connections it gets (and closes them at once)."""

    def __init__(self) -> None:
        self.connections = 0
        self._server: asyncio.Server | None = None

    async def start(self, host: str) -> int:
        def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            writer.close()

        self._server = await asyncio.start_server(accepted, host, 0)
        return int(self._server.sockets[0].getsockname()[1])

    def close(self) -> None:
        if self._server is not None:
            self._server.close()


async def test_a_hook_tcurl_is_checked_before_any_pull(strict: DaemonProcess) -> None:
    own, foreign = Listener(), Listener()
    p1, p2 = await own.start("127.0.0.1"), await foreign.start(ALLOWED_NET)
    hook = f"{strict.base}/hooks/nginx-rtmp"

    def form(room: str, tcurl: str, client: str) -> dict[str, str]:
        return {"call": "publish", "app": "live", "name": room, "addr": "127.0.0.1",
                "clientid": client, "tcurl": tcurl, "user_id": "mallory"}  # fmt: skip

    bad = [
        f"gopher://127.0.0.1:{p1}/x",
        f"tcp://127.0.0.1:{p1}",
        "file:///etc",
        f"http://127.0.0.1:{p1}/metrics",
        f"rtmp://{ALLOWED_NET}:{p2}/live",  # ingest.allow_hosts is for the API, not hooks
        f"rtmp://0x7f000001:{p1}/live",
    ]
    events: list[dict[str, Any]] = []
    async with (
        websockets.connect(strict.ws) as ws,
        aiohttp.ClientSession() as http,
    ):
        reader = asyncio.create_task(_read(ws, events))
        try:
            for i, tcurl in enumerate(bad):
                async with http.post(hook, data=form(f"tc{i}", tcurl, str(i))) as resp:
                    assert resp.status == 403, (tcurl, await resp.text())
                    assert "pull URL" in (await resp.json())["error"]
            # The sender's own server is pulled; a re-publish of that room to a
            # foreign host is refused and does not move the running session.
            first = form("live-1", f"rtmp://127.0.0.1:{p1}/live", "7")
            async with http.post(hook, data=first) as resp:
                assert resp.status == 200, await resp.text()
            await _until(lambda: own.connections > 0, "the daemon's pull of the sender")
            repub = form("live-1", f"rtmp://{ALLOWED_NET}:{p2}/live", "8")
            async with http.post(hook, data=repub) as resp:
                assert resp.status == 403
            await asyncio.sleep(2.0)
            done = {**form("live-1", "", "7"), "call": "publish_done"}
            async with http.post(hook, data=done) as resp:
                assert resp.status == 200
            await _until(lambda: len(_refusals(events)) == len(bad) + 1, "the refusal events")
        finally:
            reader.cancel()
            own.close()
            foreign.close()
    assert foreign.connections == 0  # never opened, not even by a switch
    refusals = _refusals(events)
    assert {e["room_id"] for e in refusals} == {f"tc{i}" for i in range(len(bad))} | {"live-1"}
    assert all(e["ok"] and e["server"] == "nginx-rtmp" for e in refusals)
    started = [e for e in events if e["type"] == "session" and e["state"] == "started"]
    assert [e["room_id"] for e in started] == ["live-1"]


def _refusals(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    refused = [e for e in events if e["type"] == "enforcement" and e["action"] == "refuse"]
    return [e for e in refused if e["operation"] == "refuse pull"]


async def _read(ws: Any, into: list[dict[str, Any]]) -> None:
    with contextlib.suppress(websockets.ConnectionClosed):
        async for raw in ws:
            into.append(json.loads(raw))


async def _until(check: Any, what: str, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout * TIMEOUT_SCALE
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)
