"""Nearest-within-threshold search over 256-bit hashes, with per-entry thresholds.

Two strategies, chosen by size (``benchmarks/known_bad.py`` measures both):

* brute force: XOR and popcount of every entry against every query, vectorised over
  ``(N, 4)`` packed ``uint64`` words. Best for small lists; it reads the whole list
  once per query: ~0.5 ms per query at 10k entries, ~100 ms at 1M on the dev machine.
* multi-index hashing (Norouzi et al.): the 256 bits are cut into 16 chunks of 16
  bits. Two hashes within ``r`` bits agree to within ``r // 16`` bits on at least one
  chunk (pigeonhole), so the candidates are the entries found in 16 sorted tables
  under each query chunk and its neighbours within ``r // 16`` bits, then checked in
  full. At 1M random entries and ``r`` = 31 that is ~4,000 candidates per query
  instead of 1,000,000.

The index is immutable: a reload builds a new one and swaps the reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Final, cast

import numpy as np
import numpy.typing as npt

from livemod.vision.hashes import _popcount

__all__ = ["BRUTE_FORCE_MAX", "HashIndex", "Hits"]

BRUTE_FORCE_MAX: Final = 4_096
"""At or below this many entries a search is brute force (measured crossover)."""

_CHUNKS: Final = 16
_CHUNK_BITS: Final = 16
_TABLE: Final = 1 << _CHUNK_BITS
# More candidates than this for one search means the list is full of near-copies of
# what the frame shows; the brute force scan is then cheaper than the gather.
_MAX_CANDIDATES: Final = 4_000_000


@dataclass(frozen=True, slots=True)
class Hits:
    """For each query: the best entry within its threshold (-1 if none) and its
    distance (or the smallest distance seen, ``256`` if none was examined)."""

    entry: npt.NDArray[np.intp]
    distance: npt.NDArray[np.int64]


def _popcount_rows(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.int64]:
    c = _popcount(x.reshape(-1)).reshape(-1, 4).astype(np.int64)
    # Four column adds beat .sum(axis=-1) on short rows by ~3x.
    return cast("npt.NDArray[np.int64]", c[:, 0] + c[:, 1] + c[:, 2] + c[:, 3])


def _masks(radius: int) -> npt.NDArray[np.uint16]:
    out = [0]
    for r in range(1, radius + 1):
        for bits in combinations(range(_CHUNK_BITS), r):
            out.append(sum(1 << b for b in bits))
    return np.array(out, dtype=np.uint16)


class HashIndex:
    """Packed 256-bit hashes, each with the largest distance at which it matches."""

    def __init__(
        self,
        words: npt.NDArray[np.uint64],
        thresholds: npt.NDArray[np.integer],
        *,
        brute_force_max: int = BRUTE_FORCE_MAX,
    ) -> None:
        words = np.ascontiguousarray(words, dtype=np.uint64).reshape(-1, 4)
        thresholds = np.asarray(thresholds, dtype=np.int64).reshape(-1)
        if thresholds.shape[0] != words.shape[0]:
            raise ValueError("one threshold per hash")
        self.words = words
        self.thresholds = thresholds
        self.radius = int(thresholds.max()) if thresholds.size else 0
        self.mih = words.shape[0] > brute_force_max
        # Row gathers of 32-byte records: one memcpy per candidate, not four.
        self._records = self.words.view(np.dtype((np.void, 32))).reshape(-1)
        self._order: npt.NDArray[np.int32] | None = None
        self._starts: npt.NDArray[np.int64] | None = None
        if self.mih:
            self._build()

    def __len__(self) -> int:
        return int(self.words.shape[0])

    def _chunks(self, words: npt.NDArray[np.uint64]) -> npt.NDArray[np.int64]:
        shifts = np.array([48, 32, 16, 0], dtype=np.uint64)
        parts = (words[:, :, None] >> shifts) & np.uint64(0xFFFF)
        return parts.reshape(words.shape[0], _CHUNKS).astype(np.int64)

    def _build(self) -> None:
        keys = self._chunks(self.words)
        n = keys.shape[0]
        # One flat array of 16 orderings; starts are offsets into it, per chunk and key.
        order = np.empty(_CHUNKS * n, dtype=np.int32)
        starts = np.empty((_CHUNKS, _TABLE + 1), dtype=np.int64)
        for j in range(_CHUNKS):
            col = keys[:, j]
            o = np.argsort(col, kind="stable")
            order[j * n : (j + 1) * n] = o
            starts[j] = np.searchsorted(col[o], np.arange(_TABLE + 1)) + j * n
        self._order, self._starts = order, starts

    def search(self, queries: npt.NDArray[np.uint64]) -> Hits:
        """Best match for each of ``(Q, 4)`` query hashes."""
        queries = np.ascontiguousarray(queries, dtype=np.uint64).reshape(-1, 4)
        q = queries.shape[0]
        if q == 0 or len(self) == 0:
            return Hits(np.full(q, -1, np.intp), np.full(q, 256, np.int64))
        if self.mih and self.radius < 4 * _CHUNK_BITS:
            found = self._search_mih(queries)
            if found is not None:
                return found
        return self._search_brute(queries)

    def _search_brute(self, queries: npt.NDArray[np.uint64]) -> Hits:
        entry = np.full(queries.shape[0], -1, np.intp)
        distance = np.full(queries.shape[0], 256, np.int64)
        for i, query in enumerate(queries):
            d = _popcount_rows(self.words ^ query)
            over = d - self.thresholds
            best = int(np.argmin(over))
            if over[best] <= 0:
                # Among the entries within their threshold, the closest one.
                within = np.flatnonzero(over <= 0)
                best = int(within[np.argmin(d[within])])
                entry[i] = best
                distance[i] = int(d[best])
            else:
                distance[i] = int(d.min())
        return Hits(entry, distance)

    def _search_mih(self, queries: npt.NDArray[np.uint64]) -> Hits | None:
        assert self._order is not None and self._starts is not None
        q = queries.shape[0]
        masks = _masks(self.radius // _CHUNKS).astype(np.int64)
        keys = self._chunks(queries)[:, :, None] ^ masks[None, None, :]  # (Q, 16, P)
        chunk = np.broadcast_to(np.arange(_CHUNKS)[None, :, None], keys.shape)
        lo = self._starts[chunk, keys].ravel()
        counts = self._starts[chunk, keys + 1].ravel() - lo
        total = int(counts.sum())
        if total > _MAX_CANDIDATES:
            return None
        entry = np.full(q, -1, np.intp)
        distance = np.full(q, 256, np.int64)
        if total == 0:
            return Hits(entry, distance)
        # Ragged gather of every probed bucket: output k of bucket b sits at
        # lo[b] + (k - first output of b).
        run_start = np.cumsum(counts) - counts
        pos = np.arange(total) + np.repeat(lo - run_start, counts)
        cand = self._order[pos].astype(np.intp)
        per_query = _CHUNKS * masks.size
        qid = np.repeat(np.arange(q), counts.reshape(q, per_query).sum(axis=1))
        gathered = self._records[cand].view(np.uint64).reshape(-1, 4)
        d = _popcount_rows(gathered ^ queries[qid])
        ok = d <= self.thresholds[cand]
        if ok.any():
            # Sort by (query, distance) and keep the first hit of each query.
            qs, ds, cs = qid[ok], d[ok], cand[ok]
            order = np.lexsort((cs, ds, qs))
            first = np.ones(order.size, dtype=bool)
            first[1:] = qs[order][1:] != qs[order][:-1]
            pick = order[first]
            entry[qs[pick]] = cs[pick]
            distance[qs[pick]] = ds[pick]
        missing = entry < 0
        if missing.any():
            # The closest candidate seen, for the raw score (a lower bound on nothing:
            # entries outside the probed buckets were never compared).
            best = np.full(q, 256, np.int64)
            np.minimum.at(best, qid, d)
            distance[missing] = best[missing]
        return Hits(entry, distance)
