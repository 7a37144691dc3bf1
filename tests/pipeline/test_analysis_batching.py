"""The CPU path through the micro-batcher decides exactly as the unbatched path."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from livemod.app.build import build_analyzers
from livemod.config import load_config
from livemod.messages import FrameAnalysis, VideoFrame
from livemod.paths import DEFAULT_POLICY
from livemod.pipeline.analysis import AnalysisService
from livemod.policy.taxonomy import load_policy
from livemod.policy.vote import VoteEngine
from livemod.testing.media import KNOWN_BAD_PHOTO, fit, pattern, photo
from livemod.vision.batching import BatchPolicy


def frames() -> list[VideoFrame]:
    pictures = [pattern(0.5), fit(photo("astronaut")), fit(photo(KNOWN_BAD_PHOTO))]
    pictures += [fit(photo(KNOWN_BAD_PHOTO))] * 3 + [fit(photo("coffee"))] * 4
    return [VideoFrame("s", i, i / 4, 1000.0 + i / 4, img) for i, img in enumerate(pictures)]


def decisions(analyses: list[FrameAnalysis]) -> list[tuple[str, str, str, float]]:
    engine = VoteEngine(load_policy(DEFAULT_POLICY))
    out = []
    for a in analyses:
        out += [(d.category, d.action, d.state, d.confidence) for d in engine.update("u:r", a)]
    return out


@pytest.mark.parametrize("policy", [BatchPolicy(4, 0.005), BatchPolicy(8, 0.05)])
async def test_batched_equals_unbatched(known_bad_dir: Path, policy: BatchPolicy) -> None:
    env = {"LIVEMOD_KNOWN_BAD__PATHS": json.dumps([str(known_bad_dir)])}
    config = load_config(None, environ=env)
    analyzers = build_analyzers(config)
    plain = AnalysisService(analyzers, workers=1)
    batched = AnalysisService(analyzers, workers=2, batch=policy)
    try:
        items = frames()
        reference = [plain.analyze_sync(f) for f in items]
        # All frames in flight at once, as if from many streams: they share calls.
        got = await asyncio.gather(*(batched.analyze(f) for f in items))
    finally:
        plain.close()
        batched.close()
    for ref, out in zip(reference, got, strict=True):
        assert ref.scores.keys() == out.scores.keys()
        for key, value in ref.scores.items():
            assert out.scores[key] == pytest.approx(value, abs=1e-4), key
        assert [(s.category, s.source) for s in ref.signals] == [
            (s.category, s.source) for s in out.signals
        ]
    assert decisions(reference) == decisions(list(got))
    # The listed picture itself, re-encoded: a PDQ match a few bits away (not exact).
    starts = [d for d in decisions(reference) if d[:3] == ("known_bad", "pause", "start")]
    assert len(starts) == 1 and starts[0][3] >= 0.9
