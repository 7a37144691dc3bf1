"""The Chromium WHIP publisher, run only inside a loopback-only network namespace.

Chromium gathers candidates on every interface it can see and sends connectivity
checks from them, so outside a private namespace some packets would use this host's
non-loopback addresses. ``tests/ingest/test_whip.py::test_browser_publisher_is_moderated``
runs this file under ``unshare --net``, where ``lo`` is the only interface. The
file name does not match ``test_*.py`` on purpose: it is never collected directly.
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import websockets

from tests.chromium import Chromium, open_page
from tests.conftest import DaemonProcess, loopback_only
from tests.ingest.test_whip import (
    Event,
    answer_candidates,
    is_action,
    is_session,
    wait_event,
    whip_daemon,
)

__all__ = ["whip_daemon"]


async def test_browser_publisher_is_moderated(
    whip_daemon: DaemonProcess, known_bad_dir: Path, tmp_path: Path
) -> None:
    assert loopback_only(), "run through tests/ingest/test_whip.py, inside a network namespace"
    browser = Chromium(tmp_path)
    browser.start()
    bad_png = base64.b64encode((known_bad_dir / "bad.png").read_bytes()).decode()
    seen: list[Event] = []
    try:
        page, page_ws = await open_page(browser)
        async with page_ws, websockets.connect(f"{whip_daemon.ws}?room_id=whip-3") as ws:
            await page.goto(f"{whip_daemon.base}/whip", "window.livemodWhip")
            # A media permission (the fake camera) lets WebRTC offer 127.0.0.1 at all;
            # the page then keeps only the 127.0.0.1 candidates in its offer.
            assert await page.evaluate(
                "navigator.mediaDevices.getUserMedia({video: true})"
                ".then(s => { window.camera = s; return true; })"
            )
            published = await page.evaluate(
                "livemodWhip.publish({url: location.origin + '/whip', room: 'whip-3',"
                " user: 'bob', source: 'pattern', candidatePrefix: '127.0.0.1'})"
            )
            offer = await page.evaluate("livemodWhip.offer()")
            assert answer_candidates(offer) == {"127.0.0.1"}
            started = await wait_event(ws, is_session("started"), seen, 10)
            assert published["location"].endswith(started["stream_id"])
            await asyncio.sleep(1.0)
            await page.evaluate(f"livemodWhip.showImage('data:image/png;base64,{bad_png}', 3)")
            pause = await wait_event(ws, is_action("pause", "start"), seen, 20)
            assert pause["category"] == "known_bad" and pause["user_id"] == "bob"
            await wait_event(ws, is_session("held"), seen, 5)
            assert await page.evaluate("livemodWhip.state()") == "connected"
            assert await page.evaluate("livemodWhip.stop()") == 200
            ended = await wait_event(ws, is_session("ended"), seen, 10)
            assert ended["reason"] == "stopped" and ended["frames"] > 0
    finally:
        browser.stop()
