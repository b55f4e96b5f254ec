"""Near-duplicate search on perceptual hashes, checked against brute force over all pairs."""

from __future__ import annotations

import numpy as np
import pytest

from oripid.builders.origins_dedup import _choose_bands, connected_groups, leader_clusters, near_pairs


def planted(n: int, seed: int) -> np.ndarray:
    """Half random hashes, half copies of them with 0-11 bits flipped: pairs at every distance."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 2**64 - 1, size=max(1, n // 2), dtype=np.uint64, endpoint=True)
    copies = base[rng.integers(0, len(base), n - n // 2)].copy()
    for i in range(len(copies)):
        for bit in rng.choice(64, size=rng.integers(0, 12), replace=False):
            copies[i] ^= np.uint64(1) << np.uint64(bit)
    values = np.concatenate([base, copies])[:n]
    rng.shuffle(values)
    return values


def distances(values: np.ndarray) -> np.ndarray:
    return np.bitwise_count(values[:, None] ^ values[None, :])


@pytest.mark.parametrize(
    ("n", "threshold"), [(400, 0), (400, 1), (400, 4), (400, 8), (300, 16), (2, 3), (1, 4)]
)
def test_near_pairs_are_exactly_the_pairs_within_the_threshold(n, threshold):
    values = planted(n, seed=threshold)
    left, right = near_pairs(values, threshold)
    expected = np.argwhere(np.triu(distances(values) <= threshold, 1))
    found = list(zip(left.tolist(), right.tolist(), strict=True))
    assert sorted(found) == sorted(map(tuple, expected.tolist()))
    assert (left < right).all() and found == sorted(found, key=lambda pair: (pair[1], pair[0]))


def test_both_lookup_paths_are_used():
    # Narrow bands go through the dense table, 64-bit and 32-bit bands through binary search.
    assert _choose_bands(400, 4) == 5 and _choose_bands(400, 0) == 1
    assert _choose_bands(1_000_000, 4) == 3 and _choose_bands(1_000_000, 8) == 3


def test_leaders_match_the_sequential_rule():
    values = planted(500, seed=7)
    d = distances(values)
    expected: list[int] = []
    for p in range(len(values)):
        hits = [q for q in range(p) if expected[q] == q and d[p, q] <= 5]
        expected.append(hits[0] if hits else p)
    assert leader_clusters(values, 5).tolist() == expected


def test_groups_are_the_connected_components():
    values = planted(500, seed=8)
    adjacent = distances(values) <= 6
    expected = list(range(len(values)))
    for p in range(len(values)):  # flood fill from each unlabelled position, smallest first
        if expected[p] != p:
            continue
        stack = [p]
        while stack:
            x = stack.pop()
            for y in np.flatnonzero(adjacent[x]).tolist():
                if y > p and expected[y] == y:
                    expected[y] = p
                    stack.append(y)
    assert connected_groups(values, 6).tolist() == expected


def test_threshold_out_of_range_is_refused():
    with pytest.raises(ValueError, match="0..16"):
        near_pairs(np.zeros(3, np.uint64), 17)
