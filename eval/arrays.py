"""Feature matrices on disk: one ``.npy`` file or a folder of ``.npy`` chunks, opened as memmaps.

OriPID's 2M x 4096 float32 training features are 32 GB, more than many machines hold. The trainer
gathers a batch of rows at a time and the closed form reads contiguous row chunks, so both work from
memory-mapped files; a folder of chunks (``*.npy`` in name order) reads as one concatenated matrix.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from oripid.errors import OripidError


class ChunkedFeatures:
    """Row-concatenation of several 2-D memmaps; supports ``len``, ``shape``, slices and index arrays."""

    def __init__(self, parts: list[np.ndarray]) -> None:
        if not parts:
            raise OripidError("no feature chunks to read")
        dims = {p.shape[1] for p in parts}
        if len(dims) != 1 or any(p.ndim != 2 for p in parts):
            raise OripidError(f"feature chunks must all be 2-D with one width, got widths {sorted(dims)}")
        self.parts = parts
        self.offsets = np.concatenate([[0], np.cumsum([len(p) for p in parts])])
        self.shape = (int(self.offsets[-1]), parts[0].shape[1])
        self.ndim = 2
        self.dtype = parts[0].dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: slice | np.ndarray) -> np.ndarray:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                raise IndexError("ChunkedFeatures supports contiguous slices only")
            index = np.arange(start, stop)
        index = np.asarray(index, dtype=np.int64)
        part = np.searchsorted(self.offsets, index, side="right") - 1
        out = np.empty((index.size, self.shape[1]), dtype=self.dtype)
        for p in np.unique(part):
            where = np.nonzero(part == p)[0]
            out[where] = self.parts[p][index[where] - self.offsets[p]]
        return out


def open_features(path: str | Path) -> np.ndarray | ChunkedFeatures:
    """Memory-map ``path``: a 2-D ``.npy`` file, or a folder whose ``*.npy`` files are row chunks."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.npy"))
        if not files:
            raise OripidError(f"{path}: folder holds no .npy feature chunks")
        return ChunkedFeatures([_open_npy(f) for f in files])
    return _open_npy(path)


def open_labels(path: str | Path, expected_rows: int | None = None) -> np.ndarray:
    """Load a 1-D ``.npy`` of origin ids (ints or strings), checking it matches the feature rows."""
    path = Path(path)
    labels = np.load(path, allow_pickle=False) if path.is_file() else None
    if labels is None:
        raise OripidError(f"{path}: no such labels file (a 1-D .npy of origin ids, one per feature row)")
    if labels.ndim != 1:
        raise OripidError(f"{path}: origin ids must be 1-D, found shape {labels.shape}")
    if expected_rows is not None and len(labels) != expected_rows:
        raise OripidError(
            f"{path}: {len(labels)} origin ids for {expected_rows} feature rows; one id per row"
        )
    return labels


def iter_row_chunks(features: np.ndarray | ChunkedFeatures, rows: int) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start_row, block)`` over contiguous row blocks of at most ``rows`` rows."""
    if rows <= 0:
        raise ValueError(f"rows must be positive, got {rows}")
    for start in range(0, len(features), rows):
        yield start, np.array(features[start : start + rows])  # copy: forces the read


def _open_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise OripidError(f"{path}: no such feature file (expected a [N, D] .npy or a folder of them)")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        raise OripidError(f"{path}: not a plain .npy array ({exc})") from exc
    if array.ndim != 2:
        raise OripidError(f"{path}: features must be 2-D [N, D], found shape {array.shape}")
    return array
