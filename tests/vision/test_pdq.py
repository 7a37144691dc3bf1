"""PDQ hashes: the reference's bits, its dihedral variants named for how a frame shows
a picture, and the hex form that shared lists use."""

from __future__ import annotations

import numpy as np
import pdqhash
import pytest

from livemod.testing.media import photo
from livemod.vision import pdq
from livemod.vision.pdq import DIHEDRAL, from_hex, pdq_dihedral, to_hex

NAMES = ["astronaut", "camera", "chelsea", "coffee", "rocket", "moon"]


def distance(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.bitwise_count(a ^ b).sum())


@pytest.mark.parametrize("name", NAMES)
def test_dihedral_hashes_equal_the_reference_bit_for_bit(name: str) -> None:
    square = pdq._square(photo(name))
    ours, quality = pdq_dihedral(photo(name))
    ref, ref_quality = pdqhash.compute_dihedral(square)
    assert quality == ref_quality
    assert ours.shape == (8, 4) and ours.dtype == np.uint64
    for k in range(8):
        assert distance(ours[k], pdq.pack_bits(np.asarray(ref[k]))) == 0, DIHEDRAL[k]


SHOWN = {
    "rotate90_cw": lambda im: np.rot90(im, -1),
    "rotate180": lambda im: np.rot90(im, 2),
    "rotate90_ccw": lambda im: np.rot90(im, 1),
    "flip_vertical": lambda im: im[::-1],
    "mirror": lambda im: im[:, ::-1],
    "transpose": lambda im: im.transpose(1, 0, 2),
}


@pytest.mark.parametrize("shown", sorted(SHOWN))
@pytest.mark.parametrize("name", ["chelsea", "coffee"])
def test_each_variant_is_named_for_how_the_frame_shows_the_picture(shown: str, name: str) -> None:
    listed = pdq.pdq(photo(name)).words
    frame = np.ascontiguousarray(SHOWN[shown](photo(name)))
    variants, _ = pdq_dihedral(frame)
    distances = [distance(v, listed) for v in variants]
    assert DIHEDRAL[int(np.argmin(distances))] == shown
    assert min(distances) <= 31


def test_hex_round_trip_puts_the_most_significant_bit_first() -> None:
    h = pdq.pdq(photo("camera"))
    text = h.hex()
    assert len(text) == 64 and text == to_hex(from_hex(text))
    bits, _ = pdqhash.compute(pdq._square(photo("camera")))
    assert text == f"{int(''.join(str(int(b)) for b in bits), 2):064x}"


@pytest.mark.parametrize("bad", ["", "0" * 63, "g" * 64, "0" * 65])
def test_from_hex_rejects_what_is_not_64_hex_digits(bad: str) -> None:
    with pytest.raises(ValueError, match="64 hex digits"):
        from_hex(bad)


def test_a_flat_frame_has_low_quality() -> None:
    flat = np.full((360, 640, 3), 40, np.uint8)
    assert pdq.pdq(flat).quality < 50
    assert pdq.pdq(photo("astronaut")).quality >= 50


def test_grey_and_rgb_inputs_hash_alike() -> None:
    im = photo("astronaut")
    assert distance(pdq.pdq(im).words, pdq.pdq(pdq.grey_of(im)).words) == 0
    with pytest.raises(ValueError, match="uint8"):
        pdq.pdq(im.astype(np.float32))
