"""Perceptual hashing and known-bad matching, on real photographs."""

from __future__ import annotations

import io
import itertools
import random
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest
import skimage.data
from PIL import Image as PILImage

from livemod.errors import ConfigError
from livemod.messages import Image
from livemod.vision import hashes
from livemod.vision.base import FrameAnalyzer
from livemod.vision.hashes import (
    HashAnalyzer,
    KnownBadIndex,
    hamming,
    hash_files,
    phash,
)

Transform = Callable[[Image], Image]


def _photo(name: str) -> Image:
    image = np.asarray(getattr(skimage.data, name)(), dtype=np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image)


# Real photographs bundled with scikit-image (no download needed).
PHOTOS: dict[str, Image] = {
    "astronaut": _photo("astronaut"),
    "coffee": _photo("coffee"),
    "chelsea": _photo("chelsea"),
    "rocket": _photo("rocket"),
    "camera": _photo("camera"),
    "hubble_deep_field": _photo("hubble_deep_field"),
}
# More pictures, only to widen the "different pictures are far apart" check.
OTHER_PICTURES: dict[str, Image] = {
    "immunohistochemistry": _photo("immunohistochemistry"),
    "moon": _photo("moon"),
    "coins": _photo("coins"),
}


def _jpeg(image: Image, quality: int = 60) -> Image:
    buf = io.BytesIO()
    PILImage.fromarray(image).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    with PILImage.open(buf) as im:
        return np.asarray(im.convert("RGB"))


def _video_frame(image: Image) -> Image:
    # Stretched to 640x360 as a player fills the frame, whatever the aspect ratio.
    return np.asarray(cv2.resize(image, (640, 360), interpolation=cv2.INTER_AREA))


def _brightness(image: Image, delta: int = 12) -> Image:
    return np.clip(image.astype(np.int16) + delta, 0, 255).astype(np.uint8)


def _crop_centered(image: Image, fraction: float = 0.03) -> Image:
    """Trim ``fraction`` of each dimension, half from each side."""
    h, w = image.shape[:2]
    dy, dx = round(h * fraction / 2), round(w * fraction / 2)
    return np.ascontiguousarray(image[dy : h - dy, dx : w - dx])


def _crop_one_side(image: Image, fraction: float = 0.03) -> Image:
    h, w = image.shape[:2]
    return np.ascontiguousarray(image[round(h * fraction) :, round(w * fraction) :])


def _stream_copy(image: Image) -> Image:
    """A re-shared copy as it reaches a stream: cropped, brighter, framed, re-compressed."""
    return _jpeg(_video_frame(_brightness(_crop_centered(image))))


MILD_EDITS: dict[str, Transform] = {
    "jpeg_q60": _jpeg,
    "video_frame_640x360": _video_frame,
    "brighter": _brightness,
    "darker": lambda im: _brightness(im, -12),
    "crop_2pct": lambda im: _crop_centered(im, 0.02),
    "crop_3pct": _crop_centered,
    "all_combined": _stream_copy,
}


@pytest.fixture(scope="module")
def photo_hashes() -> dict[str, int]:
    return {name: phash(image) for name, image in PHOTOS.items()}


def _write_png(path: Path, image: Image) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray(image).save(path, format="PNG")


# --- phash ----------------------------------------------------------------------


def test_phash_is_a_deterministic_64_bit_int(photo_hashes: dict[str, int]) -> None:
    for name, image in PHOTOS.items():
        h = phash(image)
        assert h == photo_hashes[name]
        assert 0 <= h < 1 << 64
        # 31 AC coefficients lie above the median of 63, plus the (positive) DC term.
        assert h.bit_count() == 32


@pytest.mark.parametrize("edit", MILD_EDITS.values(), ids=MILD_EDITS.keys())
@pytest.mark.parametrize("name", PHOTOS.keys())
def test_mild_edits_stay_within_8_bits(
    name: str, edit: Transform, photo_hashes: dict[str, int]
) -> None:
    edited = edit(PHOTOS[name])
    assert hamming(photo_hashes[name], phash(edited)) <= 8


