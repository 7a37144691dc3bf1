"""The model workers' pool: jobs a sample waits on first, work beside the streams after
them, but never starved (a fake clock stamps the jobs; the worker threads are real)."""

from __future__ import annotations

import threading
from concurrent.futures import CancelledError

import pytest

from livemod.pipeline.pool import PriorityPool


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def blocked(pool: PriorityPool) -> threading.Event:
    """Occupy the pool's one worker until the returned event is set."""
    release = threading.Event()
    started = threading.Event()

    def hold() -> None:
        started.set()
        release.wait(5.0)

    pool.submit(hold)
    assert started.wait(5.0)
    return release


def test_beside_work_waits_behind_sample_jobs_up_to_its_handicap() -> None:
    clock = Clock()
    pool = PriorityPool(1, "test-pool", handicap_s=0.5, clock=clock)
    order: list[str] = []
    try:
        release = blocked(pool)
        done = [pool.later.submit(order.append, "refresh")]  # stamped 0.0 + 0.5
        clock.now = 0.2
        done.append(pool.submit(order.append, "sample at 0.2"))
        clock.now = 0.4
        done.append(pool.submit(order.append, "sample at 0.4"))
        clock.now = 0.7
        done.append(pool.submit(order.append, "sample at 0.7"))
        release.set()
        for future in done:
            future.result(5.0)
        # Samples that came before the refresh's handicap ran out go first; later ones
        # wait for it: the refresh is never starved.
        assert order == ["sample at 0.2", "sample at 0.4", "refresh", "sample at 0.7"]
    finally:
        pool.shutdown()


def test_sample_jobs_run_in_the_order_they_came_and_errors_reach_the_caller() -> None:
    pool = PriorityPool(2, "test-pool", handicap_s=0.5)
    try:
        assert [pool.submit(pow, 2, n).result(5.0) for n in range(5)] == [1, 2, 4, 8, 16]
        with pytest.raises(ZeroDivisionError):
            pool.submit(divmod, 1, 0).result(5.0)
        names = pool.submit(lambda: threading.current_thread().name).result(5.0)
        assert names.startswith("test-pool_")
    finally:
        pool.shutdown()


def test_shutdown_cancels_queued_jobs_and_refuses_new_ones() -> None:
    pool = PriorityPool(1, "test-pool", handicap_s=0.5)
    release = blocked(pool)
    queued = pool.later.submit(print, "never")
    assert pool.queued() == 1
    release.set()
    pool.shutdown(cancel_futures=True)
    with pytest.raises(CancelledError):
        queued.result(5.0)
    with pytest.raises(RuntimeError):
        pool.submit(print, "too late")
