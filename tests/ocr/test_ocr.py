"""OCR: the PP-OCRv4 engine on real pictures, the cost gate, and the per-stream stage."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import time
from pathlib import Path
from typing import cast

import cv2
import numpy as np
import pytest

from livemod.messages import Decision, Image, VideoFrame
from livemod.ocr import gate
from livemod.ocr.budget import OcrBudget
from livemod.ocr.engine import OcrEngine, OcrOptions
from livemod.ocr.gate import (
    OcrGate,
    WorkerTurns,
    changed_fraction,
    text_cells,
    thumbnail,
)
from livemod.ocr.lines import LineMemory
from livemod.ocr.stage import OcrStage, StageSettings
from livemod.store import EvidenceInput, Store
from livemod.testing.media import fit, photo
from livemod.testing.text import captioned, page_frame, qr_image, talking_head
from livemod.text.judge import TextPolicy
from livemod.vision.manifest import load_manifest

# The prose of scikit-image's page.png (a photographed book page), line by line; the
# code line below it is set in a small typewriter face and is not counted.
PAGE_TEXT = [
    "Region-based segmentation",
    "Let us first determine markers of the coins and the",
    "background. These markers are pixels that we can label",
    "unambiguously as either object or background. Here,",
    "the markers are found at the two extreme parts of the",
    "histogram of grey values:",
]


@pytest.fixture(scope="module")
def engine() -> OcrEngine:
    return OcrEngine.from_manifest(load_manifest())


@pytest.fixture(scope="module")
def policy() -> TextPolicy:
    return TextPolicy.load()


def edit_distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def video_frame(image: Image, t: float, index: int, stream: str = "s1") -> VideoFrame:
    return VideoFrame(stream, index, t, time.time(), image, 1280, 720)


def test_printed_page_character_error_rate(
    engine: OcrEngine, record_property: pytest.RecordProperty
) -> None:
    reading = engine.read(page_frame())
    texts = [line.text for line in reading.lines]
    # Every prose line is found, in reading order (the code line comes last).
    prose = texts[: len(PAGE_TEXT)]
    reference = "\n".join(PAGE_TEXT)
    cer = edit_distance("\n".join(prose), reference) / len(reference)
    record_property("page_cer", round(cer, 4))
    print(f"page.png character error rate: {cer:.2%} ({len(texts)} lines read)")
    assert cer < 0.08, "\n".join(texts)
    assert reading.det_ms > 0 and reading.rec_ms > 0 and reading.recognized == len(texts)


def test_detection_is_limited_to_640_pixels(engine: OcrEngine) -> None:
    big = cv2.resize(captioned(["Call me tonight 555-867-5309"]), (1280, 720))
    assert engine._pre(np.ascontiguousarray(big[:, :, ::-1])).shape == (1, 3, 352, 640)
    reading = engine.read(big)
    # Boxes come back in the frame's own pixels.
    (line,) = [ln for ln in reading.lines if "555" in ln.text]
    assert line.y > 560 and line.x + line.w > 800


def test_words_keep_their_spaces(engine: OcrEngine, policy: TextPolicy) -> None:
    # The recognizer alone reads "Callmetonight555-867-5309"; the phone pattern needs
    # the word boundary back.
    reading = engine.read(captioned(["Call me tonight 555-867-5309"]))
    assert [line.text for line in reading.lines] == ["Call me tonight 555-867-5309"]
    assert [h.category for h in policy.evaluate(reading.text)] == ["contact"]


def test_unchanged_boxes_reuse_their_text(engine: OcrEngine) -> None:
    memory = LineMemory()
    first = engine.read(captioned(["Welcome back everyone", "Call me 555-867-5309"]), memory)
    assert first.recognized == 2 and first.reused == 0
    again = engine.read(captioned(["Welcome back everyone", "Call me 555-867-5309"]), memory)
    assert again.recognized == 0 and again.reused == 2
    assert again.text == first.text and all(line.reused for line in again.lines)
    changed = engine.read(captioned(["Welcome back everyone", "Call me 555-867-1234"]), memory)
    assert changed.recognized == 1 and changed.reused == 1
    assert changed.lines[1].text.endswith("1234")


def test_benign_photographs_read_no_text(engine: OcrEngine) -> None:
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        assert engine.read(fit(photo(name))).text == "", name


def test_gate_runs_at_its_rate_and_only_on_change() -> None:
    plain = thumbnail(captioned([]))
    text = thumbnail(captioned(["Call me 555-867-5309"], size=16))
    # The camera shook by two pixels: edges moved, nothing new appeared.
    shift = np.array([[1, 0, 2], [0, 1, -2]], dtype=np.float32)
    shaken = thumbnail(
        cv2.warpAffine(captioned([]), shift, (640, 360), borderMode=cv2.BORDER_REPLICATE)
    )
    assert changed_fraction(plain, plain) == 0.0
    assert changed_fraction(shaken, plain) < 0.002
    assert changed_fraction(text, plain) > 0.01
    gate = OcrGate(fps=1.0, change_threshold=0.005, refresh_s=30.0)
    assert gate.check(0.0, plain) == "run"
    gate.ran(0.0, plain)
    assert gate.check(0.5, shaken) == "rate"
    assert gate.check(1.0, shaken) == "unchanged"
    assert gate.check(1.25, text) == "run"  # a caption popped up
    gate.ran(1.25, text)
    assert gate.check(2.0, text) == "rate"
    assert gate.check(2.5, text) == "unchanged"
    assert gate.check(32.0, text) == "run"  # refresh_s: read again anyway
    assert gate.check(0.2, text) == "run"  # media time went back: a new publish
    assert (gate.counts.run, gate.counts.rate, gate.counts.unchanged) == (2, 2, 2)


def test_gate_change_measure_is_its_definition() -> None:
    """The measure runs in OpenCV over saturated ranges (computed once per thumbnail);
    it must count exactly the cells of the plain definition: outside the other
    thumbnail's 3x3 range by more than CELL_DELTA either way, or in a text cell moved
    by more than it, including at the black and white ends where the range saturates."""
    rng = np.random.default_rng(3)
    kernel = np.ones((3, 3), np.uint8)

    def outside(cells: np.ndarray, ref: np.ndarray) -> np.ndarray:
        high = cv2.dilate(ref, kernel).astype(np.int16) + gate.CELL_DELTA
        low = cv2.erode(ref, kernel).astype(np.int16) - gate.CELL_DELTA
        values = cells.astype(np.int16)
        return np.asarray((values > high) | (values < low))

    for k in range(400):
        ref = rng.integers(0, 256, (72, 128)).astype(np.uint8)
        if k % 4 == 0:
            ref[:] = rng.choice([0, 5, 250, 255])  # flat black or white: saturated ranges
        moved = ref.astype(np.int16) + rng.integers(-20, 21, ref.shape)
        new = np.clip(moved, 0, 255).astype(np.uint8)
        text = rng.random(ref.shape) < 0.1 if k % 2 else None
        appeared, vanished = outside(new, ref), outside(ref, new)
        if text is not None:
            jump = text & (np.abs(new.astype(np.int16) - ref.astype(np.int16)) > gate.CELL_DELTA)
            appeared, vanished = appeared | jump, vanished | jump
        plain = max(float(appeared.mean()), float(vanished.mean()))
        assert changed_fraction(new, ref, text) == plain
        given = changed_fraction(
            new, ref, text, new_limits=gate.limits(new), ref_limits=gate.limits(ref)
        )
        assert given == plain


def test_gate_overlooks_a_moving_speaker() -> None:
    gate = OcrGate(fps=1.0, change_threshold=0.005, refresh_s=30.0)
    outcomes = []
    for i in range(80):  # ten seconds at 8 samples a second
        t = i / 8
        thumb = thumbnail(fit(talking_head(t, (1280, 720))))
        outcomes.append(gate.check(t, thumb))
        if outcomes[-1] == "run":
            gate.ran(t, thumb)
    assert outcomes.count("run") == 1
    frame = captioned(["Follow me @baker_anna"], background="astronaut")
    assert gate.check(10.0, thumbnail(frame)) == "run"


def test_gate_follows_a_scrolling_ticker(engine: OcrEngine) -> None:
    first = captioned(["Markets close higher as rain moves east; local team wins"], size=20)
    reading = engine.read(first)
    boxes = [(line.x, line.y, line.w, line.h) for line in reading.lines]
    assert boxes
    start = thumbnail(first)
    cells = text_cells(boxes, (640, 360), start)
    moved = first.copy()
    moved[290:350] = np.roll(first[290:350], -10, axis=1)
    # Outside known text a 10-pixel move passes for motion; inside the text it is news.
    step = thumbnail(moved)
    assert changed_fraction(step, start, cells) > 4 * changed_fraction(step, start)
    gate = OcrGate(fps=1.0, change_threshold=0.005, refresh_s=30.0)
    assert gate.check(0.0, start) == "run"
    gate.ran(0.0, start, cells)
    outcomes = []
    for i in range(1, 9):  # the ticker moves 10 pixels a sample, 8 samples a second
        frame = first.copy()
        frame[290:350] = np.roll(first[290:350], -10 * i, axis=1)
        outcomes.append(gate.check(i / 8, thumbnail(frame)))
    assert outcomes == ["rate"] * 7 + ["run"]


def test_worker_turns_are_fair() -> None:
    turns = WorkerTurns(1, stale_s=2.0)
    assert turns.try_start("a", 0.0)
    assert not turns.try_start("b", 0.1)  # the worker is busy: b takes a place in line
    turns.done()
    assert not turns.try_start("a", 0.2)  # free again, but it is b's turn
    assert turns.try_start("b", 0.3)
    turns.done()
    assert turns.try_start("a", 0.4) and turns.waiting == []
    assert not turns.try_start("c", 0.5)
    turns.done()
    # c stopped asking (its stream stalled or ended): it loses its place.
    assert turns.try_start("d", 3.0)
    turns.leave("d")
    assert turns.busy == 1


async def test_static_scene_is_read_once(engine: OcrEngine, policy: TextPolicy) -> None:
    stage = OcrStage(engine, policy, StageSettings(fps=1.0))
    try:
        image = captioned(["Call me tonight 555-867-5309"])
        results = [await stage.analyze(video_frame(image, i / 4, i)) for i in range(40)]
        gate = stage.stream_gate("s1")
        assert gate is not None
        # Ten seconds at 4 samples a second: one OCR, 39 samples gated off.
        assert gate.counts.run == 1
        assert gate.counts.rate + gate.counts.unchanged == 39
        assert gate.counts.gated_fraction == pytest.approx(39 / 40)
        # The reading stands for every sample: the vote sees the text all along.
        for result in results:
            (signal,) = result.signals
            assert (signal.category, signal.source) == ("contact", "ocr")
            (region,) = signal.regions
            assert region.y > 280 and region.label == "text"
        # New text on screen is read at the next due sample.
        other = captioned(["they are all subhuman"])
        result = await stage.analyze(video_frame(other, 10.0, 40))
        assert gate.counts.run == 2
        assert [s.category for s in result.signals] == ["hate"]
        stage.forget("s1")
        assert stage.stream_gate("s1") is None
    finally:
        stage.close()


async def test_qr_code_and_evidence(engine: OcrEngine, policy: TextPolicy) -> None:
    image = captioned(["Call me 555-867-5309"])
    code = cv2.resize(qr_image("https://example.com/dm-me", 4), (150, 150))
    image[20:170, 450:600] = code
    stage = OcrStage(engine, policy, StageSettings())
    try:
        frame = video_frame(image, 0.0, 0)
        result = await stage.analyze(frame)
        by_source = {s.source: s for s in result.signals}
        assert set(by_source) == {"ocr", "ocr:qr"}
        qr = by_source["ocr:qr"]
        assert qr.category == "contact" and qr.score == pytest.approx(0.9)
        (box,) = qr.regions
        assert 440 <= box.x <= 470 and 10 <= box.y <= 40 and 110 <= box.w <= 160
        decision = Decision(
            key="u:r",
            category="contact",
            action="blur",
            state="start",
            confidence=0.9,
            tier="medium",
            sources=("ocr", "ocr:qr"),
            media_time_s=0.0,
            t_trigger=frame.t_arrival,
            evidence_frame=frame,
        )
        evidence = stage.evidence("s1", decision)
        assert evidence is not None and evidence.image is not None
        assert "555-867-5309" in evidence.text
        assert "[QR] https://example.com/dm-me" in evidence.text
        # Boxes are drawn on a copy: the hit line in red, the QR code in blue.
        changed = np.any(evidence.image != image, axis=2)
        assert changed[280:360].any() and changed[0:180, 430:620].any()
        assert not np.shares_memory(evidence.image, image)
        vision_only = dataclasses.replace(decision, sources=("vision:nudenet",))
        assert stage.evidence("s1", vision_only) is None
    finally:
        stage.close()


async def test_ocr_never_queues_behind_another_stream(
    engine: OcrEngine, policy: TextPolicy
) -> None:
    stage = OcrStage(engine, policy, StageSettings(workers=1))
    try:
        image = captioned(["Welcome back everyone"])
        await asyncio.gather(
            stage.analyze(video_frame(image, 0.0, 0, "a")),
            stage.analyze(video_frame(image, 0.0, 0, "b")),
        )
        gate_a, gate_b = stage.stream_gate("a"), stage.stream_gate("b")
        assert gate_a is not None and gate_b is not None
        assert (gate_a.counts.run, gate_b.counts.busy, gate_b.counts.run) == (1, 1, 0)
        # Stream b reads at its next sample instead.
        await stage.analyze(video_frame(image, 0.25, 1, "b"))
        assert gate_b.counts.run == 1
    finally:
        stage.close()


async def test_offered_passes_share_the_cpu_budget_and_analyze_is_not_capped(
    engine: OcrEngine, policy: TextPolicy
) -> None:
    now = [100.0]
    budget = OcrBudget(0.5, burst_s=1.0, clock=lambda: now[0])
    stage = OcrStage(engine, policy, StageSettings(fps=1.0, workers=2), budget)
    try:
        budget.charge("elsewhere", 5.0)  # other streams spent the budget: 9 s of debt
        a, b = captioned(["Welcome back everyone"]), captioned(["Call me tonight 555-867-5309"])
        # Due passes over budget are skipped, counted per stream, never queued.
        assert stage.offer(video_frame(a, 0.0, 0, "a")).signals == ()
        assert stage.offer(video_frame(b, 0.0, 0, "b")).signals == ()
        await stage.idle()
        assert stage.stream_stats("a") == {
            "run": 0, "rate": 0, "unchanged": 0, "busy": 0, "budget": 1, "inflight": 0,
            "motion": 0, "skipped": 1,
        }  # fmt: skip
        # ``analyze`` (livemod scan awaits every reading) is not capped.
        await stage.analyze(video_frame(a, 0.25, 1, "a"))
        assert stage.stream_stats("a")["run"] == 1  # type: ignore[index]
        # Once the debt is repaid, b (which kept its place) reads at its next due sample.
        now[0] += 60.0
        assert stage.offer(video_frame(b, 0.25, 1, "b")).signals == ()  # read at its next
        await stage.idle()
        (signal,) = stage.offer(video_frame(b, 0.5, 2, "b")).signals
        assert signal.category == "contact"
        stats_b = stage.stream_stats("b")
        assert stats_b is not None and (stats_b["run"], stats_b["budget"]) == (1, 1)
        assert budget.usage("b") > 0.0
        stage.forget("b")
        assert stage.stream_stats("b") is None
    finally:
        stage.close()


async def test_offer_never_waits_and_the_reading_joins_the_next_sample(
    engine: OcrEngine, policy: TextPolicy
) -> None:
    stage = OcrStage(engine, policy, StageSettings(fps=1.0))
    try:
        image = captioned(["Call me tonight 555-867-5309"])
        # The first sample starts a pass and answers at once with nothing read yet;
        # samples offered while it runs are not even checked.
        assert stage.offer(video_frame(image, 0.0, 0)).signals == ()
        assert stage.offer(video_frame(image, 0.25, 1)).signals == ()
        gate = stage.stream_gate("s1")
        assert gate is not None and gate.counts.inflight == 1
        await stage.idle()
        assert gate.counts.run == 1
        # The reading stands for the next samples; the unchanged picture is not re-read.
        for i in range(2, 10):
            (signal,) = stage.offer(video_frame(image, i / 4, i)).signals
            assert signal.category == "contact"
        await stage.idle()
        assert gate.counts.run == 1
        # New text is read by a side task at its due sample and joins the one after.
        other = captioned(["they are all subhuman"])
        assert [s.category for s in stage.offer(video_frame(other, 2.5, 10)).signals] == ["contact"]
        await stage.idle()
        assert gate.counts.run == 2
        after = stage.offer(video_frame(other, 2.75, 11))
        assert [s.category for s in after.signals] == ["hate"]
    finally:
        stage.close()


async def test_a_failing_reading_costs_one_reading(policy: TextPolicy) -> None:
    class Broken:
        def read(self, image: Image, memory: LineMemory | None = None) -> None:
            raise RuntimeError("onnxruntime: bad input")

    stage = OcrStage(cast(OcrEngine, Broken()), policy, StageSettings())
    try:
        image = captioned(["Call me 555-867-5309"])
        results = [await stage.analyze(video_frame(image, i / 8, i)) for i in range(8)]
        assert all(r.signals == () for r in results)
        gate = stage.stream_gate("s1")
        # Tried once, then left alone until the next reading is due.
        assert gate is not None and gate.counts.run == 1 and gate.counts.rate == 7
    finally:
        stage.close()


def test_ocr_options_reject_nothing_silently() -> None:
    with pytest.raises(ValueError, match="fps"):
        OcrGate(fps=0, change_threshold=0.01, refresh_s=30)
    assert OcrOptions().det_limit_side_len == 640


async def test_evidence_keeps_text_and_retention_clears_it(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    # A store made before evidence kept text gains the column on open.
    with sqlite3.connect(db) as conn:
        conn.execute(
            "CREATE TABLE evidence (id TEXT PRIMARY KEY, stream_id TEXT NOT NULL, category TEXT"
            " NOT NULL, path TEXT, scores TEXT NOT NULL, media_time_s REAL NOT NULL,"
            " created_at REAL NOT NULL)"
        )
    store = Store(db, tmp_path / "evidence")
    await store.open()
    try:
        image = np.zeros((36, 64, 3), dtype=np.uint8)
        ev = EvidenceInput("s", "contact", 4.0, {"ocr:contact": 0.8}, image, "Call 555-867-5309")
        eid = await store.add_evidence(ev)
        record = await store.get_evidence(eid)
        assert record is not None and record["text"] == "Call 555-867-5309"
        assert await store.purge_evidence(-1.0) == 1
        record = await store.get_evidence(eid)
        assert record is not None and record["text"] is None and record["path"] is None
        assert record["scores"] == {"ocr:contact": 0.8}
    finally:
        await store.close()


@pytest.mark.parametrize("shape", [(360, 640, 3), (720, 1280, 3), (360, 480, 3), (640, 360, 3)])
def test_gate_thumbnail_is_the_area_average(shape: tuple[int, int, int]) -> None:
    # The box-filter shortcut (whole cells) and the area resize agree to one level.
    img = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    h, w = shape[:2]
    size = (gate.THUMB_WIDTH, round(gate.THUMB_WIDTH * h / w))
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    want = cv2.resize(grey, size, interpolation=cv2.INTER_AREA).astype(np.int16)
    got = gate.thumbnail(img)
    assert got.shape == want.shape and got.flags.c_contiguous
    assert int(np.abs(got.astype(np.int16) - want).max()) <= 1
