"""OCR's CPU budget, shared by all live streams and granted fairly. Pure (clock injected).

OCR costs 100-500 ms of CPU a pass; a stream whose picture keeps changing (gameplay)
is due at every ``ocr.fps`` tick, so without a cap a few such streams take the cores
the frame models need. ``OcrBudget`` holds OCR, all streams together, to ``rate`` CPU
seconds per second (``ocr.max_cpu`` times the cores) with the shared token bucket of
``livemod.budget``, and decides which stream's due pass may start:

- a due stream takes a place in a fair line (``FairQueue``): least recent OCR time
  first (decayed, ``half_life_s``), a stream whose last reading had a text hit or that
  had a recent policy hit (``flag``) weighted ahead; streams with neither (the lowest
  risk) come last, but as weights in a fair share, so a busy stream cannot starve a
  quiet one and a flagged one cannot starve the rest;
- a pass starts only when the bucket is not empty and the stream is the head of the
  line; the others are refused (the stage counts them ``budget``) and keep their place;
- no frames queue: a refused stream asks again at its next sample; a place is dropped
  when its stream stops asking for ``stale_s`` (its picture settled, it paused).

``rate`` None: no cap (``ocr.max_cpu: 0``, and ``livemod scan``, which awaits every
reading through ``OcrStage.analyze`` and never asks the budget).
"""

from __future__ import annotations

import time

from livemod.budget import Clock, CpuBudget, FairQueue


class OcrBudget:
    """CPU seconds per second for OCR, all streams, and whose due pass may start."""

    def __init__(
        self,
        rate: float | None,
        *,
        burst_s: float = 2.0,
        half_life_s: float = 10.0,
        hit_s: float = 30.0,
        stale_s: float = 2.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self.bucket = CpuBudget(rate, burst_s=burst_s, clock=clock)
        self._line: FairQueue[str] = FairQueue(
            1 << 30, half_life_s=half_life_s, flag_s=hit_s, clock=clock
        )
        self._clock = clock
        self._hit_s = hit_s
        self._stale_s = stale_s
        self._asked: dict[str, float] = {}
        self._text_until: dict[str, float] = {}

    @property
    def rate(self) -> float | None:
        return self.bucket.rate

    def try_start(self, stream_id: str) -> bool:
        """Whether ``stream_id``'s due pass may start now; when not, it keeps its place."""
        if self.bucket.rate is None:
            return True
        now = self._clock()
        self._asked[stream_id] = now
        for sid, seen in list(self._asked.items()):
            if now - seen > self._stale_s:
                del self._asked[sid]
                self._line.leave(sid)
        urgent = self._text_until.get(stream_id, float("-inf")) > now
        self._line.push(stream_id, urgent=urgent)
        if self.bucket.wait_s() > 0 or self._line.peek() != stream_id:
            return False
        self._line.leave(stream_id)
        del self._asked[stream_id]
        return True

    def charge(self, stream_id: str, cpu_s: float) -> None:
        """A pass of ``stream_id`` used ``cpu_s`` CPU seconds."""
        self.bucket.charge(cpu_s)
        self._line.charge(stream_id, cpu_s)

    def text_hit(self, stream_id: str) -> None:
        """The stream's reading had a text policy hit: ahead in line for ``hit_s``."""
        self._text_until[stream_id] = self._clock() + self._hit_s

    def flag(self, stream_id: str) -> None:
        """An action started on the stream (the stage hears of vision and OCR ones):
        ahead in line for ``hit_s``."""
        self._line.flag(stream_id)

    def leave(self, stream_id: str) -> None:
        """The stream is no longer due (its picture settled): it gives up its place."""
        self._line.leave(stream_id)
        self._asked.pop(stream_id, None)

    def forget(self, stream_id: str) -> None:
        self._line.remove(stream_id)
        self._asked.pop(stream_id, None)
        self._text_until.pop(stream_id, None)

    def usage(self, stream_id: str) -> float:
        """The stream's recent (decayed) OCR CPU seconds."""
        return self._line.usage(stream_id)

    @property
    def waiting(self) -> int:
        return len(self._line)
