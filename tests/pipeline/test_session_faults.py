"""A stream whose analysis breaks ends alone, with an event; the daemon goes on."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from livemod.app.daemon import Daemon
from livemod.events.hub import EventFilter
from livemod.messages import Image
from livemod.vision.base import AnalyzerResult
from livemod.vision.hashes import HashAnalyzer, KnownBadIndex
from tests.conftest import TIMEOUT_SCALE
from tests.inproc import make_config


class BrokenOnce:
    """Raises on its first call (a model bug), then works."""

    name = "broken"

    def __init__(self) -> None:
        self.calls = 0

    def analyze_batch(self, images: Sequence[Image]) -> list[AnalyzerResult]:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("model exploded")
        return [AnalyzerResult() for _ in images]


async def test_analysis_crash_ends_only_that_session(tmp_path: Path, benign_clip: Path) -> None:
    broken = BrokenOnce()
    daemon = Daemon(
        make_config(tmp_path), analyzers=[HashAnalyzer(KnownBadIndex.load([]), 8), broken]
    )
    await daemon.start()
    sub = daemon.hub.subscribe(EventFilter())
    try:
        first = await daemon.start_session(str(benign_clip), "u1", "r1", realtime=False)
        second = await daemon.start_session(str(benign_clip), "u2", "r2", realtime=False)
        ends: dict[str, dict[str, object]] = {}
        async with asyncio.timeout(60 * TIMEOUT_SCALE):
            while len(ends) < 2:
                event = await sub.queue.get()
                if event["type"] == "session" and event["state"] in ("ended", "error"):
                    ends[str(event["stream_id"])] = event
        states = sorted(str(e["state"]) for e in ends.values())
        assert states == ["ended", "error"]
        failed = next(e for e in ends.values() if e["state"] == "error")
        assert "internal error: model exploded" in str(failed["error"])
        assert {first.info.id, second.info.id} == set(ends)
        stored = await daemon.store.get_session(str(failed["stream_id"]))
        assert stored is not None and stored["status"] == "failed"
    finally:
        daemon.hub.unsubscribe(sub)
        await daemon.stop()
