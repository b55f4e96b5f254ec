"""`oripid origins ingest`: turn a pile of images into the origins manifest and normalised origins.

Entry: `ingest_origins(src, workdir, **options) -> IngestSummary`.

Writes, under the workspace:
- `origins/images/<origin_id>.png`: every accepted origin as 8-bit RGB, EXIF orientation applied,
  converted as its manifest row records. Later stages read origins from here and only here.
- `origins/manifest.parquet`: one row per source entry (accepted, duplicate or rejected), in
  the source's order.
- `origins/ingest.json`: counts by status, reason and conversion, throughput, the settings.

Id rule (stable across reruns, input order and source kind): the accepted origins are sorted by
their content hash (sha256 of the decoded RGB pixels) and numbered in that order through
`id_pattern` (`{index}` the position, `{hash}` the hex content hash, `{stem}` the kept source's
file name without extension). The default `T{index:06d}` gives OriPID-style names; as with any
numbering, adding images to the source renumbers the origins after them, so use a hash pattern
such as `O{hash:.12}` when ids must survive additions, or `{stem}` to keep the file names of a
set that is already named (OriPID's `T000000.jpg`); `{stem}` ids depend on the source's names.

Memory: decoded rows stream to a temporary table on disk; deduplication and numbering run on
numpy arrays, so memory after decoding grows by about 0.25 KiB per image (a million rows peaked
near 0.5 GiB: benchmarks/bench_ingest_memory.py, docs/benchmarks.md).

Stages, one module each: `origins_sources` (read) -> `origins_decode` (process, in worker
processes) -> `origins_resolve` + `origins_dedup` (decide) -> `origins_manifest` (write).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, field_validator
from tqdm import tqdm

from oripid.builders import layout
from oripid.builders.origins_decode import DecodeSettings, decode_item, empty_row
from oripid.builders.origins_dedup import MAX_THRESHOLD
from oripid.builders.origins_manifest import (
    IMAGES_DIR,
    MANIFEST_SCHEMA,
    remove_stale_images,
    write_manifest,
)
from oripid.builders.origins_resolve import DecodedKeys, KeyCollector, resolve
from oripid.builders.origins_sources import SOURCE_KINDS, SourceItem, iter_source
from oripid.errors import OripidError, validated

INGEST_SUMMARY = "origins/ingest.json"
DECODED_ROWS = "origins/.ingest-rows.parquet"  # temporary: decoded rows in source order
_ROWS_PER_BATCH = 4096


class IngestConfig(BaseModel):
    """Options of `ingest_origins`; embeddable in the dataset config."""

    model_config = ConfigDict(extra="forbid")

    kind: str = Field("auto", description="source kind: auto, folder, table, hf, webdataset")
    column: str | None = Field(None, description="image column of a table or HF dataset (auto-detected)")
    id_pattern: str = Field("T{index:06d}", description="origin id format; fields {index}, {hash}, {stem}")
    min_side: int = Field(64, ge=1, description="reject images whose smaller side is shorter (px)")
    max_pixels: int = Field(50_000_000, ge=1, description="reject larger images; checked on the header")
    max_file_bytes: int = Field(200 * 2**20, ge=1, description="reject larger files before decoding")
    near_duplicate_threshold: int | None = Field(
        4, ge=0, le=MAX_THRESHOLD, description="phash Hamming distance counted as a near duplicate; None: off"
    )
    background: tuple[int, int, int] = Field(
        (255, 255, 255), description="RGB that transparency is flattened on"
    )
    workers: int | None = Field(None, ge=1, description="decoding processes; default: all cores")
    chunk_size: int = Field(16, ge=1, description="images per worker task")
    png_compress_level: int = Field(
        1,
        ge=0,
        le=9,
        description="zlib level of the stored PNGs; 1: fastest, PNG encoding dominates ingest time",
    )
    progress: bool = True

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        if value not in SOURCE_KINDS:
            raise ValueError(f"must be one of {', '.join(SOURCE_KINDS)}")
        return value

    @field_validator("id_pattern")
    @classmethod
    def _usable_pattern(cls, value: str) -> str:
        try:
            first, second = (value.format(index=i, hash=str(i) * 64, stem=f"s{i}") for i in (0, 1))
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"{value!r} is not a format string using only {{index}}, {{hash}}, {{stem}}: {exc}"
            ) from None
        if first == second:
            raise ValueError(f"{value!r} gives every origin the same id: use {{index}}, {{hash}} or {{stem}}")
        if "." in first or "/" in first:
            raise ValueError("ids may not contain dots (WebDataset cuts keys at the first dot) or slashes")
        return value


class IngestSummary(BaseModel):
    manifest: str
    total: int
    ok: int
    duplicate: int
    rejected: int
    reasons: dict[str, int]
    conversions: dict[str, int]
    seconds: float
    images_per_second: float
    workers: int
    config: dict[str, Any]


def parse_options(model: type[BaseModel], options: dict[str, Any], where: str) -> Any:
    """Validate keyword options into `model`, turning pydantic's error into an `OripidError`."""
    return validated(model, options, f"{where} options")


