"""Committed words → text policy hits on the media clock, each judged once. Pure.

Whisper commits a stream's words piece by piece (LocalAgreement partials, then the
final of each utterance), and it often ends a piece that stopped mid-sentence with a
full stop: "We found out where you live." then "and we are coming for you tonight."
Judged as they come, the learned judge (which scores one sentence at a time) would see
only the second half. So the reader keeps the words of the current utterance, and at
the end of an utterance carries its last sentence (the previous window's tail) into the
next judgment when the next words follow within ``bridge_gap_s``; when the words
before the new piece end with a sentence stop, it also judges the two sentences as one
(the stop taken out). A hit is kept only if it covers a new word, and once: a hit
that overlaps one already counted with the same category and term (the same sentence
judged again as it grows, or joined to the next) is not counted again, and a kept hit
of the joined sentence replaces the hits of the same category inside it.

A learned-judge hit on a sentence still open (no stop after it, the utterance going on) is
held: the judge scores a sentence whole, and its first words may say what the rest unsays
("two years ago I tried to end my life" ... "and I'm so glad I'm still here"). The reader
judges the sentence again as it grows and counts the hit once the sentence closes (a stop,
or the end of the utterance) if it still stands, or once ``hold_max_s`` of speech has
followed it (``asr.judge_hold_s``; 0 acts at once). Word-list and pattern hits are not held.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from livemod.speech.words import Word
from livemod.text.judge import TextHit
from livemod.text.learned import TERM

CONTEXT_WORDS = 40
"""Words of the current utterance kept so a phrase committed in pieces still matches."""
TAIL_WORDS = 20
"""Most words of an ended utterance's last sentence carried into the next judgment."""
STOPS = ".!?;"
HOLD_MAX_S = 1.5
"""Longest run of further speech a judge hit on an open sentence waits for its stop, by
default. Measured on the blind set's hard negatives spoken as one stream
(benchmarks/text_policy.py, ``benign_stream``), where most false mutes came from a
sentence's first words."""

Evaluate = Callable[[str], list[TextHit]]


@dataclass(frozen=True, slots=True)
class SpokenHit:
    """A text policy hit placed on the media clock."""

    category: str
    score: float
    term: str
    start_s: float
    end_s: float
    snippet: str
    said_s: float | None = None
    """Where the words began when the vote's samples had to start later (``start_s``
    clamped to samples not yet decided); None: at ``start_s``."""

    @property
    def said_from_s(self) -> float:
        """Media time the flagged words began: the start of a mute's span."""
        return self.start_s if self.said_s is None else self.said_s


