"""``lower_priority``: background threads yield the cores to the rest of the daemon."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

from livemod.budget import lower_priority
from livemod.ocr.stage import OcrStage, StageSettings


def nice_of_this_thread() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_a_lowered_thread_runs_nicer_and_the_others_do_not_change() -> None:
    before = nice_of_this_thread()
    with ThreadPoolExecutor(1, initializer=lower_priority, initargs=(5,)) as pool:
        lowered = pool.submit(nice_of_this_thread).result()
    with ThreadPoolExecutor(1, initializer=lower_priority, initargs=(0,)) as pool:
        unchanged = pool.submit(nice_of_this_thread).result()
    assert lowered == min(19, before + 5)
    assert unchanged == before and nice_of_this_thread() == before


def test_ocr_workers_run_at_the_configured_nice() -> None:
    before = nice_of_this_thread()
    # The stage's pool never touches the engine or policy until a frame is offered.
    stage = OcrStage(None, None, StageSettings(nice=7))  # type: ignore[arg-type]
    try:
        assert stage._pool.submit(nice_of_this_thread).result() == min(19, before + 7)
    finally:
        stage.close()
