"""Near-duplicate search on 64-bit perceptual hashes, in numpy, for a million origins.

Multi-index hashing: cut the 64 bits into `m` bands. Two hashes within Hamming distance `r`
differ by at most `r // m` bits in at least one band (else the distance would exceed `r`), so
each hash is compared only with the hashes whose band value lies within `r // m` bits of its
own: the band value is flipped in every such way and looked up in the sorted band values.
`m` is chosen per call from a cost model: few bands mean many probes, many bands mean crowded
buckets. Memory is a few arrays of n integers plus the pairs found; no Python object per hash.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

MAX_THRESHOLD = 16  # past this, every band scheme compares most hashes with most others
HASH_BITS = 64
_QUERY_BLOCK = 1 << 17  # hashes probed at once
_CANDIDATE_BLOCK = 1 << 18  # candidate pairs compared at once: bounds the temporary arrays
_DENSE_ENTRIES_PER_HASH = 8  # a dense band table may hold this many entries per hash


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def phash_array(hex_hashes: Sequence[str]) -> np.ndarray:
    """16-hex-digit perceptual hashes as uint64 (the manifest stores them as text)."""
    return np.array([int(h, 16) for h in hex_hashes], dtype=np.uint64)


def _band_edges(bands: int) -> list[int]:
    return [round(i * HASH_BITS / bands) for i in range(bands + 1)]


def _choose_bands(n: int, threshold: int) -> int:
    """The band count with the least expected work for uniform hashes: probes times the cost of
    one lookup (a gather in a dense table, else a binary search), plus candidate comparisons."""

    def cost(bands: int) -> float:
        widths = [hi - lo for lo, hi in itertools.pairwise(_band_edges(bands))]
        flips = threshold // bands
        probes = n * sum(sum(math.comb(w, k) for k in range(flips + 1)) for w in widths)
        dense = (1 << max(widths)) <= _DENSE_ENTRIES_PER_HASH * n
        lookup = 2 if dense else 2 * math.log2(max(n, 2))
        return probes * lookup + probes * n / 2 ** min(widths)

    return min(range(1, threshold + 2), key=cost)


def _flip_masks(width: int, flips: int) -> np.ndarray:
    masks = [0]
    for k in range(1, flips + 1):
        masks += [sum(1 << b for b in bits) for bits in itertools.combinations(range(width), k)]
    return np.array(masks, dtype=np.uint64)


def _bucket_lookup(sorted_keys: np.ndarray, width: int):
    """A function from band values to (first position, count) in `sorted_keys`.

    A dense table (one gather per probe) when it is at most a few entries per hash, else binary
    search: the table's size follows the band width, not n, and must not dominate memory.
    """
    if (1 << width) <= _DENSE_ENTRIES_PER_HASH * len(sorted_keys):
        # Filled from the runs of the sorted values: no table-sized temporaries (n < 2**31).
        run_starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
        run_keys = sorted_keys[run_starts]
        counts = np.zeros(1 << width, np.int32)
        counts[run_keys] = np.diff(np.r_[run_starts, len(sorted_keys)])
        starts = np.zeros(1 << width, np.int32)  # empty buckets keep 0: their count is 0
        starts[run_keys] = run_starts
        return lambda probe: (starts[probe].astype(np.int64), counts[probe].astype(np.int64))

    def search(probe: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        first = np.searchsorted(sorted_keys, probe, side="left")
        return first, np.searchsorted(sorted_keys, probe, side="right") - first

    return search


def near_pairs(phashes: np.ndarray, threshold: int) -> tuple[np.ndarray, np.ndarray]:
    """Every pair of positions (left < right) whose hashes are within `threshold` bits.

    Returns two int64 arrays sorted by (right, left). Exact equal hashes are included.
    """
    if not 0 <= threshold <= MAX_THRESHOLD:
        raise ValueError(f"near-duplicate threshold {threshold} must be in 0..{MAX_THRESHOLD}")
    values = np.ascontiguousarray(phashes, dtype=np.uint64)
    n = len(values)
    if n < 2:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    bands = _choose_bands(n, threshold)
    edges = _band_edges(bands)
    found: list[np.ndarray] = []
    index_type = np.int32 if n < 2**31 else np.int64
    for lo, hi in itertools.pairwise(edges):
        keys = (values >> np.uint64(lo)) & np.uint64((1 << (hi - lo)) - 1)
        if hi - lo <= 32:
            keys = keys.astype(np.uint32)
        order = np.argsort(keys, kind="stable").astype(index_type)
        bucket = _bucket_lookup(keys[order], hi - lo)
        for mask in _flip_masks(hi - lo, threshold // bands).tolist():
            for start in range(0, n, _QUERY_BLOCK):
                first, count = bucket(keys[start : start + _QUERY_BLOCK] ^ keys.dtype.type(mask))
                # Sub-blocks of about _CANDIDATE_BLOCK candidates: memory stays bounded however
                # crowded the buckets are (one query's bucket is never split).
                ends = np.cumsum(count)
                cuts = np.searchsorted(
                    ends, np.arange(_CANDIDATE_BLOCK, ends[-1], _CANDIDATE_BLOCK), side="right"
                )
                for a, b in itertools.pairwise([0, *np.unique(cuts).tolist(), len(count)]):
                    found.append(_close_pairs(values, order, first[a:b], count[a:b], start + a, threshold))
    if not found:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    # A pair close in several bands is found several times; sorting by right*n+left orders it too.
    codes = np.unique(np.concatenate(found))
    left, right = codes // n, codes % n
    order = np.lexsort((left, right))
    return left[order], right[order]


def _close_pairs(
    values: np.ndarray, order: np.ndarray, first: np.ndarray, count: np.ndarray, start: int, threshold: int
) -> np.ndarray:
    """Pairs (as left * n + right, left < right) between queries start, start+1, ... and the
    `count` sorted positions from `first` that each query's probe hit, kept when close enough."""
    n = len(values)
    total = int(count.sum())
    if not total:
        return np.zeros(0, np.int64)
    left = np.repeat(np.arange(start, start + len(count), dtype=np.int64), count)
    # Positions first[q], first[q]+1, ... for each query q, without a Python loop.
    offsets = np.arange(total) - np.repeat(np.cumsum(count) - count, count)
    right = order[np.repeat(first, count) + offsets]
    del offsets
    keep = left < right
    left, right = left[keep], right[keep]
    close = np.bitwise_count(values[left] ^ values[right]) <= threshold
    return left[close] * n + right[close]


