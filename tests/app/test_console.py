"""The moderator console in headless Chromium against a real daemon on loopback.

A known-bad clip streamed in real time, a fake LLM whose verdict is unsure (so the
clip goes to human review), two browsers signed in as two moderators. Screenshots
go to ``$LIVEMOD_TEST_ARTIFACTS`` (default: the test's temporary folder).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from livemod.messages import FrameAnalysis, VideoFrame
from livemod.paths import DEFAULT_POLICY
from livemod.policy.taxonomy import load_policy
from livemod.policy.vote import MODERATOR, VoteEngine
from livemod.testing import media as testmedia
from livemod.testing.fake_llm import FakeLlm, Reply, unsafe
from livemod.testing.text import Caption, make_text_clip
from tests.chromium import Chromium, Page, open_page
from tests.conftest import TIMEOUT_SCALE, DaemonProcess

pytestmark = pytest.mark.e2e

TOKEN = "console-test-token"
NOTHING = "\u2013"
"""What the console shows for an empty field (an en dash)."""
HOSTILE = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "livemod" / "static" / "console"


def artifacts(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("LIVEMOD_TEST_ARTIFACTS", tmp_path / "screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def long_violation(media_dir: Path) -> Path:
    """12 s: the known-bad picture from 1 s to 11 s (the pause stands long enough to
    review it live). The file name is hostile: it reaches the page as the stream URL."""
    clip = media_dir / 'clip <img src=x onerror="window.__pwned=3">.mp4'
    if not clip.exists():
        bad = testmedia.photo(testmedia.KNOWN_BAD_PHOTO)
        segments = [testmedia.Segment(1.0, None), testmedia.Segment(10.0, bad)]
        testmedia.make_clip(clip, [*segments, testmedia.Segment(1.0, None)])
    return clip


@asynccontextmanager
async def console_daemon(
    tmp_path: Path, known_bad: Path, llm: FakeLlm | None, ocr: dict[str, str] | None = None
) -> AsyncIterator[DaemonProcess]:
    env = {
        "LIVEMOD_HTTP__TOKEN": TOKEN,
        "LIVEMOD_VISION__MODELS": "[]",
        "LIVEMOD_OCR__ENABLED": "false",
        **(ocr or {}),
    }
    if llm is not None:
        env.update(
            {
                "LIVEMOD_LLM__BASE_URL": llm.base_url,
                "LIVEMOD_LLM__MODEL": "fake-vlm",
                "LIVEMOD_LLM__RETRIES": "0",
                "LIVEMOD_LLM__ALWAYS_ESCALATE": '["known_bad"]',
                "LIVEMOD_LLM__SWEEP_INTERVAL_S": "0",
            }
        )
    daemon = DaemonProcess(tmp_path, known_bad, extra_env=env)
    await asyncio.to_thread(daemon.start)
    try:
        yield daemon
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.stop()


@asynccontextmanager
async def browser_page(workdir: Path) -> AsyncIterator[Page]:
    browser = Chromium(workdir)
    await asyncio.to_thread(browser.start)
    try:
        page, ws = await open_page(browser)
        async with ws:
            await page.call(
                "Emulation.setDeviceMetricsOverride",
                width=1600,
                height=1000,
                deviceScaleFactor=1,
                mobile=False,
            )
            yield page
    finally:
        await asyncio.to_thread(browser.stop)


async def wait_for(page: Page, expression: str, timeout: float, step: float = 0.02) -> Any:
    """The first truthy value of ``expression``, polled every ``step`` seconds."""
    deadline = time.monotonic() + timeout * TIMEOUT_SCALE
    while True:
        value = await page.evaluate(
            f"(() => {{ const v = ({expression}); return v instanceof Node || v; }})()"
        )
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true in {timeout} s: {expression}")
        await asyncio.sleep(step)


async def screenshot(page: Page, path: Path) -> None:
    shot = await page.call("Page.captureScreenshot", format="png")
    await asyncio.to_thread(path.write_bytes, base64.b64decode(shot["data"]))


async def sign_in(page: Page, daemon: DaemonProcess, name: str) -> None:
    await page.goto(f"{daemon.base}/console", "!document.getElementById('login').hidden")
    await page.evaluate(
        f"document.getElementById('login-token').value = {json.dumps(TOKEN)};"
        f"document.getElementById('login-name').value = {json.dumps(name)};"
        "document.getElementById('login-form').requestSubmit(); true"
    )
    await wait_for(page, "document.getElementById('conn').textContent === 'live'", 10)


def key(page: Page, name: str) -> Any:
    """A key press the way the console's shortcuts receive it."""
    return page.evaluate(
        f"document.dispatchEvent(new KeyboardEvent('keydown', {{key: {json.dumps(name)}}})); true"
    )


