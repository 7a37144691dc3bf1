"""Streaming transcription of one stream: VAD gate, windows, LocalAgreement commits.

Pure: audio chunks and decode results in, windows and committed words out; the
VAD is a function passed in and time is the media time of the audio itself.

- Audio goes into a rolling buffer (``max_buffer_s``). The VAD scores every 32 ms;
  speech starts above ``threshold`` and ends after ``min_silence_s`` below
  ``threshold - 0.15``. Each stretch of speech is a segment, padded by ``pad_s``
  (shorter padding turned "hurt" into "third").
- A window is due when a segment ends, and every ``interval_s`` of new audio while
  one goes on. One window covers *every* pending segment, so a stream whose
  decodes fall behind catches up in one call instead of working through a backlog.
- Words of ended segments are final at once. Words of the segment still going on
  are committed when two consecutive decodes agree on them (LocalAgreement-2):
  final quickly, never taken back. Words outside every segment (Whisper filling
  silence) are dropped: the VAD gate of the hallucination guard.
- ``settled_s`` is the media time up to which the transcript is final, so the vote
  counts the clean time up to there too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from livemod.messages import AUDIO_RATE, AudioChunk, Samples
from livemod.sampling import AudioRing
from livemod.speech.whisper import VAD_CONTEXT_FRAMES, VAD_FRAME
from livemod.speech.words import Word

Vad = Callable[[Samples], npt.NDArray[np.float32]]
"""Speech probability per 512-sample frame of the audio given."""
_FRAME_S = VAD_FRAME / AUDIO_RATE


@dataclass(frozen=True, slots=True)
class TranscriberOptions:
    threshold: float = 0.5
    min_silence_s: float = 0.5
    min_speech_s: float = 0.25
    pad_s: float = 0.8
    interval_s: float = 1.0
    max_buffer_s: float = 30.0
    trim_after_s: float = 12.0
    """A long segment's window restarts at its last committed word past this."""

    def __post_init__(self) -> None:
        if not 0.15 < self.threshold < 1.0:
            raise ValueError("threshold must be between 0.15 and 1")
        if self.max_buffer_s <= self.pad_s + self.interval_s:
            raise ValueError("max_buffer_s is too short for pad_s + interval_s")


@dataclass(slots=True)
class Segment:
    """A stretch of speech: ``voice`` from the VAD, ``start``/``end`` padded."""

    start_s: float
    voice_start_s: float
    voice_end_s: float
    end_s: float | None = None
    """Set when the speech ended (voice end plus padding)."""


@dataclass(frozen=True, slots=True)
class Window:
    """Audio to decode and the segments it covers."""

    audio: Samples
    start_s: float
    end_s: float
    final_until_s: float
    """Words ending before this lie in ended segments: final as decoded."""
    final: bool
    """Every segment covered has ended."""
    segments: tuple[tuple[float, float, float], ...]
    """(padded start, voice start, padded end) of each covered segment: words outside
    are dropped, words starting before the voice are clamped to it."""
    prompt: str | None
    generation: int


@dataclass(frozen=True, slots=True)
class Commit:
    """Words that became final, and the media time up to which all is final."""

    words: tuple[Word, ...]
    settled_s: float
    final: bool
    """No speech is pending: the last segment ended and is fully committed."""


def _key(text: str) -> str:
    return re.sub(r"[^\w']", "", text.lower())


