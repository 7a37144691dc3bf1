"""Source timestamps onto one monotonic session timeline.

Encoders that reconnect, concatenated MPEG-TS and the 33-bit MPEG-TS wrap (every
26.5 h) make a source's timestamps restart or jump. Everything downstream keys on
media time and assumes it only moves forward (the fps gate, the vote, the frame and
audio rings, the speech windows): fed raw timestamps, the gate refused every frame
after a restart until the new timestamps caught up with the old ones.

Pure: no clock, no I/O. The decode thread feeds each track's timestamps in the order
it decodes them and gets session times back; jumps are reported to ``on_jump``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

MPEGTS_WRAP_S = 2**33 / 90_000
"""The period of MPEG-TS timestamps (33 bits at 90 kHz): about 26.5 hours."""

JumpKind = Literal["backward", "forward", "wrap"]


@dataclass(frozen=True, slots=True)
class Jump:
    """A discontinuity in one track's source timestamps, and where it was mapped."""

    kind: JumpKind
    track: str
    from_s: float
    """The track's previous source timestamp."""
    to_s: float
    """The source timestamp after the jump."""
    session_s: float
    """The session time ``to_s`` was mapped to."""


@dataclass(slots=True)
class _Run:
    """A stretch of continuous source time: ``session = source + offset_s``."""

    offset_s: float
    last_source_s: float


@dataclass(slots=True)
class _Track:
    run: int
    last_source_s: float
    last_session_s: float


class Timeline:
    """Maps the source timestamps of one source's tracks onto one session clock.

    Within a continuous run the session time advances exactly as the source time
    does. A track's step backwards, or forwards by more than ``max_jump_s``, starts
    a new run that continues from the latest session time of any track plus
    ``interval_s`` (one nominal frame); an MPEG-TS wrap continues exactly instead.
    Tracks share runs, so audio and video stay aligned: a track that jumps adopts
    the run another track already started when its new timestamp fits that run.
    """

    def __init__(
        self,
        max_jump_s: float,
        interval_s: float,
        *,
        origin_s: float | None = None,
        offset_s: float = 0.0,
        on_jump: Callable[[Jump], None] | None = None,
    ) -> None:
        if max_jump_s <= 0 or interval_s <= 0:
            raise ValueError("max_jump_s and interval_s must be positive")
        self._max_jump = max_jump_s
        self._interval = interval_s
        self._offset = offset_s
        self._on_jump = on_jump
        self._runs: list[_Run] = []
        if origin_s is not None:
            self._runs.append(_Run(offset_s - origin_s, origin_s))
        self._tracks: dict[str, _Track] = {}
        self.head_s = offset_s
        """The latest session time handed out, any track."""
        self.jumps = 0

    def map(self, source_s: float, track: str = "video") -> float:
        """The session time of ``source_s``, the next timestamp of ``track``."""
        state = self._tracks.get(track)
        if state is None:
            state = _Track(self._join(source_s), source_s, float("-inf"))
            self._tracks[track] = state
        else:
            delta = source_s - state.last_source_s
            # A step too small to move the session clock (lost to rounding) repeats the
            # last timestamp: it is rejoined like an equal one, so time still increases.
            if source_s + self._runs[state.run].offset_s <= state.last_session_s:
                delta = min(delta, 0.0)
            if not 0 < delta <= self._max_jump:
                state.run = self._rejoin(state, source_s, delta, track)
        run = self._runs[state.run]
        session_s = source_s + run.offset_s
        run.last_source_s = max(run.last_source_s, source_s)
        state.last_source_s, state.last_session_s = source_s, session_s
        self.head_s = max(self.head_s, session_s)
        return session_s

    def _fitting(self, source_s: float, after: int) -> int | None:
        """The first run after ``after`` that ``source_s`` continues, if any. The
        oldest first: every track goes through the same jumps in the same order."""
        for index in range(after + 1, len(self._runs)):
            if abs(source_s - self._runs[index].last_source_s) <= self._max_jump:
                return index
        return None

    def _join(self, source_s: float) -> int:
        """The run a track's first timestamp belongs to."""
        if not self._runs:
            # No origin given: the first timestamp seen is the session's start.
            self._runs.append(_Run(self._offset - source_s, source_s))
        index = self._fitting(source_s, -1)
        return len(self._runs) - 1 if index is None else index

    def _rejoin(self, state: _Track, source_s: float, delta: float, track: str) -> int:
        """The run a track continues in after a discontinuity of its own."""
        index = self._fitting(source_s, state.run)
        if index is not None:
            # Another track saw the same jump first: share its run, so what played
            # together stays together. Where this track's last frames (late out of the
            # decoder) reached past the run's start, the run moves later for both.
            run = self._runs[index]
            run.offset_s = max(run.offset_s, state.last_session_s + self._interval - source_s)
            return index
        kind: JumpKind
        if delta < 0 and 0 < delta + MPEGTS_WRAP_S <= self._max_jump:
            # The wrap loses no time: continue exactly where the source would be.
            kind, offset = "wrap", self._runs[state.run].offset_s + MPEGTS_WRAP_S
        else:
            kind = "backward" if delta <= 0 else "forward"
            offset = self.head_s + self._interval - source_s
        self._runs.append(_Run(offset, source_s))
        self.jumps += 1
        if self._on_jump is not None:
            self._on_jump(Jump(kind, track, state.last_source_s, source_s, source_s + offset))
        # Runs every track has left behind are never looked at again.
        done = min(t.run for t in self._tracks.values())
        if done:
            del self._runs[:done]
            for t in self._tracks.values():
                t.run -= done
        return len(self._runs) - 1