NOTHING_RAN = """(() => window.__pwned === undefined
  && document.querySelectorAll('img, iframe, object, embed').length === 0
  && document.querySelectorAll('script').length === 1)()"""

PAUSE_ROW = """(() => {
  const row = document.querySelector('#feed li[data-action="pause"][data-state="start"]');
  const canvas = row && row.querySelector('canvas');
  if (!canvas || !canvas.dataset.loaded) return null;
  const event = livemodConsole.state.feed.find((e) => String(e.seq) === row.dataset.seq);
  return {seq: event.seq, ts: event.ts, shown: Number(row.dataset.shown),
          loaded: Number(canvas.dataset.loaded), width: canvas.width,
          stream: event.stream_id};
})()"""


async def test_console_live_action_review_claim_and_overturn(
    tmp_path: Path, known_bad_dir: Path, long_violation: Path
) -> None:
    shots = artifacts(tmp_path)
    verdict = unsafe("known_bad", "pause", confidence=0.3)
    verdict["rationale"] = "unsure: " + HOSTILE
    async with AsyncExitStack() as stack:
        llm = await stack.enter_async_context(FakeLlm(Reply(verdict=verdict)))
        daemon = await stack.enter_async_context(console_daemon(tmp_path, known_bad_dir, llm))
        page_a = await stack.enter_async_context(browser_page(tmp_path / "a"))
        page_b = await stack.enter_async_context(browser_page(tmp_path / "b"))
        http = await stack.enter_async_context(
            aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"})
        )
        await sign_in(page_a, daemon, "mod-a")
        await sign_in(page_b, daemon, "mod-b")

        body = {
            "url": str(long_violation),
            "user_id": "alice",
            "room_id": "room-a",
            "realtime": True,
            "metadata": {"title": HOSTILE},
        }
        async with http.post(f"{daemon.base}/v1/streams", json=body) as resp:
            assert resp.status == 201, await resp.text()
            sid = (await resp.json())["id"]

        # 1. The action appears in the live view with its evidence picture, within 1 s.
        row = await wait_for(page_a, PAUSE_ROW, 20)
        took_ms = row["loaded"] - row["ts"] * 1000.0
        (shots / "timing.json").write_text(json.dumps({**row, "event_to_image_ms": took_ms}))
        print(f"console: action event -> row {row['shown'] - row['ts'] * 1000.0:.0f} ms,"
              f" -> evidence image drawn {took_ms:.0f} ms")  # fmt: skip
        assert row["stream"] == sid and row["width"] == 640
        assert took_ms < 1000.0 * TIMEOUT_SCALE
        standing = f"document.querySelector('#streams tr[data-stream=\"{sid}\"] .standing')"
        await wait_for(page_a, f"{standing} && {standing}.textContent.includes('pause')", 5)
        await screenshot(page_a, shots / "1-live-action.png")

        await page_a.evaluate(
            f"document.querySelector('#feed li[data-seq=\"{row['seq']}\"]').click(); true"
        )
        await wait_for(
            page_a,
            "(document.querySelector('#detail canvas.evidence') || {dataset: {}}).dataset.loaded",
            5,
        )
        scores = await page_a.evaluate("document.querySelector('#detail .scores').textContent")
        assert "hash_distance" in scores
        await screenshot(page_a, shots / "2-evidence.png")

        # 2. The review item (the LLM was unsure): claimed in A, shown claimed in B.
        item = "document.querySelector('#reviews li[data-review]')"
        for page in (page_a, page_b):
            await wait_for(page, item, 20)
        await page_a.evaluate(f"{item}.click(); true")
        await page_b.evaluate(f"{item}.click(); true")
        clicked = time.monotonic()
        await key(page_a, "c")
        claim = f"{item}.querySelector('.claim').textContent"
        await wait_for(page_b, f"{claim} === 'claimed by mod-a'", 5, step=0.01)
        seen_claim_s = time.monotonic() - clicked
        assert seen_claim_s < 1.5 * TIMEOUT_SCALE, seen_claim_s
        await wait_for(
            page_b,
            "document.querySelector('#detail .claim-state').textContent === 'claimed by mod-a'",
            5,
        )
        assert await page_b.evaluate(
            "[...document.querySelectorAll('#detail button[data-op]')].every((b) => b.disabled)"
        )
        rationale = await page_b.evaluate("document.querySelector('#detail .verdict').textContent")
        assert HOSTILE in rationale
        await screenshot(page_b, shots / "3-claimed-by-another.png")

        # 3. A overturns with a note: the pause is lifted and the standing actions follow.
        await page_a.evaluate(
            f"document.getElementById('review-note').value = {json.dumps(HOSTILE)}; true"
        )
        await key(page_a, "o")
        await wait_for(
            page_a,
            "document.querySelector('#detail .claim-state').textContent"
            " === 'decided: overturn by mod-a'",
            5,
        )
        lifted = 'document.querySelector(\'#feed li[data-action="pause"][data-state="stop"]\')'
        await wait_for(page_a, lifted, 5)
        assert "by review" in await page_a.evaluate(f"{lifted}.textContent")
        await wait_for(page_a, f"{standing} && {standing}.textContent === '{NOTHING}'", 5)
        await wait_for(page_b, f"!{item}", 8)  # decided: gone from the queue in B as well
        history = await page_a.evaluate("document.querySelector('#detail .history').textContent")
        assert HOSTILE in history
        await screenshot(page_a, shots / "4-overturned.png")

        # 4. Hostile text from the daemon (metadata, URL, LLM rationale, note) stayed text.
        await page_a.evaluate(
            f"document.querySelector('#streams tr[data-stream=\"{sid}\"]').click(); true"
        )
        await wait_for(
            page_a, "document.querySelector('#detail h2').textContent.startsWith('Stream')", 5
        )
        facts = await page_a.evaluate("document.querySelector('#detail .facts').textContent")
        assert HOSTILE.replace('"', '\\"') in facts and "onerror=" in facts
        await screenshot(page_a, shots / "5-stream-timeline.png")
        for page in (page_a, page_b):
            assert await page.evaluate(NOTHING_RAN)

        # 5. Act by hand: a pause the models did not ask for, then lifted, then stop.
        # B loses its WebSocket meanwhile: it resumes with ?since= and misses nothing.
        await page_b.evaluate(
            "livemodConsole.state.backoff = 1500; livemodConsole.state.ws.close(); true"
        )
        await wait_for(page_b, "document.getElementById('conn').textContent === 'reconnecting'", 5)
        await page_a.evaluate("window.confirm = () => true; true")
        await page_a.evaluate(
            "document.querySelector('#detail .by-hand input.why').value = 'seen by a person'; true"
        )
        await page_a.evaluate(
            "document.querySelector('#detail button[data-op=\"pause\"]').click(); true"
        )
        by_hand = (
            '[...document.querySelectorAll(\'#feed li[data-action="pause"][data-state="start"]\')]'
            ".find((r) => r.textContent.includes('by moderator (mod-a)'))"
        )
        await wait_for(page_a, f"{by_hand} && {by_hand}.querySelector('canvas').dataset.loaded", 5)
        await wait_for(page_b, by_hand, 5)
        assert await page_b.evaluate("document.getElementById('conn').textContent") == "live"
        rows = '#feed li[data-action="pause"][data-state="start"]'
        assert await page_b.evaluate(f"document.querySelectorAll('{rows}').length") == 2
        await wait_for(page_a, f"{standing}.textContent.includes('pause')", 5)
        lift = "document.querySelector('#detail button[data-op=\"lift-pause\"]')"
        await wait_for(page_a, lift, 5)
        await screenshot(page_a, shots / "6-paused-by-hand.png")
        await page_a.evaluate(f"{lift}.click(); true")
        await wait_for(page_a, f"{standing}.textContent === '{NOTHING}'", 5)
        events = await page_a.evaluate(
            "livemodConsole.state.feed.filter((e) => e.origin === 'moderator')"
            ".map((e) => [e.action, e.state, e.moderator_id, e.note || null])"
        )
        assert events == [
            ["pause", "stop", "mod-a", None],
            ["pause", "start", "mod-a", "seen by a person"],
        ]
        await page_a.evaluate(
            "document.querySelector('#detail button[data-op=\"stop\"]').click(); true"
        )
        await wait_for(page_a, f"!document.querySelector('#streams tr[data-stream=\"{sid}\"]')", 5)
        async with http.get(f"{daemon.base}/v1/streams/{sid}") as resp:
            assert (await resp.json())["status"] in ("stopped", "ended")


