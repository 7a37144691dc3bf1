"""Insets over busy video, found by keypoints (``features.py``) and confirmed by PDQ."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from livemod.config import KnownBadConfig
from livemod.messages import Image
from livemod.testing.media import photo
from livemod.vision import pdq
from livemod.vision.features import FeatureIndex, picture_features
from livemod.vision.hashlists import ListSpec
from livemod.vision.known_bad import KnownBadAnalyzer

W, H = 640, 360
LISTED = ("astronaut", "chelsea", "coffee", "rocket")


def inset(pic: Image, background: str, width: float, corner: str = "tl") -> Image:
    """``pic`` at ``width`` of the frame's width, 12 px from ``corner``, over a real
    busy photograph stretched to the frame."""
    frame = cv2.resize(photo(background), (W, H), interpolation=cv2.INTER_AREA)
    pw = round(W * width)
    ph = round(pw * pic.shape[0] / pic.shape[1])
    x = 12 if "l" in corner else W - pw - 12
    y = 12 if "t" in corner else H - ph - 12
    frame[y : y + ph, x : x + pw] = cv2.resize(pic, (pw, ph), interpolation=cv2.INTER_AREA)
    return frame


@pytest.fixture(scope="module")
def listed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("listed")
    for name in LISTED:
        cv2.imwrite(str(folder / f"{name}.png"), photo(name)[:, :, ::-1])
    return folder


@pytest.fixture(scope="module")
def keypoints_only(listed: Path) -> KnownBadAnalyzer:
    """Only the whole frame is hashed (max_regions=1): an inset can match only by
    keypoints, so these tests see that path alone."""
    return KnownBadAnalyzer([ListSpec("default", (listed,))], max_regions=1)


@pytest.fixture(scope="module")
def analyzer(listed: Path) -> KnownBadAnalyzer:
    return KnownBadAnalyzer([ListSpec("default", (listed,))])


def test_listed_pictures_get_keypoints_at_load(keypoints_only: KnownBadAnalyzer) -> None:
    lists = keypoints_only.lists
    assert len(lists.features) == len(LISTED)
    labels = {lists.lists[i].labels[e] for i, e in lists.pictured}
    assert labels == {f"{name}.png" for name in LISTED}
    for p in lists.features.pictures:
        assert p.descriptors.dtype == np.uint8 and p.descriptors.shape[1] == 32
        assert len(p.points) == len(p.descriptors) >= 5 and max(p.size) == 320


@pytest.mark.parametrize("background", ["brick", "gravel"])
@pytest.mark.parametrize("width", [0.3, 0.5])
@pytest.mark.parametrize("name", ["astronaut", "coffee"])
def test_an_inset_over_a_busy_photo_is_located_and_matched(
    keypoints_only: KnownBadAnalyzer, name: str, width: float, background: str
) -> None:
    frame = inset(photo(name), background, width, "br" if width == 0.5 else "tl")
    found, seen = keypoints_only.match(frame)
    assert found is not None and found.label == f"{name}.png", seen
    assert found.view.startswith("located by") and found.box.kind == "inset"
    assert found.distance <= found.max_distance == 31
    # The evidence box is the inset, to within a few pixels.
    pw = round(W * width)
    x = 12 if width == 0.3 else W - pw - 12
    assert abs(found.box.x - x) <= 4 and abs(found.box.w - pw) <= 8


def test_the_whole_analyzer_matches_insets_at_30_and_50_percent(
    analyzer: KnownBadAnalyzer,
) -> None:
    for name in LISTED:
        for width, corner in ((0.3, "tr"), (0.5, "bl")):
            (result,) = analyzer.analyze_batch([inset(photo(name), "brick", width, corner)])
            assert [s.label for s in result.signals] == [f"default:{name}.png"], (name, width)


@pytest.mark.parametrize("background", ["brick", "gravel", "grass", "hubble_deep_field"])
def test_busy_benign_frames_do_not_match(analyzer: KnownBadAnalyzer, background: str) -> None:
    frames = [cv2.resize(photo(background), (W, H), interpolation=cv2.INTER_AREA)]
    others = ("camera", "moon")
    frames += [inset(photo(other), background, w) for other in others for w in (0.3, 0.5)]
    for result in analyzer.analyze_batch(frames):
        assert result.signals == (), result.scores


def test_a_mirrored_listed_picture_is_not_mistaken_by_keypoints(
    keypoints_only: KnownBadAnalyzer,
) -> None:
    # ORB is not mirror-invariant: the keypoint path stays silent rather than guess.
    frame = inset(np.ascontiguousarray(photo("coffee")[:, ::-1]), "brick", 0.4)
    found, _ = keypoints_only.match(frame)
    assert found is None or found.label == "coffee.png"


def test_every_nth_sample_and_the_cap(listed: Path) -> None:
    spec = [ListSpec("default", (listed,))]
    frame = inset(photo("astronaut"), "brick", 0.3)
    every2 = KnownBadAnalyzer(spec, max_regions=1, features_every=2)
    found = [every2.match(frame)[0] for _ in range(4)]
    assert [f is not None for f in found] == [False, True, False, True]
    off = KnownBadAnalyzer(spec, max_regions=1, feature_pictures=0)
    assert len(off.lists.features) == 0 and off.match(frame)[0] is None
    two = KnownBadAnalyzer(spec, feature_pictures=2)
    assert len(two.lists.features) == 2
    config = KnownBadConfig()
    assert config.feature_pictures == 16 and config.features_every == 2


def test_a_picture_too_plain_for_keypoints_has_none() -> None:
    assert picture_features(np.full((200, 300), 90, np.uint8)) is None
    assert FeatureIndex([]).locate(pdq.grey_of(inset(photo("coffee"), "brick", 0.4))) == []
