"""Whisper under a CPU budget, fair across streams; sentences split across windows.

The scheduler and the budget are pure and run on a clock the test moves. The pool is
then run for real (tiny.en, Silero, espeak-ng speech) with a budget far below what
three talking streams need: every stream is heard, what waited too long is skipped and
counted, and Whisper's CPU stays within the budget.
"""

from __future__ import annotations

import threading
import time

import pytest

from livemod.budget import CpuBudget, FairQueue
from livemod.config import load_config
from livemod.messages import AUDIO_RATE, AudioChunk
from livemod.paths import CONFIGS_DIR
from livemod.speech.reading import HOLD_MAX_S, SpokenHit, TranscriptReader
from livemod.speech.service import AsrService, Transcript
from livemod.speech.whisper import SileroVad, WhisperEngine
from livemod.speech.words import Word
from livemod.testing import speech as ts
from livemod.text.judge import TextHit, TextPolicy
from tests.conftest import TIMEOUT_SCALE
from tests.speech.test_transcriber import Feed


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_the_budget_refills_at_its_rate_and_a_decode_may_overdraw_it() -> None:
    clock = Clock()
    budget = CpuBudget(0.5, burst_s=2.0, clock=clock)
    assert budget.wait_s() == 0.0
    budget.charge(1.5)  # 1.0 in the bucket: 0.5 in debt
    assert budget.wait_s() == pytest.approx(1.0, abs=0.01)
    clock.t += 0.5
    assert budget.wait_s() == pytest.approx(0.5, abs=0.01)
    clock.t += 0.6
    assert budget.wait_s() == 0.0
    clock.t += 100.0  # never more than burst_s worth saved up
    budget.charge(0.9)  # 1.0 saved: 0.1 left
    assert budget.wait_s() == 0.0
    budget.charge(0.5)
    assert budget.wait_s() > 0.0
    assert CpuBudget(None).wait_s() == 0.0


def test_the_stream_with_least_recent_whisper_time_goes_first() -> None:
    clock = Clock()
    queue: FairQueue[str] = FairQueue(3, half_life_s=10.0, clock=clock)
    queue.charge("talker", 2.0)
    queue.charge("other", 0.5)
    assert queue.push("talker") == (False, None)
    assert queue.push("other") == (False, None)
    assert queue.push("quiet") == (False, None)
    assert queue.push("talker", urgent=True) == (True, None)  # queued once
    assert queue.pop(3) == ["quiet", "other", "talker"]
    # An utterance's end counts half, so it goes ahead of a stream that used a bit less.
    queue.push("talker", urgent=True)
    queue.charge("other", 0.6)  # other: 1.1 s, talker: 2.0 s, halved
    queue.push("other")
    assert queue.pop(1) == ["talker"]
    assert queue.pop(1) == ["other"]
    # A stream with a recent policy hit counts half its usage, for a while.
    queue.flag("talker")
    queue.push("other")
    queue.push("talker")
    assert queue.pop(1) == ["talker"]
    queue.pop(1)
    clock.t += 31.0
    queue.charge("talker", 10.0)
    queue.push("talker")
    queue.push("other")
    assert queue.pop(1) == ["other"]
    queue.pop(1)
    # Usage fades: after a minute the talker is as fresh as anyone.
    clock.t += 60.0
    assert queue.usage("talker") < 0.2
    # Bounded: a fourth stream pushes out the one that waited longest.
    for key in ("a", "b", "c"):
        queue.push(key)
    assert queue.push("d") == (False, "a")
    assert len(queue) == 3 and "a" not in queue
    # Over the budget only some streams may go (scans): the others keep their place.
    assert queue.pop(3, only=lambda k: k in "cd") == ["c", "d"]
    assert queue.any(lambda k: k == "b") and len(queue) == 1


def test_speech_that_waited_too_long_is_skipped_and_settled() -> None:
    feed = Feed()
    feed.run(1.0, loud=False)
    feed.run(6.0, loud=True)  # nobody decoded it
    assert feed.tr.due()
    assert feed.tr.skip_stale(8.0) == 0.0  # not stale yet
    skipped = feed.tr.skip_stale(2.0)
    assert skipped == pytest.approx(4.0, abs=0.15)
    assert feed.tr.settled_s == pytest.approx(5.0, abs=0.05)
    window = feed.tr.take()
    assert window is not None and window.start_s == pytest.approx(5.0, abs=0.05)
    assert not window.final


@pytest.fixture(scope="module")
def policy() -> TextPolicy:
    return TextPolicy.load(None)


