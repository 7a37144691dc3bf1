"""Adaptive per-stream sampling rates and overload shedding.

A pure controller (:class:`RateController`: stream views and the wall clock in, a
rate per stream out) and its asyncio shell (:class:`RateLoop`), which revises every
session's sampler every ``capacity.rates.interval_s``.

- A *suspicious* stream (a recent hit) is left to its sampler's boost (``boost_fps``).
- A stream in its first ``sampling.boost_initial_s`` keeps the first-minute boost.
- A *calm* stream (no hit for ``calm_after_s``) drops to ``calm_fps``.
- Under overload (the worst analysis lag above ``overload_lag_s``, or new drops), the
  lowest-risk streams are *shed* first: ``shed_fps``, first-minute boost suspended, one
  tranche more per revision while the overload lasts, one tranche less per revision once
  the lag is back under half the limit. A suspicious stream is never shed. A shed
  stream's gate also waits ``shed_reuse_scale`` times longer before refreshing scores
  only because of their age: with gating most model work comes by the clock (refreshes)
  and by the content (cuts), not by the sample.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from livemod import metrics
from livemod.config import RatesConfig, SamplingConfig
from livemod.pipeline.session import Session
from livemod.policy.vote import VoteEngine

log = logging.getLogger(__name__)

RateState = Literal["boosted", "normal", "calm", "shed"]
SHED_TRANCHE = 0.25
"""Fraction of the sheddable streams shed (or restored) per revision, at least one."""


@dataclass(frozen=True, slots=True)
class RatePolicy:
    """The ``capacity.rates`` and ``sampling`` settings the controller needs."""

    fps: float = 4.0
    calm_fps: float = 2.0
    calm_after_s: float = 10.0
    shed_fps: float = 2.0
    overload_lag_s: float = 0.75

    @classmethod
    def of(cls, rates: RatesConfig, sampling: SamplingConfig) -> RatePolicy:
        return cls(
            fps=sampling.fps,
            calm_fps=min(rates.calm_fps, sampling.fps),
            calm_after_s=rates.calm_after_s,
            shed_fps=min(rates.shed_fps, rates.calm_fps, sampling.fps),
            overload_lag_s=rates.overload_lag_s,
        )


@dataclass(frozen=True, slots=True)
class StreamView:
    """What the controller knows of one live stream at a revision."""

    id: str
    risk: float
    """Highest vote level of any category (0-1)."""
    suspicious: bool
    initial: bool
    """In its first-minute boost."""
    lag_s: float
    """Arrival to analysis done of its latest sample."""


@dataclass(frozen=True, slots=True)
class Rate:
    fps: float
    state: RateState

    @property
    def shed(self) -> bool:
        return self.state == "shed"


class RateController:
    """Decides each stream's base rate. The clock is passed in (``now``)."""

    def __init__(self, policy: RatePolicy) -> None:
        self._policy = policy
        self._hot_at: dict[str, float] = {}
        self._seen_at: dict[str, float] = {}
        self._shed = 0
        self._drops = 0

    @property
    def shedding(self) -> int:
        """How many streams are shed now."""
        return self._shed

    def plan(self, streams: Sequence[StreamView], now: float, drops: int = 0) -> dict[str, Rate]:
        """The rate of every stream; ``drops``: the total of stale samples dropped so far."""
        p = self._policy
        for s in streams:
            self._seen_at.setdefault(s.id, now)
            if s.suspicious:
                self._hot_at[s.id] = now
        live = {s.id for s in streams}
        for gone in [k for k in self._seen_at if k not in live]:
            self._seen_at.pop(gone, None)
            self._hot_at.pop(gone, None)
        worst = max((s.lag_s for s in streams), default=0.0)
        new_drops = drops > self._drops
        self._drops = drops
        sheddable = sorted(
            (s for s in streams if not s.suspicious),
            key=lambda s: (s.risk, -self._quiet_s(s.id, now)),
        )
        tranche = max(1, math.ceil(SHED_TRANCHE * len(sheddable)))
        if worst > p.overload_lag_s or new_drops:
            self._shed += tranche
        elif worst < 0.5 * p.overload_lag_s:
            self._shed -= tranche
        self._shed = max(0, min(self._shed, len(sheddable)))
        shed = {s.id for s in sheddable[: self._shed]}
        out: dict[str, Rate] = {}
        for s in streams:
            if s.id in shed:
                out[s.id] = Rate(p.shed_fps, "shed")
            elif s.suspicious or s.initial:
                # The sampler's own boost (suspicious, first minute) runs on top of fps.
                out[s.id] = Rate(p.fps, "boosted")
            elif self._quiet_s(s.id, now) >= p.calm_after_s:
                out[s.id] = Rate(p.calm_fps, "calm")
            else:
                out[s.id] = Rate(p.fps, "normal")
        return out

    def _quiet_s(self, stream_id: str, now: float) -> float:
        """Seconds since the stream's last hit (or since it was first seen)."""
        since = self._hot_at.get(stream_id, self._seen_at.get(stream_id, now))
        return now - since


class RateLoop:
    """Applies the controller's rates to the live sessions every ``interval_s``."""

    def __init__(
        self,
        sessions: Mapping[str, Session],
        engine: VoteEngine,
        rates: RatesConfig,
        sampling: SamplingConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._engine = engine
        self._interval = rates.interval_s
        self._shed_reuse_scale = rates.shed_reuse_scale
        self._controller = RateController(RatePolicy.of(rates, sampling))
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="livemod-rates")

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                self.revise()
            except Exception:  # a bug here must not stop moderation, only the adapting
                log.exception("rate revision failed")

    def revise(self) -> dict[str, Rate]:
        """One revision: views of the live sessions in, samplers adjusted."""
        live = [
            s for s in self._sessions.values() if s.status == "live" and not s.info.backpressure
        ]
        views = []
        drops = 0
        for s in live:
            key = s.info.key
            last = s.sampler.last_time
            views.append(
                StreamView(
                    id=s.info.id,
                    risk=max(self._engine.levels(key).values(), default=0.0),
                    suspicious=self._engine.suspicious(key),
                    initial=last is not None and s.sampler.in_initial_boost(last),
                    lag_s=s.last_lag_s,
                )
            )
            drops += s.drops
        plan = self._controller.plan(views, self._clock(), drops)
        by_id = {s.info.id: s for s in live}
        for sid, rate in plan.items():
            session = by_id[sid]
            session.sampler.set_fps(rate.fps)
            session.sampler.hold_initial_boost(rate.shed)
            # The gated pipeline's work is mostly by time, not by sample: a shed stream
            # also refreshes its reused scores less often.
            session.stretch_reuse(self._shed_reuse_scale if rate.shed else 1.0)
            metrics.RATE_DECISIONS.labels(rate.state).inc()
        return plan