class TranscriptReader:
    """One stream's committed words, judged as they come. Not thread-safe."""

    def __init__(
        self, evaluate: Evaluate, *, bridge_gap_s: float = 2.0, hold_max_s: float = HOLD_MAX_S
    ) -> None:
        self._evaluate = evaluate
        self.bridge_gap_s = bridge_gap_s
        self.hold_max_s = hold_max_s
        self._context: list[Word] = []
        self._carried = False
        """The context holds only the last sentence of an ended utterance."""
        self._counted: dict[tuple[str, str], float] = {}
        """Per (category, term), the end of the latest hit counted."""
        self._held_from: int | None = None
        """First word (in the context) of a judge hit held for its sentence's stop."""
        self._hold_since: float | None = None
        """Media time of the latest word when the current hold began."""

    def end_utterance(self) -> None:
        """The utterance ended: keep only its last sentence, for the next words."""
        self._release()
        ctx = self._context
        stops = [i for i, w in enumerate(ctx[:-1]) if _ends_sentence(w)]
        start = stops[-1] + 1 if stops else 0
        self._context = ctx[max(start, len(ctx) - TAIL_WORDS) :]
        self._carried = bool(self._context)

    def read(self, words: Sequence[Word], *, final: bool = False) -> list[SpokenHit]:
        """Judge newly committed words (blocking: the policy may run a model); ``final``:
        they end the utterance (with no words: judge again what a hold kept back)."""
        if not words:
            if not final or self._held_from is None:
                return []
            first_new = self._held_from
        else:
            if self._carried and words[0].start_s - self._context[-1].end_s > self.bridge_gap_s:
                self._context = []  # a new utterance after a pause: nothing to join
                self._release()
            self._carried = False
            first_new = len(self._context)
            self._context.extend(words)
        ctx = self._context
        found = _spans(ctx, self._evaluate, first_new)
        b = first_new - 1
        if b >= 0 and _ends_sentence(ctx[b]):
            # The previous piece ended a sentence where a window ended: judge its last
            # sentence and the new words' first as one, keep what crosses the boundary.
            joined = [*ctx[:b], _unstopped(ctx[b]), *ctx[b + 1 :]]
            bridged = [
                f
                for f in _spans(joined, self._evaluate, first_new)
                if f[1] <= b < f[2] and not self._repeats(f[0], ctx[f[1]])
            ]
            for hit, lo, hi in bridged:
                found = [
                    f
                    for f in found
                    if not (f[0].category == hit.category and lo <= f[1] and f[2] <= hi)
                ]
            found += bridged
            # A hit that starts at the new piece, right after a stop a window put there
            # (the piece goes on in lower case, with no pause), covers the sentence
            # before it too: the threat began there even when the two halves, judged as
            # one, score lower than the second alone.
            if _continues(ctx[b], ctx[first_new]):
                head = _sentence_start(ctx, b)
                found = [
                    (h, head if lo == first_new and not self._repeats(h, ctx[head]) else lo, hi)
                    for h, lo, hi in found
                ]
        found = self._hold(ctx, found, final)
        out: list[SpokenHit] = []
        for hit, lo, hi in found:
            ws = ctx[lo : hi + 1]
            if self._repeats(hit, ws[0]):
                continue
            self._counted[(hit.category, hit.term)] = ws[-1].end_s
            snippet = " ".join(w.text for w in ctx[max(0, lo - 6) : hi + 7])
            out.append(
                SpokenHit(hit.category, hit.score, hit.term, ws[0].start_s, ws[-1].end_s, snippet)
            )
        if len(ctx) > CONTEXT_WORDS:
            self._context = ctx[-CONTEXT_WORDS:]
            if self._held_from is not None:
                self._held_from = max(0, self._held_from - (len(ctx) - CONTEXT_WORDS))
        return out

    def _hold(
        self, ctx: Sequence[Word], found: list[tuple[TextHit, int, int]], final: bool
    ) -> list[tuple[TextHit, int, int]]:
        """``found`` less the judge hits held for their sentence's stop (module docstring)."""
        held = [] if final else [f for f in found if f[0].term == TERM and not _closed(ctx, f[2])]
        if not held:
            self._release()
            return found
        if self._hold_since is None:
            self._hold_since = ctx[-1].end_s
        if ctx[-1].end_s - self._hold_since >= self.hold_max_s:
            self._release()
            return found
        self._held_from = min(lo for _, lo, _ in held)
        return [f for f in found if f not in held]

    @property
    def holding(self) -> bool:
        """A judge hit waits for its sentence's end (``read(..., final=True)`` settles it)."""
        return self._held_from is not None

    def _release(self) -> None:
        self._held_from = self._hold_since = None

    def _repeats(self, hit: TextHit, first: Word) -> bool:
        """The hit overlaps one counted before with the same category and term."""
        return first.start_s < self._counted.get((hit.category, hit.term), float("-inf"))


def _closed(words: Sequence[Word], last: int) -> bool:
    """Whether a stop ends the sentence of ``words[last]`` (at it or after it)."""
    return any(_ends_sentence(w) for w in words[last:])


def _ends_sentence(word: Word) -> bool:
    text = word.text.rstrip()
    return bool(text) and text[-1] in STOPS


CONTINUATION_GAP_S = 0.5
"""Longest pause between a stop and the next word for a sentence still going on."""


def _continues(stop: Word, nxt: Word) -> bool:
    """Whether the word after a stop carries on the same sentence: it follows without a
    pause and starts in lower case (Whisper capitalises a sentence it starts)."""
    text = nxt.text.lstrip()
    return nxt.start_s - stop.end_s <= CONTINUATION_GAP_S and text[:1].islower()


def _sentence_start(words: Sequence[Word], last: int) -> int:
    """Index of the first word of the sentence that ends at ``words[last]``."""
    i = last
    while i > 0 and not _ends_sentence(words[i - 1]):
        i -= 1
    return i


def _unstopped(word: Word) -> Word:
    return Word(word.text.rstrip().rstrip(STOPS), word.start_s, word.end_s, word.probability)


def _spans(
    words: Sequence[Word], evaluate: Evaluate, first_new: int
) -> list[tuple[TextHit, int, int]]:
    """The policy's hits on the words, as (hit, first word, last word), keeping those
    that cover a new word (from ``first_new``)."""
    text, offsets = joined(words)
    out = []
    for hit in evaluate(text):
        idx = [i for i, (a, b) in enumerate(offsets) if a < hit.end and b > hit.start]
        if idx and idx[-1] >= first_new:
            out.append((hit, idx[0], idx[-1]))
    return out


def joined(words: Sequence[Word]) -> tuple[str, list[tuple[int, int]]]:
    """The words as one text, with each word's character span in it."""
    parts: list[str] = []
    offsets: list[tuple[int, int]] = []
    pos = 0
    for w in words:
        offsets.append((pos, pos + len(w.text)))
        parts.append(w.text)
        pos += len(w.text) + 1
    return " ".join(parts), offsets
