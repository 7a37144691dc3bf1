"""The known-bad matcher on frames as streams show a listed picture, and its reload."""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from livemod.errors import ConfigError
from livemod.messages import Image
from livemod.testing.media import photo
from livemod.vision import pdq
from livemod.vision.base import FrameAnalyzer
from livemod.vision.hashlists import ListSpec
from livemod.vision.known_bad import KnownBadAnalyzer

BAD = "rocket"
W, H = 640, 360


def fitted(pic: Image, w: int, h: int) -> Image:
    """``pic`` scaled to fit ``w`` x ``h``, aspect kept, on black (letter/pillarbox)."""
    s = min(w / pic.shape[1], h / pic.shape[0])
    pw, ph = round(pic.shape[1] * s), round(pic.shape[0] * s)
    frame = np.zeros((h, w, 3), np.uint8)
    x, y = (w - pw) // 2, (h - ph) // 2
    frame[y : y + ph, x : x + pw] = cv2.resize(pic, (pw, ph), interpolation=cv2.INTER_AREA)
    return frame


def jpeg(image: Image, quality: int) -> Image:
    ok, buf = cv2.imencode(".jpg", image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1])


def captioned(image: Image) -> Image:
    """A subtitle line over the picture, spilling onto the bars."""
    out = image.copy()
    h = out.shape[0]
    cv2.putText(out, "LIVE NOW  follow me", (20, h - 14), 0, 0.8, (255, 255, 255), 2)
    return out


