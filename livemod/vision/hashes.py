"""Known-bad image matching with 64-bit DCT perceptual hashes.

The cheap, deterministic first layer of moderation: every sampled frame is hashed
and compared with operator-configured lists of known-bad images. A hash survives
re-compression, rescaling and small brightness or crop changes, so a re-shared
copy of a listed image still matches while unrelated pictures land far away.

Hash files let operators share lists without sharing the images themselves: one
hash a line, 16 hex digits, optionally followed by whitespace and a label.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Final, cast

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image as PILImage
from PIL import ImageOps

from livemod.errors import ConfigError
from livemod.messages import Image, Signal
from livemod.vision.base import AnalyzerResult

__all__ = [
    "HASH_BITS",
    "IMAGE_SUFFIXES",
    "HashAnalyzer",
    "KnownBadIndex",
    "hamming",
    "hash_files",
    "phash",
]

HASH_BITS: Final = 64
"""Width of a perceptual hash; the largest possible Hamming distance."""

IMAGE_SUFFIXES: Final = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"})
"""File name endings (lower case) read as images when a folder is loaded."""

_SIDE: Final = 32
_LOW: Final = 8
# Stage one of the resize shrinks by whole factors only down to this size, so each
# 32x32 cell spans at least two of its pixels and the blur it adds at cell edges
# stays within half an output pixel.
_PRESHRINK_MIN: Final = 64
_HASH_LINE: Final = re.compile(r"([0-9a-fA-F]{16})(?:\s+(.*))?")
_MAX_HASH: Final = (1 << HASH_BITS) - 1


def _dct_matrix(n: int) -> npt.NDArray[np.float64]:
    k = np.arange(n, dtype=np.float64)
    m: npt.NDArray[np.float64] = np.sqrt(2.0 / n) * np.cos(
        np.pi * (2.0 * k[None, :] + 1.0) * k[:, None] / (2.0 * n)
    )
    m[0] /= np.sqrt(2.0)
    return m


# Only the lowest 8x8 frequencies are kept, so only the first 8 rows of the
# orthonormal DCT-II basis are ever needed: D8 @ X @ D8.T.
_DCT_LOW: Final = np.ascontiguousarray(_dct_matrix(_SIDE)[:_LOW])
_DCT_LOW_T: Final = np.ascontiguousarray(_DCT_LOW.T)


def _as_u8(a: object) -> npt.NDArray[np.uint8]:
    # OpenCV's stubs and numpy's fancy indexing lose the dtype; it is uint8 here.
    return cast("npt.NDArray[np.uint8]", a)


@lru_cache(maxsize=256)
def _preshrink_factor(n: int) -> int:
    for f in range(max(n // _PRESHRINK_MIN, 1), 1, -1):
        if n % f == 0:
            return f
    return 1


def _to_32x32(gray: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    # OpenCV's INTER_AREA has a fast path for whole-number ratios only; 360 -> 32
    # takes the generic path at ~0.6 ms. Shrinking first by whole factors (fast)
    # and finishing with a small generic step costs ~1/6 as much; on the photos tried
    # the hashes equal the one-call ones, or differ in 2 bits at worst.
    h, w = gray.shape
    fx, fy = _preshrink_factor(w), _preshrink_factor(h)
    if fx > 1 or fy > 1:
        gray = _as_u8(cv2.resize(gray, (w // fx, h // fy), interpolation=cv2.INTER_AREA))
    return _as_u8(cv2.resize(gray, (_SIDE, _SIDE), interpolation=cv2.INTER_AREA))


def phash(image: Image) -> int:
    """Return the 64-bit DCT perceptual hash of an RGB ``uint8`` frame.

    The frame is reduced to luma, area-resized to 32x32, transformed with an
    orthonormal 2-D DCT-II, and the top-left 8x8 coefficients are compared with
    the median of the 63 non-DC ones; bit 63 (the most significant) is
    coefficient (0, 0), then row by row.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"phash expects an RGB uint8 image of shape (h, w, 3), got {image.dtype} {image.shape}"
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"phash got an empty image of shape {image.shape}")
    gray = _as_u8(cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY))
    small = _to_32x32(gray).astype(np.float64)
    coeffs = (_DCT_LOW @ small @ _DCT_LOW_T).ravel()
    # Rounding drops float noise (~1e-13) so that flat regions hash the same on
    # every CPU and BLAS: hash lists are shared between machines.
    coeffs = np.round(coeffs, 6)
    # The median of 63 values is the 32nd smallest; partition beats np.median here.
    median = np.partition(coeffs[1:], 31)[31]
    return int.from_bytes(np.packbits(coeffs > median).tobytes(), "big")


