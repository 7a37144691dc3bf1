"""A file posted with ``realtime: false`` is read as fast as analysis allows, with
backpressure (as ``livemod scan``): every due sample is analyzed, none dropped stale."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
import websockets

from tests.app.test_e2e import collect_until_end, post_stream
from tests.conftest import DaemonProcess

pytestmark = pytest.mark.e2e

BENIGN_S = 6.0
"""Length of the ``benign_clip`` fixture."""


async def test_unpaced_file_analyzes_every_due_sample(
    daemon: DaemonProcess, benign_clip: Path
) -> None:
    async with (
        websockets.connect(f"{daemon.ws}?room_id=fast") as ws,
        aiohttp.ClientSession() as http,
    ):
        created = await post_stream(
            http, daemon.base, url=str(benign_clip), user_id="fay", room_id="fast", realtime=False
        )
        events = await collect_until_end(ws, created["id"], 60)
        async with http.get(f"{daemon.base}/v1/streams/{created['id']}") as resp:
            summary = await resp.json()
    ended = events[-1]
    assert ended["state"] == "ended" and ended["reason"] == "eof", ended
    # The whole clip lies in the initial boost (sampling.boost_initial_s): 8 samples a second.
    due = BENIGN_S * 8
    assert summary["drops"] == 0, summary
    assert ended["samples"] == summary["samples"]
    assert due - 2 <= summary["samples"] <= due + 2, summary
