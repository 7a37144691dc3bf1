"""The contract every frame analyzer keeps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from livemod.messages import Decision, Image, Signal, VideoFrame


@dataclass(frozen=True, slots=True)
class AnalyzerResult:
    """What one analyzer found in one image: policy signals and raw scores."""

    signals: tuple[Signal, ...] = ()
    scores: dict[str, float] = field(default_factory=dict)


class FrameAnalyzer(Protocol):
    """A blocking, thread-safe analyzer of RGB frames.

    ``analyze_batch`` is called from an executor thread, never from the event loop,
    and returns one result per image, in order.
    """

    name: str

    def analyze_batch(self, images: Sequence[Image]) -> list[AnalyzerResult]: ...


@dataclass(frozen=True, slots=True)
class StageEvidence:
    """What a stream stage keeps for an action it triggered: an annotated frame
    (for OCR, the text boxes drawn) and the text behind it."""

    image: Image | None
    text: str


class StreamStage(Protocol):
    """An analysis stage with per-stream state (OCR's gate and box memory).

    Unlike a ``FrameAnalyzer`` it sees the ``VideoFrame`` (stream id, media time),
    decides on the event loop whether to work, runs its blocking part off the loop,
    and returns regions in analysis pixels like any analyzer.
    """

    name: str

    async def analyze(self, frame: VideoFrame) -> AnalyzerResult: ...

    def evidence(self, stream_id: str, decision: Decision) -> StageEvidence | None:
        """The annotated evidence for a decision this stage's signals triggered."""
        ...

    def forget(self, stream_id: str) -> None:
        """Drop the state of a stream that ended."""
        ...

    def close(self) -> None: ...
