"""Decide each decoded row's fate: kept origin, exact duplicate, near duplicate or rejected.

Works on compact arrays (about 60 bytes per image: the pixel hash, the perceptual hash, the
area, a status flag), not on row objects, so a million images need tens of MiB. The few strings
a decision needs (source references that break ties between identical pixels, file stems for
`{stem}` ids) are read back from the decoded-rows table for those rows only.

Every choice depends on content, never on arrival order: among rows with the same pixels the
smallest source reference is kept; among near duplicates the largest picture (then the smallest
hash) leads, and each other picture joins the first leader within the threshold. Leaders are
numbered in the order of their content hash.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from oripid.builders.origins_dedup import leader_clusters
from oripid.builders.origins_sources import source_stem
from oripid.builders.parquet_io import iter_batches
from oripid.errors import OripidError

OK, DUPLICATE, REJECTED = 0, 1, 2
STATUS_NAMES = ("ok", "duplicate", "rejected")
NOT_A_DUPLICATE, EXACT, NEAR = 0, 1, 2
_READ_BATCH = 65_536


@dataclass
class DecodedKeys:
    """What resolution needs of each decoded row, in the row order of the decoded-rows table."""

    ok: np.ndarray  # bool: decoded and accepted so far
    sha256: np.ndarray  # S32: digest of the decoded pixels (zeros for rejected rows)
    phash: np.ndarray  # uint64
    area: np.ndarray  # int64: width * height

    @property
    def rows(self) -> int:
        return len(self.ok)


@dataclass
class KeyCollector:
    """Accumulates `DecodedKeys` batch by batch, as numpy chunks rather than Python objects."""

    chunks: list[tuple[np.ndarray, ...]] = field(default_factory=list)

    def add(self, rows: list[dict]) -> None:
        ok = np.array([r["status"] == "ok" for r in rows], dtype=bool)
        sha = np.array([bytes.fromhex(r["sha256"]) if r["status"] == "ok" else b"" for r in rows], "S32")
        phash = np.array([int(r["phash"], 16) if r["status"] == "ok" else 0 for r in rows], np.uint64)
        area = np.array([(r["width"] or 0) * (r["height"] or 0) for r in rows], np.int64)
        self.chunks.append((ok, sha, phash, area))

    def keys(self) -> DecodedKeys:
        columns = zip(*self.chunks, strict=True) if self.chunks else ([], [], [], [])
        dtypes = (bool, "S32", np.uint64, np.int64)
        ok, sha, phash, area = (
            np.concatenate(list(parts)).astype(dtype) if parts else np.zeros(0, dtype)
            for parts, dtype in zip(columns, dtypes, strict=True)
        )
        return DecodedKeys(ok=ok, sha256=sha, phash=phash, area=area)


@dataclass
class Resolution:
    """Per row: status, duplicate kind, the id index it carries or joined, and detail inputs."""

    status: np.ndarray  # int8: OK, DUPLICATE, REJECTED
    duplicate: np.ndarray  # int8: NOT_A_DUPLICATE, EXACT, NEAR
    id_index: np.ndarray  # int64 into `ids`: its own id (ok) or the id it joined (duplicate); -1
    keeper_row: np.ndarray  # int64: for exact duplicates, the row kept in their place; -1
    distance: np.ndarray  # int8: for near duplicates, phash distance to the leader
    ids: pa.Array  # origin ids, numbered in content-hash order
    keeper_source: dict[int, str]  # source reference of every row in `keeper_row`
    threshold: int | None


def hex_digest(digest: bytes) -> str:
    """numpy's S32 drops trailing zero bytes; put them back before printing the digest."""
    return digest.ljust(32, b"\0").hex()


