"""PDQ perceptual hashes (Meta's open 256-bit hash, the format of shared known-bad lists).

The hash itself comes from ``pdqhash`` (Python bindings of Meta's reference C++).
A hash is kept as four ``uint64`` words, most significant first, so that the 64 hex
digits that lists exchange read the same as ``"".join(f"{w:016x}" for w in words)``.

Every picture, listed or seen in a frame, is first area-resized to ``SIDE`` x
``SIDE``: the reference hashes full-size pictures through a filter whose width
follows the picture's size, which costs ~5 ms on a 640x360 frame; on a 64x64 copy
(PDQ's own working size) it costs ~0.1 ms, and the copy differs from the full-size
hash by about as many bits as a re-encode does (8-14 of 256 on scikit-image's
photos), so lists hashed elsewhere at full size still match within 31.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, cast

import cv2
import numpy as np
import numpy.typing as npt
import pdqhash

from livemod.messages import Image

__all__ = [
    "BITS",
    "DIHEDRAL",
    "SIDE",
    "WORDS",
    "PdqHash",
    "from_hex",
    "grey_of",
    "pack_bits",
    "pdq",
    "pdq_dihedral",
    "to_hex",
]

BITS: Final = 256
WORDS: Final = 4
SIDE: Final = 64
"""Side of the square copy that is hashed."""

DIHEDRAL: Final = (
    "none",
    "rotate90_cw",
    "rotate180",
    "rotate90_ccw",
    "flip_vertical",
    "mirror",
    "transpose",
    "antitranspose",
)
"""How a frame showed the picture when ``pdq_dihedral``'s hash number ``i`` matches.

``pdqhash.compute_dihedral`` hashes the frame turned 90 degrees counter-clockwise at
index 1, so a match there means the frame showed the picture turned clockwise; the
other transforms are their own inverses. Checked against ``np.rot90`` in the tests.
"""

_HEX: Final = re.compile(r"[0-9a-fA-F]{64}")
_SHIFTS: Final = np.arange(63, -1, -1, dtype=np.uint64)


@dataclass(frozen=True, slots=True)
class PdqHash:
    """One PDQ hash (four big-endian ``uint64`` words) and its quality (0-100)."""

    words: npt.NDArray[np.uint64]
    quality: int

    def hex(self) -> str:
        return to_hex(self.words)


def pack_bits(bits: npt.NDArray[np.integer] | npt.NDArray[np.bool_]) -> npt.NDArray[np.uint64]:
    """Pack ``(..., 256)`` bits, most significant first as ``pdqhash`` returns them,
    into ``(..., 4)`` words."""
    b = np.asarray(bits, dtype=np.uint64).reshape(*bits.shape[:-1], WORDS, 64)
    return cast("npt.NDArray[np.uint64]", (b << _SHIFTS).sum(axis=-1, dtype=np.uint64))


def to_hex(words: npt.NDArray[np.uint64]) -> str:
    return "".join(f"{int(w):016x}" for w in words)


def from_hex(text: str) -> npt.NDArray[np.uint64]:
    """Parse 64 hex digits; raises ValueError otherwise."""
    if not _HEX.fullmatch(text):
        raise ValueError(f"a PDQ hash is 64 hex digits, got {text[:80]!r}")
    return np.array([int(text[i : i + 16], 16) for i in range(0, 64, 16)], dtype=np.uint64)


def grey_of(image: Image) -> npt.NDArray[np.uint8]:
    """The luma of an RGB frame (a grey one as it is), validated."""
    if image.dtype != np.uint8 or not (
        image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)
    ):
        raise ValueError(
            f"PDQ expects an RGB (h, w, 3) or grey (h, w) uint8 image, "
            f"got {image.dtype} {image.shape}"
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"PDQ got an empty image of shape {image.shape}")
    if image.ndim == 2:
        return image
    grey = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    return cast("npt.NDArray[np.uint8]", grey)


def _square(image: Image) -> npt.NDArray[np.uint8]:
    # Luma first, then one channel to resize: a third of the work. PDQ's own luma of
    # three equal channels is that grey again. A caller hashing several boxes of one
    # frame passes the frame's grey once (2-D) instead.
    grey: object = grey_of(image)
    h, w = image.shape[:2]
    fx, fy = max(1, w // SIDE), max(1, h // SIDE)
    if fx > 1 or fy > 1:
        # OpenCV's area resize is fast only for whole-number ratios: average whole
        # blocks first (dropping < one block of edge pixels), then finish on a copy
        # at most twice the target.
        grey = cv2.resize(
            # Edge pixels that do not fill a block are dropped evenly from both sides,
            # so a turned or mirrored picture loses the same pixels.
            np.ascontiguousarray(
                cast("npt.NDArray[np.uint8]", grey)[
                    (h % fy) // 2 : h - (h % fy + 1) // 2, (w % fx) // 2 : w - (w % fx + 1) // 2
                ]
            ),
            (w // fx, h // fy),
            interpolation=cv2.INTER_AREA,
        )
    small = cv2.resize(
        cast("npt.NDArray[np.uint8]", grey), (SIDE, SIDE), interpolation=cv2.INTER_AREA
    )
    return cast("npt.NDArray[np.uint8]", np.repeat(small[:, :, None], 3, axis=2))


# PDQ's DCT basis starts at frequency 1 (no DC term), so mirroring a picture flips the
# sign of coefficient k where k + 1 is odd: -(-1)^k, per row (i) and per column (j).
_I: Final = -((-1.0) ** np.arange(16))[:, None]
_J: Final = -((-1.0) ** np.arange(16))[None, :]


def _variants(a: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The 16x16 DCT outputs of the eight dihedral transforms, in ``DIHEDRAL``'s order
    (as ``pdqhash.compute_dihedral`` orders them; checked bit for bit in the tests)."""
    t = a.T
    return np.stack([a, t * _I, a * _I * _J, t * _J, a * _I, a * _J, t, t * _I * _J])


def pdq_dihedral(image: Image) -> tuple[npt.NDArray[np.uint64], int]:
    """The eight dihedral hashes ``(8, 4)`` in ``DIHEDRAL``'s order, and the quality.

    One DCT (``pdqhash.compute_float``) serves all eight: a turn or flip of the
    picture only transposes the DCT output and flips the signs of odd frequencies.
    """
    floats, quality = pdqhash.compute_float(_square(image))
    # compute_float returns the buffer reversed, most significant bit first.
    dct = np.asarray(floats, dtype=np.float64)[::-1].reshape(16, 16)
    flat = _variants(dct).reshape(8, 256)
    # PDQ's median (Torben's) of 256 values is the lower middle one: the 128th smallest.
    median = np.partition(flat, 127, axis=1)[:, 127:128]
    bits = (flat > median)[:, ::-1]
    return pack_bits(bits), int(quality)


def pdq(image: Image) -> PdqHash:
    """The PDQ hash of an RGB (or grey) ``uint8`` picture, hashed at ``SIDE`` x ``SIDE``."""
    hashes, quality = pdq_dihedral(image)
    return PdqHash(hashes[0], quality)
