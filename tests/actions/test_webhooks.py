"""Signed webhooks with a persisted outbox, against real local receivers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from livemod.actions.webhooks import WebhookSender, sign, verify, wanted
from livemod.app.daemon import Daemon
from livemod.config import WebhooksConfig
from livemod.errors import ConfigError
from tests.conftest import TIMEOUT_SCALE, free_port
from tests.inproc import Feeder, Watcher, start_daemon
from tests.receiver import Receiver

SECRET = "whsec-test"


@pytest.fixture(autouse=True)
def secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVEMOD_WEBHOOK_SECRET", SECRET)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver(SECRET.encode())
    await r.start()
    try:
        yield r
    finally:
        await r.close()


async def daemon_with(tmp_path: Path, urls: list[str], **extra: Any) -> Daemon:
    cfg = {"urls": urls, "backoff_base_s": 0.05, "backoff_max_s": 0.2, "timeout_s": 0.5, **extra}
    return await start_daemon(tmp_path, webhooks=cfg)


def sender(daemon: Daemon) -> WebhookSender:
    return next(c for c in daemon.components if isinstance(c, WebhookSender))


def test_signature_round_trip_and_what_fails_it() -> None:
    body = b'{"seq":1}'
    now = time.time()
    ts = str(int(now))
    sig = sign(b"k", ts, body)
    assert sig.startswith("v1=") and verify(b"k", ts, body, sig, now=now)
    assert not verify(b"k", ts, b'{"seq":2}', sig, now=now)  # body changed
    assert not verify(b"other", ts, body, sig, now=now)  # wrong secret
    assert not verify(b"k", str(int(now) + 1), body, sig, now=now)  # timestamp changed
    assert not verify(b"k", ts, body, sig, now=now + 3600)  # replayed an hour later
    assert not verify(b"k", "soon", body, sig, now=now)


def test_which_events_are_sent() -> None:
    cfg = WebhooksConfig(urls=["http://127.0.0.1:9/x"], min_severity="medium")
    act = {"type": "action", "action": "pause", "state": "start"}
    assert wanted({**act, "confidence": 0.97}, cfg)
    assert wanted({**act, "confidence": 0.5}, cfg)
    assert not wanted({**act, "confidence": 0.45}, cfg)
    assert wanted({"type": "escalation", "outcome": "cleared"}, cfg)
    assert not wanted({"type": "session", "state": "started"}, cfg)
    high = WebhooksConfig(min_severity="critical", event_types=["action"])
    assert not wanted({**act, "confidence": 0.89}, high)
    assert not wanted({"type": "escalation"}, high)


async def test_retries_until_2xx_and_a_repeat_has_no_effect(
    tmp_path: Path, receiver: Receiver
) -> None:
    receiver.lose_acks = 2  # applied, but the first two replies to each are 500s
    daemon = await daemon_with(tmp_path, [receiver.url], min_severity="high")
    try:
        feed = Feeder(daemon)
        (start,) = await feed.hits("violence", 0.97, 3)
        (stop,) = await feed.clean(4)
        low = await Feeder(daemon, user="quiet").hits("violence", 0.62, 3)
        assert [e["action"] for e in low] == ["warn"]  # severity medium: not sent
        await receiver.wait_effects(2, 10 * TIMEOUT_SCALE)
        await asyncio.sleep(0.3)
        assert sorted(e["seq"] for e in receiver.effects.values()) == [start["seq"], stop["seq"]]
        assert receiver.effects[next(iter(receiver.effects))] == start  # the committed event
        assert all(d.signed for d in receiver.deliveries)
        for event in (start, stop):
            tries = [d for d in receiver.deliveries if d.seq == event["seq"]]
            assert [d.attempt for d in tries] == [1, 2, 3]
            assert [d.status for d in tries] == [500, 500, 200]
            assert len({d.key for d in tries}) == 1  # the same key on every retry
        rows = await sender(daemon).outbox.rows()
        assert [(r["seq"], r["status"]) for r in rows] == [
            (start["seq"], "delivered"),
            (stop["seq"], "delivered"),
        ]
    finally:
        await daemon.stop()


async def test_a_dead_or_hanging_endpoint_does_not_hold_anything_up(
    tmp_path: Path, receiver: Receiver
) -> None:
    hanging = Receiver(SECRET.encode())
    hanging.hang_s = 30
    await hanging.start()
    dead = f"http://127.0.0.1:{free_port()}/hook"
    daemon = await daemon_with(tmp_path, [dead, hanging.url, receiver.url])
    try:
        watch = Watcher(daemon)
        started = time.monotonic()
        events = []
        for i in range(5):
            feed = Feeder(daemon, user=f"u{i}")
            events += await feed.hits("violence", 0.97, 3)
            events += await feed.clean(4)
        assert len(events) == 10
        await receiver.wait_effects(10, 10 * TIMEOUT_SCALE)
        # Moderation went on regardless: every action was committed and published.
        assert len([e for e in watch.drain() if e["type"] == "action"]) == 10
        assert time.monotonic() - started < 10 * TIMEOUT_SCALE
        rows = await sender(daemon).outbox.rows()
        stuck = [r for r in rows if r["url"] != receiver.url]
        assert len(stuck) == 20 and all(r["status"] == "pending" for r in stuck)
        assert any(int(str(r["attempts"])) >= 1 for r in stuck if r["url"] == dead)
    finally:
        await daemon.stop()
        await hanging.close()


async def test_the_outbox_survives_a_restart(tmp_path: Path, receiver: Receiver) -> None:
    receiver.down = True
    daemon = await daemon_with(tmp_path, [receiver.url])
    try:
        feed = Feeder(daemon)
        events = await feed.hits("violence", 0.97, 3) + await feed.clean(4)
        await receiver.wait_deliveries(2, 10 * TIMEOUT_SCALE)
    finally:
        await daemon.stop()
    # Meanwhile a run without webhooks commits one more action: the cursor catches it.
    plain = await start_daemon(tmp_path)
    try:
        events += await Feeder(plain, user="later").hits("violence", 0.97, 3)
    finally:
        await plain.stop()
    receiver.down = False
    again = await daemon_with(tmp_path, [receiver.url])
    try:
        await receiver.wait_effects(3, 10 * TIMEOUT_SCALE)
        await asyncio.sleep(0.3)
        assert sorted(e["seq"] for e in receiver.effects.values()) == [e["seq"] for e in events]
        assert all(d.signed for d in receiver.deliveries)
    finally:
        await again.stop()


async def test_webhooks_without_a_secret_stop_start_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LIVEMOD_WEBHOOK_SECRET")
    with pytest.raises(ConfigError, match="LIVEMOD_WEBHOOK_SECRET"):
        await daemon_with(tmp_path, ["http://127.0.0.1:9/hook"])