def resolve(keys: DecodedKeys, rows_path: Path, id_pattern: str, threshold: int | None) -> Resolution:
    """Resolve every row of the decoded-rows table at `rows_path` (see the module docstring)."""
    # Exact duplicates: accepted rows grouped by pixel hash; the smallest source is kept.
    ok_rows = np.flatnonzero(keys.ok)
    by_hash = ok_rows[np.argsort(keys.sha256[ok_rows], kind="stable")]
    del ok_rows
    sorted_hashes = keys.sha256[by_hash]
    # Group boundaries of the already sorted hashes (np.unique would sort a second copy).
    group_start = (
        np.flatnonzero(np.r_[True, sorted_hashes[1:] != sorted_hashes[:-1]]) if len(by_hash) else by_hash
    )
    group_size = np.diff(np.r_[group_start, len(by_hash)])
    del sorted_hashes
    keepers = by_hash[group_start]
    sources = _sources_of(rows_path, np.sort(by_hash[np.repeat(group_size > 1, group_size)]))
    for content in np.flatnonzero(group_size > 1).tolist():
        members = by_hash[group_start[content] : group_start[content] + group_size[content]]
        keepers[content] = min(members.tolist(), key=sources.__getitem__)

    # Near duplicates among the distinct contents, in priority order (largest, then smallest hash).
    # Contents are numbered in hash order (`by_hash` is sorted), so a stable sort on the area
    # alone breaks ties by hash.
    contents = len(keepers)
    priority = np.argsort(-keys.area[keepers], kind="stable")
    leader = np.arange(contents)
    if threshold is not None:
        leader[priority] = priority[leader_clusters(keys.phash[keepers[priority]], threshold)]
    del priority
    leads = leader == np.arange(contents)
    number = np.cumsum(leads) - 1  # leaders numbered in hash order, like the contents
    ids = _format_ids(id_pattern, keys.sha256, keepers[leads], rows_path)

    # Per row; allocated only now, so they do not add to the clustering's peak.
    n = keys.rows
    status = np.where(keys.ok, OK, REJECTED).astype(np.int8)
    duplicate = np.zeros(n, np.int8)
    id_index = np.full(n, -1, np.int64)
    keeper_row = np.full(n, -1, np.int64)
    distance = np.zeros(n, np.int8)
    content_of = np.repeat(np.arange(contents), group_size)  # content of each row in `by_hash`
    row_leader = leader[content_of]
    id_index[by_hash] = number[row_leader]
    is_keeper = keepers[content_of] == by_hash
    kept = is_keeper & leads[content_of]
    exact = ~is_keeper & leads[content_of]
    near = ~leads[content_of]
    status[by_hash[~kept]] = DUPLICATE
    duplicate[by_hash[exact]], duplicate[by_hash[near]] = EXACT, NEAR
    keeper_row[by_hash[exact]] = keepers[content_of[exact]]
    phash_of_content = keys.phash[keepers]
    distance[by_hash[near]] = np.bitwise_count(
        phash_of_content[content_of[near]] ^ phash_of_content[row_leader[near]]
    )
    keeper_source = {int(r): sources[int(r)] for r in np.unique(keeper_row[keeper_row >= 0])}
    return Resolution(status, duplicate, id_index, keeper_row, distance, ids, keeper_source, threshold)


def _format_ids(pattern: str, sha256: np.ndarray, keeper_rows: np.ndarray, rows_path: Path) -> pa.Array:
    """`pattern` formatted for each leader (position = number; `keeper_rows` are the rows kept
    for the leaders, in hash order), checked unique and usable."""
    stems: pa.Array | None = None
    if "{stem" in pattern:
        by_row = np.argsort(keeper_rows, kind="stable")
        read = _read_column_at(rows_path, "source", keeper_rows[by_row])
        stems = read.take(pa.array(np.argsort(by_row)))
    chunks = []
    for start in range(0, len(keeper_rows), _READ_BATCH):
        rows = keeper_rows[start : start + _READ_BATCH]
        stem_values = stems.slice(start, len(rows)).to_pylist() if stems is not None else [""] * len(rows)
        values = zip(range(start, start + len(rows)), sha256[rows].tolist(), stem_values, strict=True)
        chunks.append(
            pa.array(
                [pattern.format(index=i, hash=hex_digest(h), stem=source_stem(s)) for i, h, s in values],
                pa.string(),
            )
        )
    ids = pa.concat_arrays(chunks) if chunks else pa.array([], pa.string())
    if pc.count_distinct(ids).as_py() != len(ids):
        counts = pc.value_counts(ids)
        twice = counts.filter(pc.greater(counts.field("counts"), 1))[0]["values"].as_py()
        raise OripidError(
            f"id_pattern {pattern!r} gives two origins the same id ({twice!r}): "
            "use more hash digits or {index}"
        )
    bad = pc.or_(pc.equal(pc.utf8_length(ids), 0), pc.match_substring_regex(ids, r"[./]"))
    if len(ids) and pc.any(bad).as_py():
        example = ids.filter(bad)[0].as_py()
        raise OripidError(
            f"id_pattern {pattern!r} made the id {example!r}: ids may not be empty or hold '.' or '/'"
        )
    return ids


def _sources_of(rows_path: Path, rows: np.ndarray) -> dict[int, str]:
    values = _read_column_at(rows_path, "source", rows).to_pylist()
    return dict(zip(rows.tolist(), values, strict=True))


def _read_column_at(rows_path: Path, column: str, rows: np.ndarray) -> pa.Array:
    """`column` of the given rows (sorted ascending), streaming the table batch by batch."""
    if not len(rows):
        return pa.array([], pa.string())
    picked = []
    offset = 0
    for batch in iter_batches(rows_path, columns=[column], batch_size=_READ_BATCH):
        lo, hi = np.searchsorted(rows, [offset, offset + batch.num_rows])
        if hi > lo:
            picked.append(batch.column(0).take(pa.array(rows[lo:hi] - offset)))
        offset += batch.num_rows
        if hi == len(rows):
            break
    return pa.concat_arrays(picked)
