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

A released partition (OriPID's, or any earlier one) is reproduced instead with `assignment`:
a CSV, JSONL or parquet file of (origin_id or file, split). Origins it does not name are
"unused"; leakage across its splits is reported, and refused unless `assignment_leaks` is
"report".

Writes the `split` column of `origins/manifest.parquet` (duplicates inherit the split of the
origin they collapsed onto; rejected rows stay null) and `splits.json`. Works on arrays and
streams the manifest, so a million origins take a few hundred MiB.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from oripid.builders import layout
from oripid.builders.ingest import parse_options
from oripid.builders.origins_dedup import MAX_THRESHOLD, components, near_pairs, phash_array
from oripid.builders.origins_sources import source_stem
from oripid.builders.parquet_io import iter_batches
from oripid.builders.splits_assignment import read_assignment
from oripid.errors import OripidError

FILL_ORDER = ("test", "distractor", "train")
SPLIT_NAMES = (*FILL_ORDER, "unused")
_BATCH = 65_536
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
    assignment: str | None = Field(
        None, description="CSV/JSONL/parquet of (origin_id or file, split) to reproduce instead of drawing"
    )
    assignment_leaks: Literal["error", "report"] = Field(
        "error", description="near duplicates across an assignment's splits: refuse, or only report"
    )


class SplitsSummary(BaseModel):
    origins: int
    requested: dict[str, int]  # empty when an assignment file decided
    assignment: str | None = None
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


@dataclass
class AcceptedOrigins:
    """The manifest's accepted origins as arrays, in rank order (keyed hash of the id)."""

    ids: pa.Array
    sha256: np.ndarray  # S32
    phash: np.ndarray  # uint64
    sources: pa.Array


def split_origins(workdir: str | os.PathLike, **options: Any) -> SplitsSummary:
    """Assign every accepted origin of `workdir` a split; see `SplitsConfig` for the options."""
    # 1. Check inputs.
    cfg: SplitsConfig = parse_options(SplitsConfig, options, "splits")
    workdir = Path(workdir)
    manifest = workdir / layout.ORIGINS_MANIFEST
    if not manifest.is_file():
        raise OripidError(f"{manifest} is missing: run `oripid origins ingest SRC --workdir {workdir}` first")
    origins = _read_accepted(manifest, cfg.key)

    # 2. Leakage groups, labelled by their lowest-ranked member (positions are in rank order).
    pairs = near_pairs(origins.phash, cfg.leak_threshold)
    labels = components(len(origins.ids), *pairs)
    group_labels, group_sizes = np.unique(labels, return_counts=True)

    # 3. Draw: fill test, distractor, train in rank order of the groups; or take the assignment.
    if cfg.assignment is None:
        sizes = resolve_sizes(cfg, len(origins.ids))
        split = _fill(labels, group_labels, group_sizes, sizes)
    else:
        sizes = None
        split = _assigned(origins, read_assignment(Path(cfg.assignment), SPLIT_NAMES))

    # 4. Verify, independently of the grouping, that no near-duplicate pair crosses splits.
    crossing, crossing_examples = _crossing_pairs(origins, split, pairs)
    if crossing and (cfg.assignment is None or cfg.assignment_leaks == "error"):
        examples = ", ".join(f"{a}~{b}" for a, b in crossing_examples[:5])
        if cfg.assignment is None:
            raise OripidError(
                f"internal error: {crossing} near-duplicate pairs cross splits, e.g. {examples}"
            )
        raise OripidError(
            f"{cfg.assignment}: {crossing} near-duplicate pairs (phash distance <= "
            f"{cfg.leak_threshold}) lie in different splits, e.g. {examples}; fix the file, lower "
            "leak_threshold, or set assignment_leaks: report to keep the partition as given"
        )

    # 5. Write the split column and the summary.
    _write_split_column(manifest, origins.ids, split)
    counts = np.bincount(split, minlength=len(SPLIT_NAMES))
    grouped = group_labels[group_sizes > 1]
    members = np.isin(labels, grouped)
    examples = _group_examples(origins.ids, labels, grouped[:100])
    summary = SplitsSummary(
        origins=len(origins.ids),
        requested=sizes or {},
        assignment=cfg.assignment,
        counts={name: int(counts[i]) for i, name in enumerate(SPLIT_NAMES)},
        leakage={
            "rule": (
                "near-duplicate groups (phash distance <= leak_threshold, transitive; exact copies "
                "included) are placed whole in the split of their lowest-ranked member"
                if cfg.assignment is None
                else "the assignment file's splits are kept as given; near-duplicate pairs across "
                "them are counted in cross_split_pairs"
            ),
            "leak_threshold": cfg.leak_threshold,
            "groups_kept_together": int(len(grouped)),
            "origins_in_groups": int(members.sum()),
            "groups": examples,
            "cross_split_pairs": crossing,
            "cross_split_examples": [list(pair) for pair in crossing_examples],
            "shared_content_hashes": _shared_hashes(origins, split),
        },
        config=cfg.model_dump(mode="json"),
    )
    (workdir / layout.SPLITS_SUMMARY).write_text(json.dumps(summary.model_dump(), indent=2) + "\n")
    return summary


def _read_accepted(manifest: Path, key: str) -> AcceptedOrigins:
    ids, sha, phash, sources, ranks = [], [], [], [], []
    columns = ["status", "origin_id", "sha256", "phash", "source"]
    for batch in iter_batches(manifest, columns=columns, batch_size=_BATCH):
        ok = batch.filter(pc.equal(batch.column("status"), "ok"))
        ids.append(ok.column("origin_id"))
        sources.append(ok.column("source"))
        sha.append(np.array([bytes.fromhex(h) for h in ok.column("sha256").to_pylist()], "S32"))
        phash.append(phash_array(ok.column("phash").to_pylist()))
        ranks.append(np.array([rank_key(i, key) for i in ok.column("origin_id").to_pylist()], "S16"))
    order = np.argsort(np.concatenate(ranks), kind="stable") if ranks else np.zeros(0, np.int64)
    take = pa.array(order)
    return AcceptedOrigins(
        ids=(pa.concat_arrays(ids) if ids else pa.array([], pa.string())).take(take),
        sha256=np.concatenate(sha)[order] if sha else np.zeros(0, "S32"),
        phash=np.concatenate(phash)[order] if phash else np.zeros(0, np.uint64),
        sources=(pa.concat_arrays(sources) if sources else pa.array([], pa.string())).take(take),
    )


def _fill(
    labels: np.ndarray, group_labels: np.ndarray, group_sizes: np.ndarray, sizes: dict[str, int]
) -> np.ndarray:
    """Split index (into SPLIT_NAMES) of each origin: groups in label order fill test,
    distractor, train; a group goes whole to the split that is not yet full."""
    group_split = np.empty(len(group_labels), np.int8)
    target, taken = 0, 0
    for g, size in enumerate(group_sizes.tolist()):
        while target < len(FILL_ORDER) and taken >= sizes[FILL_ORDER[target]]:
            target, taken = target + 1, 0
        group_split[g] = target  # == len(FILL_ORDER): "unused"
        taken += size
    return group_split[np.searchsorted(group_labels, labels)]


def _assigned(origins: AcceptedOrigins, assignment: dict[str, str]) -> np.ndarray:
    """Split index of each origin from the assignment, matched by origin id, else by file stem."""
    code = {name: i for i, name in enumerate(SPLIT_NAMES)}
    unused = code["unused"]

    def lookup(values: pa.Array, key_of) -> np.ndarray:
        parts = [
            np.array(
                [code[assignment.get(key_of(v), "unused")] for v in values.slice(i, _BATCH).to_pylist()],
                np.int8,
            )
            for i in range(0, len(values), _BATCH)
        ]
        return np.concatenate(parts) if parts else np.zeros(0, np.int8)

    split = lookup(origins.ids, str)
    if (split == unused).all():
        split = lookup(origins.sources, source_stem)
    if (split == unused).all() and len(split) and not any(v == "unused" for v in assignment.values()):
        raise OripidError(
            f"the assignment names none of the {len(split)} accepted origins, by origin_id "
            f"(e.g. {origins.ids[0].as_py()!r}) or by file name (e.g. "
            f"{source_stem(origins.sources[0].as_py())!r}): check its key column"
        )
    return split


def _crossing_pairs(
    origins: AcceptedOrigins, split: np.ndarray, pairs: tuple[np.ndarray, np.ndarray]
) -> tuple[int, list[tuple[str, str]]]:
    """How many near-duplicate pairs lie in different splits, and up to 100 of them by id."""
    left, right = pairs
    across = np.flatnonzero(split[left] != split[right])
    examples = [(origins.ids[int(left[i])].as_py(), origins.ids[int(right[i])].as_py()) for i in across[:100]]
    return len(across), examples


def _shared_hashes(origins: AcceptedOrigins, split: np.ndarray) -> int:
    """Content hashes found in more than one split (ingest keeps one origin per hash, so 0)."""
    order = np.lexsort((split, origins.sha256))
    sha, sp = origins.sha256[order], split[order]
    same = sha[1:] == sha[:-1]
    return int(np.unique(sha[1:][same & (sp[1:] != sp[:-1])]).size)


def _group_examples(ids: pa.Array, labels: np.ndarray, grouped: np.ndarray) -> list[list[str]]:
    positions = np.flatnonzero(np.isin(labels, grouped))
    groups: dict[int, list[str]] = {}
    for p in positions.tolist():
        groups.setdefault(int(labels[p]), []).append(ids[p].as_py())
    return [sorted(members) for _, members in sorted(groups.items())]


def _write_split_column(manifest: Path, ids: pa.Array, split: np.ndarray) -> None:
    """Rewrite the manifest with its split column, batch by batch (duplicates follow their origin)."""
    names = pa.array([*SPLIT_NAMES, None], pa.string())
    lookup = pa.array(np.append(split, len(SPLIT_NAMES)).astype(np.int64))
    partial = manifest.with_name(manifest.name + ".partial")
    with pq.ParquetWriter(partial, pq.read_schema(manifest)) as writer:
        for batch in iter_batches(manifest, batch_size=_BATCH):
            status = batch.column("status")
            # Rejected rows have no duplicate_of, so their key is null and their split stays null.
            key = pc.if_else(pc.equal(status, "ok"), batch.column("origin_id"), batch.column("duplicate_of"))
            position = pc.fill_null(pc.index_in(key, value_set=ids), len(ids))
            column = names.take(lookup.take(position))
            index = batch.schema.get_field_index("split")
            writer.write_batch(batch.set_column(index, "split", column))
    os.replace(partial, manifest)