def hamming(a: int, b: int) -> int:
    """Return the number of bits in which two hashes differ."""
    return (a ^ b).bit_count()


_BYTE_POPCOUNT: Final = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
_native_bitwise_count: Final = getattr(np, "bitwise_count", None)


def _popcount_lut(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint8]:
    counts: npt.NDArray[np.uint8] = _BYTE_POPCOUNT[np.ascontiguousarray(x).view(np.uint8)]
    return _as_u8(counts.reshape(-1, 8).sum(axis=1, dtype=np.uint8))


def _popcount(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint8]:
    if _native_bitwise_count is not None:
        return _as_u8(_native_bitwise_count(x))
    return _popcount_lut(x)


def _check_hash(h: int) -> int:
    if not 0 <= h <= _MAX_HASH:
        raise ValueError(f"a perceptual hash is an unsigned 64-bit integer, got {h}")
    return h


def _read_image(path: Path) -> Image:
    try:
        with PILImage.open(path) as im:
            # Viewers (and so streams that show the picture) honour EXIF rotation;
            # hash the picture as it is seen, not as its pixels are stored.
            upright = ImageOps.exif_transpose(im)
            rgb = upright.convert("RGB")
    except (OSError, ValueError, SyntaxError, PILImage.DecompressionBombError) as exc:
        raise ConfigError(f"cannot read image {path}: {exc}") from exc
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))


def _image_files(folder: Path) -> list[Path]:
    # Hidden files are skipped: macOS "._name.jpg" resource forks carry image
    # suffixes but are not images, and would otherwise fail the whole load.
    found = [
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        and p.is_file()
    ]
    return sorted(found)


