"""An optional listener on the decode thread that sees every decoded frame.

The sampler admits a few frames a second for analysis; a tap (the moderated relay)
gets all of them, video and audio, as PyAV frames with their session media time,
before any sampling. Called on the decode thread: it must be quick and must not
block (the relay only appends to its delay line).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Tappable(Protocol):
    """A source that can hand every decoded frame to a tap (set before ``run``)."""

    def set_tap(self, tap: FrameTap) -> None: ...


class FrameTap(Protocol):
    def video(self, frame: Any, media_time_s: float) -> None:
        """Every decoded ``av.VideoFrame``, in decode order."""
        ...

    def audio(self, frame: Any, media_time_s: float) -> None:
        """Every decoded ``av.AudioFrame`` of the first audio track."""
        ...
