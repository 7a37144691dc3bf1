"""Nearest-within-threshold search over 256-bit hashes, with per-entry thresholds.

Two strategies, chosen by size (``benchmarks/known_bad.py`` measures both):

* brute force: XOR and popcount of every entry against every query, vectorised over
  ``(Q, N, 4)`` packed ``uint64`` words. Best for small lists (up to a few hundred
  entries); it reads the whole list per query: for a sample's 28 queries ~0.3 ms at
  300 entries, ~0.8 ms at 1k, ~8 ms at 20k, ~600 ms at 1M on the dev machine.
* multi-index hashing (Norouzi et al.): the 256 bits are cut into 16 chunks of 16
  bits. Two hashes within ``r`` bits agree to within ``r // 16`` bits on at least one
  chunk (pigeonhole), so the candidates are the entries found in 16 sorted tables
  under each query chunk and its neighbours within ``r // 16`` bits: at 1M random
  entries and ``r`` = 31, ~4,000 per query instead of 1,000,000. A second pigeonhole
  on 8 pairs of chunks (some pair within ``r // 8``) tests each candidate's partner
  chunk, stored beside the tables so that it reads bucket after bucket; ~1 % of
  candidates pass, and only those are gathered from the list and checked in full.
  The result is brute force's, bit for bit, for every query that matches
  (``tests/vision/test_index.py``). All queries of a sample go through one pass of
  numpy calls: ~1.2 ms of CPU for 28 queries at 1M entries on the dev machine (brute
  force: ~600 ms). Memory at 1M: ~130 MB (the list, 16 orderings, their partners).

The index is immutable: a reload builds a new one and swaps the reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Any, Final, cast

import numpy as np
import numpy.typing as npt

from livemod.vision.hashes import _BYTE_POPCOUNT, _popcount

__all__ = ["BRUTE_FORCE_MAX", "HashIndex", "Hits"]

BRUTE_FORCE_MAX: Final = 512
"""At or below this many entries a search is brute force (measured crossover for a
sample's ~30 queries: brute force reads the whole list per pass, ~0.3 ms at 300)."""

_CHUNKS: Final = 16
_CHUNK_BITS: Final = 16
_TABLE: Final = 1 << _CHUNK_BITS
_PARTNER: Final = np.arange(_CHUNKS) ^ 1
"""Chunks pair up (0, 1), (2, 3) ...: each chunk's partner."""
# More candidates than this for one search means the list is full of near-copies of
# what the frame shows; the brute force scan is then cheaper than the gather.
_MAX_CANDIDATES: Final = 4_000_000
_BRUTE_WORDS: Final = 1 << 19
_FAR: Final = 1 << 20


@dataclass(frozen=True, slots=True)
class Hits:
    """For each query: the best entry within its threshold (-1 if none) and its
    distance (or the smallest distance seen, ``256`` if none was examined: brute
    force examines every entry, multi-index hashing only the candidates that pass
    its pair filter)."""

    entry: npt.NDArray[np.intp]
    distance: npt.NDArray[np.int64]


def _popcount16(x: npt.NDArray[np.uint16]) -> npt.NDArray[np.uint8]:
    """Bits set in each uint16."""
    if hasattr(np, "bitwise_count"):  # numpy >= 2
        return cast("npt.NDArray[np.uint8]", np.bitwise_count(x))
    b = _BYTE_POPCOUNT[np.ascontiguousarray(x).view(np.uint8)].reshape(-1, 2)
    return cast("npt.NDArray[np.uint8]", b[:, 0] + b[:, 1])


def _popcount_rows(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.int64]:
    """Bits set in each ``(N, 4)`` row: 0-256."""
    c = np.ascontiguousarray(_popcount(x.reshape(-1)))
    # The four byte counts of a row, read as one uint32 and multiplied by 0x01010101,
    # sum into its top byte (4x faster than adding columns), modulo 256: a row of 256
    # is the one whose four counts are all 64.
    u = c.view(np.uint32)
    d = ((u * np.uint32(0x01010101)) >> np.uint32(24)).astype(np.int64)
    d[u == np.uint32(0x40404040)] = 256
    return d


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
        self._order: npt.NDArray[np.int32] | None = None
        # Beside each ordering, each entry's partner chunk (the other of its pair).
        self._partner = np.empty(0, np.uint16)
        self._starts: npt.NDArray[np.signedinteger[Any]] | None = None
        self._masks = _masks(self.radius // _CHUNKS).astype(np.int64)
        # How far a candidate's partner chunk may be, by probe: r // 8 less its flips.
        flips = _popcount16(self._masks.astype(np.uint16)).astype(np.int64)
        self._allowed = (self.radius // (_CHUNKS // 2) - flips).astype(np.uint8)
        self._table_base = np.arange(_CHUNKS, dtype=np.int64) * (_TABLE + 1)
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
        partner = np.empty(_CHUNKS * n, dtype=np.uint16)
        # Offsets as int32 while they fit: half the bytes to move per candidate.
        starts = np.empty((_CHUNKS, _TABLE + 1), np.int32 if _CHUNKS * n < 2**31 else np.int64)
        for j in range(_CHUNKS):
            col = keys[:, j]
            o = np.argsort(col, kind="stable")
            order[j * n : (j + 1) * n] = o
            partner[j * n : (j + 1) * n] = keys[o, _PARTNER[j]]
            starts[j] = np.searchsorted(col[o], np.arange(_TABLE + 1)) + j * n
        self._order, self._partner, self._starts = order, partner, starts.reshape(-1)

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
        q, n = queries.shape[0], len(self)
        entry = np.full(q, -1, np.intp)
        distance = np.full(q, 256, np.int64)
        # Several queries per pass (a sample's ~30 against a small list in one go),
        # at most ~2M words of XOR at a time.
        step = max(1, _BRUTE_WORDS // max(n, 1))
        for lo in range(0, q, step):
            part = queries[lo : lo + step]
            d = _popcount_rows(self.words[None, :, :] ^ part[:, None, :]).reshape(-1, n)
            # Among the entries within their threshold, the closest (first on a tie).
            ranked = np.where(d <= self.thresholds[None, :], d, _FAR)
            best = np.argmin(ranked, axis=1)
            rows = np.arange(part.shape[0])
            hit = ranked[rows, best] < _FAR
            entry[lo : lo + step] = np.where(hit, best, -1)
            distance[lo : lo + step] = np.where(hit, ranked[rows, best], d.min(axis=1))
        return Hits(entry, distance)

    def _search_mih(self, queries: npt.NDArray[np.uint64]) -> Hits | None:
        assert self._order is not None and self._starts is not None
        q = queries.shape[0]
        # Every probed bucket: (probe, query, chunk), the probe being the key flipped
        # by each mask of r // 16 bits or fewer (fewest first), as flat offsets into
        # the 16 concatenated start tables.
        chunks = self._chunks(queries)
        keys = chunks[None, :, :] ^ self._masks[:, None, None]
        flat = (keys + self._table_base[None, None, :]).ravel()
        lo = np.take(self._starts, flat)
        counts = np.take(self._starts, flat + 1) - lo
        total = int(counts.sum())
        if total > _MAX_CANDIDATES:
            return None
        entry = np.full(q, -1, np.intp)
        distance = np.full(q, 256, np.int64)
        if total == 0:
            return Hits(entry, distance)
        # The probed buckets' positions end to end: output k of bucket b sits at
        # lo[b] + (k - first output of b).
        ends = np.cumsum(counts)
        pos = np.arange(total, dtype=lo.dtype) + np.repeat(lo - (ends - counts), counts)
        # The pair filter. Cut into 8 pairs of chunks, two hashes within r bits are
        # within r // 8 on some pair, and within r // 16 on one chunk of that pair: the
        # probed one, whose partner chunk is then within r // 8 less what the probe
        # flipped. A random entry's partner is that close ~1 % of the time. Partners
        # sit beside the orderings (``_partner``), so the test reads bucket after
        # bucket, and only the ~1 % left are gathered from the list at random.
        partner = np.broadcast_to(chunks[None, :, _PARTNER], keys.shape).astype(np.uint16)
        near = _popcount16(np.take(self._partner, pos) ^ np.repeat(partner.ravel(), counts))
        # Probes come in runs of one mask each: one allowance per run, end to end.
        run = ends[q * _CHUNKS - 1 :: q * _CHUNKS]
        allowed = np.repeat(self._allowed, np.diff(run, prepend=0))
        kept = np.flatnonzero(near <= allowed)
        if kept.size == 0:
            return Hits(entry, distance)
        cs = np.take(self._order, pos[kept]).astype(np.intp)
        qs = np.searchsorted(ends, kept, side="right") // _CHUNKS % q
        ds = _popcount_rows(self.words[cs] ^ queries[qs])
        ok = ds <= self.thresholds[cs]
        # The closest entry examined in full, for a query without a match.
        np.minimum.at(distance, qs, ds)
        if ok.any():
            qs, cs, ds = qs[ok], cs[ok], ds[ok]
            # Sort by (query, distance, entry) and keep the first hit of each query.
            order = np.lexsort((cs, ds, qs))
            keep = np.ones(order.size, dtype=bool)
            keep[1:] = qs[order][1:] != qs[order][:-1]
            pick = order[keep]
            entry[qs[pick]] = cs[pick]
            distance[qs[pick]] = ds[pick]
        return Hits(entry, distance)