class KnownBadIndex:
    """Perceptual hashes of known-bad images, each with a label, for nearest lookups.

    Hashes are kept in a ``uint64`` array so that one lookup is a vectorized XOR and
    popcount over the whole list. Lookups are thread-safe; mutate the index
    (``add``, ``extend``) before handing it to analyzers, not while they run.
    """

    def __init__(self, entries: Iterable[tuple[int, str]] = ()) -> None:
        self._hashes: npt.NDArray[np.uint64] = np.empty(0, dtype=np.uint64)
        self._labels: list[str] = []
        self.extend(entries)

    def __len__(self) -> int:
        return len(self._labels)

    def __iter__(self) -> Iterator[tuple[int, str]]:
        """Yield ``(hash, label)`` pairs in insertion order."""
        return zip((int(h) for h in self._hashes), self._labels, strict=True)

    def __repr__(self) -> str:
        return f"KnownBadIndex({len(self)} hashes)"

    @property
    def hashes(self) -> npt.NDArray[np.uint64]:
        """A read-only view of the hashes, in insertion order."""
        view = self._hashes.view()
        view.flags.writeable = False
        return view

    @property
    def labels(self) -> tuple[str, ...]:
        """The labels, aligned with ``hashes``."""
        return tuple(self._labels)

    def add(self, h: int, label: str) -> None:
        """Add one hash with its label."""
        self.extend([(h, label)])

    def extend(self, entries: Iterable[tuple[int, str]]) -> None:
        """Add many ``(hash, label)`` pairs at once (one array copy, not one per hash)."""
        pairs = [(_check_hash(int(h)), str(label)) for h, label in entries]
        if not pairs:
            return
        new = np.fromiter((h for h, _ in pairs), dtype=np.uint64, count=len(pairs))
        # Labels first, then the array swap: a concurrent reader may then see more
        # labels than hashes, never a hash without its label.
        self._labels.extend(label for _, label in pairs)
        self._hashes = np.concatenate([self._hashes, new])

    def add_image(self, image: Image, label: str) -> int:
        """Hash an RGB frame, add it under ``label``, and return its hash."""
        h = phash(image)
        self.add(h, label)
        return h

    @classmethod
    def from_images(cls, images: Iterable[tuple[Image, str]]) -> KnownBadIndex:
        """Build an index from ``(rgb_image, label)`` pairs."""
        return cls((phash(image), label) for image, label in images)

    def nearest(self, h: int) -> tuple[int, str] | None:
        """Return ``(distance, label)`` of the closest hash, or None when empty.

        Ties go to the entry added first.
        """
        hashes = self._hashes
        if hashes.size == 0:
            return None
        distances = _popcount(hashes ^ np.uint64(_check_hash(h)))
        i = int(np.argmin(distances))
        return int(distances[i]), self._labels[i]

    @classmethod
    def load(cls, paths: Sequence[Path]) -> KnownBadIndex:
        """Build an index from the ``known_bad.paths`` setting.

        Each path is a folder of images (searched recursively for
        ``IMAGE_SUFFIXES``; other and hidden files are ignored), a single image,
        or a hash file. Image labels are paths relative to their folder; hash
        lines without a label get ``<file name>:<line>``. Raises ConfigError when a
        path is missing, an image cannot be read, or a hash line is malformed.
        """
        entries: list[tuple[int, str]] = []
        for raw in paths:
            path = Path(raw)
            if not path.exists():
                raise ConfigError(f"known_bad.paths: {path} does not exist")
            if path.is_dir():
                for file in _image_files(path):
                    label = file.relative_to(path).as_posix()
                    entries.append((phash(_read_image(file)), label))
            elif path.suffix.lower() in IMAGE_SUFFIXES:
                entries.append((phash(_read_image(path)), path.name))
            else:
                entries.extend(_read_hash_file(path))
        return cls(entries)

    def dump(self, path: Path) -> None:
        """Write the index as a hash file that ``load`` reads back.

        The file is replaced atomically, so a daemon loading it never sees half a list.
        """
        lines = ["# livemod known-bad perceptual hashes (64-bit DCT phash)\n"]
        for h, label in self:
            # A line break inside a label would split the entry in two.
            clean = " ".join(label.split())
            lines.append(f"{h:016x} {clean}\n" if clean else f"{h:016x}\n")
        path = Path(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
                f.writelines(lines)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _read_hash_file(path: Path) -> list[tuple[int, str]]:
    try:
        # utf-8-sig: lists edited on Windows often start with a byte-order mark.
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"known_bad.paths: cannot read hash file {path}: {exc}") from exc
    entries: list[tuple[int, str]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        m = _HASH_LINE.fullmatch(stripped)
        if m is None:
            raise ConfigError(
                f"known_bad.paths: {path}, line {lineno}: expected 16 hex digits and an "
                f"optional label, got {stripped[:80]!r}"
            )
        label = (m.group(2) or "").strip() or f"{path.name}:{lineno}"
        entries.append((int(m.group(1), 16), label))
    return entries


class HashAnalyzer:
    """Matches frames against a KnownBadIndex (``FrameAnalyzer``, ``name = "hash"``).

    Every result carries the raw score ``hash_distance`` (64 when the index is
    empty). A distance within ``max_distance`` also yields a ``known_bad`` signal
    whose score falls linearly from 1.0 (identical) to 0.7 (at the threshold).
    """

    name: str = "hash"

    def __init__(self, index: KnownBadIndex, max_distance: int) -> None:
        if isinstance(max_distance, bool) or not 0 <= max_distance <= HASH_BITS // 2:
            raise ConfigError(
                f"known_bad.max_distance must be an integer from 0 to {HASH_BITS // 2}, "
                f"got {max_distance!r}"
            )
        self.index = index
        self.max_distance = int(max_distance)

    def analyze_batch(self, images: Sequence[Image]) -> list[AnalyzerResult]:
        """Hash each image and report its nearest known-bad match, in order."""
        return [self._analyze(image) for image in images]

    def _analyze(self, image: Image) -> AnalyzerResult:
        match = self.index.nearest(phash(image))
        if match is None:
            return AnalyzerResult(scores={"hash_distance": float(HASH_BITS)})
        distance, label = match
        scores = {"hash_distance": float(distance)}
        if distance > self.max_distance:
            return AnalyzerResult(scores=scores)
        score = 1.0 - 0.3 * distance / max(self.max_distance, 1)
        signal = Signal(category="known_bad", score=score, source=self.name, label=label)
        return AnalyzerResult(signals=(signal,), scores=scores)


def hash_files(paths: Sequence[Path | str]) -> list[tuple[str, str]]:
    """Hash images for ``livemod hash``: return ``(16 hex digits, file)`` pairs.

    A folder contributes its images recursively (as ``KnownBadIndex.load`` finds
    them); a file is read as an image whatever its name. Raises ConfigError for a
    missing path or an unreadable image.
    """
    out: list[tuple[str, str]] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise ConfigError(f"{path} does not exist")
        files = _image_files(path) if path.is_dir() else [path]
        out.extend((f"{phash(_read_image(file)):016x}", str(file)) for file in files)
    return out