def _words(text: str, start_s: float, step_s: float = 0.3) -> list[Word]:
    return [
        Word(w, start_s + i * step_s, start_s + (i + 1) * step_s - 0.05)
        for i, w in enumerate(text.split())
    ]


FIRST = "I saw you leave the gym tonight."
SECOND = "next time I will follow you home and hurt you."


@pytest.mark.parametrize("utterance_ended", [False, True])
def test_a_sentence_split_across_windows_is_judged_whole_and_once(
    policy: TextPolicy, utterance_ended: bool
) -> None:
    assert policy.judge is not None
    reader = TranscriptReader(policy.evaluate)
    first = _words(FIRST, 10.0)
    assert reader.read(first) == []
    if utterance_ended:
        reader.end_utterance()
    hits = reader.read(_words(SECOND, first[-1].end_s + 0.4))
    # One hit, from the start of the sentence: not a second one for its second half.
    assert [(h.category, h.term) for h in hits] == [("violence", "judge")]
    assert hits[0].start_s == pytest.approx(10.0)
    assert "saw you leave" in hits[0].snippet
    assert reader.read(_words("Anyway, see you all tomorrow.", 20.0)) == []


def second_half_only(text: str) -> list[TextHit]:
    """A judge that scores the threat's second half as a sentence of its own and not
    the joined sentence (as the learned heads sometimes do)."""
    phrase = SECOND.rstrip(".").lower()
    at = text.lower().find(phrase)
    if at < 0 or (at > 0 and text[:at].rstrip()[-1:] != "."):
        return []
    return [TextHit("violence", 0.9, "judge", at, at + len(phrase))]


def test_a_hit_on_the_second_half_of_a_split_sentence_starts_with_the_first() -> None:
    reader = TranscriptReader(second_half_only)
    first = _words(FIRST, 10.0)
    assert reader.read(first) == []
    hits = reader.read(_words(SECOND, first[-1].end_s + 0.4))
    assert [h.start_s for h in hits] == [pytest.approx(10.0)]
    # A capitalised sentence after a pause is a sentence of its own: it keeps its start.
    own = TranscriptReader(second_half_only)
    own.read(_words(FIRST, 10.0))
    later = first[-1].end_s + 1.2
    hits = own.read(_words(SECOND.capitalize(), later))
    assert [h.start_s for h in hits] == [pytest.approx(later)]
    # After a pause the pieces are separate utterances: the hit keeps its own start.
    apart = TranscriptReader(second_half_only)
    apart.read(_words(FIRST, 10.0))
    apart.end_utterance()
    assert [h.start_s for h in apart.read(_words(SECOND, 20.0))] == [pytest.approx(20.0)]


def test_words_after_a_pause_are_not_joined_and_gaming_talk_stays_clean(
    policy: TextPolicy,
) -> None:
    reader = TranscriptReader(policy.evaluate, bridge_gap_s=2.0)
    reader.read(_words(FIRST, 10.0))
    reader.end_utterance()
    hits = reader.read(_words(SECOND, 20.0))  # ten seconds later: judged alone
    assert [h.start_s for h in hits] == [pytest.approx(20.0)]
    gaming = TranscriptReader(policy.evaluate)
    assert gaming.read(_words("I killed the boss.", 0.0)) == []
    gaming.end_utterance()
    assert gaming.read(_words("Tonight I am coming over to play.", 1.5)) == []


