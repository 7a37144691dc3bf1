"""The contract between a Session and whatever feeds it frames.

``AvSource`` (pull any URL FFmpeg opens) is the default; push ingests such as
WHIP provide their own source through a :data:`SourceFactory`. A source runs on
its own thread: ``run`` blocks until the media ends, fails or ``stop`` is called,
and hands every frame the sampler admitted to ``deliver`` (thread-safe).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from livemod.ingest.audio import AudioSink
from livemod.ingest.av_source import SourceEnd
from livemod.messages import VideoFrame
from livemod.sampling import FrameSampler

Deliver = Callable[[VideoFrame], None]


class FrameSource(Protocol):
    """What a Session runs on its source thread."""

    def run(self) -> SourceEnd:
        """Blocking: produce frames until the end; say how it ended."""
        ...

    def stop(self) -> None:
        """Ask ``run`` to return soon. Thread-safe and idempotent."""
        ...


SourceFactory = Callable[[str, FrameSampler, Deliver, AudioSink | None], FrameSource]
"""Builds a session's source from its stream id, its fps gate, its thread-safe
frame hand-off and, when the session moderates speech, its audio hand-off."""
