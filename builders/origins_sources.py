"""Readers for every kind of origins source: each yields `SourceItem`s one at a time.

A reader never decodes an image: it hands over a path (the worker reads the file) or the
encoded bytes (parquet, Hugging Face datasets, WebDataset). Every reader walks its input in
a fixed order so a rerun sees the same sequence, and every entry it meets becomes an item,
even one that will be rejected later, so that nothing is dropped silently.
"""

from __future__ import annotations

import csv
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from oripid.errors import OripidError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jfif", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)
SOURCE_KINDS = ("auto", "folder", "table", "hf", "webdataset")
# Column names tried, in order, when the user names none.
PATH_COLUMNS = ("path", "file", "file_name", "filename", "image_path", "source")
BYTES_COLUMNS = ("image", "bytes", "jpg", "png", "img")


@dataclass(frozen=True)
class SourceItem:
    """One entry of the source: `ref` is what the manifest records as `source`."""

    ref: str
    path: str | None = None
    data: bytes | None = None
    # A reader-level problem (e.g. a table cell with neither bytes nor path), recorded as a rejection.
    error: str | None = None


def source_stem(ref: str) -> str:
    """The file name of a source reference without folders or extension.

    `a/b/T000001.jpg` -> `T000001`; a table or shard reference `table.parquet#T000001.jpg` ->
    `T000001`; Windows separators too, for partition files written elsewhere.
    """
    name = ref.replace("\\", "/").rsplit("#", 1)[-1].rsplit("/", 1)[-1]
    return name.split(".", 1)[0]


def detect_kind(src: Path) -> str:
    """Guess the source kind from what is on disk; `kind=` overrides it."""
    if not src.exists():
        raise OripidError(f"origins source {src} does not exist: give a folder, .parquet, .csv or .tar path")
    if src.is_file():
        suffix = src.suffix.lower()
        if suffix in (".parquet", ".csv"):
            return "table"
        if suffix == ".tar":
            return "webdataset"
        raise OripidError(
            f"origins source {src}: cannot read a single '{suffix}' file; give a folder of images, "
            "a .parquet/.csv table, a .tar WebDataset shard, or a saved Hugging Face dataset folder"
        )
    if (src / "state.json").is_file() or (src / "dataset_dict.json").is_file():
        return "hf"
    suffixes: set[str] = set()
    for path in _walk(src):  # stops at the first image: a million-file folder is not listed twice
        suffix = path.suffix.lower()
        if suffix in IMAGE_EXTENSIONS:
            return "folder"
        suffixes.add(suffix)
    if suffixes == {".tar"}:
        return "webdataset"
    if suffixes & {".parquet", ".arrow"}:
        return "hf"  # a folder `datasets.load_dataset` reads (e.g. a Hub dataset checkout)
    return "folder"


def _walk(root: Path) -> Iterator[Path]:
    """Files under `root` in a fixed order (sorted per folder), lazily: memory stays per folder."""
    for folder, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            yield Path(folder) / name


def iter_source(src: Path, *, kind: str = "auto", column: str | None = None) -> Iterator[SourceItem]:
    src = Path(src)
    if kind not in SOURCE_KINDS:
        raise OripidError(f"ingest option kind={kind!r} is unknown: use one of {', '.join(SOURCE_KINDS)}")
    if kind == "auto":
        kind = detect_kind(src)
    if kind == "folder":
        return iter_folder(src)
    if kind == "table":
        return iter_table(src, column=column)
    if kind == "hf":
        return iter_hf(src, column=column)
    return iter_webdataset(src)


def iter_folder(root: Path) -> Iterator[SourceItem]:
    """Every file under `root` (sorted per folder); non-image extensions still get a row."""
    if not root.is_dir():
        raise OripidError(f"origins source {root} is not a folder")
    for path in _walk(root):
        ref = path.relative_to(root).as_posix()
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            yield SourceItem(ref=ref, error=f"not_an_image: extension '{path.suffix}' is not an image type")
        else:
            yield SourceItem(ref=ref, path=str(path))


def _pick_column(names: list[str], wanted: str | None, candidates: tuple[str, ...], where: str) -> str | None:
    if wanted is not None:
        if wanted not in names:
            raise OripidError(f"{where} has no column {wanted!r} (columns: {', '.join(names)}); fix `column`")
        return wanted
    return next((c for c in candidates if c in names), None)


