"""An in-process daemon (hash analyzer only, ports picked by the OS) and a feeder
that drives its vote engine and publishes decisions the way a session does."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np

from livemod.app.daemon import Daemon
from livemod.config import Config
from livemod.events.hub import EventFilter, Subscription
from livemod.events.types import ActionEvent
from livemod.messages import FrameAnalysis, Signal, VideoFrame
from livemod.pipeline.session import Session, SessionInfo
from livemod.store import EvidenceInput
from livemod.vision.hashes import HashAnalyzer, KnownBadIndex
from tests.conftest import TIMEOUT_SCALE


def make_config(tmp_path: Path, **sections: dict[str, Any]) -> Config:
    data: dict[str, Any] = {
        "http": {"port": 0},
        "websocket": {"port": 0},
        "store": {"path": str(tmp_path / "livemod.db")},
        "vision": {"models": []},
        # Not under test here; off so their start-up and shutdown stay out of the way.
        "hooks": {"enabled": False},
        "whip": {"enabled": False},
        "ocr": {"enabled": False},
        # Speech (on by default) loads Whisper and the text judge: off unless a test asks.
        "asr": {"enabled": False},
    }
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return Config.model_validate(data)


async def start_daemon(tmp_path: Path, **sections: dict[str, Any]) -> Daemon:
    config = make_config(tmp_path, **sections)
    daemon = Daemon(config, analyzers=[HashAnalyzer(KnownBadIndex.load([]), 8)])
    try:
        await daemon.start()
    except BaseException:
        await daemon.stop()
        raise
    return daemon


def image(value: int = 90) -> np.ndarray[Any, np.dtype[np.uint8]]:
    img = np.full((90, 160, 3), value, np.uint8)
    img[10:40, 20:80] = (200, 30, 30)
    return img


class Feeder:
    """Samples for one ``user:room`` at 4 fps of media time; decisions are
    committed through the hub with their evidence, as ``Session._emit`` does."""

    def __init__(
        self, daemon: Daemon, user: str = "u1", room: str = "r1", stream: str = "s1"
    ) -> None:
        self.daemon = daemon
        self.user, self.room, self.stream = user, room, stream
        self.i = 0
        self.session: Session | None = None

    def attach_session(self) -> Session:
        """A real (never run) session under this stream id, so its ring has frames."""
        info = SessionInfo(self.stream, self.user, self.room, "file:///dev/null")
        d = self.daemon
        self.session = Session(info, d.config, d.analysis, d.engine, d.hub)
        d.sessions.adopt(self.session)
        return self.session

    async def sample(self, *signals: Signal) -> list[dict[str, Any]]:
        t = self.i / 4
        now = asyncio.get_running_loop().time()
        frame = VideoFrame(self.stream, self.i, t, now, image(40 + self.i % 100))
        self.i += 1
        if self.session is not None:
            self.session.ring.push(frame)
        analysis = FrameAnalysis(frame, signals, {"test": 1.0}, 1.0, now)
        events = []
        for decision in self.daemon.engine.update(f"{self.user}:{self.room}", analysis):
            body = ActionEvent.of(
                decision, stream_id=self.stream, user_id=self.user, room_id=self.room
            )
            evidence = None
            if decision.state == "start":
                ev = decision.evidence_frame
                evidence = EvidenceInput(
                    self.stream,
                    decision.category,
                    decision.media_time_s,
                    {**decision.evidence_scores, "first_pass": decision.confidence},
                    ev.image if ev is not None else None,
                )
            events.append(await self.daemon.hub.publish(body, evidence=evidence))
        return events

    async def hits(
        self, category: str, score: float, n: int, sources: tuple[str, ...] = ("vision:test",)
    ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for _ in range(n):
            out += await self.sample(*(Signal(category, score, s) for s in sources))
        return out

    async def clean(self, n: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for _ in range(n):
            out += await self.sample()
        return out


class Watcher:
    """Collects every committed event, like a WebSocket client."""

    def __init__(self, daemon: Daemon) -> None:
        self.sub: Subscription = daemon.hub.subscribe(EventFilter())
        self.events: list[dict[str, Any]] = []

    def drain(self) -> list[dict[str, Any]]:
        while not self.sub.queue.empty():
            self.events.append(self.sub.queue.get_nowait())
        return self.events

    async def wait_for(
        self, predicate: Any, *, count: int = 1, timeout: float = 15.0
    ) -> list[dict[str, Any]]:
        """Wait until ``count`` events match; return the matching ones."""

        async def run() -> list[dict[str, Any]]:
            while True:
                found = [e for e in self.drain() if predicate(e)]
                if len(found) >= count:
                    return found
                self.events.append(await self.sub.queue.get())

        try:
            return await asyncio.wait_for(run(), timeout * TIMEOUT_SCALE)
        except TimeoutError:
            shown = json.dumps([_short(e) for e in self.drain()], indent=0)
            raise AssertionError(f"timed out; events so far: {shown}") from None

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.drain() if e["type"] == kind]


def _short(event: dict[str, Any]) -> dict[str, Any]:
    keys = ("seq", "type", "action", "state", "outcome", "category", "origin", "error")
    return {k: event[k] for k in keys if k in event}
