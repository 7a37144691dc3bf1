"""Whisper over several streams' windows in one call (real tiny.en, espeak-ng speech).

A window's words must not depend on what it was batched with, and must be the words
the single-window path gives; the pool must batch what is queued and survive a
failing batch.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import pytest
from prometheus_client import REGISTRY

from livemod.config import load_config
from livemod.messages import AUDIO_RATE, AudioChunk, Samples
from livemod.policy.taxonomy import load_policy
from livemod.speech.batch import BatchDecoder, BatchItem
from livemod.speech.moderator import build_speech
from livemod.speech.service import AsrService, Transcript
from livemod.speech.whisper import SileroVad, WhisperEngine
from livemod.speech.words import Decoded
from livemod.testing import speech as ts
from tests.conftest import TIMEOUT_SCALE
from tests.speech.test_asr import stream_through

SENTENCES = (*ts.EVERYDAY[:3], ts.THREAT)


@pytest.fixture(scope="module")
def engine() -> WhisperEngine:
    return WhisperEngine(threads=2)


@pytest.fixture(scope="module")
def utterances() -> list[Samples]:
    tracks = []
    for k, sentence in enumerate(SENTENCES):
        track, _ = ts.compose(
            [ts.Part(seconds=0.6), ts.Part(sentence), ts.Part(seconds=0.6)], seed=k
        )
        tracks.append(track)
    return tracks


def _texts(decoded: Decoded) -> list[str]:
    return [w.text for w in decoded.words]


def test_batched_windows_give_the_single_window_words(
    engine: WhisperEngine, utterances: list[Samples]
) -> None:
    items = [BatchItem(track, 10.0 * k) for k, track in enumerate(utterances)]
    music, _ = ts.compose([ts.Part(seconds=3.0, music=True)])
    items.insert(2, BatchItem(music, 50.0))
    items.append(BatchItem(np.zeros(AUDIO_RATE, np.float32), 60.0))  # silence: no call
    batched = engine.transcribe_batch(items)
    assert len(batched) == len(items)
    for item, got in zip(items, batched, strict=True):
        alone = engine.transcribe(item.audio, item.offset_s, item.prompt)
        # Same words, same media times, same guard verdict.
        assert got.words == alone.words
        assert got.rejected == alone.rejected
    assert batched[2].words == ()  # the melody: the guard keeps words out either way
    assert batched[-1] == Decoded((), 0, 0.0)
    spoken = " ".join(" ".join(_texts(d)) for d in batched)
    assert ts.word_error_rate(" ".join(SENTENCES), spoken) <= 0.25
    # The threat keeps the media time of its own window.
    threat = batched[-2].words
    assert threat and 30.0 <= threat[0].start_s < 32.0


def test_a_window_decodes_the_same_whatever_it_is_batched_with(
    engine: WhisperEngine, utterances: list[Samples]
) -> None:
    decoder = BatchDecoder(engine._model, engine.language, engine.guard)
    target = BatchItem(utterances[3], 5.0)
    alone = decoder.decode([target])[0]
    assert alone.words
    for company in ([0], [1, 2], [0, 1, 2]):
        batch = [BatchItem(utterances[i], float(i)) for i in company] + [target]
        assert decoder.decode(batch)[-1].words == alone.words


def test_prompted_and_plain_windows_share_a_batch(
    engine: WhisperEngine, utterances: list[Samples]
) -> None:
    # CTranslate2 needs equal prompt lengths in one call: the decoder groups by length.
    items = [
        BatchItem(utterances[0], 0.0, "we talked about the sky all day long"),
        BatchItem(utterances[1], 4.0),
        BatchItem(utterances[2], 8.0, "music"),
        BatchItem(utterances[3], 12.0),
    ]
    batched = engine.transcribe_batch(items)
    for item, got in zip(items, batched, strict=True):
        assert got.words == engine.transcribe(item.audio, item.offset_s, item.prompt).words
        assert got.words


def _feed_streams(service: AsrService, tracks: Sequence[Samples]) -> dict[str, list[Transcript]]:
    got: dict[str, list[Transcript]] = {f"s{k}": [] for k in range(len(tracks))}
    done = {name: threading.Event() for name in got}

    def listener(name: str):  # type: ignore[no-untyped-def]
        def listen(tr: Transcript) -> None:
            got[name].append(tr)
            if tr.done:
                done[name].set()

        return listen

    streams = [service.open(name, listener(name)) for name in got]

    def feed(k: int) -> None:
        # Each stream from its own thread, as decode threads feed the service.
        hop = AUDIO_RATE // 10
        track = tracks[k]
        for i in range(0, len(track), hop):
            chunk = AudioChunk(f"s{k}", i / AUDIO_RATE, 1000.0 + i / AUDIO_RATE, track[i : i + hop])
            streams[k].feed(chunk)
        streams[k].finish()

    threads = [threading.Thread(target=feed, args=(k,)) for k in range(len(tracks))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name, event in done.items():
        assert event.wait(90 * TIMEOUT_SCALE), f"{name}: the last decode never came"
    for stream in streams:
        stream.close()
    return got


def _batches_observed() -> tuple[float, float]:
    count = REGISTRY.get_sample_value("livemod_batch_size_frames_count", {"model": "whisper"})
    total = REGISTRY.get_sample_value("livemod_batch_size_frames_sum", {"model": "whisper"})
    return count or 0.0, total or 0.0


def test_the_pool_batches_queued_streams(engine: WhisperEngine, utterances: list[Samples]) -> None:
    service = AsrService(engine, SileroVad(), workers=1, batch_size=4)
    calls0, windows0 = _batches_observed()
    try:
        got = _feed_streams(service, utterances)
    finally:
        service.close()
    calls, windows = (a - b for a, b in zip(_batches_observed(), (calls0, windows0), strict=True))
    assert windows > calls > 0, "no call carried more than one window"
    texts = [" ".join(w.text for tr in got[f"s{k}"] for w in tr.words) for k in range(4)]
    # Each stream got its own sentence back (tiny.en hears "tonight" as "to hide").
    assert ts.word_error_rate(" ".join(SENTENCES), " ".join(texts)) <= 0.25, texts
    assert "kill you" in texts[3]
    assert all(got[f"s{k}"][-1].final for k in range(4))


class _FailingOnce:
    """The real engine, except that its first batched call raises."""

    def __init__(self, engine: WhisperEngine) -> None:
        self._engine = engine
        self.failed = False

    def transcribe_batch(self, items: Sequence[BatchItem]) -> list[Decoded]:
        if not self.failed:
            self.failed = True
            raise RuntimeError("CUDA error: out of memory")
        return self._engine.transcribe_batch(items)


def test_a_failing_batch_costs_only_its_windows(
    engine: WhisperEngine, utterances: list[Samples]
) -> None:
    flaky = _FailingOnce(engine)
    service = AsrService(flaky, SileroVad(), workers=1, batch_size=4)  # type: ignore[arg-type]
    try:
        got = _feed_streams(service, utterances[:2])
        assert flaky.failed
        # Every stream still ends (done): a failed window is answered with no words.
        assert all(trs[-1].done for trs in got.values())
        # The pool goes on: the next streams are transcribed as usual.
        after = _feed_streams(service, utterances[2:])
    finally:
        service.close()
    texts = [" ".join(w.text for tr in trs for w in tr.words) for trs in after.values()]
    assert ts.word_error_rate(" ".join(SENTENCES[2:]), " ".join(texts)) <= 0.25, texts


def test_batch_size_auto_is_one_on_cpu() -> None:
    config = load_config(None, environ={"LIVEMOD_ASR__ENABLED": "true"})
    setup = build_speech(config, load_policy(config.policy))
    assert setup is not None
    try:
        assert setup.asr.engine.device == "cpu"  # no GPU here: auto falls back
        assert setup.asr.batch_size == 1
    finally:
        setup.asr.close()
    with pytest.raises(ValueError):
        AsrService(setup.asr.engine, SileroVad(), batch_size=0)


def test_backpressure_keeps_every_word_of_a_feed_faster_than_whisper(
    engine: WhisperEngine,
) -> None:
    # 50 s of talk fed in well under a second: the 30 s audio buffer overflows long
    # before Whisper gets through it, unless the feeder waits for the decodes.
    talk = list(ts.EVERYDAY[:4]) * 3
    parts = [ts.Part(seconds=0.5)]
    for sentence in talk:
        parts += [ts.Part(sentence), ts.Part(seconds=1.5)]
    track, _ = ts.compose(parts)
    assert len(track) / AUDIO_RATE > 45.0
    reference = " ".join(talk)
    service = AsrService(engine, SileroVad(), workers=1)
    try:
        waited, _ = stream_through(service, track, "waited", max_undecoded_s=8.0)
        raced, _ = stream_through(service, track, "raced")
    finally:
        service.close()
    waited_text = " ".join(w.text for tr in waited for w in tr.words)
    raced_text = " ".join(w.text for tr in raced for w in tr.words)
    assert ts.word_error_rate(reference, waited_text) <= 0.25, waited_text
    print(f"\nwaited {len(waited_text.split())} words, raced {len(raced_text.split())}")
    # Without waiting, the speech trimmed from the buffer is never heard.
    assert len(raced_text.split()) < 0.8 * len(waited_text.split()), raced_text