def iter_table(path: Path, *, column: str | None = None) -> Iterator[SourceItem]:
    """A parquet or CSV table of image paths (relative to the table's folder) or image bytes."""
    if path.suffix.lower() == ".csv":
        yield from _iter_csv(path, column)
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    from oripid.builders.parquet_io import iter_batches

    schema = pq.read_schema(path)
    names = schema.names
    bytes_col = _pick_column(names, column, BYTES_COLUMNS, str(path))
    path_col = _pick_column(names, None, PATH_COLUMNS, str(path))
    if bytes_col is not None and pa.types.is_string(schema.field(bytes_col).type):
        bytes_col, path_col = None, bytes_col  # a text column holds paths, whatever its name
    if bytes_col is None and path_col is None:
        raise OripidError(
            f"{path}: no image column found (columns: {', '.join(names)}); "
            f"name one with `column`, or use one of {', '.join(PATH_COLUMNS + BYTES_COLUMNS)}"
        )
    row = 0
    # Batches keep memory flat however large the table is.
    columns = [c for c in (bytes_col, path_col) if c]
    for batch in iter_batches(path, columns=columns, batch_size=256):
        cells = batch.to_pydict()
        for i in range(batch.num_rows):
            value = cells[bytes_col][i] if bytes_col else None
            rel = cells[path_col][i] if path_col else None
            if isinstance(value, dict):  # the Hugging Face Image struct {bytes, path}
                rel = rel or value.get("path")
                value = value.get("bytes")
            yield _table_item(path, row, value, rel)
            row += 1


def _iter_csv(path: Path, column: str | None) -> Iterator[SourceItem]:
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        names = list(reader.fieldnames or [])
        path_col = _pick_column(names, column, PATH_COLUMNS, str(path))
        if path_col is None:
            raise OripidError(
                f"{path}: no path column (columns: {', '.join(names)}); a CSV lists image paths, "
                f"name the column with `column` or call it one of {', '.join(PATH_COLUMNS)}"
            )
        for row, record in enumerate(reader):
            yield _table_item(path, row, None, record.get(path_col))


def _table_item(table: Path, row: int, value: bytes | None, rel: str | None) -> SourceItem:
    if value:
        return SourceItem(ref=rel or f"{table.name}#row={row}", data=bytes(value))
    if rel:
        full = Path(rel) if Path(rel).is_absolute() else table.parent / rel
        return SourceItem(ref=rel, path=str(full))
    return SourceItem(
        ref=f"{table.name}#row={row}", error="empty_cell: the row has neither image bytes nor a path"
    )


def iter_hf(root: Path, *, column: str | None = None, split: str | None = None) -> Iterator[SourceItem]:
    """A dataset saved with `save_to_disk`, or a folder `datasets.load_dataset` reads."""
    import datasets

    if (root / "state.json").is_file() or (root / "dataset_dict.json").is_file():
        loaded = datasets.load_from_disk(str(root))
    else:
        loaded = datasets.load_dataset(str(root))
    parts = loaded.items() if isinstance(loaded, datasets.DatasetDict) else [(None, loaded)]
    for name, ds in sorted(parts, key=lambda kv: kv[0] or ""):
        image_cols = [c for c, f in ds.features.items() if isinstance(f, datasets.Image)]
        col = _pick_column(list(ds.column_names), column, tuple(image_cols) + BYTES_COLUMNS, str(root))
        if col is None:
            raise OripidError(
                f"{root}: no Image column (columns: {', '.join(ds.column_names)}); set `column`"
            )
        if isinstance(ds.features[col], datasets.Image):
            ds = ds.cast_column(col, datasets.Image(decode=False))  # keep the encoded bytes: we decode
        prefix = f"{name}#" if name else "#"
        for row, record in enumerate(ds.select_columns([col])):
            value = record[col]
            stored = None
            if isinstance(value, dict):
                stored, value = value.get("path"), value.get("bytes")
            if value:
                yield SourceItem(ref=f"{prefix}{row}", data=bytes(value))
            elif stored and Path(stored).is_file():
                yield SourceItem(ref=f"{prefix}{row}", path=stored)
            else:
                yield SourceItem(
                    ref=f"{prefix}{row}", error="empty_cell: the row has neither image bytes nor a file"
                )


def iter_webdataset(src: Path) -> Iterator[SourceItem]:
    """Tar shards (one file or every .tar under a folder, sorted): one item per sample key.

    The key ends at the first dot of the member's base name (the WebDataset rule); the first
    member with an image extension is the image, a sample without one is recorded as rejected.
    """
    shards = [src] if src.is_file() else sorted(src.rglob("*.tar"))
    for shard in shards:
        name = shard.name if src.is_file() else shard.relative_to(src).as_posix()
        pending_key: str | None = None
        found = False
        with tarfile.open(shard, mode="r|*") as tar:  # streaming: one member in memory at a time
            for member in tar:
                if not member.isfile():
                    continue
                base = member.name.rsplit("/", 1)[-1]
                prefix = member.name[: len(member.name) - len(base)]
                key = prefix + base.split(".", 1)[0]
                ext = "." + base.split(".", 1)[1].lower() if "." in base else ""
                if key != pending_key:
                    if pending_key is not None and not found:
                        yield SourceItem(
                            ref=f"{name}#{pending_key}", error="no_image_member: sample has no image"
                        )
                    pending_key, found = key, False
                if found or ext.rsplit(".", 1)[-1] not in {e.lstrip(".") for e in IMAGE_EXTENSIONS}:
                    continue
                handle = tar.extractfile(member)
                found = True
                yield SourceItem(ref=f"{name}#{key}{ext}", data=handle.read() if handle else b"")
            if pending_key is not None and not found:
                yield SourceItem(ref=f"{name}#{pending_key}", error="no_image_member: sample has no image")
