"""The streaming transcriber's pure core, the speech timeline and the speech vote.

The VAD here is a plain energy gate and the "decoder" is the test itself, so the
windowing, LocalAgreement and coalescing rules are checked exactly.
"""

from __future__ import annotations

import numpy as np
import pytest

from livemod.messages import AUDIO_RATE, AudioChunk, Samples, Signal
from livemod.paths import DEFAULT_POLICY
from livemod.policy.taxonomy import load_policy
from livemod.policy.vote import VoteEngine
from livemod.speech.moderator import SpeechTimeline, SpokenHit
from livemod.speech.transcriber import StreamTranscriber, TranscriberOptions
from livemod.speech.words import Word


def energy_vad(audio: Samples) -> np.ndarray:
    frames = audio[: len(audio) // 512 * 512].reshape(-1, 512)
    return (np.sqrt((frames**2).mean(axis=1)) > 0.05).astype(np.float32)


class Feed:
    """Pushes 100 ms chunks of a timeline of (seconds, loud?) into a transcriber."""

    def __init__(self, **opts: float) -> None:
        self.tr = StreamTranscriber(energy_vad, TranscriberOptions(**opts))  # type: ignore[arg-type]
        self.t = 0.0

    def run(self, seconds: float, loud: bool) -> None:
        n = round(seconds * 10)
        for _ in range(n):
            level = 0.3 if loud else 0.0
            samples = np.full(AUDIO_RATE // 10, level, np.float32)
            samples[::2] *= -1
            self.tr.push(AudioChunk("s", self.t, 1000.0 + self.t, samples))
            self.t = round(self.t + 0.1, 6)


def words(*spec: tuple[str, float, float]) -> list[Word]:
    return [Word(text, a, b) for text, a, b in spec]


def test_silence_never_asks_for_a_decode_and_settles() -> None:
    feed = Feed()
    feed.run(5.0, loud=False)
    assert not feed.tr.due() and feed.tr.take() is None
    # All of it is final except the padding a next segment may claim.
    assert feed.tr.settled_s == pytest.approx(5.0 - 0.8, abs=0.05)


def test_segment_end_gives_one_final_window_with_padding() -> None:
    feed = Feed()
    feed.run(2.0, loud=False)
    feed.run(0.9, loud=True)
    assert not feed.tr.due()  # speech shorter than interval_s: no partial yet
    feed.run(0.6, loud=False)
    window = feed.tr.take()
    assert window is not None and window.final
    assert window.start_s == pytest.approx(2.0 - 0.8, abs=0.05)
    # Padding after the voice: the min_silence_s that ended it (the rest is not here yet).
    assert window.end_s == pytest.approx(2.9 + 0.6, abs=0.05)
    assert len(window.audio) == pytest.approx((window.end_s - window.start_s) * AUDIO_RATE, abs=2)
    assert feed.tr.take() is None  # busy until applied
    commit = feed.tr.apply(window, words(("hello", 2.05, 2.4), ("there", 2.4, 2.85)))
    assert [w.text for w in commit.words] == ["hello", "there"]
    assert commit.final and commit.settled_s >= 2.85
    assert not feed.tr.due()


def test_local_agreement_commits_only_what_two_decodes_share() -> None:
    feed = Feed()
    feed.run(1.0, loud=False)
    feed.run(1.9, loud=True)
    assert feed.tr.take() is None  # the first partial waits two intervals
    feed.run(0.5, loud=True)
    first = feed.tr.take()
    assert first is not None and not first.final
    c1 = feed.tr.apply(first, words(("I", 1.0, 1.2), ("will", 1.2, 1.5), ("kiln", 1.5, 2.2)))
    assert c1.words == ()
    feed.run(1.0, loud=True)
    second = feed.tr.take()
    assert second is not None and not second.final
    c2 = feed.tr.apply(
        second, words(("I", 1.0, 1.2), ("will", 1.2, 1.5), ("kill", 1.5, 1.9), ("you", 1.9, 2.3))
    )
    assert [w.text for w in c2.words] == ["I", "will"]
    assert c2.settled_s == pytest.approx(1.5)
    feed.run(0.6, loud=False)
    last = feed.tr.take()
    assert last is not None and last.final
    c3 = feed.tr.apply(
        last,
        words(("I", 1.0, 1.2), ("will", 1.21, 1.5), ("kill", 1.5, 1.9), ("you", 1.9, 2.3)),
    )
    # What was final is never repeated; the rest is final with the segment.
    assert [w.text for w in c3.words] == ["kill", "you"]


def test_a_late_stream_decodes_all_pending_speech_in_one_window() -> None:
    feed = Feed()
    feed.run(1.0, loud=False)
    feed.run(0.5, loud=True)
    feed.run(0.6, loud=False)
    window = feed.tr.take()  # the worker took the first segment...
    assert window is not None
    feed.run(0.5, loud=True)  # ...while two more were said
    feed.run(3.0, loud=False)
    feed.run(0.5, loud=True)
    feed.run(0.6, loud=False)
    c1 = feed.tr.apply(window, words(("one", 1.0, 1.5)))
    assert [w.text for w in c1.words] == ["one"] and not c1.final
    both = feed.tr.take()
    assert both is not None and both.final and len(both.segments) == 2
    assert both.start_s >= 1.5  # after the first segment's voice
    # A word Whisper invents in the silence between segments is dropped (VAD gate).
    c2 = feed.tr.apply(both, words(("two", 2.1, 2.6), ("ghost", 3.7, 4.2), ("three", 5.6, 6.1)))
    assert [w.text for w in c2.words] == ["two", "three"] and c2.final


def test_first_word_is_clamped_to_the_voice() -> None:
    feed = Feed()
    feed.run(2.0, loud=False)
    feed.run(0.5, loud=True)
    feed.run(0.6, loud=False)
    window = feed.tr.take()
    assert window is not None
    # Whisper stretched "The" over the padding before the voice started at 2.0 s.
    commit = feed.tr.apply(window, words(("The", 1.3, 2.2), ("end", 2.2, 2.5)))
    assert commit.words[0].start_s == pytest.approx(2.0, abs=0.05)


def test_finish_closes_open_speech() -> None:
    feed = Feed()
    feed.run(0.5, loud=False)
    feed.run(0.5, loud=True)
    feed.tr.finish()
    window = feed.tr.take()
    assert window is not None and window.final and window.end_s == pytest.approx(1.0)


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="threshold"):
        TranscriberOptions(threshold=1.5)
    with pytest.raises(ValueError, match="max_buffer_s"):
        TranscriberOptions(max_buffer_s=1.0)


def test_timeline_samples_hits_for_at_least_min_span() -> None:
    tl = SpeechTimeline(step_s=0.25, min_span_s=1.0)
    assert tl.advance(0.0) == []  # the clock starts at the first settled time
    assert [t for t, _ in tl.advance(1.0)] == [0.0, 0.25, 0.5, 0.75]
    tl.add(SpokenHit("violence", 0.97, "threat_intent", 1.1, 1.4, "I will kill you"))
    samples = tl.advance(3.0)
    flagged = [t for t, hits in samples if hits]
    assert flagged == [1.0, 1.25, 1.5, 1.75, 2.0]
    # A hit found after its time was already counted covers the samples still to come.
    tl.add(SpokenHit("hate", 0.8, "x", 0.0, 0.2, "x"))
    assert [t for t, hits in tl.advance(4.5) if hits] == [3.0, 3.25, 3.5, 3.75]


def test_speech_vote_mutes_then_lifts_and_keeps_video_apart() -> None:
    engine = VoteEngine(load_policy(DEFAULT_POLICY))
    threat = [Signal("violence", 0.97, "asr", "threat_intent")]
    out = []
    for i in range(12):
        t = i * 0.25
        out += engine.update_signals("u:r", threat if 1.0 <= t < 2.0 else [], t, 100.0 + t)
    assert [(d.action, d.state, d.media_time_s) for d in out] == [
        ("mute", "start", 1.0),
        ("mute", "stop", 2.75),
    ]
    start = out[0]
    assert start.sources == ("asr",) and start.tier == "high" and start.t_trigger == 101.0
    # The speech channel has its own window: video samples never touched it.
    assert engine.standing("u:r") == []


def test_low_tier_speech_warns() -> None:
    engine = VoteEngine(load_policy(DEFAULT_POLICY))
    insult = [Signal("harassment", 0.62, "asr", "worthless")]
    out = []
    for i in range(8):
        out += engine.update_signals("u:r", insult if i < 4 else [], i * 0.25, float(i))
    assert [(d.action, d.state) for d in out][:1] == [("warn", "start")]
    assert engine.standing("u:r") == [] or engine.standing("u:r")[0].channel == "speech"


def test_audio_ring_keeps_the_newest_seconds_by_media_time() -> None:
    from livemod.sampling import AudioRing

    ring = AudioRing(1.0, rate=10)
    for i in range(25):
        ring.push(i * 0.5, np.full(5, i, np.float32), 100.0 + i)
    assert (ring.start_s, ring.end_s) == (11.5, 12.5)
    assert ring.slice(0, 100).tolist() == [23.0] * 5 + [24.0] * 5
    assert ring.arrival(12.2) == 124.0
    ring.push(13.0, np.full(5, 9, np.float32), 200.0)  # 0.5 s lost: silence fills it
    assert ring.slice(12.5, 13.5).tolist() == [0.0] * 5 + [9.0] * 5
    ring.push(13.3, np.full(5, 7, np.float32), 201.0)  # overlaps by 0.2 s
    assert ring.end_s == pytest.approx(13.8) and ring.slice(13.5, 13.8).tolist() == [7.0] * 3
