"""CPU seconds per pipeline part, from the kernel's per-thread counts."""

from __future__ import annotations

import threading
import time

from prometheus_client import generate_latest

from livemod.metrics import (
    PARTS,
    THREADS,
    ThreadCpu,
    parse_stat,
    part_of,
    retire_current_thread,
)


def test_threads_are_put_in_their_part() -> None:
    assert part_of("livemod-infer_1") == "models"
    assert part_of("livemod-ocr_0") == "ocr"
    assert part_of("livemod-asr-0") == "speech"
    assert part_of("av-a1b2") == part_of("decode-a1b2") == part_of("av:h264:df0") == "ingest"
    assert part_of("relay-s1") == "relay" and part_of("livemod-store_0") == "store"
    assert part_of("MainThread") == "event_loop" and part_of("asyncio_0") == "other"


def test_stat_fields_are_read_after_the_name() -> None:
    # A thread's name may hold spaces and parentheses: fields count from the last ")".
    line = "42 (x) (y z)) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0 5 6 7"
    assert parse_stat(line, 100.0) == 3.0


def spin(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_a_thread_counts_in_its_part_and_stays_counted_after_it_ends() -> None:
    cpu = ThreadCpu()
    before = cpu.parts()
    assert set(before) == set(PARTS)
    worker = threading.Thread(target=spin, args=(0.6,), name="livemod-infer_9")
    worker.start()
    time.sleep(0.1)
    during = cpu.parts()
    time.sleep(0.1)
    also = cpu.parts()
    worker.join()
    after = cpu.parts()
    assert also["models"] > before["models"]
    # The ended thread keeps the seconds last read: a counter never goes down.
    assert all(after[p] >= also[p] >= during[p] >= before[p] for p in PARTS)
    assert after["models"] == cpu.parts()["models"]


def test_a_thread_that_retires_counts_all_its_seconds_once() -> None:
    before = THREADS.parts()

    def work() -> None:
        spin(0.3)
        retire_current_thread()

    worker = threading.Thread(target=work, name="av-test")
    worker.start()
    time.sleep(0.05)
    THREADS.parts()  # seen while it runs: counted once, not again when it is gone
    worker.join()
    gained = [THREADS.parts()["ingest"] - before["ingest"] for _ in range(2)]
    assert 0.29 <= gained[0] == gained[1] < 0.45


def test_the_daemon_exports_the_parts() -> None:
    import livemod.metrics  # noqa: F401  (registers the collector)

    text = generate_latest().decode()
    for part in PARTS:
        assert f'livemod_thread_cpu_seconds_total{{part="{part}"}}' in text