class StreamTranscriber:
    """One stream's streaming ASR state. Not thread-safe: its owner serialises calls."""

    def __init__(self, vad: Vad, options: TranscriberOptions | None = None) -> None:
        self._vad = vad
        self.opts = options or TranscriberOptions()
        self.ring = AudioRing(self.opts.max_buffer_s)
        self._vad_done_s: float | None = None
        self._in_speech = False
        self._speech_start_s = 0.0
        self._voice_s = 0.0
        self._silence_since: float | None = None
        self._opened = False
        self._pending: list[Segment] = []
        self._last_window_end_s = 0.0
        self._committed: list[Word] = []
        self._committed_s = 0.0
        self._hypothesis: list[Word] = []
        self._settled_s = 0.0
        self._generation = 0
        self.busy = False
        self.finished = False

    @property
    def settled_s(self) -> float:
        return self._settled_s

    @property
    def pending(self) -> bool:
        """Speech awaits a decode or its words' agreement."""
        return bool(self._pending)

    @property
    def undecoded_s(self) -> float:
        """Speech audio that no decode has taken yet (0 when no speech is pending)."""
        if not self._pending:
            return 0.0
        return max(0.0, self.ring.end_s - self._last_window_end_s)

    # -- input -------------------------------------------------------------------

    def push(self, chunk: AudioChunk) -> None:
        self.ring.push(chunk.media_time_s, chunk.samples, chunk.t_arrival)
        if self._vad_done_s is None:
            self._vad_done_s = self.ring.start_s
        self._run_vad()

    def finish(self) -> None:
        """End of stream: the segment going on ends here."""
        self.finished = True
        if self._pending and self._pending[-1].end_s is None:
            self._pending[-1].end_s = self.ring.end_s
        self._in_speech = False

    def _run_vad(self) -> None:
        assert self._vad_done_s is not None
        ring = self.ring
        new = int((ring.end_s - self._vad_done_s) / _FRAME_S)
        if new <= 0:
            return
        lo = max(ring.start_s, self._vad_done_s - VAD_CONTEXT_FRAMES * _FRAME_S)
        probs = self._vad(ring.slice(lo, self._vad_done_s + new * _FRAME_S))
        for i, p in enumerate(probs[max(0, len(probs) - new) :]):
            self._frame(self._vad_done_s + i * _FRAME_S, float(p))
        self._vad_done_s += new * _FRAME_S
        if not self._pending and not self._in_speech:
            # Nothing pending: all but the padding a next segment may claim is final.
            self._settle(self._vad_done_s - self.opts.pad_s)

    def _frame(self, t: float, p: float) -> None:
        o = self.opts
        if p >= o.threshold:
            if not self._in_speech:
                self._in_speech = True
                self._speech_start_s = t
                self._opened = False
            self._voice_s = t + _FRAME_S
            self._silence_since = None
            if not self._opened and self._voice_s - self._speech_start_s >= o.min_speech_s:
                self._opened = True
                self._open_segment()
            elif self._opened and self._pending:
                self._pending[-1].voice_end_s = self._voice_s
        elif self._in_speech and p < o.threshold - 0.15:
            if self._silence_since is None:
                self._silence_since = t
            if t + _FRAME_S - self._silence_since >= o.min_silence_s:
                self._in_speech = False
                if self._opened and self._pending and self._pending[-1].end_s is None:
                    self._pending[-1].end_s = self._voice_s + o.pad_s

    def _open_segment(self) -> None:
        floor = max(self.ring.start_s, self._committed_s)
        if self._pending:
            floor = max(floor, self._pending[-1].voice_end_s)
        else:
            # The first partial decode waits two intervals: most sentences end before
            # that, and their final decode then comes without one in flight ahead of it.
            self._last_window_end_s = self.ring.end_s + self.opts.interval_s
        start = max(floor, self._speech_start_s - self.opts.pad_s)
        self._pending.append(Segment(start, self._speech_start_s, self._voice_s))

    # -- windows -------------------------------------------------------------------

    def due(self) -> bool:
        """Whether a decode should be queued for this stream now."""
        if self.busy or not self._pending:
            return False
        return self.final_due() or (
            self.ring.end_s - self._last_window_end_s >= self.opts.interval_s
        )

    def final_due(self) -> bool:
        """A segment has ended: its words can be made final (the service serves these first)."""
        return not self.busy and any(s.end_s is not None for s in self._pending)

    def take(self) -> Window | None:
        """The window to decode now, over every pending segment; marks the stream busy."""
        if not self.due():
            return None
        ring = self.ring
        first, last = self._pending[0], self._pending[-1]
        start = max(first.start_s, ring.start_s, ring.end_s - self.opts.max_buffer_s + 0.01)
        prompt = None
        if self._hypothesis_start() - start > self.opts.trim_after_s and self._committed:
            # A long monologue: restart at the last final word, keep its text as context.
            start = max(start, self._committed_s)
            prompt = " ".join(w.text for w in self._committed[-24:])
        final = last.end_s is not None
        end = min(ring.end_s, last.end_s) if last.end_s is not None else ring.end_s
        ended = [s.end_s for s in self._pending if s.end_s is not None]
        # An ended segment is complete even where its trailing padding has not arrived.
        final_until = max(ended) if ended else start
        segments = tuple(
            (max(s.start_s, start), max(s.voice_start_s, start), s.end_s or end)
            for s in self._pending
        )
        self._last_window_end_s = ring.end_s
        self.busy = True
        return Window(
            ring.slice(start, end),
            start,
            end,
            final_until,
            final,
            segments,
            prompt,
            self._generation,
        )

    def skip_stale(self, max_delay_s: float) -> float:
        """Give up on pending speech that has waited longer than ``max_delay_s`` (media
        time, from the newest audio): it is never decoded, the transcript settles past
        it. Returns the seconds of voice skipped (0: nothing was stale)."""
        if self.busy or not self._pending:
            return 0.0
        cut = self.ring.end_s - max_delay_s
        if max(self._pending[0].start_s, self._committed_s) >= cut:
            return 0.0
        skipped = 0.0
        kept: list[Segment] = []
        for seg in self._pending:
            lo = max(seg.voice_start_s, self._committed_s)
            skipped += max(0.0, min(seg.voice_end_s, cut) - lo)
            if seg.end_s is not None and seg.end_s <= cut:
                continue  # wholly stale
            if seg.start_s < cut:
                seg.start_s = cut
                seg.voice_start_s = max(seg.voice_start_s, cut)
                seg.voice_end_s = max(seg.voice_end_s, cut)
            kept.append(seg)
        self._pending = kept
        self._hypothesis = []
        self._committed_s = max(self._committed_s, cut)
        self._last_window_end_s = max(self._last_window_end_s, cut)
        self._settle(cut)
        return skipped

    def _hypothesis_start(self) -> float:
        return self._pending[0].start_s if self._pending else self.ring.end_s

    def apply(self, window: Window, words: Sequence[Word]) -> Commit:
        """Fold one decode in; return what became final."""
        self.busy = False
        if window.generation != self._generation:
            return Commit((), self._settled_s, not self._pending)
        kept = [w for w in (_inside(w, window.segments) for w in words) if w is not None]
        fresh = self._after_committed(kept)
        done = [w for w in fresh if w.end_s <= window.final_until_s + 0.05]
        tail = fresh[len(done) :]
        if window.final:
            done, tail = fresh, []
        agreed = _agreed(self._hypothesis, tail)
        self._hypothesis = tail[len(agreed) :]
        new = done + agreed
        if new:
            self._committed = (self._committed + new)[-64:]
            self._committed_s = max(self._committed_s, new[-1].end_s)
        # Segments wholly inside the final part are done.
        while self._pending and self._pending[0].end_s is not None:
            if self._pending[0].end_s > window.final_until_s + 1e-6:
                break
            self._pending.pop(0)
            if not self._pending:
                self._hypothesis = []
        # Nothing before the open segment (or its last final word) can change now.
        if self._pending:
            self._settle(max(self._committed_s, self._pending[0].start_s))
        else:
            self._settle(window.final_until_s)
        return Commit(tuple(new), self._settled_s, not self._pending)

    def _after_committed(self, words: Sequence[Word]) -> list[Word]:
        out = [w for w in words if w.end_s > self._committed_s + 0.02]
        # Whisper may re-emit the last committed words with shifted times: drop an
        # overlap of up to five words with what is already final.
        done = [_key(w.text) for w in self._committed[-5:]]
        for n in range(min(5, len(done), len(out)), 0, -1):
            if done[-n:] == [_key(w.text) for w in out[:n]]:
                return out[n:]
        return out

    def _settle(self, t: float) -> None:
        self._settled_s = max(self._settled_s, t)


def _inside(word: Word, segments: Sequence[tuple[float, float, float]]) -> Word | None:
    """The word clamped to the segment it overlaps most, or None in silence."""
    best: tuple[float, float, float] | None = None
    overlap = 0.0
    for seg in segments:
        o = min(word.end_s, seg[2]) - max(word.start_s, seg[0])
        if o > overlap:
            best, overlap = seg, o
    if best is None:
        return None
    # Whisper stretches a first word over the padding before the voice starts.
    start = min(max(word.start_s, best[1]), word.end_s)
    return Word(word.text, start, word.end_s, word.probability)


def _agreed(previous: Sequence[Word], current: Sequence[Word]) -> list[Word]:
    """The longest prefix two consecutive decodes share (LocalAgreement-2)."""
    out: list[Word] = []
    for a, b in zip(previous, current, strict=False):
        if _key(a.text) != _key(b.text):
            break
        out.append(b)
    return out
