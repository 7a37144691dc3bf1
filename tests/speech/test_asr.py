"""Real Whisper tiny.en and Silero VAD on speech spoken by espeak-ng.

The service is fed audio faster than real time, as a stream that fell behind
would be: windows coalesce and every word still comes out once.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pytest

from livemod.messages import AUDIO_RATE, AudioChunk, Samples
from livemod.speech.service import AsrService, Transcript
from livemod.speech.whisper import SileroVad, WhisperEngine
from livemod.testing import speech as ts
from livemod.text.judge import TextPolicy
from tests.conftest import TIMEOUT_SCALE

SENTENCES = ts.EVERYDAY[:5]
THREAT = ts.THREAT


@pytest.fixture(scope="module")
def engine() -> WhisperEngine:
    return WhisperEngine(threads=2)


@pytest.fixture(scope="module")
def service(engine: WhisperEngine) -> Iterator[AsrService]:
    svc = AsrService(engine, SileroVad(), workers=1)
    yield svc
    svc.close()


def stream_through(
    service: AsrService, track: Samples, name: str, *, max_undecoded_s: float | None = None
) -> tuple[list[Transcript], int]:
    """Feed the whole track from this thread at once (no pacing), as a decode thread
    reading a file would; ``max_undecoded_s``: wait for Whisper as scans do."""
    got: list[Transcript] = []
    done = threading.Event()

    def listen(tr: Transcript) -> None:
        got.append(tr)
        if tr.done:
            done.set()

    stream = service.open(name, listen)
    hop = AUDIO_RATE // 10
    for i in range(0, len(track), hop):
        stream.feed(AudioChunk(name, i / AUDIO_RATE, 1000.0 + i / AUDIO_RATE, track[i : i + hop]))
        if max_undecoded_s is not None:
            stream.wait_for_decodes(max_undecoded_s)
    stream.finish()
    assert done.wait(60 * TIMEOUT_SCALE), "the stream's last decode never came"
    stream.close()
    return got, stream.decodes


def test_silence_and_noise_never_wake_whisper(service: AsrService) -> None:
    track, _ = ts.compose(
        [ts.Part(seconds=2.0), ts.Part(seconds=3.0, noise=0.05), ts.Part(seconds=2.0, noise=0.2)]
    )
    got, decodes = stream_through(service, track, "quiet")
    assert [w for tr in got for w in tr.words] == []
    assert decodes == 0  # the VAD gate
    assert got[-1].settled_s == pytest.approx(len(track) / AUDIO_RATE, abs=0.05)


def test_music_gives_no_transcript(service: AsrService) -> None:
    # Silero may take a melody for a voice; Whisper's own no-speech and repetition
    # statistics (the guard) must still keep words out.
    track, _ = ts.compose(
        [ts.Part(seconds=1.0, noise=0.2), ts.Part(seconds=4.0, music=True), ts.Part(seconds=1.0)]
    )
    got, _ = stream_through(service, track, "music")
    assert [w for tr in got for w in tr.words] == []


def test_word_error_rate_on_espeak_sentences(engine: WhisperEngine) -> None:
    import numpy as np

    pad = np.zeros(int(0.8 * AUDIO_RATE), np.float32)
    rates = []
    for sentence in SENTENCES:
        decoded = engine.transcribe(np.concatenate([pad, ts.speak(sentence), pad]), 0.0)
        rates.append(ts.word_error_rate(sentence, " ".join(w.text for w in decoded.words)))
    wer = sum(rates) / len(rates)
    print(f"\nWER tiny.en on {len(rates)} espeak-ng sentences: {wer:.3f} {rates}")
    assert wer <= 0.25


def test_streaming_transcript_times_words_and_skips_the_gaps(service: AsrService) -> None:
    track, placed = ts.compose(
        [
            ts.Part(seconds=1.0),
            ts.Part(SENTENCES[0]),
            ts.Part(seconds=2.0, noise=0.05),
            ts.Part(THREAT),
            ts.Part(seconds=1.5),
            ts.Part(SENTENCES[1]),
            ts.Part(seconds=1.0),
        ]
    )
    got, _ = stream_through(service, track, "talk")
    words = [w for tr in got for w in tr.words]
    settled = [tr.settled_s for tr in got]
    assert settled == sorted(settled)
    text = " ".join(w.text for w in words)
    reference = " ".join(p.part.text for p in placed if p.part.text)
    wer = ts.word_error_rate(reference, text)
    print(f"\nstreaming WER {wer:.3f}: {text!r}")
    assert wer <= 0.25
    # Every word once, in order, inside the speech it came from.
    starts = [w.start_s for w in words]
    assert starts == sorted(starts)
    spoken = [(p.speech_start_s - 0.3, p.speech_end_s + 0.6) for p in placed if p.part.text]
    outside = [w for w in words if not any(a <= w.start_s and w.end_s <= b for a, b in spoken)]
    assert outside == [], spoken
    # The threat's words carry the media times it was said at.
    threat = next(p for p in placed if p.part.text == THREAT)
    (hit,) = [h for h in TextPolicy.load().evaluate(text) if h.category == "violence"]
    covered = [w for w in words if w.text.lower().strip(".,") in ("i", "will", "kill", "you")]
    covered = [w for w in covered if threat.speech_start_s - 0.5 <= w.start_s]
    assert covered and covered[0].start_s == pytest.approx(threat.speech_start_s, abs=0.4)
    assert hit.term == "threat_intent"


def test_sized_windows_hear_what_padded_windows_hear(engine: WhisperEngine) -> None:
    # The encoder on features sized to the window (+1 s of silence) instead of 30 s:
    # as many words right, at the same times, for a fraction of the CPU (benchmarks/asr.py).
    sized = WhisperEngine(threads=2, sized=True)
    pad = np.zeros(AUDIO_RATE // 4, np.float32)
    said, heard_padded, heard_sized = [], [], []
    for text in (*SENTENCES[:4], THREAT):
        clip = np.concatenate([pad, ts.speak(text), pad])
        a, b = engine.transcribe(clip, 10.0), sized.transcribe(clip, 10.0)
        said.append(text)
        heard_padded.append(" ".join(w.text for w in a.words))
        heard_sized.append(" ".join(w.text for w in b.words))
        end = 10.0 + len(clip) / AUDIO_RATE + 0.1
        assert b.words and all(10.0 <= w.start_s <= w.end_s <= end for w in b.words)
        same = [(x, y) for x, y in zip(a.words, b.words, strict=False) if x.text == y.text]
        assert all(abs(x.start_s - y.start_s) < 0.3 for x, y in same), (a.words, b.words)
    wer_padded = ts.word_error_rate(" ".join(said), " ".join(heard_padded))
    wer_sized = ts.word_error_rate(" ".join(said), " ".join(heard_sized))
    assert wer_sized <= wer_padded + 0.05, (heard_padded, heard_sized)
