"""The 256-bit index: multi-index hashing finds what brute force finds."""

from __future__ import annotations

import numpy as np
import pytest

from livemod.vision.index import HashIndex


def random_words(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 2**64 - 1, size=(n, 4), dtype=np.uint64, endpoint=True)


def flip(rng: np.random.Generator, words: np.ndarray, bits: int) -> np.ndarray:
    out = words.copy()
    for b in rng.choice(256, bits, replace=False):
        out[b // 64] ^= np.uint64(1) << np.uint64(b % 64)
    return out


@pytest.mark.parametrize("threshold", [10, 31, 40])
def test_multi_index_hashing_agrees_with_brute_force(threshold: int) -> None:
    rng = np.random.default_rng(threshold)
    words = random_words(rng, 30_000)
    thresholds = np.full(len(words), threshold)
    mih = HashIndex(words, thresholds, brute_force_max=0)
    brute = HashIndex(words, thresholds, brute_force_max=10**9)
    assert mih.mih and not brute.mih
    targets = rng.integers(0, len(words), 40)
    near = [flip(rng, words[t], int(rng.integers(0, threshold + 8))) for t in targets]
    queries = np.stack([*near, *random_words(rng, 20)])
    a, b = mih.search(queries), brute.search(queries)
    assert np.array_equal(a.entry, b.entry)
    found = a.entry >= 0
    assert np.array_equal(a.distance[found], b.distance[found])
    assert (a.distance[found] <= threshold).all()
    assert found[:40].sum() >= 20 and not found[40:].any()


def test_each_entry_keeps_its_own_threshold() -> None:
    rng = np.random.default_rng(7)
    words = random_words(rng, 2)
    index = HashIndex(words, np.array([5, 40]))
    hits = index.search(np.stack([flip(rng, words[0], 20), flip(rng, words[1], 20)]))
    assert hits.entry.tolist() == [-1, 1]
    assert hits.distance.tolist() == [20, 20]


def test_the_closest_entry_within_threshold_wins() -> None:
    rng = np.random.default_rng(3)
    base = random_words(rng, 1)[0]
    words = np.stack([flip(rng, base, 12), flip(rng, base, 4), flip(rng, base, 9)])
    for limit in (0, 10**9):
        hits = HashIndex(words, np.full(3, 31), brute_force_max=limit).search(base[None])
        assert hits.entry.tolist() == [1] and hits.distance.tolist() == [4]


def test_an_empty_index_finds_nothing() -> None:
    index = HashIndex(np.empty((0, 4), np.uint64), np.empty(0, np.int64))
    hits = index.search(np.zeros((3, 4), np.uint64))
    assert hits.entry.tolist() == [-1, -1, -1] and hits.distance.tolist() == [256] * 3


def test_mixed_thresholds_and_planted_copies_agree_with_brute_force() -> None:
    # Lists of several thresholds in one index, several near-copies of one picture
    # (the closest within its own threshold must win), complements (256 bits away).
    rng = np.random.default_rng(11)
    words = random_words(rng, 60_000)
    thresholds = rng.choice(np.array([8, 16, 24, 31]), len(words))
    base = random_words(rng, 30)
    for k, b in enumerate(base):
        for j, bits in enumerate((3, 9, 17, 25, 30)):
            slot = 1000 * k + 7 * j
            words[slot] = flip(rng, b, bits)
    words[59_999] = ~base[0]
    mih = HashIndex(words, thresholds, brute_force_max=0)
    brute = HashIndex(words, thresholds, brute_force_max=10**9)
    queries = np.stack([*base, *(flip(rng, b, 6) for b in base), *random_words(rng, 20)])
    a, b = mih.search(queries), brute.search(queries)
    assert np.array_equal(a.entry, b.entry)
    found = a.entry >= 0
    assert np.array_equal(a.distance[found], b.distance[found])
    assert found[:60].all() and not found[60:].any()
    assert (a.distance[found] <= thresholds[a.entry[found]]).all()


def test_copies_at_the_threshold_spread_thin_over_every_chunk_are_found() -> None:
    # The worst case for both pigeonholes: 31 bits flipped as 2 in each of 15 chunks
    # and 1 in the last, so only one chunk is within a bit and its pair within 3.
    rng = np.random.default_rng(5)
    words = random_words(rng, 20_000)
    index = HashIndex(words, np.full(len(words), 31), brute_force_max=0)
    queries = []
    for t in range(16):
        q = words[t].copy()
        for chunk in range(16):
            for bit in rng.choice(16, 1 if chunk == t else 2, replace=False):
                b = 16 * chunk + int(bit)
                q[b // 64] ^= np.uint64(1) << np.uint64(63 - b % 64)
        queries.append(q)
    hits = index.search(np.stack(queries))
    assert hits.entry.tolist() == list(range(16)) and hits.distance.tolist() == [31] * 16
