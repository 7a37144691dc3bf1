"""The Chromium WHIP publishers (livemod's own page, and a third-party client on a
page of another origin), run only inside a loopback-only network namespace.

Chromium gathers candidates on every interface it can see and sends connectivity
checks from them, so outside a private namespace some packets would use this host's
non-loopback addresses. ``tests/ingest/test_whip.py::test_browser_publisher_is_moderated``
runs this file under ``unshare --net``, where ``lo`` is the only interface. The
file name does not match ``test_*.py`` on purpose: it is never collected directly.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import websockets
from aiohttp import web

from livemod.paths import REPO_ROOT
from tests.chromium import Chromium, Page, open_page
from tests.conftest import TIMEOUT_SCALE, DaemonProcess, free_port, loopback_only
from tests.ingest.test_whip import (
    Event,
    answer_candidates,
    is_action,
    is_session,
    start_daemon,
    stun_server,
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


CLIENTS = REPO_ROOT / "tests" / "whip_clients"
EYEVINN_BUNDLE = CLIENTS / "dist" / "eyevinn-whip.js"
OPTS_POST = ("OPTIONS", "POST")
Request = dict[str, Any]
"""A request the page's client made, as ``harness.requests`` recorded it."""
Timing = dict[str, Any]


@asynccontextmanager
async def page_origin(folder: Path) -> AsyncIterator[str]:
    """Serve ``folder`` from an origin of its own (another loopback port)."""
    app = web.Application()
    app.router.add_static("/", folder)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def first_sample_ms(http: aiohttp.ClientSession, url: str, admin: dict[str, str]) -> float:
    """Wall time (ms) the session's first analyzed sample was seen, polled every 10 ms."""
    for _ in range(int(2000 * TIMEOUT_SCALE)):
        async with http.get(url, headers=admin) as resp:
            if (await resp.json())["samples"] >= 1:
                return time.time() * 1000
        await asyncio.sleep(0.01)
    raise AssertionError("the publisher's frames never reached the analysis")


def start_timing(published: dict[str, Any], requests: list[Request], first_ms: float) -> Timing:
    """How long the publish took to start, on the page's clock (the same wall clock)."""
    post = next(r for r in requests if r["method"] == "POST")
    return {
        "ingest_to_first_analyzed_ms": round(first_ms - published["started"]),
        "post_to_first_analyzed_ms": round(first_ms - post["sent"]),
        "ingest_to_post_ms": post["sent"] - published["started"],
        "post_to_answer_ms": post["done"] - post["sent"],
        "post_to_connected_ms": published["connected"] - post["sent"],
        "patches_sent_ms_after_post": [
            r["sent"] - post["sent"] for r in requests if r["method"] == "PATCH"
        ],
    }


async def answered_requests(page: Page, method: str) -> list[Request]:
    """The client's ``method`` requests once the first has been answered."""
    for _ in range(int(50 * TIMEOUT_SCALE)):
        found: list[Request] = [
            r for r in await page.evaluate("harness.requests") if r["method"] == method
        ]
        if found and "status" in found[0]:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"the client sent no {method} that was answered")


async def test_third_party_client_publishes_cross_origin(
    known_bad_dir: Path, tmp_path: Path
) -> None:
    """``@eyevinn/whip-web-client`` from the npm registry, on a page of another origin,
    with a bearer token: it trickles (PATCH 204), is moderated, paused, and DELETEs."""
    assert loopback_only(), "run through tests/ingest/test_whip.py, inside a network namespace"
    assert EYEVINN_BUNDLE.exists(), f"{EYEVINN_BUNDLE} is missing: run scripts/setup.sh"
    bad_png = base64.b64encode((known_bad_dir / "bad.png").read_bytes()).decode()
    admin = {"Authorization": "Bearer admin-token"}
    seen: list[Event] = []
    async with stun_server() as stun, page_origin(CLIENTS) as origin:
        link = f'<{stun}>; rel="ice-server"'
        daemon = start_daemon(
            tmp_path,
            known_bad_dir,
            LIVEMOD_HTTP__TOKEN="admin-token",
            LIVEMOD_WHIP__TOKENS=json.dumps({"carol-key": "carol"}),
            LIVEMOD_WHIP__ICE_SERVERS=json.dumps([stun]),
        )
        browser = Chromium(tmp_path)
        browser.start()
        try:
            page, page_ws = await open_page(browser)
            async with (
                page_ws,
                aiohttp.ClientSession() as http,
                websockets.connect(f"{daemon.ws}?room_id=whip-4", additional_headers=admin) as ws,
            ):
                await page.goto(f"{origin}/eyevinn.html", "window.harness && window.EyevinnWhip")
                endpoint = f"{daemon.base}/whip/whip-4"
                published = await page.evaluate(f"harness.publish('{endpoint}', 'carol-key')")
                sid = published["resource"].rsplit("/", 1)[1]
                first = await first_sample_ms(http, f"{daemon.base}/v1/streams/{sid}", admin)
                patches = await answered_requests(page, "PATCH")
                published["connected"] = (await page.evaluate("harness.timeline"))["connected"]
                requests: list[Request] = await page.evaluate("harness.requests")
                timing = start_timing(published, requests, first)
                print("third-party WHIP client:", json.dumps(timing))

                # The client could read PATCH in its OPTIONS answer, so it trickled at
                # once: no 2 s wait for ICE gathering before the POST.
                options, post = (next(r for r in requests if r["method"] == m) for m in OPTS_POST)
                assert "PATCH" in options["headers"]["access-control-allow-methods"]
                assert published["trickle"], await page.evaluate("harness.logs")
                assert timing["ingest_to_post_ms"] < 1000
                # The ICE servers, readable on OPTIONS (with the token) and on the 201.
                assert options["headers"]["link"] == link and post["headers"]["link"] == link
                assert post["headers"]["location"].endswith(f"/whip/whip-4/{sid}")
                # Its PATCH names the session's tag in an ETag header: allowed, matched.
                assert patches[0]["status"] == 204, patches
                assert patches[0]["request_headers"]["ETag"] == post["headers"]["etag"]

                started = await wait_event(ws, is_session("started"), seen, 10)
                assert started["stream_id"] == sid and started["user_id"] == "carol"
                await page.evaluate(f"harness.showImage('data:image/png;base64,{bad_png}', 3)")
                pause = await wait_event(ws, is_action("pause", "start"), seen, 20)
                assert pause["category"] == "known_bad" and pause["user_id"] == "carol"
                await wait_event(ws, is_session("held"), seen, 5)
                assert await page.evaluate("harness.state()") == "connected"
                await page.evaluate("harness.stop()")
                ended = await wait_event(ws, is_session("ended"), seen, 10)
                assert ended["reason"] == "stopped" and ended["frames"] > 0
                deletes = await answered_requests(page, "DELETE")
                assert [r["status"] for r in deletes] == [200]
        finally:
            browser.stop()
            daemon.stop()