async def test_on_screen_text_is_shown_as_text_with_its_boxes(
    tmp_path: Path, known_bad_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Markup drawn on screen comes back through OCR as the evidence text of a blur
    (regions drawn on the picture) and stays text in the page."""
    clip = make_text_clip(
        tmp_path_factory.mktemp("console-ocr") / "text.mp4",
        8.0,
        [
            Caption("Call me tonight 555-867-5309", 1.0, 6.0, y="h-th-60"),
            Caption('<img src=x onerror="window.__pwned=4">', 1.0, 6.0, y="60"),
        ],
    )
    env = {"LIVEMOD_OCR__ENABLED": "true", "LIVEMOD_OCR__FPS": "1"}
    async with AsyncExitStack() as stack:
        daemon = await stack.enter_async_context(
            console_daemon(tmp_path, known_bad_dir, None, ocr=env)
        )
        page = await stack.enter_async_context(browser_page(tmp_path / "o"))
        http = await stack.enter_async_context(
            aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"})
        )
        await sign_in(page, daemon, "mod-o")
        body = {"url": str(clip), "user_id": "texter", "room_id": "room-o", "realtime": True}
        async with http.post(f"{daemon.base}/v1/streams", json=body) as resp:
            assert resp.status == 201, await resp.text()
        row = 'document.querySelector(\'#feed li[data-action="blur"][data-state="start"]\')'
        await wait_for(page, f"{row} && {row}.querySelector('canvas').dataset.loaded", 20)
        standing = "document.querySelector('#streams tr .standing').textContent"
        await wait_for(page, f"{standing}.includes('blur')", 5)
        await page.evaluate(f"{row}.click(); true")
        shown = await wait_for(
            page, "(document.querySelector('#detail .transcript') || {}).textContent", 5
        )
        event = await page.evaluate(
            f"livemodConsole.state.feed.find((e) => String(e.seq) === {row}.dataset.seq)"
        )
        async with http.get(f"{daemon.base}/v1/evidence/{event['evidence_id']}") as resp:
            text = (await resp.json())["text"]
        assert shown == text and "555-867-5309" in text
        assert event["regions"], event
        await wait_for(page, "document.querySelector('#detail canvas.evidence').dataset.loaded", 5)
        await screenshot(page, artifacts(tmp_path) / "8-on-screen-text.png")
        assert await page.evaluate(NOTHING_RAN)


async def test_hostile_events_are_shown_as_text(tmp_path: Path, known_bad_dir: Path) -> None:
    """Ids and text that the API would refuse can still come from elsewhere (a store
    written by another version, a relay): the page escapes every field it shows."""
    async with AsyncExitStack() as stack:
        daemon = await stack.enter_async_context(console_daemon(tmp_path, known_bad_dir, None))
        page = await stack.enter_async_context(browser_page(tmp_path / "h"))
        await sign_in(page, daemon, "mod-h")
        event = {
            "seq": 10**9,
            "type": "action",
            "action": HOSTILE,
            "state": "start",
            "stream_id": HOSTILE,
            "user_id": HOSTILE,
            "room_id": HOSTILE,
            "category": HOSTILE,
            "confidence": 0.9,
            "tier": HOSTILE,
            "sources": [HOSTILE],
            "media_time_s": 1.0,
            "latency_ms": 10.0,
            "evidence_id": HOSTILE,
            "origin": HOSTILE,
            "regions": [{"x": 1, "y": 1, "w": 5, "h": 5, "label": HOSTILE, "score": 1}],
            "ts": time.time(),
        }
        await page.evaluate(f"livemodConsole.onEvent({json.dumps(event)}); true")
        await page.evaluate("document.querySelector('#feed li').click(); true")
        await wait_for(page, "document.querySelector('#detail .error')", 5)
        text = await page.evaluate("document.getElementById('app').textContent")
        assert text.count(HOSTILE) >= 4
        await page.evaluate("document.getElementById('filter-user').value = '<img'; true")
        await page.evaluate(
            "document.getElementById('filter-user').dispatchEvent(new Event('input')); true"
        )
        assert not await page.evaluate("document.querySelector('#feed li').hidden")
        await asyncio.sleep(0.5)
        assert await page.evaluate(NOTHING_RAN)
        await screenshot(page, artifacts(tmp_path) / "7-hostile-event.png")


async def test_without_a_token_only_the_login_prompt(tmp_path: Path, known_bad_dir: Path) -> None:
    async with AsyncExitStack() as stack:
        daemon = await stack.enter_async_context(console_daemon(tmp_path, known_bad_dir, None))
        http = await stack.enter_async_context(aiohttp.ClientSession())
        async with http.get(f"{daemon.base}/console") as resp:
            assert resp.status == 200
            csp = resp.headers["Content-Security-Policy"]
        assert (
            "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
        )
        assert f"ws://127.0.0.1:{daemon.ws_port}" in csp
        async with http.get(f"{daemon.base}/v1/streams") as resp:
            assert resp.status == 401
        async with http.get(f"{daemon.base}/console/..%2Fwhip.html") as resp:
            assert resp.status == 404

        page = await stack.enter_async_context(browser_page(tmp_path / "l"))
        await page.goto(f"{daemon.base}/console", "!document.getElementById('login').hidden")
        assert await page.evaluate("document.getElementById('app').hidden")
        visible = await page.evaluate("document.body.innerText")
        assert "Sign in" in visible and "Live streams" not in visible
        await page.evaluate(
            "document.getElementById('login-token').value = 'wrong';"
            "document.getElementById('login-name').value = 'mod-x';"
            "document.getElementById('login-form').requestSubmit(); true"
        )
        await wait_for(page, "document.getElementById('login-error').textContent", 5)
        assert await page.evaluate("document.getElementById('app').hidden")
        assert await page.evaluate("sessionStorage.length") == 0
        await screenshot(page, artifacts(tmp_path) / "0-login.png")


async def test_a_daemon_without_a_token_needs_only_a_name(
    tmp_path: Path, known_bad_dir: Path
) -> None:
    daemon = DaemonProcess(tmp_path, known_bad_dir, extra_env={"LIVEMOD_VISION__MODELS": "[]"})
    await asyncio.to_thread(daemon.start)
    try:
        async with browser_page(tmp_path / "n") as page:
            await page.goto(f"{daemon.base}/console", "!document.getElementById('login').hidden")
            await page.evaluate(
                "document.getElementById('login-name').value = 'mod-n';"
                "document.getElementById('login-form').requestSubmit(); true"
            )
            await wait_for(page, "document.getElementById('conn').textContent === 'live'", 10)
            assert await page.evaluate("document.getElementById('login').hidden")
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.stop()


def test_the_page_builds_no_html_from_strings() -> None:
    """The console never parses markup from data: no innerHTML and friends, no eval,
    and no inline script or handler in the page."""
    script = (STATIC / "console.js").read_text()
    for banned in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                   "new Function", "setAttribute"):  # fmt: skip
        assert banned not in script, banned
    page = (STATIC / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)", page)
    assert not re.search(r"\son[a-z]+=", page) and "style=" not in page


def test_an_action_by_hand_stands_until_a_person_lifts_it() -> None:
    """The engine's ``moderator`` channel: no clean run stops a pause started by hand,
    a stronger action by hand replaces it, and only a release in that channel lifts it."""
    engine, key = VoteEngine(load_policy(DEFAULT_POLICY)), "u1:r1"
    started = engine.impose(key, "manual", "pause", media_time_s=3.0, t_trigger=10.0)
    assert [(d.action, d.state, d.sources, d.media_time_s) for d in started] == [
        ("pause", "start", ("moderator",), 3.0)
    ]
    assert engine.impose(key, "manual", "pause", media_time_s=4.0, t_trigger=11.0) == []
    image = np.zeros((4, 4, 3), np.uint8)
    for i in range(20):  # clean samples: the vote never stops what a person started
        frame = VideoFrame("s1", i, i / 4, 100.0 + i, image)
        assert engine.update(key, FrameAnalysis(frame, (), {}, 1.0, 100.0 + i)) == []
    assert [(a.action, a.channel) for a in engine.standing(key)] == [("pause", MODERATOR)]
    assert "manual" not in engine.levels(key)
    upgraded = engine.impose(key, "manual", "end", media_time_s=5.0, t_trigger=12.0)
    assert [(d.action, d.state) for d in upgraded] == [("end", "start"), ("pause", "stop")]
    assert engine.release(key, "manual", t_now=13.0) is None  # the video channel: nothing
    stop = engine.release(key, "manual", t_now=13.0, fresh=True, channel=MODERATOR)
    assert stop is not None and (stop.action, stop.state) == ("end", "stop")
    assert engine.standing(key) == []
