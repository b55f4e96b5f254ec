"""Near-duplicate search on 64-bit perceptual hashes, fast enough for a million origins.

Pigeonhole banding: cut the 64 bits into `threshold + 1` bands; two hashes within Hamming
distance `threshold` agree exactly on at least one band, so each hash is compared only with
the hashes sharing a band with it instead of with all others.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

MAX_THRESHOLD = 16  # past this, bands are so short that every bucket is crowded


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


class PhashIndex:
    def __init__(self, threshold: int):
        if not 0 <= threshold <= MAX_THRESHOLD:
            raise ValueError(f"near-duplicate threshold {threshold} must be in 0..{MAX_THRESHOLD}")
        self.threshold = threshold
        n = threshold + 1
        edges = [round(i * 64 / n) for i in range(n + 1)]
        self._bands = [(lo, (1 << (hi - lo)) - 1) for lo, hi in zip(edges, edges[1:], strict=False)]
        self._buckets: list[dict[int, list[int]]] = [defaultdict(list) for _ in self._bands]
        self._hashes: dict[int, int] = {}

    def _keys(self, value: int) -> Iterable[tuple[int, int]]:
        for band, (shift, mask) in enumerate(self._bands):
            yield band, (value >> shift) & mask

    def add(self, ident: int, value: int) -> None:
        self._hashes[ident] = value
        for band, key in self._keys(value):
            self._buckets[band][key].append(ident)

    def query(self, value: int) -> list[int]:
        """Idents of indexed hashes within the threshold, in increasing ident order."""
        found = set()
        for band, key in self._keys(value):
            for ident in self._buckets[band].get(key, ()):
                if ident not in found and hamming(self._hashes[ident], value) <= self.threshold:
                    found.add(ident)
        return sorted(found)


def leader_clusters(phashes: Sequence[int], threshold: int) -> list[int]:
    """For hashes in priority order, the position of the leader each one collapses onto.

    Each hash joins the earliest leader within `threshold`, else leads itself. Not transitive
    on purpose: a chain of small edits never merges two clearly different pictures, and the
    result depends only on the priority order (which the caller derives from content).
    """
    index = PhashIndex(threshold)
    leaders: list[int] = []
    for position, value in enumerate(phashes):
        hits = index.query(value)
        if hits:
            leaders.append(hits[0])
        else:
            index.add(position, value)
            leaders.append(position)
    return leaders


def connected_groups(phashes: Sequence[int], threshold: int) -> list[int]:
    """Label of each hash's connected component (transitive closure of "within threshold").

    Used for leakage: anything linked by a chain of near duplicates must stay in one split.
    The label is the smallest position in the component.
    """
    parent = list(range(len(phashes)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    index = PhashIndex(threshold)
    for position, value in enumerate(phashes):
        for other in index.query(value):
            a, b = find(position), find(other)
            if a != b:
                parent[max(a, b)] = min(a, b)
        index.add(position, value)
    return [find(i) for i in range(len(phashes))]
