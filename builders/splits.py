"""`oripid splits`: assign accepted origins to train, test and distractor, free of leakage.

Entry: `split_origins(workdir, **options) -> SplitsSummary`.

Rule, in order:
1. Every accepted origin gets a rank: the keyed BLAKE2b hash of its origin_id (key `key`).
   Same ids and key give the same ranks on any machine; a new key gives a new draw.
2. Leakage groups: origins linked by a chain of perceptual-hash distances <= `leak_threshold`
   (exact pixel copies have distance 0) form one group. A group is placed whole, at the rank of
   its lowest-ranked member, so no content hash and no near duplicate is shared across splits.
3. Groups are taken in rank order and fill test first, then distractor, then train (so the
   smallest, most important split is never starved); what is left is "unused".
A split may overshoot its size by at most the size of its last group minus one; the summary
reports the groups that were kept together and the check that nothing crosses splits.

Writes the `split` column of `origins/manifest.parquet` (duplicates inherit the split of the
origin they collapsed onto; rejected rows stay null) and `splits.json`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from oripid.builders import layout
from oripid.builders.ingest import parse_options, read_manifest, write_parquet_atomic
from oripid.builders.origins_dedup import MAX_THRESHOLD, PhashIndex, connected_groups
from oripid.errors import OripidError

FILL_ORDER = ("test", "distractor", "train")
Size = int | float | Literal["rest"]


class SplitsConfig(BaseModel):
    """Split sizes: an int is a count of origins, a float in (0, 1] a fraction of the accepted
    origins, "rest" whatever the others leave (at most one split)."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field("oripid-splits", min_length=1, description="key of the hash that ranks origins")
    train: Size = Field(100_000, description="training origins (OriPID: 100,000)")
    test: Size | None = Field(None, description="test origins; None: enough for test_queries_per_model")
    distractor: Size = Field(0, description="gallery distractors: origins no query comes from")
    test_queries_per_model: int = Field(5_000, ge=1, description="OriPID: 5,000 queries per model")
    queries_per_test_origin: int = Field(1, ge=1, description="prompts used per test origin and model")
    leak_threshold: int = Field(
        8, ge=0, le=MAX_THRESHOLD, description="phash distance treated as leakage across splits"
    )


class SplitsSummary(BaseModel):
    origins: int
    requested: dict[str, int]
    counts: dict[str, int]
    leakage: dict[str, Any]
    config: dict[str, Any]


def rank_key(origin_id: str, key: str) -> bytes:
    """The keyed hash that orders origins; BLAKE2b keys are at most 64 bytes, so long keys are hashed."""
    key_bytes = key.encode()
    if len(key_bytes) > 64:
        key_bytes = hashlib.sha256(key_bytes).digest()
    return hashlib.blake2b(origin_id.encode(), key=key_bytes, digest_size=16).digest()


def resolve_sizes(cfg: SplitsConfig, available: int) -> dict[str, int]:
    """Turn counts, fractions and "rest" into origin counts; refuse what the manifest cannot give."""
    test = cfg.test
    if test is None:
        test = math.ceil(cfg.test_queries_per_model / cfg.queries_per_test_origin)
    wanted: dict[str, Size] = {"test": test, "distractor": cfg.distractor, "train": cfg.train}
    rest = [name for name, value in wanted.items() if value == "rest"]
    if len(rest) > 1:
        raise OripidError(f"splits: only one split may be 'rest', got {', '.join(rest)}")
    sizes: dict[str, int] = {}
    for name, value in wanted.items():
        if value == "rest":
            continue
        if isinstance(value, float):
            if not 0.0 < value <= 1.0:
                raise OripidError(
                    f"splits.{name} = {value}: a fraction must be in (0, 1]; use an int for a count"
                )
            sizes[name] = round(value * available)
        elif value < 0:
            raise OripidError(f"splits.{name} = {value}: a count cannot be negative")
        else:
            sizes[name] = int(value)
    taken = sum(sizes.values())
    if taken > available:
        asked = ", ".join(f"{k}={v}" for k, v in sizes.items())
        raise OripidError(
            f"splits ask for {taken} origins ({asked}) but the manifest has {available} accepted origins: "
            "lower the counts, give fractions (e.g. train: 0.8), or set one split to 'rest'"
        )
    if rest:
        sizes[rest[0]] = available - taken
    return {name: sizes[name] for name in FILL_ORDER}


