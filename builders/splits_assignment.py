"""Read a released partition: a CSV, JSONL or parquet file of (origin_id or file, split).

The key column is the first of `origin_id`, `id`, `file`, `file_name`, `image`, `source`,
`name` present; values are reduced to their file stem (`train/T000001.jpg` -> `T000001`), so a
list of OriPID file names and a list of origin ids both work. The split column is `split`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow.csv as pv
import pyarrow.parquet as pq

from oripid.builders.origins_sources import source_stem
from oripid.errors import OripidError

KEY_COLUMNS = ("origin_id", "id", "file", "file_name", "image", "source", "name")


def read_assignment(path: Path, allowed: tuple[str, ...]) -> dict[str, str]:
    """Stem -> split name, refusing unknown split names and keys given two different splits."""
    if not path.is_file():
        raise OripidError(f"splits.assignment: {path} does not exist")
    assignment: dict[str, str] = {}
    for line, (key, split) in enumerate(_pairs(path), start=1):
        if split not in allowed:
            raise OripidError(
                f"{path}: entry {line} ({key!r}) has split {split!r}; use one of {', '.join(allowed)}"
            )
        stem = source_stem(str(key))
        if assignment.setdefault(stem, split) != split:
            raise OripidError(
                f"{path}: {stem!r} is assigned to both {assignment[stem]!r} and {split!r}; keep one"
            )
    return assignment


def _pairs(path: Path) -> Iterator[tuple[str, str]]:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        yield from _jsonl_pairs(path)
        return
    if suffix == ".parquet":
        table = pq.read_table(path)
    elif suffix in (".csv", ".tsv"):
        table = pv.read_csv(path, parse_options=pv.ParseOptions(delimiter="\t" if suffix == ".tsv" else ","))
    else:
        raise OripidError(f"{path}: an assignment is a .csv, .tsv, .jsonl or .parquet file")
    key = _key_column(table.column_names, path)
    if "split" not in table.column_names:
        raise OripidError(f"{path}: no 'split' column (columns: {', '.join(table.column_names)})")
    for batch in table.select([key, "split"]).to_batches():
        yield from zip(batch.column(0).to_pylist(), batch.column(1).to_pylist(), strict=True)


def _jsonl_pairs(path: Path) -> Iterator[tuple[str, str]]:
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise OripidError(f"{path}:{number}: not JSON ({exc.msg}); one object per line") from None
            key = _key_column(list(record), Path(f"{path}:{number}"))
            if "split" not in record:
                raise OripidError(f"{path}:{number}: no 'split' field")
            yield record[key], record["split"]


def _key_column(names: list[str], path: Path) -> str:
    for name in KEY_COLUMNS:
        if name in names:
            return name
    raise OripidError(
        f"{path}: no key column; name one of {', '.join(KEY_COLUMNS)} (found: {', '.join(names)})"
    )
