"""A live RTMP publish through a real nginx-rtmp showing the listed picture mirrored
and pillarboxed (as a front camera or a phone would): the daemon pauses it in time."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets

from tests.app.test_known_bad_e2e import BAD_AT, clip
from tests.ingest.test_rtmp import Events, Stack, _stack, is_

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, known_bad_dir: Path) -> Iterator[Stack]:
    """The shipped policy (known_bad → pause), hash analyzer only."""
    yield from _stack(tmp_path_factory.mktemp("rtmp-known-bad"), known_bad_dir, {})


async def test_a_mirrored_pillarboxed_picture_is_caught_over_rtmp(
    stack: Stack, media_dir: Path
) -> None:
    async with websockets.connect(f"{stack.daemon.ws}?room_id=cam") as ws:
        events = Events(ws)
        stack.publish(clip(media_dir, "mirrored"), "cam", "user_id=gina")
        started = await events.wait(is_("session", state="started"))
        pause = await events.wait(is_("action", action="pause", state="start"), 30)
        assert pause["stream_id"] == started["stream_id"] and pause["category"] == "known_bad"
        # Within the vote window of the picture's appearance.
        assert BAD_AT[0] <= pause["media_time_s"] <= BAD_AT[0] + 1.0
        events.close()
