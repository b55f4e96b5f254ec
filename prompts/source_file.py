"""Prompts read from a file: the route to reuse OriPID's released prompts.

JSONL, CSV or parquet with a prompt column (`prompt`, `text`, `caption`, `edit_prompt`) and a key
column naming the origin: `origin_id`, or a file name (`file_name`, `file`, `image`, `name`,
`source`) matched against the origin's source (full reference, base name, or base name without
extension: `T000000.jpg`, `T000000` and `train/T000000.jpg` all match). An optional
`prompt_idx` column orders an origin's prompts; otherwise the file's order is kept.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path

from oripid.errors import OripidError
from oripid.prompts.base import OriginRef

KEY_COLUMNS = ("origin_id", "file_name", "file", "image", "name", "source", "filename")
PROMPT_COLUMNS = ("prompt", "text", "caption", "edit_prompt")


def _records(path: Path) -> Iterator[dict]:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        with open(path, encoding="utf-8") as handle:
            for line_no, line in enumerate(handle, start=1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise OripidError(
                            f"{path}:{line_no}: not valid JSON ({exc}); fix or remove the line"
                        ) from None
    elif suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as handle:
            yield from csv.DictReader(handle)
    elif suffix == ".parquet":
        from oripid.builders.parquet_io import iter_batches

        for batch in iter_batches(path, batch_size=4096):
            yield from batch.to_pylist()
    else:
        raise OripidError(f"prompts file {path}: use .jsonl, .csv or .parquet (got '{suffix}')")


def _keys(source: str) -> list[str]:
    name = source.rsplit("#", 1)[-1].rsplit("/", 1)[-1]
    return [source, name, name.split(".", 1)[0]]


class FileSource:
    name = "file"

    def __init__(self, path: str | Path, key_column: str | None = None, prompt_column: str | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise OripidError(f"prompts file {self.path} does not exist: give --prompts-file PATH")
        self.key_column, self.prompt_column = key_column, prompt_column
        self.stats: dict = {}

    def settings(self) -> dict:
        return {"path": str(self.path), "key_column": self.key_column, "prompt_column": self.prompt_column}

    def _load(self) -> dict[str, list[tuple[float, int, str]]]:
        by_key: dict[str, list[tuple[float, int, str]]] = defaultdict(list)
        for row_no, record in enumerate(_records(self.path)):
            if row_no == 0:
                names = list(record)
                self.key_column = self.key_column or next((c for c in KEY_COLUMNS if c in names), None)
                self.prompt_column = self.prompt_column or next(
                    (c for c in PROMPT_COLUMNS if c in names), None
                )
                missing = [
                    w for w, c in (("key", self.key_column), ("prompt", self.prompt_column)) if c is None
                ]
                if missing or self.key_column not in names or self.prompt_column not in names:
                    raise OripidError(
                        f"prompts file {self.path}: columns {names} lack a {' and '.join(missing) or 'named'} column; "
                        f"use one of {KEY_COLUMNS} for the origin and {PROMPT_COLUMNS} for the prompt"
                    )
            idx = record.get("prompt_idx")
            order = float(idx) if idx not in (None, "") else float(row_no)
            by_key[str(record[self.key_column])].append(
                (order, row_no, str(record[self.prompt_column] or ""))
            )
        return by_key

    def generate(self, origins: list[OriginRef], n: int) -> Iterator[tuple[str, Iterable[str]]]:
        by_key = self._load()
        used: set[str] = set()
        for origin in origins:
            key = next((k for k in [origin.origin_id, *_keys(origin.source)] if k in by_key), None)
            used.add(key)
            yield origin.origin_id, [text for _, _, text in sorted(by_key.get(key, []))]
        unmatched = sorted(set(by_key) - used)
        # Reported, not fatal: a released prompt file usually covers more origins than one ingests.
        self.stats = {
            "keys_in_file": len(by_key),
            "unmatched_keys": len(unmatched),
            "unmatched_examples": unmatched[:20],
        }