@pytest.mark.parametrize("name", PHOTOS.keys())
def test_one_sided_crop_is_the_weak_spot(name: str, photo_hashes: dict[str, int]) -> None:
    # A DCT hash follows the picture's layout, so shifting the content by 3% costs
    # more than a centred trim (measured up to 10 bits on these photos). This pins
    # the known limit rather than pretending crops are free.
    edited = _crop_one_side(PHOTOS[name], 0.03)
    assert hamming(photo_hashes[name], phash(edited)) <= 12


def test_different_pictures_are_far_apart() -> None:
    pictures = {**PHOTOS, **OTHER_PICTURES}
    hashed = {name: phash(image) for name, image in pictures.items()}
    for (a, ha), (b, hb) in itertools.combinations(hashed.items(), 2):
        assert hamming(ha, hb) >= 20, (a, b)


@pytest.mark.parametrize("size", [(640, 360), (1280, 720), (1920, 1080), (854, 480)])
def test_two_stage_resize_hashes_like_one_area_resize(size: tuple[int, int]) -> None:
    # The fast two-stage shrink must not change what the hash sees.
    def one_call(g: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        return np.asarray(cv2.resize(g, (32, 32), interpolation=cv2.INTER_AREA))

    for image in PHOTOS.values():
        frame = np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_LINEAR), dtype=np.uint8)
        gray = np.asarray(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), dtype=np.uint8)
        direct = cv2.resize(gray, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float64)
        staged = hashes._to_32x32(gray).astype(np.float64)
        assert np.abs(direct - staged).mean() < 2.0

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(hashes, "_to_32x32", one_call)
            reference = phash(frame)
        assert hamming(phash(frame), reference) <= 2


def test_flat_frames_hash_the_same_at_any_size() -> None:
    # Only the DC bit survives on a flat frame; float noise must not add others.
    for value, (h, w) in itertools.product((1, 128, 255), ((360, 640), (33, 17), (1, 1))):
        assert phash(np.full((h, w, 3), value, dtype=np.uint8)) == 1 << 63
    assert phash(np.zeros((360, 640, 3), dtype=np.uint8)) == 0


def test_phash_accepts_non_contiguous_views() -> None:
    image = PHOTOS["coffee"]
    assert phash(image[::2, ::2]) == phash(np.ascontiguousarray(image[::2, ::2]))


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((10, 10), dtype=np.uint8),
        np.zeros((10, 10, 4), dtype=np.uint8),
        np.zeros((10, 10, 3), dtype=np.float32),
        np.zeros((0, 10, 3), dtype=np.uint8),
    ],
    ids=["gray", "rgba", "float", "empty"],
)
def test_phash_rejects_what_is_not_an_rgb_frame(bad: npt.NDArray[np.generic]) -> None:
    with pytest.raises(ValueError, match="phash"):
        phash(bad)  # type: ignore[arg-type]


def test_hamming() -> None:
    assert hamming(0, 0) == 0
    assert hamming(0, (1 << 64) - 1) == 64
    assert hamming(0b1011, 0b0110) == 3


# --- matcher ----------------------------------------------------------------------


