"""Malformed requests get a 4xx with a JSON reason, never a 500 or a traceback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from livemod.web import MAX_JSON_DEPTH, nesting_depth
from tests.conftest import DaemonProcess

FORM = "application/x-www-form-urlencoded"


def test_nesting_depth_counts_lists_and_objects() -> None:
    assert nesting_depth(1) == 0
    assert nesting_depth({"a": [1, {"b": []}]}) == 4
    deep: list[object] = []
    for _ in range(5000):  # far beyond the recursion limit: the walk is iterative
        deep = [deep]
    assert nesting_depth(deep) == 5001


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 1000, 30_000])
async def test_deeply_nested_json_is_a_400(daemon: DaemonProcess, depth: int) -> None:
    body = '{"url": ' + "[" * depth + "]" * depth + "}"
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{daemon.base}/v1/streams",
            data=body,
            headers={"Content-Type": "application/json"},
        ) as resp:
            assert resp.status == 400, await resp.text()
            assert "nested" in (await resp.json())["error"]
        async with http.get(f"{daemon.base}/healthz") as resp:
            assert resp.status == 200


async def test_invalid_utf8_json_is_a_400(daemon: DaemonProcess) -> None:
    body = b'{"url": "file:///x\xff\xfe", "user_id": "u", "room_id": "r"}'
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{daemon.base}/v1/streams",
            data=body,
            headers={"Content-Type": "application/json"},
        ) as resp:
            assert resp.status == 400
            assert "UTF-8" in (await resp.json())["error"]


@pytest.mark.parametrize("since", [str(2**64), str(2**63), "²", "-1", "1e3", "0x10"])
async def test_out_of_range_since_is_refused_at_the_handshake(
    daemon: DaemonProcess, since: str
) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with websockets.connect(f"{daemon.ws}?since={since}"):
            pass
    assert refused.value.response.status_code == 400
    assert b"since" in refused.value.response.body


async def test_largest_since_replays_nothing_and_stays_open(daemon: DaemonProcess) -> None:
    async with websockets.connect(f"{daemon.ws}?since={2**63 - 1}") as ws:
        with pytest.raises(asyncio.TimeoutError):
            json.loads(await asyncio.wait_for(ws.recv(), 0.5))


@pytest.fixture
def hooked(tmp_path: Path, known_bad_dir: Path) -> Iterator[DaemonProcess]:
    proc = DaemonProcess(tmp_path, known_bad_dir, extra_env={"LIVEMOD_HOOKS__ENABLED": "true"})
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.mark.parametrize(
    ("path", "body", "content_type"),
    [
        ("/hooks/nginx-rtmp", b"call=publish&app=live&name=r\xff\xfe&clientid=1", FORM),
        ("/hooks/mediamtx", b"action=publish&path=\xff", FORM),
        ("/hooks/mediamtx", b'{"action": "publish", "path": "\xff"}', "application/json"),
        ("/hooks/srs", b'{"action": ' + b"[" * 5000 + b"]" * 5000 + b"}", "application/json"),
        ("/hooks/srs", b'{"a": ' + b"[" * 40 + b"]" * 40 + b"}", "application/json"),
    ],
    ids=["nginx form", "mediamtx form", "mediamtx json", "srs deep", "srs nested"],
)
async def test_hook_bodies_that_are_not_utf8_or_too_deep_are_a_400(
    hooked: DaemonProcess, path: str, body: bytes, content_type: str
) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{hooked.base}{path}", data=body, headers={"Content-Type": content_type}
        ) as resp:
            assert resp.status == 400, await resp.text()
            assert (await resp.json())["error"]