def test_three_streams_over_a_small_budget_are_all_heard_and_skips_are_counted() -> None:
    sentences = (ts.EVERYDAY[0], ts.THREAT, ts.EVERYDAY[1], ts.EVERYDAY[2])
    tracks = []
    for k in range(3):
        parts = [ts.Part(seconds=0.5)]
        for sentence in sentences[k:] + sentences[:k]:
            parts += [ts.Part(sentence), ts.Part(seconds=0.4)]
        tracks.append(ts.compose(parts, seed=k)[0])
    engine = WhisperEngine(threads=2, sized=True)
    rate = 0.15  # CPU s per s: a fraction of what three talking streams need
    service = AsrService(
        engine, SileroVad(), max_cpu=rate, max_delay_s=2.5, threads=2, max_streams=8
    )
    done = threading.Event()
    finished: set[str] = set()
    words: dict[str, int] = {}

    def listener(tr: Transcript) -> None:
        words[tr.stream_id] = words.get(tr.stream_id, 0) + len(tr.words)
        if tr.done:
            finished.add(tr.stream_id)
            if len(finished) == 3:
                done.set()

    streams = [service.open(f"s{k}", listener) for k in range(3)]
    started = time.monotonic()
    try:
        chunk = AUDIO_RATE // 10
        n = max(len(t) for t in tracks) // chunk
        for i in range(n):  # all three talk at once, at twice real time
            for stream, track in zip(streams, tracks, strict=True):
                samples = track[i * chunk : (i + 1) * chunk]
                if len(samples) == chunk:
                    stream.feed(AudioChunk(stream.stream_id, i / 10, time.time(), samples))
            time.sleep(0.05)
        for stream in streams:
            stream.finish()
        assert done.wait(120 * TIMEOUT_SCALE), (finished, [s.decodes for s in streams])
        elapsed = time.monotonic() - started
    finally:
        for stream in streams:
            stream.close()
        service.close()
    # Fair: every stream was decoded and heard, none starved by the others.
    assert all(s.decodes >= 1 for s in streams), [s.decodes for s in streams]
    assert all(words.get(s.stream_id, 0) > 0 for s in streams), words
    # Over the budget: speech was skipped, counted per stream, never queued without bound.
    assert sum(s.skipped_windows for s in streams) >= 1
    assert all((s.skipped_s > 0) == (s.skipped_windows > 0) for s in streams)
    # Whisper's CPU stayed within the budget: its rate, a 2 s burst and one decode's debt.
    assert service.budget.spent_s <= rate * elapsed + rate * 2.0 + 1.5


def test_speech_is_on_by_default_within_a_cpu_budget() -> None:
    defaults = load_config(None, environ={}).asr
    documented = load_config(CONFIGS_DIR / "livemod.yaml", environ={}).asr
    assert defaults.enabled and 0 < defaults.max_cpu <= 1 and defaults.max_delay_s > 0
    assert documented == defaults


def opening_words_judge(text: str) -> list[TextHit]:
    """A judge that flags "I tried to end my life" unless the sentence goes on to say it
    is over (as the learned heads do on a sentence's first words), and a word list that
    flags "suicide" wherever it is."""
    hits = []
    at = text.lower().find("suicide")
    if at >= 0:
        hits.append(TextHit("self_harm", 0.95, "suicide", at, at + len("suicide")))
    sentence = text.rstrip(".").lower()
    if "tried to end my life" in sentence and "glad" not in sentence:
        hits.append(TextHit("self_harm", 0.8, "judge", 0, len(text)))
    return hits


OPENING = "Two years ago I tried to end my life"
RECOVERY = "and I'm so glad I'm still here."


def test_a_judge_hit_on_an_open_sentence_waits_for_the_rest_of_it() -> None:
    reader = TranscriptReader(opening_words_judge)
    first = _words(OPENING, 10.0)
    assert reader.read(first) == []  # held: the sentence has no stop yet
    assert reader.read(_words(RECOVERY, first[-1].end_s + 0.1)) == []  # and it unsaid it
    # The sentence closes with the hit still standing: counted then, from its start.
    again = TranscriptReader(opening_words_judge)
    assert again.read(first) == []
    hits = again.read(_words("again last night.", first[-1].end_s + 0.1))
    assert [(h.category, h.term, h.start_s) for h in hits] == [
        ("self_harm", "judge", pytest.approx(10.0))
    ]


def test_a_held_hit_counts_at_the_end_of_the_utterance_or_after_the_longest_wait() -> None:
    reader = TranscriptReader(opening_words_judge)
    assert reader.read(_words(OPENING, 10.0)) == []
    # The utterance ends with no more words: what was held is judged again and counted.
    hits = reader.read([], final=True)
    assert [(h.category, h.start_s) for h in hits] == [("self_harm", pytest.approx(10.0))]
    # A sentence that never stops: counted once HOLD_MAX_S of speech followed the hold.
    endless = TranscriptReader(opening_words_judge)
    words = _words(OPENING + " " + " ".join(["and then"] * 6), 30.0, step_s=0.2)
    held_at = 9  # through the word "life"
    assert endless.read(words[:held_at]) == []
    out: list[SpokenHit] = []
    for i in range(held_at, len(words)):
        out += endless.read(words[i : i + 1])
        if out:
            break
    assert [h.start_s for h in out] == [pytest.approx(30.0)]
    assert words[i].end_s - words[held_at - 1].end_s >= HOLD_MAX_S


def test_word_list_hits_are_not_held() -> None:
    reader = TranscriptReader(opening_words_judge)
    hits = reader.read(_words("my friend died by suicide and", 5.0))
    assert [h.term for h in hits] == ["suicide"]
