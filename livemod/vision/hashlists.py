"""Known-bad lists from disk: PDQ hex, ThreatExchange / HMA CSV and TSV, images, pHash.

One list is one operator setting (a name, paths, a threshold). Its paths may mix:

* folders of images (searched recursively, hidden files skipped) and single images,
  hashed with PDQ at load; an image that cannot be decoded is skipped, logged once
  and counted, so one bad upload does not take the list down. Each picture is also
  hashed under a few views (``regions.CROPS``, ``regions.CAPTION_CUTS``: centred
  crops, top and bottom bands cut off), kept beside the list's entries, so a frame
  that shows it cropped or captioned still matches; a hash file has no picture to
  do that with;
* text files of hashes, one a line with an optional label after whitespace or a
  comma, ``#`` comments: 64 hex digits are PDQ, 16 hex digits are livemod's old
  64-bit pHash (kept working for existing lists);
* ``.csv`` / ``.tsv`` exports (ThreatExchange, the Hasher-Matcher-Actioner): the hash
  is the column named like ``signal_value``/``hash``/``pdq`` (or the first cell of
  64 hex digits when there is no header), the label the ``id``-like column, and rows
  whose ``signal_type`` is not PDQ (MD5, video) are skipped.

A malformed line raises ConfigError naming the file and the line.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from livemod.errors import ConfigError
from livemod.vision import pdq as pdq_mod
from livemod.vision.features import PictureFeatures, picture_features
from livemod.vision.hashes import IMAGE_SUFFIXES, KnownBadIndex, _image_files, _read_image
from livemod.vision.regions import CAPTION_CUTS, CROPS

__all__ = ["DEFAULT_MAX_DISTANCE", "HashList", "ListSpec", "load_list"]

log = logging.getLogger(__name__)

DEFAULT_MAX_DISTANCE: Final = 31
"""PDQ's reference threshold (bits of 256)."""

_PDQ_HEX: Final = re.compile(r"[0-9a-fA-F]{64}")
_PHASH_LINE: Final = re.compile(r"([0-9a-fA-F]{16})(?:[\s,]+(.*))?")
_PDQ_LINE: Final = re.compile(r"([0-9a-fA-F]{64})(?:[\s,]+(.*))?")
_HASH_COLUMNS: Final = ("signal_value", "hash_value", "pdq_hash", "pdq", "hash", "signal", "value")
_LABEL_COLUMNS: Final = (
    "label",
    "bank_content_id",
    "content_id",
    "signal_id",
    "indicator_id",
    "id",
    "name",
    "tags",
)
_TYPE_COLUMNS: Final = ("signal_type", "hash_type", "indicator_type", "type")


@dataclass(frozen=True, slots=True)
class ListSpec:
    """One configured list: where it comes from and how close a match must be."""

    name: str
    paths: tuple[Path, ...]
    max_distance: int = DEFAULT_MAX_DISTANCE
    phash_max_distance: int = 8


@dataclass(frozen=True, slots=True)
class HashList:
    """A loaded list: PDQ entries ``(N, 4)`` with labels, and old pHash entries.

    ``views`` ``(M, 4)`` are more hashes of the listed pictures (crops, captions cut
    off): ``view_of[k]`` is the entry that view ``k`` belongs to, ``view_names[k]`` how
    it was cut. They are searched like entries but not counted as entries."""

    spec: ListSpec
    pdq: npt.NDArray[np.uint64]
    labels: tuple[str, ...]
    phash: KnownBadIndex = field(default_factory=KnownBadIndex)
    skipped_images: int = 0
    low_quality: int = 0
    views: npt.NDArray[np.uint64] = field(
        default_factory=lambda: np.empty((0, pdq_mod.WORDS), np.uint64)
    )
    view_of: npt.NDArray[np.int64] = field(default_factory=lambda: np.empty(0, np.int64))
    view_names: tuple[str, ...] = ()
    pictures: tuple[tuple[int, PictureFeatures], ...] = ()
    """ORB keypoints of listed pictures (``features``), each with its entry's index."""

    @property
    def name(self) -> str:
        return self.spec.name

    def __len__(self) -> int:
        return len(self.labels) + len(self.phash)