@pytest.fixture(scope="module")
def lists(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("lists")
    cv2.imwrite(str(folder / "bad.png"), photo(BAD)[:, :, ::-1])
    return folder


@pytest.fixture(scope="module")
def analyzer(lists: Path) -> KnownBadAnalyzer:
    return KnownBadAnalyzer([ListSpec("default", (lists,))])


def test_it_is_a_frame_analyzer(analyzer: KnownBadAnalyzer) -> None:
    as_protocol: FrameAnalyzer = analyzer
    assert as_protocol.name == "hash" and len(analyzer.analyze_batch([])) == 0


SHOWN = {
    "stretched": lambda pic: cv2.resize(pic, (W, H), interpolation=cv2.INTER_AREA),
    "pillarboxed": lambda pic: fitted(pic, W, H),
    "letterboxed": lambda pic: fitted(pic, W, 640),
    "mirrored": lambda pic: fitted(pic[:, ::-1], W, H),
    "turned": lambda pic: fitted(np.rot90(pic, -1), W, H),
    "jpeg_q20": lambda pic: jpeg(fitted(pic, W, H), 20),
    "blurred": lambda pic: cv2.GaussianBlur(fitted(pic, W, H), (5, 5), 1.5),
}


@pytest.mark.parametrize("shown", sorted(SHOWN))
def test_the_listed_picture_matches_as_streams_show_it(
    analyzer: KnownBadAnalyzer, shown: str
) -> None:
    frame = np.ascontiguousarray(SHOWN[shown](photo(BAD)))
    (result,) = analyzer.analyze_batch([frame])
    assert result.signals, f"{shown}: distance {result.scores['hash_distance']}"
    (signal,) = result.signals
    assert signal.category == "known_bad" and signal.source == "hash"
    assert signal.label == "default:bad.png" and 0.7 <= signal.score <= 1.0
    assert result.scores["hash_distance"] <= 31
    (region,) = signal.regions
    assert region.label.startswith("default:bad.png (")


def caption_bar(image: Image) -> Image:
    """A dark bar across the bottom tenth with a line of text in it."""
    out = image.copy()
    out[-H // 10 :] = (out[-H // 10 :] * 0.4 + 10).astype(np.uint8)
    return captioned(out)


@pytest.mark.parametrize("name", ["astronaut", "chelsea", "coffee", "rocket"])
@pytest.mark.parametrize("how", ["subtitle", "bar"])
def test_a_caption_over_the_picture_still_matches(tmp_path: Path, name: str, how: str) -> None:
    # Text over a plain picture (the rocket's sky) moves PDQ ~48 bits: the match is
    # on the picture with its bottom band cut off, on both sides.
    cv2.imwrite(str(tmp_path / "listed.png"), photo(name)[:, :, ::-1])
    analyzer = KnownBadAnalyzer([ListSpec("default", (tmp_path,))])
    frame = fitted(photo(name), W, H)
    frame = captioned(frame) if how == "subtitle" else caption_bar(frame)
    found, seen = analyzer.match(frame)
    assert found is not None and found.label == "listed.png", seen
    if name == "rocket":
        assert found.view.startswith("bottom") and found.box.kind == "content"


@pytest.mark.parametrize("cut", [0.05, 0.1, 0.2])
def test_a_cropped_picture_matches_a_crop_of_the_listed_one(
    analyzer: KnownBadAnalyzer, cut: float
) -> None:
    pic = photo(BAD)
    dy, dx = round(pic.shape[0] * cut / 2), round(pic.shape[1] * cut / 2)
    frame = fitted(np.ascontiguousarray(pic[dy:-dy, dx:-dx]), W, H)
    found, seen = analyzer.match(frame)
    assert found is not None and found.label == "bad.png", seen
    assert found.view.startswith("crop") and found.view in found.how


def test_an_inset_over_busy_video_matches(analyzer: KnownBadAnalyzer) -> None:
    # Picture-in-picture over a brick wall, whose mortar lines are straight edges too.
    frame = cv2.resize(photo("brick"), (W, H), interpolation=cv2.INTER_AREA)
    pw = round(W * 0.4)
    ph = round(pw * photo(BAD).shape[0] / photo(BAD).shape[1])
    frame[12 : 12 + ph, 12 : 12 + pw] = cv2.resize(
        photo(BAD), (pw, ph), interpolation=cv2.INTER_AREA
    )
    found, seen = analyzer.match(frame)
    assert found is not None and found.box.kind == "inset", seen
    assert abs(found.box.x - 12) <= 3 and abs(found.box.y - 12) <= 3


def test_evidence_says_where_and_how(analyzer: KnownBadAnalyzer) -> None:
    frame = fitted(photo(BAD)[:, ::-1], W, H)
    found, _ = analyzer.match(frame)
    assert found is not None and found.list_name == "default" and found.label == "bad.png"
    assert found.transform == "mirror" and found.box.kind == "content"
    # The region covers the picture, not the black bars.
    cols = np.flatnonzero(frame.max(axis=(0, 2)) > 0)
    assert abs(found.box.x - cols[0]) <= 4 and abs(found.box.x + found.box.w - cols[-1]) <= 6
    assert "mirror" in found.how and "content" in found.how


@pytest.mark.parametrize("other", ["astronaut", "camera", "chelsea", "coffee", "moon"])
def test_other_pictures_do_not_match(analyzer: KnownBadAnalyzer, other: str) -> None:
    (result,) = analyzer.analyze_batch([fitted(photo(other), W, H)])
    assert result.signals == () and result.scores["hash_distance"] > 31


def test_flat_frames_are_not_hashed(analyzer: KnownBadAnalyzer) -> None:
    (result,) = analyzer.analyze_batch([np.full((H, W, 3), 30, np.uint8)])
    assert result.signals == () and result.scores["hash_distance"] == 256


def test_each_list_has_its_own_threshold_and_name(tmp_path: Path) -> None:
    h = pdq.pdq(photo(BAD)).hex()
    (tmp_path / "strict.pdq").write_text(f"{h} exact-only\n", encoding="utf-8")
    (tmp_path / "loose.pdq").write_text(f"{h} partner-77\n", encoding="utf-8")
    frame = jpeg(fitted(photo(BAD), W, H), 30)
    strict = KnownBadAnalyzer([ListSpec("strict", (tmp_path / "strict.pdq",), max_distance=0)])
    assert strict.analyze_batch([frame])[0].signals == ()
    both = KnownBadAnalyzer(
        [
            ListSpec("strict", (tmp_path / "strict.pdq",), max_distance=0),
            ListSpec("partner", (tmp_path / "loose.pdq",), max_distance=31),
        ]
    )
    (signal,) = both.analyze_batch([frame])[0].signals
    assert signal.label == "partner:partner-77"


def test_reload_swaps_lists_and_a_bad_file_keeps_the_old_ones(tmp_path: Path) -> None:
    path = tmp_path / "list.pdq"
    path.write_text(f"{pdq.pdq(photo('coffee')).hex()} coffee\n", encoding="utf-8")
    analyzer = KnownBadAnalyzer([ListSpec("default", (path,))])
    frame = fitted(photo(BAD), W, H)
    assert analyzer.analyze_batch([frame])[0].signals == ()
    path.write_text(f"{pdq.pdq(photo(BAD)).hex()} rocket\n", encoding="utf-8")
    assert analyzer.reload() == {"default": 1}
    assert analyzer.analyze_batch([frame])[0].signals[0].label == "default:rocket"
    path.write_text("not a hash\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"list\.pdq, line 1"):
        analyzer.reload()
    assert analyzer.analyze_batch([frame])[0].signals[0].label == "default:rocket"


def test_reloads_while_matching_lose_no_match(lists: Path) -> None:
    analyzer = KnownBadAnalyzer([ListSpec("default", (lists,))])
    frame = fitted(photo(BAD), W, H)
    stop = threading.Event()
    reloads = 0

    def reload_forever() -> None:
        nonlocal reloads
        while not stop.is_set():
            analyzer.reload()
            reloads += 1

    thread = threading.Thread(target=reload_forever)
    thread.start()
    try:
        results = [analyzer.analyze_batch([frame])[0] for _ in range(150)]
    finally:
        stop.set()
        thread.join()
    assert reloads >= 3
    assert all(r.signals for r in results)
