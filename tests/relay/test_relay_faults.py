"""The relay under faults: analysis that lags (hold, then late), and an output that
goes away (nginx restarted) and comes back, while frames keep coming."""

from __future__ import annotations

import time
from pathlib import Path

import av
import numpy as np

from livemod.relay.relay import Relay, RelaySettings
from tests.nginx import NginxRtmp
from tests.relay import marked


def frame(index: int) -> av.VideoFrame:
    return av.VideoFrame.from_ndarray(marked.picture(index, None), format="rgb24")


def feed(relay: Relay, start: int, count: int, *, observe: bool = True) -> None:
    """``count`` frames at 25 fps in real time, analysis keeping up when ``observe``."""
    for i in range(start, start + count):
        t = i / marked.FPS
        relay.video(frame(i), t)
        if observe and i % 6 == 0:
            relay.observe(t, {})
        time.sleep(1 / marked.FPS)


def test_lagging_analysis_holds_the_output_then_lets_go_at_max_delay(tmp_path: Path) -> None:
    events: list[str] = []
    relay = Relay(
        "s",
        RelaySettings(target=str(tmp_path / "hls"), delay_s=0.3, max_delay_s=0.8, lookahead_s=0.5),
        lambda state, fields: events.append(state),
    )
    relay.start()
    feed(relay, 0, 10, observe=False)  # no analysis at all for 0.4 s of frames
    time.sleep(0.2)
    assert relay.status()["frames_out"] == 0  # older than delay_s, but not analyzed: held
    assert relay.holds == 1 and "held" in events
    relay.observe(0.8, {})  # analysis catches up: the held frames leave
    time.sleep(0.3)
    assert relay.status()["frames_out"] >= 8 and "resumed" in events
    assert relay.late_frames == 0
    feed(relay, 10, 20, observe=False)  # analysis stops: frames leave at max_delay_s
    time.sleep(1.0)
    relay.close()
    status = relay.status()
    assert status["late_frames"] > 0 and status["frames_out"] == 30
    assert status["held_s"] > 0


def test_an_output_that_drops_is_retried_without_stopping(tmp_path: Path) -> None:
    nginx = NginxRtmp(tmp_path / "nginx")
    nginx.start()
    events: list[str] = []
    target = f"rtmp://127.0.0.1:{nginx.rtmp_port}/safe/room"
    relay = Relay(
        "s",
        RelaySettings(target=target, delay_s=0.2, max_delay_s=1.0, lookahead_s=0.0),
        lambda state, fields: events.append(state),
    )
    relay.start()
    try:
        feed(relay, 0, 25)
        nginx.stop()  # the streaming server goes away mid-stream
        feed(relay, 25, 50)
        down = relay.status()
        nginx.start()  # ...and comes back on the same port
        feed(relay, 75, 75)
    finally:
        relay.close()
        nginx.stop()
    status = relay.status()
    assert down["output_failures"] >= 1 and down["frames_dropped"] > 0, down
    assert events[0] == "started" and "output_failed" in events and "resumed" in events, events
    assert status["frames_out"] > down["frames_out"] + 25, (down, status)
    assert status["frames_in"] == 150 and np.isfinite(status["encode_ms_per_frame"])


def test_an_end_shows_the_slate_then_ends_the_output(tmp_path: Path) -> None:
    from livemod.messages import Decision

    events: list[tuple[str, dict[str, object]]] = []
    relay = Relay(
        "s",
        RelaySettings(target=str(tmp_path / "hls"), delay_s=0.2, max_delay_s=1.0, lookahead_s=0.0),
        lambda state, fields: events.append((state, fields)),
    )
    relay.start()
    feed(relay, 0, 12)
    relay.decide(
        Decision(
            key="u:r",
            category="violence",
            action="end",
            state="start",
            confidence=1.0,
            tier="high",
            sources=("moderator",),
            media_time_s=0.5,
            t_trigger=time.time(),
        )
    )
    feed(relay, 12, 88)
    relay.close()
    viewed = marked.view(str(tmp_path / "hls" / "index.m3u8"))
    readable = [t for t, img in viewed.frames if marked.read_index(img) is not None]
    # Cover from the last sample before the onset; the slate 2 s; then nothing.
    assert readable and max(readable) <= 0.5 and relay.late_decisions == 0
    assert 2.0 <= viewed.frames[-1][0] <= 2.8, viewed.frames[-1][0]
    ended = [f for s, f in events if s == "ended"]
    assert ended and ended[0].get("reason") == "end action", events
    assert relay.status()["frames_in"] == 100
