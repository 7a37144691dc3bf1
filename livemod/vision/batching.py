"""Cross-stream micro-batching: frames from every stream share one inference call.

A pure collector decides when a batch is due (full, or its oldest item has waited
``max_wait_s``); a thin asyncio shell runs due batches on the inference executor and
routes each result back to the stream that asked. A batch that fails fails only the
frames in it. With ``max_batch=1`` (the CPU default) every item is due at once, so
the batcher adds no wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Generic, TypeVar

from livemod import metrics

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    max_batch: int = 1
    max_wait_s: float = 0.0

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        if self.max_wait_s < 0:
            raise ValueError("max_wait_s must be >= 0")


class BatchCollector(Generic[T]):
    """Pure: items in with the time they arrived, batches out. No clock inside."""

    def __init__(self, policy: BatchPolicy) -> None:
        self._policy = policy
        self._items: list[T] = []
        self._first_at: float | None = None

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: T, now: float) -> None:
        if not self._items:
            self._first_at = now
        self._items.append(item)

    def deadline(self) -> float | None:
        """When the pending batch becomes due by waiting (None when empty)."""
        if self._first_at is None:
            return None
        return self._first_at + self._policy.max_wait_s

    def due(self, now: float) -> bool:
        if not self._items:
            return False
        if len(self._items) >= self._policy.max_batch:
            return True
        deadline = self.deadline()
        return deadline is not None and now >= deadline

    def take(self) -> list[T]:
        """The next batch, oldest first, at most ``max_batch`` items."""
        batch = self._items[: self._policy.max_batch]
        self._items = self._items[self._policy.max_batch :]
        # What remains arrived after the batch's first item; keeping that item's
        # start time flushes it sooner, never later, than its own wait would.
        if not self._items:
            self._first_at = None
        return batch


@dataclass(eq=False, slots=True)
class _Pending(Generic[T, R]):
    item: T
    future: asyncio.Future[R]


class MicroBatcher(Generic[T, R]):
    """Runs ``fn(batch) -> results`` on ``executor`` for batches of submitted items."""

    def __init__(
        self,
        name: str,
        fn: Callable[[Sequence[T]], list[R]],
        executor: Executor,
        policy: BatchPolicy,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._name = name
        self._fn = fn
        self._executor = executor
        self._policy = policy
        self._collector: BatchCollector[_Pending[T, R]] = BatchCollector(policy)
        self._clock = clock
        self._timer: asyncio.TimerHandle | None = None
        self._inflight: set[asyncio.Task[None]] = set()

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        pending: _Pending[T, R] = _Pending(item, loop.create_future())
        self._collector.add(pending, self._now())
        self._flush_due()
        return await pending.future

    def _flush_due(self) -> None:
        now = self._now()
        while self._collector.due(now):
            self._launch(self._collector.take())
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self._collector.deadline()
        if deadline is not None:
            loop = asyncio.get_running_loop()
            # An injected (test) clock does not follow the loop's: poll it instead.
            delay = max(0.0, deadline - now) if self._clock is None else 0.001
            self._timer = loop.call_later(delay, self._flush_timer)

    def _flush_timer(self) -> None:
        self._timer = None
        now = self._now()
        deadline = self._collector.deadline()
        if deadline is not None and now < deadline:
            # An injected clock has not reached the deadline yet: check again soon.
            self._timer = asyncio.get_running_loop().call_later(0.001, self._flush_timer)
            return
        if len(self._collector):
            self._launch(self._collector.take())
        self._flush_due()

    def _launch(self, batch: list[_Pending[T, R]]) -> None:
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _run(self, batch: list[_Pending[T, R]]) -> None:
        metrics.BATCH_SIZE.labels(self._name).observe(len(batch))
        items = [p.item for p in batch]
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self._executor, self._fn, items)
            if len(results) != len(items):
                raise RuntimeError(
                    f"{self._name} returned {len(results)} results for {len(items)} items"
                )
        except Exception as exc:
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        for p, result in zip(batch, results, strict=True):
            if not p.future.done():
                p.future.set_result(result)

    async def aclose(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
