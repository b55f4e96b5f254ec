"""Read parquet files batch by batch with memory that does not grow with the file."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def iter_batches(
    path: str | Path, *, columns: Sequence[str] | None = None, batch_size: int = 65_536
) -> Iterator[pa.RecordBatch]:
    """The file's rows in order, `batch_size` at a time.

    `pre_buffer` is off: with pyarrow's default every column chunk read stays cached until the
    file is closed, so one pass over a million-row manifest (or a table of image bytes) would
    end up holding the whole file in memory.
    """
    parquet = pq.ParquetFile(path, pre_buffer=False)
    yield from parquet.iter_batches(batch_size=batch_size, columns=list(columns) if columns else None)
