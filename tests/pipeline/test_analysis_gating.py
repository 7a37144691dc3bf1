"""Gated analysis (reused scores, the NudeNet cascade) decides as the full analysis does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from livemod.app.build import build_analyzers
from livemod.config import load_config
from livemod.messages import FrameAnalysis, VideoFrame
from livemod.ocr.stage import build_ocr_stage
from livemod.paths import DEFAULT_POLICY
from livemod.pipeline.analysis import AnalysisService
from livemod.policy.taxonomy import load_policy
from livemod.policy.vote import VoteEngine
from livemod.testing.media import KNOWN_BAD_PHOTO, fit, pattern, photo
from livemod.testing.text import captioned


def noisy(picture: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.integers(-3, 4, picture.shape, dtype=np.int16)
    return np.clip(picture.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def frames() -> list[VideoFrame]:
    """A still camera, the known-bad picture cut in, a moving pattern, another still."""
    head, bad, coffee = fit(photo("astronaut")), fit(photo(KNOWN_BAD_PHOTO)), fit(photo("coffee"))
    pictures = [noisy(head, i) for i in range(10)] + [noisy(bad, i) for i in range(6)]
    pictures += [pattern(i / 4) for i in range(4)] + [noisy(coffee, i) for i in range(10)]
    return [VideoFrame("s", i, i / 4, 1000.0 + i / 4, img) for i, img in enumerate(pictures)]


def decisions(analyses: list[FrameAnalysis]) -> list[tuple[str, str, str, float]]:
    engine = VoteEngine(load_policy(DEFAULT_POLICY))
    out = []
    for a in analyses:
        out += [
            (d.category, d.action, d.state, round(d.media_time_s, 2))
            for d in engine.update("u:r", a)
        ]
    return out


async def test_gated_analysis_decides_as_the_full_one(known_bad_dir: Path) -> None:
    env = {"LIVEMOD_KNOWN_BAD__PATHS": json.dumps([str(known_bad_dir)])}
    config = load_config(None, environ=env)
    analyzers = build_analyzers(config)
    full = AnalysisService(analyzers, workers=2)
    gated = AnalysisService(analyzers, workers=2, capacity=config.capacity)
    try:
        items = frames()
        reference = [await full.analyze(f) for f in items]
        got = [await gated.analyze(f) for f in items]
        stats = gated.stream_stats("s")
        gated.forget("s")
        assert gated.stream_stats("s") == stats  # an ended stream's summary keeps them
        assert full.stream_stats("s") is None
    finally:
        full.close()
        gated.close()
    assert decisions(reference) == decisions(got)
    assert any(d[:3] == ("known_bad", "pause", "start") for d in decisions(got))
    assert stats is not None
    # Stills reuse; the cut to the listed picture, the pattern and the next cut run fresh.
    assert stats["reused"] >= 12 and stats["fresh"] + stats["reused"] == len(items)
    # The whole-frame scores of benign stills keep NudeNet off between its schedule.
    assert stats["detector_skips"] >= 1
    # Unchanged stills reuse the known-bad result too; the cut to the listed picture is
    # hashed fresh, so the match starts at the same sample as in the full analysis.
    assert stats["always_reused"] >= 12
    assert stats["always_reused"] <= stats["reused"]
    # The cut to the listed picture is settled by the match: no model runs on it, and
    # the models' scores of the still before it stand (so would a standing blur).
    assert stats["settled"] == 1
    models = [k for k in got[9].scores if not k.startswith("hash_")]
    assert len(models) > 10
    assert {k: got[10].scores[k] for k in models} == {k: got[9].scores[k] for k in models}
    assert got[10].scores["opennsfw"] != reference[10].scores["opennsfw"]

    def listed(analyses: list[FrameAnalysis]) -> list[bool]:
        return [any(s.category == "known_bad" for s in a.signals) for a in analyses]

    assert listed(got) == listed(reference)
    assert listed(got).index(True) == 10


async def test_a_cut_back_reuses_the_earlier_analysis_and_decides_the_same(
    known_bad_dir: Path,
) -> None:
    env = {"LIVEMOD_KNOWN_BAD__PATHS": json.dumps([str(known_bad_dir)])}
    config = load_config(None, environ=env)
    analyzers = build_analyzers(config)
    full = AnalysisService(analyzers, workers=2)
    gated = AnalysisService(analyzers, workers=2, capacity=config.capacity)
    head, bad = fit(photo("astronaut")), fit(photo(KNOWN_BAD_PHOTO))
    # The show, the listed picture cut in for 1.5 s, the show again (a return).
    pictures = [noisy(head, i) for i in range(4)] + [noisy(bad, i) for i in range(6)]
    pictures += [noisy(head, 10 + i) for i in range(6)]
    items = [VideoFrame("s", i, i / 4, 1000.0 + i / 4, img) for i, img in enumerate(pictures)]
    try:
        reference = [await full.analyze(f) for f in items]
        got = [await gated.analyze(f) for f in items]
        stats = gated.stream_stats("s")
    finally:
        full.close()
        gated.close()
    assert stats is not None
    assert stats["returns"] == 1 and stats["fresh"] == 2
    assert decisions(reference) == decisions(got)
    assert [d[:3] for d in decisions(got)] == [
        ("known_bad", "pause", "start"),
        ("known_bad", "pause", "stop"),
    ]
    # The returned sample carries the show's own scores, as a fresh analysis would.
    assert got[10].scores == got[0].scores
    for want, have in zip(reference[10:], got[10:], strict=True):
        assert have.scores.keys() == want.scores.keys()
        # Model scores as the fresh analysis gives them (sensor noise moves them a little)
        # and no known-bad match: the hash distance stays far from a match.
        models = [k for k in want.scores if k != "hash_distance"]
        assert all(abs(have.scores[k] - want.scores[k]) < 0.05 for k in models)
        assert min(have.scores["hash_distance"], want.scores["hash_distance"]) > 64
        assert not any(s.category == "known_bad" for s in have.signals)


async def test_ocr_never_holds_a_sample_and_joins_the_next() -> None:
    config = load_config(None, environ={})
    stage = build_ocr_stage(config)
    analyzers = build_analyzers(config)
    service = AnalysisService(
        analyzers,
        workers=2,
        stages=[stage],
        capacity=config.capacity,
        background_stages=True,
    )
    try:
        image = captioned(["Call me tonight 555-867-5309"])
        first = await service.analyze(VideoFrame("s", 0, 0.0, 1000.0, image))
        # The pass started beside the models; this sample did not wait for it.
        assert not any(s.source == "ocr" for s in first.signals)
        await stage.idle()
        second = await service.analyze(VideoFrame("s", 1, 0.25, 1000.25, image))
        assert any(s.source == "ocr" and s.category == "contact" for s in second.signals)
        gate = stage.stream_gate("s")
        assert gate is not None and gate.counts.run == 1
    finally:
        service.close()


async def test_ocr_does_not_reread_a_picture_that_only_moves() -> None:
    config = load_config(None, environ={})
    stage = build_ocr_stage(config)
    service = AnalysisService(
        build_analyzers(config),
        workers=2,
        stages=[stage],
        capacity=config.capacity,
        background_stages=True,
    )
    captioned_frame = captioned(["Call me tonight 555-867-5309"])

    def panned(i: int) -> np.ndarray:
        """The camera pans over the picture (8 px a sample); the caption stays."""
        image = captioned_frame.copy()
        image[:250] = np.roll(captioned_frame[:250], 8 * i, axis=1)
        return image

    try:
        seen = []
        for i in range(7):
            analysis = await service.analyze(VideoFrame("s", i, i / 4, 1000.0 + i / 4, panned(i)))
            read = [s for s in analysis.signals if s.source == "ocr"]
            seen.append(any(s.category == "contact" for s in read))
            await stage.idle()
        stats = service.stream_stats("s")
        gate = stage.stream_gate("s")
    finally:
        service.close()
    assert stats is not None and gate is not None
    # The pan changes much of the picture on every sample but shows nothing new: the
    # models and OCR keep their last look, and the reading joins every later sample's vote.
    assert stats["motion_reused"] >= 4
    assert gate.counts.run == 1 and gate.counts.motion == stats["motion_reused"]
    assert seen == [False] + [True] * 6
