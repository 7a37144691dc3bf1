"""Typed messages handed from one stage to the next. Nothing reaches back."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

Image = npt.NDArray[np.uint8]
"""An RGB frame, shape (height, width, 3), dtype uint8, C-contiguous."""


Plane = npt.NDArray[np.uint8]
"""One 2-D plane of a picture (rows may be views with a stride wider than the row)."""


@dataclass(frozen=True, slots=True)
class Planes:
    """A decoded picture's 4:2:0 planes as the decoder gave them: luma ``y`` at full size,
    chroma ``u`` and ``v`` at half size each way, BT.601 limited-range levels (luma
    16-235), the levels the RGB conversion reads. The change measures read these, so a
    sample that reuses its scores is never converted to RGB."""

    y: Plane
    u: Plane
    v: Plane


CONVERSION_BIAS = -1.4
"""Levels the RGB conversion of ``Planes`` (swscale's) sits below the exact BT.601
limited-range formula (its rounding; fitted on decoded camera footage): what a measure
read from the planes adds to match the converted picture."""


class VideoFrame:
    """A decoded, sampled video frame.

    ``t_arrival`` is the wall clock (``time.time()``) when the daemon received the
    frame; ``media_time_s`` is its presentation time on the session's timeline, from 0,
    which only moves forward even where the source's timestamps restart or jump.

    ``image`` is the RGB picture analysis sees. A decoder may hand the frame over with
    ``planes`` and ``convert`` instead: the conversion then runs on first use of
    ``image`` (by whichever thread reads it first) and is kept, so a sample no model
    looks at costs no conversion. Treat a frame as immutable.
    """

    __slots__ = (
        "_convert",
        "_image",
        "_size",
        "index",
        "media_time_s",
        "planes",
        "source_height",
        "source_time_s",
        "source_width",
        "stream_id",
        "t_arrival",
    )

    def __init__(
        self,
        stream_id: str,
        index: int,
        media_time_s: float,
        t_arrival: float,
        image: Image | None = None,
        source_width: int = 0,
        source_height: int = 0,
        source_time_s: float | None = None,
        *,
        planes: Planes | None = None,
        convert: Callable[[], Image] | None = None,
        size: tuple[int, int] | None = None,
    ) -> None:
        if image is None and (convert is None or size is None):
            raise ValueError("a VideoFrame needs an image, or convert with its size")
        self.stream_id = stream_id
        self.index = index
        self.media_time_s = media_time_s
        self.t_arrival = t_arrival
        # The decoded picture's size before it was scaled for analysis (0: the same).
        self.source_width = source_width
        self.source_height = source_height
        # The timestamp the source gave the frame, in seconds, before it was mapped onto
        # the session timeline (None: the source gave none).
        self.source_time_s = source_time_s
        self.planes = planes
        self._image = image
        self._convert = None if image is not None else convert
        self._size: tuple[int, int]
        if image is not None:
            self._size = (int(image.shape[1]), int(image.shape[0]))
        else:
            assert size is not None
            self._size = size

    def __repr__(self) -> str:
        return (
            f"VideoFrame(stream_id={self.stream_id!r}, index={self.index}, "
            f"media_time_s={self.media_time_s!r}, t_arrival={self.t_arrival!r})"
        )

    @property
    def image(self) -> Image:
        """The RGB picture, ``(height, width, 3)`` uint8, converted on first use."""
        image = self._image
        if image is not None:
            return image
        convert = self._convert
        if convert is None:  # another thread converted it meanwhile (image set first)
            image = self._image
            assert image is not None
            return image
        image = convert()
        self._image = image
        self._convert = None  # lets the decoder's frame go
        return image

    @property
    def converted(self) -> bool:
        """Whether ``image`` exists yet (False: it would be converted on first use)."""
        return self._image is not None

    @property
    def scale(self) -> tuple[float, float]:
        """Factors from analysis pixels to source pixels."""
        sx = self.source_width / self.width if self.source_width else 1.0
        sy = self.source_height / self.height if self.source_height else 1.0
        return sx, sy

    @property
    def width(self) -> int:
        return self._size[0]

    @property
    def height(self) -> int:
        return self._size[1]


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
