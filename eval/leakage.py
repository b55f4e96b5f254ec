"""Leakage: training and test origins share no id, no content hash and no near duplicate, and
every query's origin is in the gallery."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from oripid.builders import layout

TEST_SIDE = ("test", "distractor")


def _popcount64(values: np.ndarray) -> np.ndarray:
    return np.unpackbits(values.view(np.uint8).reshape(*values.shape, 8), axis=-1).sum(axis=-1)


def near_duplicate_pairs(
    a: list[str], b: list[str], threshold: int, block: int = 2048
) -> list[tuple[int, int]]:
    """Index pairs (i, j) whose 64-bit perceptual hashes differ in at most `threshold` bits."""
    if not a or not b:
        return []
    left = np.array([int(h, 16) for h in a], dtype=np.uint64)
    right = np.array([int(h, 16) for h in b], dtype=np.uint64)
    pairs = []
    for start in range(0, len(left), block):
        distances = _popcount64(left[start : start + block, None] ^ right[None, :])
        for i, j in zip(*np.nonzero(distances <= threshold), strict=True):
            pairs.append((start + int(i), int(j)))
    return pairs


def _shard_origins(workdir: Path, split: str) -> set[str]:
    origins: set[str] = set()
    for index in sorted((workdir / layout.DATA_DIR / split).rglob("*.parquet")):
        origins.update(pq.read_table(index, columns=["origin_id"]).column("origin_id").to_pylist())
    return origins


def check_leakage(workdir: str | Path, near_duplicate_threshold: int) -> dict:
    workdir = Path(workdir)
    manifest = pq.read_table(workdir / layout.ORIGINS_MANIFEST).to_pylist()
    by_split: dict[str, list[dict]] = defaultdict(list)
    for row in manifest:
        if row["status"] == "ok":
            by_split[row["split"]].append(row)
    train = by_split["train"]
    test = [row for split in TEST_SIDE for row in by_split[split]]
    messages = []

    shared_ids = sorted({r["origin_id"] for r in train} & {r["origin_id"] for r in test})
    shared_hashes = sorted({r["sha256"] for r in train} & {r["sha256"] for r in test})
    near = near_duplicate_pairs(
        [r["phash"] for r in train], [r["phash"] for r in test], near_duplicate_threshold
    )
    near_named = [(train[i]["origin_id"], test[j]["origin_id"]) for i, j in near]
    if shared_ids:
        messages.append(f"{len(shared_ids)} origin ids in both train and test/distractor: {shared_ids[:5]}")
    if shared_hashes:
        messages.append(f"{len(shared_hashes)} content hashes in both train and test/distractor")
    if near_named:
        messages.append(
            f"{len(near_named)} near-duplicate train/test pairs (phash distance <= {near_duplicate_threshold}): "
            f"{near_named[:5]}"
        )

    # What the shards hold must agree with the manifest's splits.
    train_ids = {r["origin_id"] for r in train}
    test_ids = {r["origin_id"] for r in by_split["test"]}
    gallery = _shard_origins(workdir, "gallery")
    queries = _shard_origins(workdir, "query")
    train_used = _shard_origins(workdir, "train") | _shard_origins(workdir, "train_origins")
    not_in_gallery = sorted(queries - gallery)
    queries_not_test = sorted(queries - test_ids)
    train_not_train = sorted(train_used - train_ids)
    train_in_gallery = sorted(train_used & gallery)
    for found, text in (
        (not_in_gallery, "query origins missing from the gallery"),
        (queries_not_test, "query origins that are not test origins"),
        (train_not_train, "training shards holding origins that are not training origins"),
        (train_in_gallery, "training origins in the gallery"),
    ):
        if found:
            messages.append(f"{len(found)} {text}: {found[:5]}")
    return {
        "passed": not messages,
        "train_origins": len(train),
        "test_origins": len(by_split["test"]),
        "distractors": len(by_split["distractor"]),
        "shared_ids": shared_ids[:20],
        "shared_hashes": len(shared_hashes),
        "near_duplicate_pairs": near_named[:20],
        "queries_without_origin_in_gallery": not_in_gallery[:20],
        "messages": messages,
    }
