"""What one Whisper call yields (words at media times) and the guard that filters it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Word:
    """One recognized word at media times (seconds in the stream)."""

    text: str
    start_s: float
    end_s: float
    probability: float = 1.0


@dataclass(frozen=True, slots=True)
class Decoded:
    """One Whisper call: the words kept and how many segments the guard rejected."""

    words: tuple[Word, ...]
    rejected: int
    seconds: float


@dataclass(frozen=True, slots=True)
class GuardOptions:
    """Hallucination guard: thresholds on Whisper's own segment statistics."""

    no_speech_max: float = 0.6
    """A segment more likely silence than speech is dropped."""
    compression_ratio_max: float = 2.4
    """A segment that compresses this well repeats itself (a hallucination loop)."""
    logprob_min: float = -1.5
    """A segment decoded with lower average log-probability is dropped."""

    def accepts(self, segment: Any) -> bool:
        return self.accepts_values(
            float(segment.no_speech_prob),
            float(segment.compression_ratio),
            float(segment.avg_logprob),
        )

    def accepts_values(
        self, no_speech_prob: float, compression_ratio: float, avg_logprob: float
    ) -> bool:
        return (
            no_speech_prob <= self.no_speech_max
            and compression_ratio <= self.compression_ratio_max
            and avg_logprob >= self.logprob_min
        )