def leader_clusters(phashes: np.ndarray, threshold: int) -> np.ndarray:
    """For hashes in priority order, the position of the leader each one collapses onto.

    Each hash joins the earliest leader within `threshold`, else leads itself. Not transitive
    on purpose: a chain of small edits never merges two clearly different pictures, and the
    result depends only on the priority order (which the caller derives from content).
    """
    leader = np.arange(len(phashes), dtype=np.int64)
    left, right = near_pairs(phashes, threshold)
    # Pairs come sorted by right, so every left is settled (leader or not) before it is read.
    for earlier, later in zip(left.tolist(), right.tolist(), strict=True):
        if leader[later] == later and leader[earlier] == earlier:
            leader[later] = earlier
    return leader


def connected_groups(phashes: np.ndarray, threshold: int) -> np.ndarray:
    """Label of each hash's connected component (transitive closure of "within threshold").

    Used for leakage: anything linked by a chain of near duplicates must stay in one split.
    The label is the smallest position in the component.
    """
    return components(len(phashes), *near_pairs(phashes, threshold))


def components(n: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Connected-component labels (smallest member) of n positions linked by the given pairs."""
    parent = np.arange(n, dtype=np.int64)

    def find(x: int) -> int:
        root = x
        while parent[root] != root:
            root = int(parent[root])
        while parent[x] != root:
            parent[x], x = root, int(parent[x])
        return root

    for a, b in zip(left.tolist(), right.tolist(), strict=True):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    touched = np.unique(np.concatenate([left, right]))
    for x in touched.tolist():
        parent[x] = find(x)
    return parent