def split_origins(workdir: str | os.PathLike, **options: Any) -> SplitsSummary:
    """Assign every accepted origin of `workdir` a split; see `SplitsConfig` for the options."""
    # 1. Check inputs.
    cfg: SplitsConfig = parse_options(SplitsConfig, options, "splits")
    workdir = Path(workdir)
    table = read_manifest(workdir)
    rows = table.to_pylist()
    ok = sorted((r for r in rows if r["status"] == "ok"), key=lambda r: rank_key(r["origin_id"], cfg.key))
    sizes = resolve_sizes(cfg, len(ok))

    # 2. Leakage groups, labelled by their lowest-ranked member (positions are in rank order).
    phashes = [int(r["phash"], 16) for r in ok]
    labels = connected_groups(phashes, cfg.leak_threshold)
    members: dict[int, list[int]] = {}
    for position, label in enumerate(labels):
        members.setdefault(label, []).append(position)

    # 3. Fill test, distractor, train in rank order of the groups.
    split_of: dict[str, str] = {}
    counts = Counter()
    targets = iter(FILL_ORDER)
    current = next(targets, None)
    for label in sorted(members):
        while current is not None and counts[current] >= sizes[current]:
            current = next(targets, None)
        name = current or "unused"
        for position in members[label]:
            split_of[ok[position]["origin_id"]] = name
        counts[name] += len(members[label])

    # 4. Verify, independently of the grouping, that nothing crosses splits.
    crossing = _crossing_pairs(ok, split_of, cfg.leak_threshold)
    if crossing:
        raise OripidError(
            f"internal error: {len(crossing)} near-duplicate pairs cross splits, e.g. {crossing[:3]}"
        )

    # 5. Write the split column and the summary.
    for row in rows:
        if row["status"] == "ok":
            row["split"] = split_of[row["origin_id"]]
        elif row["status"] == "duplicate":
            row["split"] = split_of.get(row["duplicate_of"])
        else:
            row["split"] = None
    write_parquet_atomic(pa.Table.from_pylist(rows, schema=table.schema), workdir / layout.ORIGINS_MANIFEST)
    groups = [m for m in members.values() if len(m) > 1]
    summary = SplitsSummary(
        origins=len(ok),
        requested=sizes,
        counts={name: counts.get(name, 0) for name in (*FILL_ORDER, "unused")},
        leakage={
            "rule": "near-duplicate groups (phash distance <= leak_threshold, transitive; exact copies "
            "included) are placed whole in the split of their lowest-ranked member",
            "leak_threshold": cfg.leak_threshold,
            "groups_kept_together": len(groups),
            "origins_in_groups": sum(len(m) for m in groups),
            "groups": [sorted(ok[p]["origin_id"] for p in m) for m in groups[:100]],
            "cross_split_pairs": 0,
            "shared_content_hashes": 0,
        },
        config=cfg.model_dump(mode="json"),
    )
    (workdir / layout.SPLITS_SUMMARY).write_text(json.dumps(summary.model_dump(), indent=2) + "\n")
    return summary


def _crossing_pairs(ok: list[dict], split_of: dict[str, str], threshold: int) -> list[tuple[str, str]]:
    crossing = []
    by_hash: dict[str, str] = {}
    index = PhashIndex(threshold)
    for position, row in enumerate(ok):
        mine = split_of[row["origin_id"]]
        other = by_hash.setdefault(row["sha256"], row["origin_id"])
        if split_of[other] != mine:
            crossing.append((other, row["origin_id"]))
        value = int(row["phash"], 16)
        for hit in index.query(value):
            if split_of[ok[hit]["origin_id"]] != mine:
                crossing.append((ok[hit]["origin_id"], row["origin_id"]))
        index.add(position, value)
    return crossing
