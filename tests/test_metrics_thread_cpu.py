"""CPU seconds per pipeline part, from the kernel's per-thread counts."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from prometheus_client import generate_latest

from livemod.metrics import PARTS, ThreadCpu, parse_stat, part_of


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


def task(folder: Path, tid: int, comm: str, ticks: int) -> None:
    """A fake ``/proc/self/task/<tid>`` entry: ``ticks`` of user time."""
    entry = folder / str(tid)
    entry.mkdir(exist_ok=True)
    (entry / "comm").write_text(comm + "\n")
    (entry / "stat").write_text(f"{tid} ({comm}) S 1 1 1 0 -1 0 0 0 0 0 {ticks} 0 0 0 20 0 1 0")


def test_ended_threads_keep_their_seconds_and_retired_ones_count_once(tmp_path: Path) -> None:
    ticks = ThreadCpu()._ticks
    cpu = ThreadCpu(tmp_path)
    task(tmp_path, 901, "av:h264:df0", int(2 * ticks))
    task(tmp_path, 902, "livemod-ocr_0", int(1 * ticks))
    assert (cpu.parts()["ingest"], cpu.parts()["ocr"]) == (2.0, 1.0)
    # The decoding thread ends: its last count stays (a counter never goes down).
    for f in (tmp_path / "901").iterdir():
        f.unlink()
    (tmp_path / "901").rmdir()
    assert cpu.parts()["ingest"] == 2.0
    # A thread that counts itself out as it ends is counted once, while it finishes
    # and after it is gone.
    task(tmp_path, 903, "relay-s1", int(3 * ticks))
    assert cpu.parts()["relay"] == 3.0
    cpu.retire(903, "relay-s1", 3.25)
    task(tmp_path, 903, "relay-s1", int(3.25 * ticks))
    assert cpu.parts()["relay"] == 3.25
    for f in (tmp_path / "903").iterdir():
        f.unlink()
    (tmp_path / "903").rmdir()
    assert cpu.parts()["relay"] == 3.25 and cpu.parts()["ocr"] == 1.0


def spin(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_a_real_thread_is_counted_in_its_part() -> None:
    cpu = ThreadCpu()
    before = cpu.parts()
    assert set(before) == set(PARTS)
    spun, finish = threading.Event(), threading.Event()

    def work() -> None:
        spin(0.3)
        spun.set()
        finish.wait(30)

    worker = threading.Thread(target=work, name="livemod-infer_9")
    worker.start()
    assert spun.wait(60)
    during = cpu.parts()
    finish.set()
    worker.join()
    after = cpu.parts()
    # 0.3 s of its own CPU, read from the kernel in clock ticks.
    assert during["models"] - before["models"] >= 0.25
    assert all(after[p] >= during[p] >= before[p] for p in PARTS)


def test_the_daemon_exports_the_parts() -> None:
    text = generate_latest().decode()
    for part in PARTS:
        assert f'livemod_thread_cpu_seconds_total{{part="{part}"}}' in text


def test_a_finishing_thread_counts_itself_out() -> None:
    from livemod.metrics import THREADS, retire_current_thread

    before = THREADS.parts()["relay"]

    def work() -> None:
        spin(0.25)
        retire_current_thread()

    worker = threading.Thread(target=work, name="relay-test")
    worker.start()
    worker.join()
    # Gone before any read saw it, yet its seconds are in its part.
    assert THREADS.parts()["relay"] - before >= 0.24
