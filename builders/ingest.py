"""`oripid origins ingest`: turn a pile of images into the origins manifest and normalised origins.

Entry: `ingest_origins(src, workdir, **options) -> IngestSummary`.

Writes, under the workspace:
- `origins/images/<origin_id>.png`: every accepted origin as 8-bit RGB, EXIF orientation applied,
  converted as its manifest row records. Later stages read origins from here and only here.
- `origins/manifest.parquet`: one row per source entry (accepted, duplicate or rejected).
- `origins/ingest.json`: counts by status, reason and conversion, throughput, the settings.

Id rule (stable across reruns, input order and source kind): the accepted origins are sorted by
their content hash (sha256 of the decoded RGB pixels) and numbered in that order through
`id_pattern` (`{index}` the position, `{hash}` the hex content hash, `{stem}` the kept source's
file name without extension). The default `T{index:06d}` gives OriPID-style names; as with any
numbering, adding images to the source renumbers the origins after them, so use a hash pattern
such as `O{hash:.12}` when ids must survive additions, or `{stem}` to keep the file names of a
set that is already named (OriPID's `T000000.jpg`); `{stem}` ids depend on the source's names.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, field_validator
from tqdm import tqdm

from oripid.builders import layout
from oripid.builders.origins_decode import DecodeSettings, decode_item
from oripid.builders.origins_dedup import MAX_THRESHOLD, hamming, leader_clusters
from oripid.builders.origins_sources import SOURCE_KINDS, SourceItem, iter_source
from oripid.errors import OripidError, validated

IMAGES_DIR = layout.ORIGIN_IMAGES_DIR  # origins/images/<origin_id>.png
INGEST_SUMMARY = "origins/ingest.json"
STATUSES = ("ok", "duplicate", "rejected")

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
        ("conversion", pa.string()),  # what was done to reach RGB ("" when nothing)
        ("status", pa.string()),  # ok | duplicate | rejected
        ("reason", pa.string()),  # code: exact_duplicate, near_duplicate, too_small, decode_error, ...
        ("detail", pa.string()),  # the human explanation of the reason
        ("duplicate_of", pa.string()),  # origin_id a duplicate collapsed onto
        ("split", pa.string()),  # filled by `oripid splits`
    ]
)


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

    # 2. Decode everything, streaming: rows become compact Arrow batches, images go to disk.
    started = time.perf_counter()
    batches: list[pa.RecordBatch] = []
    pending: list[dict] = []
    with tqdm(desc="ingest", unit="img", disable=not cfg.progress, smoothing=0.1) as bar:
        for rows in _decode_all(items, settings, workers, cfg.chunk_size):
            pending.extend(rows)
            bar.update(len(rows))
            if len(pending) >= 4096:
                batches.append(_to_batch(pending))
                pending = []
    if pending or not batches:
        batches.append(_to_batch(pending))
    seconds = time.perf_counter() - started
    table = pa.Table.from_batches(batches)

    # 3. Collapse exact and near duplicates, then number the survivors by content hash.
    table = _resolve(table, cfg)

    # 4. Put each accepted origin's PNG under its id, drop staged copies and stale files.
    _place_images(table, workdir, staging)
    manifest = workdir / layout.ORIGINS_MANIFEST
    write_parquet_atomic(table, manifest)

    # 5. Summary, written last.
    statuses = Counter(table.column("status").to_pylist())
    reasons = Counter(r for r in table.column("reason").to_pylist() if r)
    conversions = Counter(c for c in table.column("conversion").to_pylist() if c)
    summary = IngestSummary(
        manifest=layout.ORIGINS_MANIFEST,
        total=table.num_rows,
        ok=statuses["ok"],
        duplicate=statuses["duplicate"],
        rejected=statuses["rejected"],
        reasons=dict(sorted(reasons.items())),
        conversions=dict(sorted(conversions.items())),
        seconds=round(seconds, 3),
        images_per_second=round(table.num_rows / seconds, 1) if seconds > 0 else 0.0,
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
    """Decode on `workers` processes with a bounded number of chunks in flight.

    Bounded submission (not `Pool.imap`, which drains its input eagerly) is what keeps memory
    flat when the source carries the image bytes (parquet, HF datasets, tars).
    """
    if workers == 1:
        for chunk in _chunks(items, chunk_size):
            yield _decode_chunk(chunk, settings)
        return
    executor: Executor
    with ProcessPoolExecutor(max_workers=workers) as executor:
        in_flight: set[Future] = set()
        for chunk in _chunks(items, chunk_size):
            if len(in_flight) >= workers * 4:
                done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
            in_flight.add(executor.submit(_decode_chunk, chunk, settings))
        for future in in_flight:
            yield future.result()


def _to_batch(rows: list[dict]) -> pa.RecordBatch:
    fields = [f for f in MANIFEST_SCHEMA if f.name in (rows[0] if rows else _decode_fields())]
    schema = pa.schema(fields)
    return pa.RecordBatch.from_pylist(rows, schema=schema)


def _decode_fields() -> set[str]:
    from oripid.builders.origins_decode import empty_row

    return set(empty_row(""))


def _resolve(table: pa.Table, cfg: IngestConfig) -> pa.Table:
    """Fill origin_id, status, reason, detail and duplicate_of for every row, sorted for output.

    Every choice depends on content, never on arrival order: among rows with the same pixels
    the smallest source reference is kept; among near duplicates the largest picture (then the
    smallest hash) leads, and each other picture joins the first leader within the threshold.
    Works on the few columns it needs (plain lists), not on row dicts, to keep per-image memory low.
    """
    # Only the columns decisions need become Python lists; the rest stay in Arrow.
    needed = ("status", "sha256", "source", "phash", "width", "height", "reason", "detail")
    col = {name: table.column(name).to_pylist() for name in needed}
    n = table.num_rows
    status, sha, source, phash = col["status"], col["sha256"], col["source"], col["phash"]
    origin_id: list[str | None] = [None] * n
    duplicate_of: list[str | None] = [None] * n
    by_hash: dict[str, list[int]] = {}
    for i in range(n):
        if status[i] == "ok":
            by_hash.setdefault(sha[i], []).append(i)
    for group in by_hash.values():
        group.sort(key=source.__getitem__)

    def area(h: str) -> int:
        first = by_hash[h][0]
        return col["width"][first] * col["height"][first]

    contents = sorted(by_hash, key=lambda h: (-area(h), h))
    if cfg.near_duplicate_threshold is None:
        leader_of = list(range(len(contents)))
    else:
        leader_of = leader_clusters(
            [int(phash[by_hash[h][0]], 16) for h in contents], cfg.near_duplicate_threshold
        )
    leaders = sorted(contents[i] for i, lead in enumerate(leader_of) if lead == i)
    ids = {
        h: cfg.id_pattern.format(index=i, hash=h, stem=_stem(source[by_hash[h][0]]))
        for i, h in enumerate(leaders)
    }
    if len(set(ids.values())) != len(ids):
        raise OripidError(
            f"id_pattern {cfg.id_pattern!r} gives two origins the same id: use more hash digits or {{index}}"
        )
    bad = next((v for v in ids.values() if not v or "." in v or "/" in v), None)
    if bad is not None:
        raise OripidError(
            f"id_pattern {cfg.id_pattern!r} made the id {bad!r}: ids may not be empty or hold '.' or '/'"
        )

    for position, h in enumerate(contents):
        group = by_hash[h]
        lead = contents[leader_of[position]]
        origin = ids[lead]
        if lead == h:
            keeper = group[0]
            origin_id[keeper] = origin
            for i in group[1:]:
                status[i], col["reason"][i], duplicate_of[i] = "duplicate", "exact_duplicate", origin
                col["detail"][i] = f"same pixels as {source[keeper]}"
        else:
            distance = hamming(int(phash[group[0]], 16), int(phash[by_hash[lead][0]], 16))
            for i in group:
                status[i], col["reason"][i], duplicate_of[i] = "duplicate", "near_duplicate", origin
                col["detail"][i] = f"phash distance {distance} <= {cfg.near_duplicate_threshold} to {origin}"

    rank = {s: i for i, s in enumerate(STATUSES)}
    new = {
        "origin_id": origin_id,
        "duplicate_of": duplicate_of,
        "status": status,
        "reason": col["reason"],
        "detail": col["detail"],
        "image": [f"{IMAGES_DIR}/{o}.png" if o else None for o in origin_id],
        "split": [None] * n,
    }
    arrays = [
        pa.array(new[f.name], f.type) if f.name in new else table.column(f.name) for f in MANIFEST_SCHEMA
    ]
    resolved = pa.Table.from_arrays(arrays, schema=MANIFEST_SCHEMA)
    # Output order: ok by id, then duplicates by the origin they joined, then rejected; ties by source.
    keys = pa.table(
        {
            "rank": pa.array([rank[x] for x in status], pa.int8()),
            "key": pa.array([o or d or "" for o, d in zip(origin_id, duplicate_of, strict=True)]),
            "source": resolved.column("source"),
        }
    )
    indices = pc.sort_indices(
        keys, sort_keys=[("rank", "ascending"), ("key", "ascending"), ("source", "ascending")]
    )
    return resolved.take(indices)


def _stem(source: str) -> str:
    """The file name of a source reference without folders or extension (`a/b/T000001.jpg` -> `T000001`)."""
    name = source.rsplit("#", 1)[-1].rsplit("/", 1)[-1]
    return name.split(".", 1)[0]


def _place_images(table: pa.Table, workdir: Path, staging: Path) -> None:
    images_dir = workdir / IMAGES_DIR
    wanted: dict[str, str] = {}
    for row in table.select(["origin_id", "sha256", "status"]).to_pylist():
        if row["status"] == "ok":
            wanted[f"{row['origin_id']}.png"] = row["sha256"]
    for name, sha in wanted.items():
        staged = staging / f"{sha}.png"
        if staged.exists():
            os.replace(staged, images_dir / name)
        elif not (images_dir / name).exists():
            raise OripidError(f"staged origin {staged} vanished during ingest; rerun `oripid origins ingest`")
    for stale in images_dir.glob("*.png"):
        if stale.name not in wanted:
            stale.unlink()  # from an earlier run over a different source
    shutil.rmtree(staging, ignore_errors=True)


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
