"""The speech channel holds the relay: a mute that Whisper decides after ``delay_s``
still silences its words, because no frame leaves before speech moderation has
judged past it (up to ``max_delay_s``); a relay that does not wait lets them out."""

from __future__ import annotations

import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from livemod.messages import Decision
from livemod.relay.plan import SPEECH_PAD_S, SPEECH_STEP_S, gate, speech_lookahead_s
from livemod.relay.relay import Relay, RelaySettings
from livemod.speech.moderator import SpeechTimeline
from tests.relay import marked

PER = marked.RATE // marked.FPS
SPAN_S = (1.05, 1.4)
"""The flagged words: inside the tone of second 1 (the tone plays 1.0-1.5 s)."""


def audio_frame(index: int) -> av.AudioFrame:
    ts = (np.arange(PER) + index * PER) / marked.RATE
    frame = av.AudioFrame.from_ndarray(marked.tone(ts)[None, :], format="flt", layout="mono")
    frame.sample_rate = marked.RATE
    frame.pts = index * PER
    frame.time_base = Fraction(1, marked.RATE)
    return frame


def mute(state: str, t: float) -> Decision:
    return Decision(
        key="u:r",
        category="hate",
        action="mute",
        state=state,  # type: ignore[arg-type]
        confidence=0.9,
        tier="high",
        sources=("asr",),
        media_time_s=t,
        t_trigger=time.time(),
        span_s=SPAN_S,
    )


def feed(relays: list[Relay], start: int, count: int, *, speech: bool) -> None:
    """Frames and their audio at 25 fps in real time; video analysis keeps up; speech
    moderation keeps up only when ``speech``."""
    for i in range(start, start + count):
        t = i / marked.FPS
        picture = av.VideoFrame.from_ndarray(marked.picture(i, None), format="rgb24")
        for relay in relays:
            relay.video(picture, t)
            relay.audio(audio_frame(i), t)
            if i % 6 == 0:
                relay.observe(t, {})
            if speech:
                relay.speech(t)
        time.sleep(1 / marked.FPS)


def test_a_lagging_speech_channel_holds_the_output_so_a_late_mute_still_silences(
    tmp_path: Path,
) -> None:
    def settings(name: str, waits: bool) -> RelaySettings:
        return RelaySettings(
            target=str(tmp_path / name),
            delay_s=1.0,
            max_delay_s=4.0,
            lookahead_s=0.0,
            speech_lookahead_s=0.5 if waits else None,
        )

    events: list[str] = []
    held = Relay("held", settings("held", True), lambda state, fields: events.append(state))
    plain = Relay("plain", settings("plain", False))
    for relay in (held, plain):
        relay.start()
    # Whisper lags: 3 s of frames and nothing judged. The plain relay lets them go at
    # delay_s; the speech-waiting one holds them (video analysis is settled).
    feed([held, plain], 0, 75, speech=False)
    assert held.status()["frames_out"] == 0 and plain.status()["frames_out"] > 25
    assert held.holds == 1 and held.speech_holds == 1 and "held" in events
    # Whisper catches up: the words at 1.05-1.4 s are judged 1.6 s after they were
    # said (> delay_s), their mute starts and stops, speech is judged to 3 s.
    for relay in (held, plain):
        relay.decide(mute("start", 1.5))
        relay.decide(mute("stop", 2.0))
        relay.speech(3.0)
    feed([held, plain], 75, 50, speech=True)
    for relay in (held, plain):
        relay.speech_off()  # the audio stops being moderated: nothing to wait for
    feed([held, plain], 125, 25, speech=False)
    time.sleep(1.2)
    # speech_off let them go, up to the last analyzed video sample (frame 144)
    assert held.status()["frames_out"] >= 145, held.status()
    for relay in (held, plain):
        relay.close()

    assert held.late_decisions == 0 and held.late_frames == 0, held.status()
    assert plain.late_decisions == 1, plain.status()  # its words had already left
    assert "resumed" in events and held.held_s > 1.0

    viewed = marked.view(str(tmp_path / "held" / "index.m3u8"))
    off = viewed.offset_s()
    assert viewed.rms(SPAN_S[0] - off, SPAN_S[1] - off) < 0.003  # the words: silent
    assert viewed.rms(2.05 - off, 2.45 - off) > 0.2  # the tone after the mute plays
    assert viewed.rms(0.05 - off, 0.45 - off) > 0.2  # ...and before it
    frames = [marked.read_index(img) for _, img in viewed.frames]
    assert frames == list(range(150)), "held frames all left, in order"
    exposed = marked.view(str(tmp_path / "plain" / "index.m3u8"))
    off = exposed.offset_s()
    assert exposed.rms(SPAN_S[0] - off, SPAN_S[1] - off) > 0.2  # what not waiting costs


def test_the_gate_waits_for_speech_then_lets_go_at_max_delay() -> None:
    common = {"arrival": 0.0, "t": 5.0, "horizon_s": 9.0, "lookahead_s": 1.0}
    common |= {"delay_s": 3.0, "max_delay_s": 8.0, "speech_lookahead_s": 1.4}
    assert gate(now=2.0, speech_horizon_s=None, **common) == "wait"
    assert gate(now=3.5, speech_horizon_s=None, **common) == "go"  # speech not moderated
    assert gate(now=3.5, speech_horizon_s=6.0, **common) == "hold"  # judged to 6.0 < 6.4
    assert gate(now=3.5, speech_horizon_s=6.4, **common) == "go"
    assert gate(now=8.0, speech_horizon_s=6.0, **common) == "late"
    assert gate(now=8.0, speech_horizon_s=6.0, final=True, **common) == "go"


def test_the_speech_lookahead_covers_the_vote_and_the_pad() -> None:
    assert SpeechTimeline().step_s == SPEECH_STEP_S  # the speech vote's sample step
    # k=3 of n=5: a mute decided at the sample being judged begins at most (n-1)
    # steps and the pad before it; one step more covers that sample itself.
    assert speech_lookahead_s([(3, 5), (2, 4)]) == 5 * SPEECH_STEP_S + SPEECH_PAD_S
