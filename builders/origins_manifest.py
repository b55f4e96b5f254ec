"""Write `origins/manifest.parquet` batch by batch from the decoded rows and their resolution.

Rows keep the order of the source (its files sorted per folder, its table rows, its tar
members), so a rerun over the same source writes the same bytes whatever the worker count.
While a batch is written, each kept origin's staged PNG moves to `origins/images/<id>.png`.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from oripid.builders import layout
from oripid.builders.origins_resolve import DUPLICATE, EXACT, NEAR, OK, STATUS_NAMES, Resolution
from oripid.builders.parquet_io import iter_batches
from oripid.errors import OripidError

IMAGES_DIR = layout.ORIGIN_IMAGES_DIR  # origins/images/<origin_id>.png
_BATCH = 65_536

MANIFEST_SCHEMA = pa.schema(
    [
        ("origin_id", pa.string()),  # null unless status == "ok"
        ("source", pa.string()),  # path relative to SRC, or table/shard reference
        ("image", pa.string()),  # normalised origin, relative to the workspace (ok rows)
        ("sha256", pa.string()),  # of the decoded, normalised RGB pixels (with the size)
        ("file_sha256", pa.string()),  # of the encoded file bytes as read
        ("phash", pa.string()),  # 64-bit DCT perceptual hash (imagehash.phash), 16 hex digits
        ("width", pa.int32()),  # after EXIF orientation
        ("height", pa.int32()),
        ("mode", pa.string()),  # Pillow mode of the file before conversion
        ("format", pa.string()),
        ("conversion", pa.string()),  # what was done to reach sRGB ("" when nothing)
        ("status", pa.string()),  # ok | duplicate | rejected
        ("reason", pa.string()),  # code: exact_duplicate, near_duplicate, too_small, decode_error, ...
        ("detail", pa.string()),  # the human explanation of the reason
        ("duplicate_of", pa.string()),  # origin_id a duplicate collapsed onto
        ("split", pa.string()),  # filled by `oripid splits`
    ]
)


@dataclass
class ManifestCounts:
    statuses: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)
    conversions: Counter = field(default_factory=Counter)


def write_manifest(rows_path: Path, resolution: Resolution, workdir: Path, staging: Path) -> ManifestCounts:
    """Write the manifest (atomically) and place the kept origins' images; return the counts."""
    manifest = workdir / layout.ORIGINS_MANIFEST
    partial = manifest.with_name(manifest.name + ".partial")
    images_dir = workdir / IMAGES_DIR
    counts = ManifestCounts()
    offset = 0
    with pq.ParquetWriter(partial, MANIFEST_SCHEMA) as writer:
        for batch in iter_batches(rows_path, batch_size=_BATCH):
            rows = slice(offset, offset + batch.num_rows)
            resolved = _resolved_batch(batch, resolution, rows)
            _place_images(resolved, images_dir, staging)
            _count(resolved, counts)
            writer.write_batch(resolved)
            offset += batch.num_rows
    os.replace(partial, manifest)
    return counts


def _resolved_batch(batch: pa.RecordBatch, resolution: Resolution, rows: slice) -> pa.RecordBatch:
    status = resolution.status[rows]
    index = resolution.id_index[rows]
    kind = resolution.duplicate[rows]
    origin_id = resolution.ids.take(pa.array(index, mask=status != OK))
    duplicate_of = resolution.ids.take(pa.array(index, mask=status != DUPLICATE))
    reason = batch.column("reason").to_pylist()
    detail = batch.column("detail").to_pylist()
    joined = duplicate_of.to_pylist()
    for i in np.flatnonzero(status == DUPLICATE).tolist():
        if kind[i] == EXACT:
            keeper = resolution.keeper_source[int(resolution.keeper_row[rows][i])]
            reason[i], detail[i] = "exact_duplicate", f"same pixels as {keeper}"
        elif kind[i] == NEAR:
            reason[i] = "near_duplicate"
            detail[i] = (
                f"phash distance {resolution.distance[rows][i]} <= {resolution.threshold} to {joined[i]}"
            )
    columns = {
        "origin_id": origin_id,
        "image": pc.binary_join_element_wise(f"{IMAGES_DIR}/", origin_id, ".png", ""),
        "status": pa.array(np.asarray(STATUS_NAMES)[status].tolist(), pa.string()),
        "reason": pa.array(reason, pa.string()),
        "detail": pa.array(detail, pa.string()),
        "duplicate_of": duplicate_of,
        "split": pa.nulls(batch.num_rows, pa.string()),
    }
    arrays = [columns[f.name] if f.name in columns else batch.column(f.name) for f in MANIFEST_SCHEMA]
    return pa.RecordBatch.from_arrays(arrays, schema=MANIFEST_SCHEMA)


def _place_images(batch: pa.RecordBatch, images_dir: Path, staging: Path) -> None:
    kept = batch.filter(pc.equal(batch.column("status"), "ok"))
    for origin_id, sha in zip(
        kept.column("origin_id").to_pylist(), kept.column("sha256").to_pylist(), strict=True
    ):
        staged, placed = staging / f"{sha}.png", images_dir / f"{origin_id}.png"
        if staged.exists():
            os.replace(staged, placed)
        elif not placed.exists():
            raise OripidError(f"staged origin {staged} vanished during ingest; rerun `oripid origins ingest`")


def _count(batch: pa.RecordBatch, counts: ManifestCounts) -> None:
    for name, counter in (
        ("status", counts.statuses),
        ("reason", counts.reasons),
        ("conversion", counts.conversions),
    ):
        for entry in pc.value_counts(batch.column(name)).to_pylist():
            if entry["values"]:
                counter[entry["values"]] += entry["counts"]


def remove_stale_images(images_dir: Path, ids: pa.Array) -> None:
    """Delete `<id>.png` files no current origin owns (left by a run over another source)."""
    names: list[str] = []

    def flush() -> None:
        stems = pa.array([name[: -len(".png")] for name in names], pa.string())
        for stale in np.flatnonzero(~pc.is_in(stems, value_set=ids).to_numpy(zero_copy_only=False)).tolist():
            (images_dir / names[stale]).unlink()
        names.clear()

    with os.scandir(images_dir) as entries:
        for entry in entries:
            if entry.name.endswith(".png") and entry.is_file():
                names.append(entry.name)
                if len(names) >= _BATCH:
                    flush()
    flush()
