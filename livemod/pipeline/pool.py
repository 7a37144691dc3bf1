"""The model workers: a thread pool that runs the most urgent job first.

Jobs from ``submit`` (a sample waits on them) run in the order they came. Jobs from the
``later`` view (work beside the streams: a refresh, a scheduled detector run) count as
submitted ``handicap_s`` after they were, so they run when no sample's job waits, and
once that much older than the sample jobs still waiting they take their turn anyway:
beside work is never starved, and delays a sample by the jobs already running at most.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

__all__ = ["PriorityPool"]

T = TypeVar("T")

_Job = tuple[float, int, "Future[Any]", Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class PriorityPool(Executor):
    """``workers`` threads named ``{name}_{i}``; ``submit`` urgent, ``later`` deferred."""

    def __init__(
        self,
        workers: int,
        name: str,
        handicap_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if workers < 1:
            raise ValueError("at least one worker")
        self.handicap_s = handicap_s
        self._clock = clock
        self._queue: list[_Job] = []
        self._cv = threading.Condition()
        self._order = itertools.count()
        self._shutdown = False
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}_{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()
        self.later = _Later(self)
        """The same workers, for jobs no sample waits on."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        return self._put(0.0, fn, args, kwargs)

    def _put(
        self, handicap_s: float, fn: Callable[..., T], args: tuple[Any, ...], kwargs: Any
    ) -> Future[T]:
        future: Future[T] = Future()
        with self._cv:
            if self._shutdown:
                raise RuntimeError("cannot schedule new jobs after shutdown")
            key = self._clock() + handicap_s
            heapq.heappush(self._queue, (key, next(self._order), future, fn, args, kwargs))
            self._cv.notify()
        return future

    def queued(self) -> int:
        """Jobs waiting for a worker."""
        with self._cv:
            return len(self._queue)

    def _work(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._shutdown:
                    self._cv.wait()
                if not self._queue:
                    return  # shut down, nothing left
                _, _, future, fn, args, kwargs = heapq.heappop(self._queue)
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:  # handed to the waiting caller
                future.set_exception(exc)
            else:
                future.set_result(result)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._cv:
            self._shutdown = True
            if cancel_futures:
                for job in self._queue:
                    job[2].cancel()
                self._queue.clear()
            self._cv.notify_all()
        if wait:
            for thread in self._threads:
                if thread is not threading.current_thread():
                    thread.join()


class _Later(Executor):
    """A view of a ``PriorityPool`` whose jobs carry its handicap."""

    def __init__(self, pool: PriorityPool) -> None:
        self._pool = pool

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        return self._pool._put(self._pool.handicap_s, fn, args, kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """The pool's own ``shutdown`` stops the workers."""
