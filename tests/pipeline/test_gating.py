"""The change gate and the detector cascade: pure decisions over media time (the clock)."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest

from livemod.pipeline.gating import (
    CascadePolicy,
    Fresh,
    GatePolicy,
    Reuse,
    StreamGate,
    changed_fraction,
    thumbnail,
)
from livemod.testing.media import fit, pattern, photo

GATE = GatePolicy(change_threshold=0.01, cut_threshold=0.5, max_reuse_s=2.0)
CASCADE = CascadePolicy(
    detectors=frozenset({"nudenet-320n"}),
    gate_scores={"opennsfw": 0.15},
    every_s=3.0,
    hold_s=10.0,
)


def still(t: float, shift: int = 0) -> np.ndarray:
    """A real photograph of a person (a still camera, a slide) with sensor noise; ``shift``
    moves the head and shoulders sideways (a talking head)."""
    img = fit(photo("astronaut")).copy()
    if shift:
        img[40:260, 220:420] = np.roll(img[40:260, 220:420], shift, axis=1)
    rng = np.random.default_rng(int(t * 1000))
    noise = rng.integers(-3, 4, img.shape, dtype=np.int16)
    return np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def test_same_picture_is_unchanged_and_another_is_a_cut() -> None:
    a = thumbnail(still(0.0))
    assert changed_fraction(a, thumbnail(still(0.3))) < GATE.change_threshold
    # A head that sways by a few pixels is not a change; something new on screen is.
    assert changed_fraction(a, thumbnail(still(0.3, shift=6))) < GATE.change_threshold
    inset = still(0.3)
    inset[100:160, 300:360] = fit(photo("coffee"))[100:160, 300:360]
    assert changed_fraction(a, thumbnail(inset)) >= GATE.change_threshold
    assert changed_fraction(a, thumbnail(fit(photo("coffee")))) >= GATE.cut_threshold


def test_the_change_measure_is_its_definition_on_any_thumbnails() -> None:
    """The measure runs in OpenCV (inRange over the reference's precomputed range); it
    must count exactly the cells the plain definition counts: any channel below the 3x3
    neighbourhood's minimum or above its maximum by more than CELL_DELTA."""
    rng = np.random.default_rng(7)
    kernel = np.ones((3, 3), np.uint8)
    for k in range(300):
        ref = rng.integers(0, 256, (36, 64, 3)).astype(np.float32)
        now = ref + rng.normal(0, 3 + k % 12, ref.shape).astype(np.float32)
        if k % 3 == 0:
            now = np.round(now)  # whole levels: values land exactly on the bounds too
        lo, hi = cv2.erode(ref, kernel) - 12.0, cv2.dilate(ref, kernel) + 12.0
        plain = float(((now < lo) | (now > hi)).any(axis=2).mean())
        assert changed_fraction(ref, now) == pytest.approx(plain, abs=1e-12)
    assert changed_fraction(ref, now[:, :32]) == 1.0  # another frame size: all changed


def test_unchanged_samples_reuse_until_the_reuse_age() -> None:
    gate = StreamGate(GATE, CASCADE)
    decisions = [gate.decide(i / 4, thumbnail(still(i / 4))) for i in range(20)]
    fresh_at = [i / 4 for i, d in enumerate(decisions) if isinstance(d, Fresh)]
    assert isinstance(decisions[0], Fresh) and decisions[0].reason == "first"
    # Fresh every max_reuse_s of media time, reused in between.
    assert fresh_at == [0.0, 2.0, 4.0]
    assert all(d.reason == "age" for d in decisions if isinstance(d, Fresh) and d.change < 1.0)
    assert gate.stats()["reused"] == 17 and gate.stats()["fresh"] == 3
    assert all(isinstance(d, Reuse) and d.age_s < 2.0 for d in decisions[1:8])


def test_a_stretched_gate_refreshes_less_often_but_still_runs_a_cut() -> None:
    gate = StreamGate(GATE, CASCADE)
    gate.stretch = 2.0  # shed under overload
    decisions = [gate.decide(i / 4, thumbnail(still(i / 4))) for i in range(20)]
    assert [i / 4 for i, d in enumerate(decisions) if isinstance(d, Fresh)] == [0.0, 4.0]
    cut = gate.decide(5.0, thumbnail(fit(photo("coffee"))))
    assert isinstance(cut, Fresh) and cut.reason == "cut"


def test_without_motion_reuse_motion_and_cuts_always_run_the_models() -> None:
    gate = StreamGate(replace(GATE, motion_reuse=False), CASCADE)
    # A 60x60 box moving 30 px a sample (1.6 % of the picture): never two reuses in a row.
    moving = [gate.decide(i / 4, thumbnail(pattern(i / 4))) for i in range(12)]
    runs = "".join("f" if isinstance(d, Fresh) else "r" for d in moving)
    assert "rr" not in runs and runs.count("f") >= 6
    gate.decide(3.0, thumbnail(still(3.0)))
    cut = gate.decide(3.25, thumbnail(fit(photo("coffee"))))
    assert isinstance(cut, Fresh) and cut.reason == "cut" and cut.cut


def scrolled(t: float, inset: float = 0.0) -> np.ndarray:
    """A real texture scrolling 80 px a second (gameplay), with a real photograph cut in
    over ``inset`` of the frame."""
    tile = cv2.resize(photo("brick"), (360, 360))
    strip = np.concatenate([tile] * 3, axis=1)
    off = int(80 * t) % 360
    img = np.ascontiguousarray(strip[:, off : off + 640])
    if inset:
        h, w = round(360 * inset**0.5), round(640 * inset**0.5)
        y, x = (360 - h) // 2, (640 - w) // 2
        img[y : y + h, x : x + w] = cv2.resize(photo("coffee"), (w, h))
    return img


def test_motion_without_new_content_reuses_until_the_reuse_age() -> None:
    gate = StreamGate(GATE, CASCADE)
    decisions = [gate.decide(i / 4, thumbnail(scrolled(i / 4))) for i in range(17)]
    # The samples moved (20 px) and most of the picture changed, but nothing new showed.
    assert sum(d.change >= GATE.change_threshold for d in decisions[1:]) >= 12
    fresh_at = [i / 4 for i, d in enumerate(decisions) if isinstance(d, Fresh)]
    assert fresh_at == [0.0, 2.0, 4.0]
    reused = [d.reason for d in decisions if isinstance(d, Reuse)]
    assert set(reused) <= {"motion", "unchanged"} and reused.count("motion") >= 10
    assert gate.stats()["motion_reused"] == reused.count("motion")


@pytest.mark.parametrize("inset", [0.1, 0.25, 1.0])
def test_new_content_in_a_moving_picture_runs_the_models_at_once(inset: float) -> None:
    gate = StreamGate(GATE, CASCADE)
    for i in range(3):
        gate.decide(i / 4, thumbnail(scrolled(i / 4)))
    d = gate.decide(0.75, thumbnail(scrolled(0.75, inset)))
    assert isinstance(d, Fresh) and d.reason in ("change", "cut")


@pytest.mark.parametrize(("motion_reuse", "runs", "longest"), [(False, 5, 2), (True, 3, 10)])
def test_a_slow_drift_adds_up_against_the_last_fresh_reference(
    motion_reuse: bool, runs: int, longest: int
) -> None:
    gate = StreamGate(GatePolicy(max_reuse_s=60.0, motion_reuse=motion_reuse), CASCADE)
    base = fit(photo("astronaut")).astype(np.int16)
    reasons = []
    for i in range(30):
        # Brighten one more band of rows each sample: never much per sample.
        img = base.copy()
        img[: 12 * i] += 40
        d = gate.decide(i / 4, thumbnail(np.clip(img, 0, 255).astype(np.uint8)))
        reasons.append(d.reason)
    assert reasons.count("change") >= runs
    reused = "".join("r" if r in ("unchanged", "motion") else "f" for r in reasons)
    assert max(len(run) for run in reused.split("f")) <= longest


def test_gating_off_runs_every_sample() -> None:
    gate = StreamGate(GatePolicy(enabled=False), CASCADE)
    assert all(isinstance(gate.decide(i / 4, None), Fresh) for i in range(10))


def test_detector_runs_on_gate_hold_and_schedule() -> None:
    gate = StreamGate(GATE, CASCADE)
    first = Fresh("first", 1.0)
    change = Fresh("change", 0.1)
    cut = Fresh("cut", 0.8)
    age = Fresh("age", 0.0)
    # A stream's first sample: the schedule is due at once.
    assert gate.detector_due("nudenet-320n", 0.0, {"opennsfw": 0.01}, first) == "schedule"
    gate.detector_ran("nudenet-320n", 0.0, hit=False)
    # Whole-frame score under the gate, no hit, schedule not due: skipped, a cut too.
    assert gate.detector_due("nudenet-320n", 1.0, {"opennsfw": 0.01}, change) is None
    assert gate.detector_due("nudenet-320n", 1.0, {"opennsfw": 0.01}, cut) is None
    assert gate.detector_due("nudenet-320n", 1.0, {"opennsfw": 0.2}, change) == "gate"
    assert gate.detector_due("nudenet-320n", 3.0, {"opennsfw": 0.01}, age) == "schedule"
    gate.detector_ran("nudenet-320n", 3.0, hit=True)
    # A hit holds the detector open on every fresh sample for hold_s.
    assert gate.detector_due("nudenet-320n", 3.5, {}, change) == "hold"
    assert gate.detector_due("nudenet-320n", 12.9, {}, change) == "hold"
    assert gate.detector_due("nudenet-320n", 13.5, {}, change) == "schedule"
    # Not a detector, or the cascade off: always runs.
    assert gate.detector_due("opennsfw", 1.0, {}, change) == "off"
    off = StreamGate(GATE, CascadePolicy(enabled=False))
    assert off.detector_due("nudenet-320n", 1.0, {}, change) == "off"


def test_detector_runs_on_every_cut_with_on_cut() -> None:
    gate = StreamGate(GATE, replace(CASCADE, on_cut=True))
    gate.detector_ran("nudenet-320n", 0.0, hit=False)
    assert gate.detector_due("nudenet-320n", 1.0, {"opennsfw": 0.01}, Fresh("cut", 0.8)) == "cut"
    assert gate.detector_due("nudenet-320n", 1.0, {"opennsfw": 0.01}, Fresh("change", 0.1)) is None


def show(t: float, insert: bool = False) -> np.ndarray:
    """A talking head (sensor noise) with a full-frame picture cut in while ``insert``."""
    return fit(photo("coffee")) if insert else still(t)


def test_a_cut_back_to_a_recent_picture_reuses_its_analysis() -> None:
    gate = StreamGate(GATE, CASCADE)
    shown = [(i / 4, 0.5 <= i / 4 < 1.25) for i in range(8)]
    decisions = [gate.decide(t, thumbnail(show(t, insert))) for t, insert in shown]
    kinds = [d.reason for d in decisions]
    # In: a cut runs the models; out: the show analysed at 0 s comes back (reused).
    assert kinds == ["first", "unchanged", "cut", "unchanged", "unchanged", "return",
                     "unchanged", "unchanged"]  # fmt: skip
    assert [d.ref for d in decisions if isinstance(d, Reuse)] == [1, 2, 2, 1, 1, 1]
    assert gate.ref == 1 and gate.held() == {1, 2}
    assert gate.stats()["returns"] == 1 and gate.stats()["fresh"] == 2
    # The insert again, still within max_reuse_s of its analysis: reused too.
    again = gate.decide(2.0, thumbnail(show(2.0, insert=True)))
    assert isinstance(again, Reuse) and again.reason == "return" and again.ref == 2


def test_a_return_never_outlives_the_reuse_age_of_its_analysis() -> None:
    gate = StreamGate(GATE, CASCADE)
    gate.decide(0.0, thumbnail(show(0.0)))
    gate.decide(1.0, thumbnail(show(1.0, insert=True)))
    # The show analysed at 0 s is max_reuse_s (2 s) old at 2 s: the cut back runs fresh.
    back = gate.decide(2.0, thumbnail(show(2.0)))
    assert isinstance(back, Fresh) and back.reason == "cut"
    # The reused age is the earlier analysis' own, and ages on from there.
    gate.decide(2.5, thumbnail(show(2.5, insert=True)))
    returned = gate.decide(2.75, thumbnail(show(2.75, insert=True)))
    assert isinstance(returned, Reuse) and returned.reason == "unchanged"
    again = gate.decide(3.25, thumbnail(show(3.25)))
    assert isinstance(again, Reuse) and again.reason == "return" and again.age_s == 1.25
    late = gate.decide(4.0, thumbnail(show(4.0)))
    assert isinstance(late, Fresh) and late.reason == "age"


def test_returns_off_and_a_new_picture_run_the_models() -> None:
    off = StreamGate(replace(GATE, return_refs=0), CASCADE)
    for t, insert in ((0.0, False), (0.5, True)):
        off.decide(t, thumbnail(show(t, insert)))
    back = off.decide(1.0, thumbnail(show(1.0)))
    assert isinstance(back, Fresh) and back.reason == "cut" and off.held() == {3}
    gate = StreamGate(GATE, CASCADE)
    for t, insert in ((0.0, False), (0.5, True)):
        gate.decide(t, thumbnail(show(t, insert)))
    # A third picture matches neither earlier analysis.
    other = gate.decide(1.0, thumbnail(fit(photo("rocket"))))
    assert isinstance(other, Fresh) and other.reason == "cut"
    # Only the last return_refs earlier pictures are kept.
    small = StreamGate(replace(GATE, return_refs=1), CASCADE)
    for t, insert in ((0.0, False), (0.25, True)):
        small.decide(t, thumbnail(show(t, insert)))
    small.decide(0.5, thumbnail(fit(photo("rocket"))))
    assert small.held() == {2, 3}
    gone = small.decide(0.75, thumbnail(show(0.75)))
    assert isinstance(gone, Fresh) and gone.reason == "cut"


def test_policies_are_validated() -> None:
    with pytest.raises(ValueError):
        GatePolicy(change_threshold=0.6, cut_threshold=0.5)
    with pytest.raises(ValueError):
        CascadePolicy(every_s=0.0)
    with pytest.raises(ValueError):
        GatePolicy(content_delta=-1.0)
    with pytest.raises(ValueError):
        GatePolicy(return_refs=-1)
    with pytest.raises(ValueError):
        CascadePolicy(settle_scores={"known_bad": 1.5})


def test_a_known_bad_match_at_its_floor_settles_a_sample() -> None:
    policy = CascadePolicy(settle_scores={"known_bad": 0.7})
    assert policy.settled_by([("sexual", 0.99), ("known_bad", 0.7)]) == "known_bad"
    assert policy.settled_by([("known_bad", 0.69)]) is None
    assert policy.settled_by([("sexual", 0.99)]) is None  # only the listed categories
    assert policy.settled_by([]) is None
    assert CascadePolicy(settle_scores={}).settled_by([("known_bad", 1.0)]) is None
    assert CascadePolicy(enabled=False).settled_by([("known_bad", 1.0)]) is None


@pytest.mark.parametrize("shape", [(360, 640, 3), (720, 1280, 3), (360, 480, 3), (100, 200, 3)])
def test_thumbnail_is_the_area_average_within_a_level(shape: tuple[int, int, int]) -> None:
    img = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    direct = cv2.resize(img, (64, 36), interpolation=cv2.INTER_AREA).astype(np.float32)
    got = thumbnail(img)
    assert got.shape == (36, 64, 3) and got.dtype == np.float32
    assert float(np.abs(got - direct).max()) <= 1.0


BESIDE = replace(GATE, background_refresh=True)


def test_a_refresh_due_to_age_runs_beside_and_its_sample_becomes_the_reference() -> None:
    gate = StreamGate(BESIDE, CASCADE)
    first = gate.decide(0.0, thumbnail(still(0.0)))
    assert isinstance(first, Fresh)
    due = [gate.decide(i / 4, thumbnail(still(i / 4))) for i in range(1, 9)]
    # 2.0 s (max_reuse_s): the sample reuses the scores and asks for a refresh beside.
    assert all(isinstance(d, Reuse) for d in due)
    assert [d.refresh for d in due if isinstance(d, Reuse)] == [None] * 7 + ["age"]
    launched = due[-1]
    assert isinstance(launched, Reuse) and launched.ref == gate.ref == 1
    # While the refresh runs, later samples reuse the old scores without asking again.
    waiting = gate.decide(2.25, thumbnail(still(2.25)))
    assert isinstance(waiting, Reuse) and waiting.refresh is None and waiting.ref == 1
    # The refresh is in: its sample (2.0 s) is the reference, ages count from it.
    new = gate.refreshed(launched.ref, thumbnail(still(2.0)), 2.0)
    assert new == gate.ref == 2
    after = [gate.decide(2.25 + i / 4, thumbnail(still(2.25 + i / 4))) for i in range(1, 8)]
    assert all(isinstance(d, Reuse) and d.ref == 2 for d in after)
    assert [d.refresh for d in after if isinstance(d, Reuse)][-1] == "age"  # at 4.0 s
    stats = gate.stats()
    assert stats["fresh"] == 1 and stats["refreshes"] == 2


def test_a_late_refresh_gives_way_to_the_models_after_another_reuse_age() -> None:
    gate = StreamGate(BESIDE, CASCADE)
    gate.decide(0.0, thumbnail(still(0.0)))
    decisions = [gate.decide(i / 4, thumbnail(still(i / 4))) for i in range(1, 17)]
    # Asked at 2.0 s, never reported: reused until 4.0 s (max_reuse_s late), then run.
    runs = [(i + 1) / 4 for i, d in enumerate(decisions) if isinstance(d, Fresh)]
    assert runs == [4.0]
    assert all(isinstance(d, Reuse) and d.age_s < 4.0 for d in decisions[:15])
    # The refresh that did come in is older than the reference now: dropped.
    assert gate.refreshed(1, thumbnail(still(2.0)), 2.0) is None
    assert gate.ref == 2


def test_a_cut_while_a_refresh_runs_is_analysed_at_once_and_the_refresh_dropped() -> None:
    gate = StreamGate(BESIDE, CASCADE)
    for i in range(9):
        d = gate.decide(i / 4, thumbnail(still(i / 4)))
    assert isinstance(d, Reuse) and d.refresh == "age"
    cut = gate.decide(2.25, thumbnail(fit(photo("coffee"))))
    assert isinstance(cut, Fresh) and cut.reason == "cut"
    # The refresh in flight is abandoned at the cut (the caller cancels it) ...
    assert gate.refreshing is None and gate.stats()["refreshes_dropped"] == 1
    # ... and one that lands anyway is dropped.
    assert gate.refreshed(d.ref, thumbnail(still(2.0)), 2.0) is None
    assert gate.ref == 2 and gate.stats()["fresh"] == 2


def test_a_failed_refresh_is_asked_for_again_on_the_next_sample() -> None:
    gate = StreamGate(BESIDE, CASCADE)
    for i in range(9):
        d = gate.decide(i / 4, thumbnail(still(i / 4)))
    assert isinstance(d, Reuse) and d.refresh == "age"
    gate.refresh_failed(d.ref)
    again = gate.decide(2.25, thumbnail(still(2.25)))
    assert isinstance(again, Reuse) and again.refresh == "age"


def test_motion_past_its_reuse_age_refreshes_beside_but_new_content_runs_at_once() -> None:
    gate = StreamGate(BESIDE, CASCADE)
    decisions = [gate.decide(i / 4, thumbnail(scrolled(i / 4))) for i in range(10)]
    asked = [
        (i / 4, d.refresh) for i, d in enumerate(decisions) if isinstance(d, Reuse) and d.refresh
    ]
    assert asked == [(2.0, "motion")]
    assert sum(isinstance(d, Fresh) for d in decisions) == 1  # the first sample only
    # Something new on screen while the refresh runs: the models run on it now.
    d = gate.decide(2.5, thumbnail(scrolled(2.5, 0.25)))
    assert isinstance(d, Fresh) and d.reason in ("change", "cut")
