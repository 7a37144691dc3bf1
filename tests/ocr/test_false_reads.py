"""Regression: the one false action of the 10-minute benign detection run.

``benchmarks/detection.py`` (seed 7) played a cartoon rendering of scikit-image's
astronaut at 257.5 s; OCR read the space shuttle's outline as the single glyph "人"
("person", recognizer confidence 0.54) and the learned judge's hate head scored it 0.76,
a medium-tier ``hate`` review. ``data/cartoon_astronaut_257s.png`` is that decoded frame.
A lone word or glyph is no sentence for the judge (``JUDGE_MIN_WORDS``); the lexicon and
patterns still see it.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from livemod.messages import VideoFrame
from livemod.ocr.engine import OcrEngine
from livemod.ocr.stage import OcrStage, StageSettings
from livemod.text.judge import TextPolicy, judgeable
from livemod.vision.manifest import load_manifest

FRAME = Path(__file__).parent / "data" / "cartoon_astronaut_257s.png"


@pytest.fixture(scope="module")
def policy() -> TextPolicy:
    return TextPolicy.load()


def test_the_cartoon_frame_raises_nothing(policy: TextPolicy) -> None:
    bgr = cv2.imread(str(FRAME), cv2.IMREAD_COLOR)
    assert bgr is not None
    image = np.ascontiguousarray(bgr[:, :, ::-1])
    engine = OcrEngine.from_manifest(load_manifest())
    reading = engine.read(image)
    # The replay still holds: the recognizer reads the glyph the benchmark saw. The judge's
    # hate head scored it 0.76, then 0.77, then 0.31 (heads trained on sentence fragments
    # too); whatever a head says, the policy's gate keeps a text without Latin words out.
    assert "人" in reading.text, reading.text
    assert policy.judge is not None
    assert not judgeable(reading.text)
    assert policy.evaluate(reading.text) == []

    async def through_the_stage() -> tuple[object, ...]:
        stage = OcrStage(engine, policy, StageSettings())
        try:
            frame = VideoFrame("cartoon", 0, 257.5, time.time(), image)
            return (await stage.analyze(frame)).signals
        finally:
            stage.close()

    assert asyncio.run(through_the_stage()) == ()


@pytest.mark.parametrize("text", ["人", "人人", "jews", "loser", "hate", "H", "tli", "★", "®"])
def test_lone_words_and_glyphs_are_not_judged(policy: TextPolicy, text: str) -> None:
    assert not judgeable(text)
    assert [h for h in policy.evaluate(text) if h.term == "judge"] == []


def test_sentences_are_still_judged_and_lists_still_match(policy: TextPolicy) -> None:
    # Two-word sentences reach the judge (no word of this one is listed).
    assert policy.without_judge().evaluate("pathetic loser") == []
    assert "harassment" in {h.category for h in policy.evaluate("pathetic loser")}
    assert "hate" in {h.category for h in policy.evaluate("those jews are vermin")}
    # Lexicon entries and patterns do not need a sentence.
    assert {h.category for h in policy.evaluate("kys")} == {"harassment"}
    assert "hate" in {h.category for h in policy.evaluate("SUBHUMAN")}
    # Leetspeak and spacing still count as words.
    assert judgeable("n3ck y o u r s e l f")
