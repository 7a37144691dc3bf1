from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from livemod.vision.batching import BatchCollector, BatchPolicy, MicroBatcher


def test_collector_flushes_when_full() -> None:
    c: BatchCollector[int] = BatchCollector(BatchPolicy(max_batch=3, max_wait_s=1.0))
    for i in range(2):
        c.add(i, now=0.0)
    assert not c.due(0.5)
    c.add(2, now=0.6)
    assert c.due(0.6)
    assert c.take() == [0, 1, 2] and len(c) == 0 and c.deadline() is None


def test_collector_flushes_after_wait() -> None:
    c: BatchCollector[str] = BatchCollector(BatchPolicy(max_batch=8, max_wait_s=0.01))
    c.add("a", now=10.0)
    assert c.deadline() == pytest.approx(10.01)
    assert not c.due(10.005)
    assert c.due(10.01)
    assert c.take() == ["a"]


def test_collector_keeps_order_and_splits_oversized() -> None:
    c: BatchCollector[int] = BatchCollector(BatchPolicy(max_batch=2, max_wait_s=0.2))
    for i in range(5):
        c.add(i, now=float(i))
    batches = []
    while c.due(100.0):
        batches.append(c.take())
    assert batches == [[0, 1], [2, 3], [4]]


def test_batch_of_one_is_always_due() -> None:
    c: BatchCollector[int] = BatchCollector(BatchPolicy())
    c.add(1, now=0.0)
    assert c.due(0.0)


@pytest.mark.parametrize("bad", [{"max_batch": 0}, {"max_wait_s": -1.0}])
def test_policy_validation(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BatchPolicy(**bad)  # type: ignore[arg-type]


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


async def test_batcher_routes_results_to_each_caller() -> None:
    calls: list[list[int]] = []

    def double(items: Sequence[int]) -> list[int]:
        calls.append(list(items))
        return [2 * i for i in items]

    with ThreadPoolExecutor(1) as pool:
        clock = FakeClock()
        b: MicroBatcher[int, int] = MicroBatcher(
            "t", double, pool, BatchPolicy(max_batch=4, max_wait_s=10.0), clock
        )
        results = await asyncio.gather(*(b.submit(i) for i in range(4)))
        assert results == [0, 2, 4, 6]
        assert calls == [[0, 1, 2, 3]]
        # A lone item waits for the deadline of the fake clock, then flushes.
        task = asyncio.ensure_future(b.submit(7))
        await asyncio.sleep(0.01)
        assert not task.done()
        clock.t = 10.0
        assert await asyncio.wait_for(task, 1.0) == 14
        await b.aclose()


async def test_failing_batch_fails_only_its_items() -> None:
    def flaky(items: Sequence[int]) -> list[int]:
        if 13 in items:
            raise RuntimeError("model crashed")
        return list(items)

    with ThreadPoolExecutor(1) as pool:
        b: MicroBatcher[int, int] = MicroBatcher(
            "t", flaky, pool, BatchPolicy(max_batch=2, max_wait_s=0.2)
        )
        good = b.submit(1), b.submit(2)
        bad = b.submit(13), b.submit(3)
        out = await asyncio.gather(*good, *bad, return_exceptions=True)
        assert out[:2] == [1, 2]
        assert all(isinstance(e, RuntimeError) for e in out[2:])
        assert await b.submit(5) == 5
        await b.aclose()


async def test_wrong_result_count_is_an_error() -> None:
    with ThreadPoolExecutor(1) as pool:
        b: MicroBatcher[int, int] = MicroBatcher("t", lambda xs: [], pool, BatchPolicy())
        with pytest.raises(RuntimeError, match="0 results for 1 items"):
            await b.submit(1)