@pytest.mark.parametrize("popcount", ["numpy", "lookup_table"])
def test_vectorized_nearest_agrees_with_a_python_loop(
    popcount: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if popcount == "lookup_table":
        # The path taken on numpy < 2, which has no bitwise_count.
        monkeypatch.setattr(hashes, "_native_bitwise_count", None)
    rng = random.Random(20240611)
    stored = [rng.getrandbits(64) for _ in range(3000)]
    # Near-duplicates and exact duplicates, so that ties and small distances occur.
    stored += [h ^ (1 << rng.randrange(64)) for h in stored[:200]]
    stored += stored[:50]
    labels = [f"img{i}" for i in range(len(stored))]
    index = KnownBadIndex(zip(stored, labels, strict=True))
    queries = [rng.getrandbits(64) for _ in range(200)] + stored[::37]
    queries += [q ^ (1 << rng.randrange(64)) for q in stored[:100]]
    for q in queries:
        best_d, best_label = 65, ""
        for h, label in zip(stored, labels, strict=True):
            d = (h ^ q).bit_count()
            if d < best_d:
                best_d, best_label = d, label
        assert index.nearest(q) == (best_d, best_label)


def test_popcount_fallback_matches_numpy() -> None:
    rng = np.random.default_rng(7)
    values = rng.integers(0, np.iinfo(np.uint64).max, size=5000, dtype=np.uint64, endpoint=True)
    values[:2] = [0, np.iinfo(np.uint64).max]
    expected = np.array([int(v).bit_count() for v in values], dtype=np.uint8)
    assert np.array_equal(hashes._popcount_lut(values), expected)
    assert np.array_equal(hashes._popcount(values), expected)


def test_empty_index_has_no_nearest() -> None:
    index = KnownBadIndex()
    assert len(index) == 0
    assert index.nearest(0x0123456789ABCDEF) is None


def test_index_rejects_values_that_are_not_64_bit_hashes() -> None:
    index = KnownBadIndex()
    for bad in (-1, 1 << 64):
        with pytest.raises(ValueError, match="64-bit"):
            index.add(bad, "x")
    assert len(index) == 0


def test_add_extend_and_views() -> None:
    index = KnownBadIndex([(1, "a")])
    index.add(3, "b")
    index.extend([(7, "c"), (0xFFFF_FFFF_FFFF_FFFF, "d")])
    assert list(index) == [(1, "a"), (3, "b"), (7, "c"), (0xFFFF_FFFF_FFFF_FFFF, "d")]
    assert index.labels == ("a", "b", "c", "d")
    assert index.hashes.dtype == np.uint64
    assert not index.hashes.flags.writeable
    assert index.nearest(0xFFFF_FFFF_FFFF_FFFE) == (1, "d")
    assert index.nearest(5) == (1, "a")  # tied with 7 ("c"); the first added wins


def test_from_images_and_add_image() -> None:
    index = KnownBadIndex.from_images([(PHOTOS["coffee"], "coffee.jpg")])
    h = index.add_image(PHOTOS["rocket"], "rocket.jpg")
    assert h == phash(PHOTOS["rocket"])
    assert index.nearest(phash(PHOTOS["coffee"])) == (0, "coffee.jpg")
    assert index.nearest(h) == (0, "rocket.jpg")


# --- hash files -----------------------------------------------------------------


def test_hash_file_round_trip(tmp_path: Path) -> None:
    index = KnownBadIndex.from_images((image, f"{name}.png") for name, image in PHOTOS.items())
    index.add(0, "all zeros")
    index.add(0xFFFF_FFFF_FFFF_FFFF, "case 17, two\nlines")
    path = tmp_path / "bad.hashes"
    index.dump(path)
    loaded = KnownBadIndex.load([path])
    expected = list(index)
    expected[-1] = (expected[-1][0], "case 17, two lines")
    assert list(loaded) == expected
    assert [p.name for p in tmp_path.iterdir()] == ["bad.hashes"]  # no temp file left


def test_hash_file_comments_blank_lines_and_defaults(tmp_path: Path) -> None:
    path = tmp_path / "shared.txt"
    path.write_text(
        "\ufeff# shared by another operator\n"
        "\n"
        "0123456789abcdef   leaked photo #3  \n"
        "   # indented comment\n"
        "FEDCBA9876543210\n"
        "0000000000000001\tlabel with\ttabs\n",
        encoding="utf-8",
    )
    loaded = KnownBadIndex.load([path])
    assert list(loaded) == [
        (0x0123456789ABCDEF, "leaked photo #3"),
        (0xFEDCBA9876543210, "shared.txt:5"),
        (0x0000000000000001, "label with\ttabs"),
    ]


@pytest.mark.parametrize(
    "bad_line",
    ["0123456789abcde", "0123456789abcdef0", "0123456789abcdeg label", "0x23456789abcdef"],
)
def test_bad_hash_line_names_file_and_line(tmp_path: Path, bad_line: str) -> None:
    path = tmp_path / "bad.txt"
    path.write_text(f"# header\n0123456789abcdef ok\n{bad_line}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        KnownBadIndex.load([path])
    message = str(info.value)
    assert str(path) in message
    assert "line 3" in message


def test_binary_hash_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "hashes.bin"
    path.write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(ConfigError, match=r"hashes\.bin"):
        KnownBadIndex.load([path])


def test_missing_path_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(ConfigError) as info:
        KnownBadIndex.load([missing])
    assert str(info.value) == f"known_bad.paths: {missing} does not exist"


def test_empty_folder_and_empty_file_give_an_empty_index(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty.txt").write_text("# nothing yet\n", encoding="utf-8")
    index = KnownBadIndex.load([tmp_path / "empty", tmp_path / "empty.txt"])
    assert len(index) == 0


# --- image folders ----------------------------------------------------------------


def test_folder_is_loaded_recursively(tmp_path: Path) -> None:
    root = tmp_path / "known_bad"
    _write_png(root / "coffee.png", PHOTOS["coffee"])
    _write_png(root / "space" / "rocket.PNG", PHOTOS["rocket"])
    (root / "space" / "deep").mkdir()
    PILImage.fromarray(PHOTOS["chelsea"]).save(root / "space" / "deep" / "cat.webp", "WEBP")
    PILImage.fromarray(PHOTOS["astronaut"]).convert("RGBA").save(root / "astronaut_rgba.png")
    (root / "README.txt").write_text("not an image\n", encoding="utf-8")
    (root / "notes.json").write_text("{}", encoding="utf-8")
    (root / "._coffee.png").write_bytes(b"\x00\x05\x16\x07 resource fork")  # macOS metadata
    (root / "bad.jpg.bak").write_bytes(b"not looked at")

    index = KnownBadIndex.load([root])

    assert sorted(index.labels) == [
        "astronaut_rgba.png",
        "coffee.png",
        "space/deep/cat.webp",
        "space/rocket.PNG",
    ]
    assert index.nearest(phash(PHOTOS["coffee"])) == (0, "coffee.png")
    assert index.nearest(phash(PHOTOS["rocket"])) == (0, "space/rocket.PNG")
    assert index.nearest(phash(PHOTOS["astronaut"])) == (0, "astronaut_rgba.png")
    match = index.nearest(phash(PHOTOS["chelsea"]))  # lossy webp: close, maybe not exact
    assert match is not None
    assert match[1] == "space/deep/cat.webp"
    assert match[0] <= 4


def test_corrupt_image_is_named(tmp_path: Path) -> None:
    _write_png(tmp_path / "ok.png", PHOTOS["coffee"])
    corrupt = tmp_path / "sub" / "broken.jpg"
    corrupt.parent.mkdir()
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    with pytest.raises(ConfigError, match=r"broken\.jpg"):
        KnownBadIndex.load([tmp_path])


def test_truncated_image_is_named(tmp_path: Path) -> None:
    buf = io.BytesIO()
    PILImage.fromarray(PHOTOS["rocket"]).save(buf, format="JPEG", quality=90)
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ConfigError, match=r"cut\.jpg"):
        KnownBadIndex.load([tmp_path])


def test_mixed_paths_and_a_single_image(tmp_path: Path) -> None:
    _write_png(tmp_path / "folder" / "coffee.png", PHOTOS["coffee"])
    _write_png(tmp_path / "rocket.png", PHOTOS["rocket"])
    (tmp_path / "list.txt").write_text("0123456789abcdef shared\n", encoding="utf-8")
    index = KnownBadIndex.load(
        [tmp_path / "folder", tmp_path / "rocket.png", tmp_path / "list.txt"]
    )
    assert index.labels == ("coffee.png", "rocket.png", "shared")


def test_hash_files(tmp_path: Path) -> None:
    _write_png(tmp_path / "a" / "coffee.png", PHOTOS["coffee"])
    _write_png(tmp_path / "a" / "b" / "rocket.png", PHOTOS["rocket"])
    single = tmp_path / "camera.bin"  # named explicitly, so read whatever the suffix
    PILImage.fromarray(PHOTOS["camera"]).save(single, format="PNG")
    rows = hash_files([tmp_path / "a", str(single)])
    assert rows == [
        (f"{phash(PHOTOS['rocket']):016x}", str(tmp_path / "a" / "b" / "rocket.png")),
        (f"{phash(PHOTOS['coffee']):016x}", str(tmp_path / "a" / "coffee.png")),
        (f"{phash(PHOTOS['camera']):016x}", str(single)),
    ]
    with pytest.raises(ConfigError, match="nothing-here"):
        hash_files([tmp_path / "nothing-here"])


# --- analyzer ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def analyzer() -> HashAnalyzer:
    index = KnownBadIndex.from_images(
        [(PHOTOS["astronaut"], "astronaut.png"), (PHOTOS["rocket"], "rocket.png")]
    )
    return HashAnalyzer(index, max_distance=10)


def test_analyzer_is_a_frame_analyzer(analyzer: HashAnalyzer) -> None:
    as_protocol: FrameAnalyzer = analyzer
    assert as_protocol.name == "hash"


def test_identical_frame_matches_with_full_score(analyzer: HashAnalyzer) -> None:
    [result] = analyzer.analyze_batch([PHOTOS["astronaut"]])
    assert result.scores == {"hash_distance": 0.0}
    [signal] = result.signals
    assert signal.category == "known_bad"
    assert signal.score == 1.0
    assert signal.source == "hash"
    assert signal.label == "astronaut.png"
    assert signal.regions == ()


def test_stream_copy_matches_with_a_lower_score(analyzer: HashAnalyzer) -> None:
    [result] = analyzer.analyze_batch([_stream_copy(PHOTOS["astronaut"])])
    distance = result.scores["hash_distance"]
    assert 0 < distance <= 10
    [signal] = result.signals
    assert signal.label == "astronaut.png"
    assert signal.score == pytest.approx(1.0 - 0.3 * distance / 10)
    assert 0.7 <= signal.score < 1.0


def test_unrelated_frame_gives_no_signal(analyzer: HashAnalyzer) -> None:
    [result] = analyzer.analyze_batch([_video_frame(PHOTOS["coffee"])])
    assert result.signals == ()
    assert result.scores["hash_distance"] >= 20


def test_batch_results_keep_order(analyzer: HashAnalyzer) -> None:
    frames = [PHOTOS["coffee"], PHOTOS["rocket"], PHOTOS["astronaut"], PHOTOS["chelsea"]]
    results = analyzer.analyze_batch(frames)
    assert [r.signals[0].label if r.signals else None for r in results] == [
        None,
        "rocket.png",
        "astronaut.png",
        None,
    ]
    assert analyzer.analyze_batch([]) == []


def test_score_at_the_threshold_is_0_7() -> None:
    frame = PHOTOS["coffee"]
    h = phash(frame)
    # Entries that differ from the frame's hash in exactly 4 and 5 bits.
    analyzer = HashAnalyzer(KnownBadIndex([(h ^ 0b1111, "near")]), max_distance=4)
    [result] = analyzer.analyze_batch([frame])
    assert result.scores == {"hash_distance": 4.0}
    assert result.signals[0].score == pytest.approx(0.7)
    analyzer.index = KnownBadIndex([(h ^ 0b11111, "too far")])
    [result] = analyzer.analyze_batch([frame])
    assert result.signals == ()


def test_empty_index_reports_distance_64() -> None:
    analyzer = HashAnalyzer(KnownBadIndex(), max_distance=8)
    [result] = analyzer.analyze_batch([PHOTOS["coffee"]])
    assert result.signals == ()
    assert result.scores == {"hash_distance": 64.0}


def test_max_distance_zero_needs_an_exact_match() -> None:
    analyzer = HashAnalyzer(KnownBadIndex.from_images([(PHOTOS["coffee"], "c")]), 0)
    [exact, other] = analyzer.analyze_batch([PHOTOS["coffee"], PHOTOS["rocket"]])
    assert exact.signals[0].score == 1.0
    assert other.signals == ()


@pytest.mark.parametrize("bad", [-1, 33, 64, True])
def test_max_distance_is_validated(bad: int) -> None:
    with pytest.raises(ConfigError, match="max_distance"):
        HashAnalyzer(KnownBadIndex(), bad)


@pytest.mark.parametrize("ok", [0, 8, 32])
def test_max_distance_bounds_are_accepted(ok: int) -> None:
    assert HashAnalyzer(KnownBadIndex(), ok).max_distance == ok