class _Builder:
    def __init__(self, spec: ListSpec, min_quality: int, features: int) -> None:
        self.spec = spec
        self.min_quality = min_quality
        self.features = features
        self.pictures: list[tuple[int, PictureFeatures]] = []
        self.words: list[npt.NDArray[np.uint64]] = []
        self.labels: list[str] = []
        self.phash: list[tuple[int, str]] = []
        self.views: list[npt.NDArray[np.uint64]] = []
        self.view_of: list[int] = []
        self.view_names: list[str] = []
        self.skipped = 0
        self.low_quality = 0

    def where(self, path: Path, lineno: int) -> str:
        return f"known-bad list {self.spec.name!r}: {path}, line {lineno}"

    def add_pdq(self, words: npt.NDArray[np.uint64], label: str) -> None:
        self.words.append(words)
        self.labels.append(label)

    def add_image(self, path: Path, label: str) -> None:
        try:
            image = _read_image(path)
        except ConfigError as exc:
            self.skipped += 1
            log.warning(
                "known-bad image skipped: cannot decode it",
                extra={"list": self.spec.name, "path": str(path), "error": str(exc)},
            )
            return
        h = pdq_mod.pdq(image)
        if h.quality < self.min_quality:
            # Flat pictures hash to near-arbitrary bits: they would match any flat frame.
            self.low_quality += 1
            log.warning(
                "known-bad image skipped: too flat to hash reliably",
                extra={"list": self.spec.name, "path": str(path), "quality": h.quality},
            )
            return
        self.add_pdq(h.words, label)
        grey = pdq_mod.grey_of(image)  # once: the same hashes, 4x faster on a big photo
        for view in (*CROPS, *CAPTION_CUTS):
            v = pdq_mod.pdq(view.crop(grey))
            if v.quality >= self.min_quality:
                self.views.append(v.words)
                self.view_of.append(len(self.labels) - 1)
                self.view_names.append(view.name)
        if len(self.pictures) < self.features:
            found = picture_features(grey)
            if found is not None:
                self.pictures.append((len(self.labels) - 1, found))

    def add_path(self, path: Path) -> None:
        if not path.exists():
            raise ConfigError(f"known-bad list {self.spec.name!r}: {path} does not exist")
        if path.is_dir():
            for file in _image_files(path):
                self.add_image(file, file.relative_to(path).as_posix())
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            self.add_image(path, path.name)
        else:
            text = _read_text(path, self.spec.name)
            if path.suffix.lower() in (".csv", ".tsv"):
                self.add_table(path, text, "\t" if path.suffix.lower() == ".tsv" else ",")
            else:
                self.add_lines(path, text)

    def add_lines(self, path: Path, text: str) -> None:
        for lineno, line in enumerate(text.splitlines(), start=1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            m = _PDQ_LINE.fullmatch(stripped)
            if m is not None:
                label = (m.group(2) or "").strip() or f"{path.name}:{lineno}"
                self.add_pdq(pdq_mod.from_hex(m.group(1)), label)
                continue
            m = _PHASH_LINE.fullmatch(stripped)
            if m is not None:
                label = (m.group(2) or "").strip() or f"{path.name}:{lineno}"
                self.phash.append((int(m.group(1), 16), label))
                continue
            raise ConfigError(
                f"{self.where(path, lineno)}: expected a PDQ hash (64 hex digits) or a pHash "
                f"(16 hex digits) and an optional label, got {stripped[:80]!r}"
            )

    def add_table(self, path: Path, text: str, delimiter: str) -> None:
        rows = list(csv.reader(io.StringIO(text), delimiter=delimiter))
        header: list[str] | None = None
        first = next((i for i, r in enumerate(rows) if any(c.strip() for c in r)), None)
        if first is None:
            return
        if not any(_PDQ_HEX.fullmatch(c.strip()) for c in rows[first]):
            header = [c.strip().lower() for c in rows[first]]
        hash_col, label_col, type_col = _columns(header)
        if header is not None and hash_col is None:
            raise ConfigError(
                f"{self.where(path, first + 1)}: no hash column; expected one of "
                f"{', '.join(_HASH_COLUMNS)} in the header, got {', '.join(header)}"
            )
        start = first + 1 if header is not None else first
        for i in range(start, len(rows)):
            row = [c.strip() for c in rows[i]]
            if not any(row) or row[0].startswith("#"):
                continue
            lineno = i + 1
            if type_col is not None and type_col < len(row) and "pdq" not in row[type_col].lower():
                continue
            col = hash_col
            if col is None:
                col = next((k for k, c in enumerate(row) if _PDQ_HEX.fullmatch(c)), None)
            value = row[col] if col is not None and col < len(row) else ""
            if not _PDQ_HEX.fullmatch(value):
                raise ConfigError(
                    f"{self.where(path, lineno)}: expected a PDQ hash (64 hex digits), "
                    f"got {value[:80]!r}"
                )
            if label_col is not None and label_col < len(row) and row[label_col]:
                label = row[label_col]
            elif header is None and col is not None and col + 1 < len(row) and row[col + 1]:
                label = row[col + 1]
            else:
                label = f"{path.name}:{lineno}"
            self.add_pdq(pdq_mod.from_hex(value), label)

    def build(self) -> HashList:
        words = (
            np.stack(self.words).astype(np.uint64)
            if self.words
            else np.empty((0, pdq_mod.WORDS), dtype=np.uint64)
        )
        return HashList(
            spec=self.spec,
            pdq=words,
            labels=tuple(self.labels),
            phash=KnownBadIndex(self.phash),
            skipped_images=self.skipped,
            low_quality=self.low_quality,
            views=(
                np.stack(self.views).astype(np.uint64)
                if self.views
                else np.empty((0, pdq_mod.WORDS), dtype=np.uint64)
            ),
            view_of=np.array(self.view_of, dtype=np.int64),
            view_names=tuple(self.view_names),
            pictures=tuple(self.pictures),
        )


def _columns(header: list[str] | None) -> tuple[int | None, int | None, int | None]:
    if header is None:
        return None, None, None

    def find(names: Sequence[str]) -> int | None:
        for name in names:
            if name in header:
                return header.index(name)
        return None

    return find(_HASH_COLUMNS), find(_LABEL_COLUMNS), find(_TYPE_COLUMNS)


def _read_text(path: Path, name: str) -> str:
    try:
        # utf-8-sig: lists edited on Windows often start with a byte-order mark.
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"known-bad list {name!r}: cannot read hash file {path}: {exc}") from exc


def load_list(spec: ListSpec, *, min_quality: int = 0, features: int = 0) -> HashList:
    """Load every path of one list. Raises ConfigError for a missing path, an
    unreadable hash file or a malformed line; skips (and counts) undecodable images.
    The first ``features`` pictures also get their ORB keypoints (``features.py``)."""
    builder = _Builder(spec, min_quality, features)
    for path in spec.paths:
        builder.add_path(Path(path))
    return builder.build()
