"""The timestamp mapper: source timestamps in, one monotonic session timeline out."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from livemod.ingest.timeline import MPEGTS_WRAP_S, Jump, Timeline
from livemod.sampling import FrameSampler

FPS = 25
STEP = 1 / FPS
MAX_JUMP = 5.0


def frames(start: float, n: int, step: float = STEP) -> list[float]:
    return [start + i * step for i in range(n)]


def mapped(timeline: Timeline, times: list[float], track: str = "video") -> list[float]:
    return [timeline.map(t, track) for t in times]


def test_continuous_time_starts_at_the_origin_and_keeps_its_gaps() -> None:
    timeline = Timeline(MAX_JUMP, STEP, origin_s=1.4)
    out = mapped(timeline, [1.4, 1.44, 1.48, 4.48])  # a 3 s gap (a stall) is kept
    assert out == pytest.approx([0.0, 0.04, 0.08, 3.08])
    assert timeline.jumps == 0


def test_a_restart_continues_one_frame_after_the_last_session_time() -> None:
    jumps: list[Jump] = []
    timeline = Timeline(MAX_JUMP, STEP, origin_s=1.4, on_jump=jumps.append)
    before = mapped(timeline, frames(1.4, 250))
    after = mapped(timeline, frames(1.4, 50))
    assert after[0] == pytest.approx(before[-1] + STEP)
    assert after[-1] - after[0] == pytest.approx(49 * STEP)
    assert [(j.kind, j.track) for j in jumps] == [("backward", "video")]
    assert jumps[0].from_s == pytest.approx(11.36) and jumps[0].to_s == pytest.approx(1.4)
    assert jumps[0].session_s == pytest.approx(after[0])


def test_a_forward_jump_beyond_the_threshold_is_a_discontinuity() -> None:
    jumps: list[Jump] = []
    timeline = Timeline(MAX_JUMP, STEP, on_jump=jumps.append)
    out = mapped(timeline, [0.0, 0.04, 0.04 + MAX_JUMP, 3600.0, 3600.04])
    assert out == pytest.approx([0.0, 0.04, 0.04 + MAX_JUMP, 0.08 + MAX_JUMP, 0.12 + MAX_JUMP])
    assert [j.kind for j in jumps] == ["forward"]


def test_the_mpegts_wrap_continues_exactly() -> None:
    jumps: list[Jump] = []
    timeline = Timeline(MAX_JUMP, STEP, origin_s=MPEGTS_WRAP_S - 1.0, on_jump=jumps.append)
    out = mapped(timeline, [MPEGTS_WRAP_S - 1.0, MPEGTS_WRAP_S - 0.02, 0.02, 1.0])
    assert out == pytest.approx([0.0, 0.98, 1.02, 2.0])
    assert [j.kind for j in jumps] == ["wrap"]


def test_a_reconnect_offset_shifts_the_whole_timeline() -> None:
    timeline = Timeline(MAX_JUMP, STEP, origin_s=0.0, offset_s=42.0)
    assert mapped(timeline, [0.0, 1.0]) == pytest.approx([42.0, 43.0])


def test_audio_and_video_share_a_restart() -> None:
    jumps: list[Jump] = []
    timeline = Timeline(MAX_JUMP, STEP, origin_s=1.4, on_jump=jumps.append)
    # Audio reaches the restart first: the video decoder still holds old frames.
    for t in frames(1.4, 200):
        timeline.map(t, "video")
        timeline.map(t + 0.01, "audio")
    first_audio = timeline.map(1.41, "audio")  # the new run starts here
    video_old = timeline.map(1.4 + 200 * STEP, "video")
    video_new = timeline.map(1.4, "video")
    audio = timeline.map(1.45, "audio")
    assert len(jumps) == 1 and jumps[0].track == "audio"
    assert video_old < video_new and first_audio < audio
    # The same offset for both tracks: what played together still lines up.
    assert audio - 1.45 == pytest.approx(video_new - 1.4)


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        Timeline(0.0, STEP)
    with pytest.raises(ValueError):
        Timeline(MAX_JUMP, 0.0)


def test_the_sampler_keeps_sampling_after_a_restart() -> None:
    """The defect: on raw timestamps the gate refused everything after a restart."""
    timeline = Timeline(MAX_JUMP, STEP, origin_s=1.4)
    sampler = FrameSampler(4.0, 8.0)
    source = frames(1.4, 250) + frames(1.4, 350)  # 10 s, then 14 s restarting at 1.4
    admitted = [t for t in mapped(timeline, source) if sampler.admit(t)]
    after = [t for t in admitted if t > 10.0]
    assert len(after) >= 14 * 4 - 1
    assert all(b - a >= 0.25 - 0.1 * 0.25 for a, b in pairwise(admitted))


# A source: runs of frames, each run starting anywhere (a restart, a jump, a wrap).
# Steps stay below the threshold even after float rounding at 26 h of seconds.
steps = st.floats(min_value=0.001, max_value=MAX_JUMP / 2)
run_starts = st.one_of(
    st.floats(min_value=0.0, max_value=MPEGTS_WRAP_S),  # restart or forward jump
    st.just(MPEGTS_WRAP_S - 0.5),  # just before the wrap
    st.floats(min_value=0.0, max_value=0.5),  # just after it
)
runs = st.lists(
    st.tuples(run_starts, st.lists(steps, min_size=0, max_size=30)), min_size=1, max_size=8
)


@given(runs, st.floats(min_value=0.001, max_value=1.0))
# Found by CI: a run starting 5e-122 s after the last one's timestamp moved the session
# clock by less than its rounding, so two frames got the same session time.
@example([(95443.2176888889, []), (0.0, []), (5.257989876740019e-122, [])], 1.0)
def test_session_time_is_strictly_increasing_and_exact_within_a_run(
    source_runs: list[tuple[float, list[float]]], interval: float
) -> None:
    timeline = Timeline(MAX_JUMP, interval)
    previous: float | None = None
    for start, deltas in source_runs:
        t = start
        session = timeline.map(t)
        assert previous is None or session > previous
        for delta in deltas:
            t += delta
            nxt = timeline.map(t)
            # Within a continuous run the session advances exactly as the source does.
            assert nxt - session == pytest.approx(delta, abs=1e-6)
            session = nxt
        previous = session


@given(
    st.lists(
        st.tuples(st.sampled_from([-1.0, 1.0]), st.floats(1.0, 1e4), st.integers(10, 60)),
        min_size=1,
        max_size=6,
    ),
    st.integers(0, 8),
)
def test_audio_and_video_stay_aligned_across_jumps(
    jumps: list[tuple[float, float, int]], lag: int
) -> None:
    """Interleaved tracks jump together; the video decoder hands frames ``lag`` late
    (fewer than a run lasts: a decoder holds a few frames, a run lasts seconds)."""
    timeline = Timeline(MAX_JUMP, STEP)
    last = {"video": -1.0, "audio": -1.0}
    offsets: dict[tuple[int, str], float] = {}

    def feed(t: float, track: str, run: int) -> None:
        session = timeline.map(t, track)
        assert session > last[track]
        last[track] = session
        offsets[run, track] = session - t  # the last offset each track used in a run

    start = 0.0
    pending: list[tuple[float, int]] = []
    for run, (sign, size, n) in enumerate(jumps):
        end = start + n * STEP
        audio = [start + j * 0.021 for j in range(int(n * STEP / 0.021) + 1)]
        items = sorted([(t, "video") for t in frames(start, n)] + [(t, "audio") for t in audio])
        for t, track in items:
            if track == "audio":
                feed(t, track, run)
                continue
            pending.append((t, run))
            if len(pending) > lag:
                late, late_run = pending.pop(0)
                feed(late, "video", late_run)
        # The next run restarts behind or jumps ahead by more than the threshold.
        start = start - size if sign < 0 else end + MAX_JUMP + size
    for t, run in pending:
        feed(t, "video", run)
    for run in range(len(jumps)):
        assert offsets[run, "video"] == pytest.approx(offsets[run, "audio"], abs=1e-6)
