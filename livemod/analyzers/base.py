"""The contract every frame analyzer keeps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from livemod.messages import Image, Signal


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