def ingest_origins(src: str | os.PathLike, workdir: str | os.PathLike, **options: Any) -> IngestSummary:
    """Ingest the images of `src` into `workdir`; see `IngestConfig` for the options.

    Example:
        >>> summary = ingest_origins("photos/", "work", id_pattern="T{index:06d}")  # doctest: +SKIP
        >>> summary.ok, summary.reasons  # doctest: +SKIP
    """
    # 1. Check inputs.
    cfg: IngestConfig = parse_options(IngestConfig, options, "ingest")
    workdir = Path(workdir)
    items = iter_source(Path(src), kind=cfg.kind, column=cfg.column)
    images_dir = workdir / IMAGES_DIR
    staging = images_dir / ".staging"
    staging.mkdir(parents=True, exist_ok=True)
    workers = cfg.workers or _usable_cores()
    settings = DecodeSettings(
        min_side=cfg.min_side,
        max_pixels=cfg.max_pixels,
        max_file_bytes=cfg.max_file_bytes,
        background=cfg.background,
        png_compress_level=cfg.png_compress_level,
        staging_dir=str(staging),
    )

    # 2. Decode, streaming, into a temporary table in source order; keep only compact keys.
    started = time.perf_counter()
    rows_path = workdir / DECODED_ROWS
    decoded = _decode_all(items, settings, workers, cfg.chunk_size)
    keys = store_decoded_rows(decoded, rows_path, progress=cfg.progress)
    seconds = time.perf_counter() - started

    # 3. Collapse exact and near duplicates, then number the survivors by content hash.
    resolution = resolve(keys, rows_path, cfg.id_pattern, cfg.near_duplicate_threshold)

    # 4. Write the manifest batch by batch, moving each accepted origin's PNG under its id.
    counts = write_manifest(rows_path, resolution, workdir, staging)
    remove_stale_images(workdir / IMAGES_DIR, resolution.ids)
    shutil.rmtree(staging, ignore_errors=True)
    rows_path.unlink()

    # 5. Summary, written last.
    summary = IngestSummary(
        manifest=layout.ORIGINS_MANIFEST,
        total=keys.rows,
        ok=counts.statuses["ok"],
        duplicate=counts.statuses["duplicate"],
        rejected=counts.statuses["rejected"],
        reasons=dict(sorted(counts.reasons.items())),
        conversions=dict(sorted(counts.conversions.items())),
        seconds=round(seconds, 3),
        images_per_second=round(keys.rows / seconds, 1) if seconds > 0 else 0.0,
        workers=workers,
        config=cfg.model_dump(mode="json"),
    )
    (workdir / INGEST_SUMMARY).write_text(json.dumps(summary.model_dump(), indent=2) + "\n")
    return summary


def _usable_cores() -> int:
    """Cores this process may run on (a cgroup or taskset limit counts), not the machine's total."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def _decode_chunk(items: list[SourceItem], settings: DecodeSettings) -> list[dict]:
    return [decode_item(item, settings) for item in items]


def _chunks(items: Iterable[SourceItem], size: int) -> Iterator[list[SourceItem]]:
    chunk: list[SourceItem] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _decode_all(
    items: Iterable[SourceItem], settings: DecodeSettings, workers: int, chunk_size: int
) -> Iterator[list[dict]]:
    """Decode on `workers` processes with a bounded number of chunks in flight, in input order.

    Bounded submission (not `Pool.imap`, which drains its input eagerly) is what keeps memory
    flat when the source carries the image bytes (parquet, HF datasets, tars). Results come
    back in submission order, so the manifest's row order does not depend on worker timing.
    """
    if workers == 1:
        for chunk in _chunks(items, chunk_size):
            yield _decode_chunk(chunk, settings)
        return
    with ProcessPoolExecutor(max_workers=workers) as executor:
        in_flight: deque[Future] = deque()
        for chunk in _chunks(items, chunk_size):
            if len(in_flight) >= workers * 4:
                yield in_flight.popleft().result()
            in_flight.append(executor.submit(_decode_chunk, chunk, settings))
        while in_flight:
            yield in_flight.popleft().result()


def store_decoded_rows(
    row_lists: Iterable[list[dict]], rows_path: Path, *, progress: bool = False
) -> DecodedKeys:
    """Write decoded rows (as `decode_item` returns them) to the table at `rows_path`, in the
    order given; return the keys that resolution needs.

    Rows go to disk in batches as they arrive, so memory holds one batch plus the compact keys.
    """
    schema = pa.schema([MANIFEST_SCHEMA.field(name) for name in empty_row("")])
    collector = KeyCollector()
    pending: list[dict] = []

    def flush(writer: pq.ParquetWriter) -> None:
        writer.write_batch(pa.RecordBatch.from_pylist(pending, schema=schema))
        collector.add(pending)
        pending.clear()

    with (
        pq.ParquetWriter(rows_path, schema) as writer,
        tqdm(desc="ingest", unit="img", disable=not progress, smoothing=0.1) as bar,
    ):
        for rows in row_lists:
            pending.extend(rows)
            bar.update(len(rows))
            if len(pending) >= _ROWS_PER_BATCH:
                flush(writer)
        if pending:
            flush(writer)
    return collector.keys()


def write_parquet_atomic(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def read_manifest(workdir: str | os.PathLike) -> pa.Table:
    path = Path(workdir) / layout.ORIGINS_MANIFEST
    if not path.is_file():
        raise OripidError(f"{path} is missing: run `oripid origins ingest SRC --workdir {workdir}` first")
    return pq.read_table(path)
