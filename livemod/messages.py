"""Typed messages handed from one stage to the next. Nothing reaches back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

Image = npt.NDArray[np.uint8]
"""An RGB frame, shape (height, width, 3), dtype uint8, C-contiguous."""


@dataclass(frozen=True, slots=True)
class VideoFrame:
    """A decoded, sampled video frame.

    ``t_arrival`` is the wall clock (``time.time()``) when the daemon received the
    frame; ``media_time_s`` is its presentation time on the session's timeline, from 0,
    which only moves forward even where the source's timestamps restart or jump.
    """

    stream_id: str
    index: int
    media_time_s: float
    t_arrival: float
    image: Image = field(repr=False, compare=False)
    source_width: int = 0
    source_height: int = 0
    """Size of the decoded picture before it was scaled for analysis (0: same)."""
    source_time_s: float | None = None
    """The timestamp the source gave the frame, in seconds, before it was mapped onto
    the session timeline (None: the source gave none)."""

    @property
    def scale(self) -> tuple[float, float]:
        """Factors from analysis pixels to source pixels."""
        sx = self.source_width / self.width if self.source_width else 1.0
        sy = self.source_height / self.height if self.source_height else 1.0
        return sx, sy

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])


AUDIO_RATE = 16_000
"""Sample rate of every decoded audio chunk (mono float32), what Whisper and Silero take."""

Samples = npt.NDArray[np.float32]
"""Mono PCM in -1..1 at ``AUDIO_RATE``."""


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """Decoded audio of one stream, resampled to 16 kHz mono float32.

    ``media_time_s`` is the presentation time of the first sample, on the same
    clock as the video frames; ``t_arrival`` the wall clock when its packet was read.
    """

    stream_id: str
    media_time_s: float
    t_arrival: float
    samples: Samples = field(repr=False, compare=False)

    @property
    def duration_s(self) -> float:
        return len(self.samples) / AUDIO_RATE

    @property
    def end_s(self) -> float:
        return self.media_time_s + self.duration_s


@dataclass(frozen=True, slots=True)
class AudioUnavailable:
    """The stream's audio cannot be moderated (no track, undecodable); video goes on."""

    stream_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Region:
    """A box in source pixels (top-left x, y, width, height)."""

    x: int
    y: int
    w: int
    h: int
    label: str
    score: float

    def as_dict(self) -> dict[str, object]:
        return {
            "x": self.x,
            "y": self.y,
            "w": self.w,
            "h": self.h,
            "label": self.label,
            "score": round(self.score, 4),
        }


@dataclass(frozen=True, slots=True)
class Signal:
    """One analyzer's opinion about one policy category for one sample.

    ``source`` names the analyzer (``vision:nudenet``, ``vision:opennsfw``, ``hash``).
    ``score`` is 0..1. ``regions`` is non-empty when the finding is local.
    """

    category: str
    score: float
    source: str
    label: str = ""
    regions: tuple[Region, ...] = ()


@dataclass(frozen=True, slots=True)
class FrameAnalysis:
    """Everything the analyzers said about one sampled frame."""

    frame: VideoFrame
    signals: tuple[Signal, ...]
    scores: dict[str, float]
    """Raw per-model scores kept for evidence (``opennsfw``, ``nudenet:<label>``,
    ``hash_distance``)."""
    analysis_ms: float
    t_analyzed: float


ActionName = Literal["warn", "blur", "mute", "pause", "end", "review"]
ActionState = Literal["start", "stop"]
Tier = Literal["low", "medium", "high"]


@dataclass(frozen=True, slots=True)
class Decision:
    """A change of a live action for one ``userId:roomId`` key and category."""

    key: str
    category: str
    action: ActionName
    state: ActionState
    confidence: float
    tier: Tier
    sources: tuple[str, ...]
    media_time_s: float
    t_trigger: float
    """Arrival time of the first sample that triggered this decision."""
    regions: tuple[Region, ...] = ()
    evidence_frame: VideoFrame | None = field(default=None, repr=False, compare=False)
    evidence_scores: dict[str, float] = field(default_factory=dict, compare=False)
    span_s: tuple[float, float] | None = None
    """Media times (start, end) of what was said, for speech actions."""
    source_time_s: float | None = None
    """The source's own timestamp of the triggering frame (video actions)."""
