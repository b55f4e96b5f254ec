"""W in closed form, one streaming pass: LDA on between- vs within-origin scatter.

Why: the SGD recipe needs a GPU and 25 x 2000 iterations; validation of a freshly built dataset wants
a W in one read of the features. Classes are origins; instances are generations (and, with
``include_origins``, the origin itself, for the reason given in :mod:`oripid.eval.train_w`).

One pass over row chunks accumulates, in float64: per-origin sums and counts and the total scatter
``sum x x^T`` (of data shifted by the first chunk's mean, which keeps the subtraction below from
cancelling). Then

    S_w = sum x x^T - sum_c s_c s_c^T / n_c        (within-origin scatter)
    S_b = sum_c s_c s_c^T / n_c - N mu mu^T         (between-origin scatter)

and W's rows are the top ``out_dim`` generalised eigenvectors of ``S_b v = l (S_w + r I) v`` with
``r = regularization * trace(S_w) / D``; they are S_w-orthonormal, i.e. the projection whitens the
within-origin spread. Because W has no bias, ``remove_mean_direction`` (default on) makes W annihilate
the data mean, so that ``W x`` is centred and cosine matching is not dominated by a shared offset.

Memory: per-origin sums are ``n_origins x D`` float64 (100,000 x 4096: 3.3 GB) plus three ``D x D``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from oripid.errors import OripidError
from oripid.eval.arrays import ChunkedFeatures, iter_row_chunks


class ClosedFormConfig(BaseModel):
    """Settings of the closed-form fit (documented defaults; none come from the paper)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    out_dim: int = Field(512, gt=0)
    regularization: float = Field(1e-3, ge=0, description="ridge on S_w, relative to its mean eigenvalue")
    remove_mean_direction: bool = True
    include_origins: bool = True
    chunk_rows: int = Field(16384, gt=0)
    matmul_dtype: Literal["float64", "float32"] = Field(
        "float64", description="dtype of each chunk's x^T x; sums are float64 either way"
    )


class ScatterAccumulator:
    """Streaming sums for LDA: feed ``update`` row chunks in any order, then ``solve``."""

    def __init__(self, dim: int, n_classes: int, matmul_dtype: str = "float64") -> None:
        self.dim, self.n_classes = dim, n_classes
        self.class_sums = torch.zeros(n_classes, dim, dtype=torch.float64)
        self.class_counts = torch.zeros(n_classes, dtype=torch.float64)
        self.scatter = torch.zeros(dim, dim, dtype=torch.float64)
        self.shift: torch.Tensor | None = None
        self.matmul_dtype = getattr(torch, matmul_dtype)
        self.rows = 0

    def update(self, features: np.ndarray | torch.Tensor, class_index: np.ndarray | torch.Tensor) -> None:
        x = torch.as_tensor(np.asarray(features) if not isinstance(features, torch.Tensor) else features)
        x = x.to(torch.float64)
        if self.shift is None:
            self.shift = x.mean(0)
        x = x - self.shift
        xm = x.to(self.matmul_dtype)
        self.scatter += (xm.T @ xm).to(torch.float64)
        cls = torch.as_tensor(np.asarray(class_index), dtype=torch.int64)
        self.class_sums.index_add_(0, cls, x)
        self.class_counts += torch.bincount(cls, minlength=self.n_classes).to(torch.float64)
        self.rows += len(x)

    def solve(self, out_dim: int, regularization: float, remove_mean_direction: bool) -> torch.Tensor:
        """W [out_dim, D] in float32 (see the module docstring)."""
        if self.shift is None:
            raise OripidError("no features were read: the closed form needs at least one chunk")
        if out_dim > self.dim:
            raise OripidError(f"out_dim={out_dim} exceeds the feature dimension {self.dim}")
        present = self.class_counts > 0
        sums, counts = self.class_sums[present], self.class_counts[present]
        if len(counts) < 2:
            raise OripidError("the closed form needs at least two origins in the training features")
        n = counts.sum()
        scaled = sums / counts.sqrt()[:, None]
        between_raw = scaled.T @ scaled
        mu = sums.sum(0) / n
        within = self.scatter - between_raw
        within = (within + within.T) / 2
        between = between_raw - n * torch.outer(mu, mu)
        between = (between + between.T) / 2
        ridge = regularization * torch.trace(within) / self.dim
        within = within + ridge * torch.eye(self.dim, dtype=torch.float64)
        chol, info = torch.linalg.cholesky_ex(within)
        if int(info) != 0:
            raise OripidError(
                f"the within-origin scatter is singular (regularization={regularization}); "
                "raise regularization or give more instances per origin"
            )
        inv_l_between = torch.linalg.solve_triangular(chol, between, upper=False)
        m = torch.linalg.solve_triangular(chol, inv_l_between.T, upper=False)  # L^-1 S_b L^-T
        m = (m + m.T) / 2
        _, vectors = torch.linalg.eigh(m)
        top = vectors[:, -out_dim:].flip(1)
        directions = torch.linalg.solve_triangular(chol.T, top, upper=True)  # L^-T u
        weight = directions.T
        if remove_mean_direction:
            mean = self.shift + mu
            mean = mean / mean.norm().clamp_min(1e-300)
            weight = weight - torch.outer(weight @ mean, mean)
        return weight.to(torch.float32).contiguous()


@dataclass
class ClosedFormResult:
    """W [out, in] and how the fit went."""

    weight: torch.Tensor
    class_ids: np.ndarray
    rows: int
    seconds: float
    read_seconds: float


def fit_closed_form(
    features: np.ndarray | ChunkedFeatures,
    labels: np.ndarray,
    *,
    config: ClosedFormConfig | None = None,
    origin_features: np.ndarray | ChunkedFeatures | None = None,
    origin_labels: np.ndarray | None = None,
) -> ClosedFormResult:
    """Fit W from features [N, D] (array, memmap or chunked memmaps) and origin ids [N] in one pass."""
    config = config or ClosedFormConfig()
    # 1. Check inputs; map origin ids to class indices once (ids are small next to features).
    labels = np.asarray(labels)
    if features.ndim != 2 or len(labels) != len(features):
        raise OripidError(
            f"features {tuple(features.shape)} and labels {labels.shape}: need [N, D] and one origin id per row"
        )
    streams: list[tuple[np.ndarray | ChunkedFeatures, np.ndarray]] = [(features, labels)]
    if config.include_origins:
        if origin_features is None or origin_labels is None:
            raise OripidError(
                "include_origins is set but no origin features were given; pass them or set include_origins: false"
            )
        origin_labels = np.asarray(origin_labels)
        if len(origin_labels) != len(origin_features) or origin_features.shape[1] != features.shape[1]:
            raise OripidError(
                f"origin features {tuple(origin_features.shape)} and ids {origin_labels.shape} do not match "
                f"each other or the generation features' width {features.shape[1]}"
            )
        streams.append((origin_features, origin_labels))
    class_ids, inverse = np.unique(np.concatenate([lab for _, lab in streams]), return_inverse=True)

    # 2. One pass over each stream in row chunks.
    start = time.perf_counter()
    acc = ScatterAccumulator(int(features.shape[1]), len(class_ids), config.matmul_dtype)
    offset = 0
    read_seconds = 0.0
    for array, lab in streams:
        for row, block, seconds in _timed_chunks(array, config.chunk_rows):
            read_seconds += seconds
            acc.update(block, inverse[offset + row : offset + row + len(block)])
        offset += len(lab)

    # 3. Solve.
    weight = acc.solve(config.out_dim, config.regularization, config.remove_mean_direction)
    return ClosedFormResult(
        weight=weight,
        class_ids=class_ids,
        rows=acc.rows,
        seconds=time.perf_counter() - start,
        read_seconds=read_seconds,
    )


def _timed_chunks(array, rows: int) -> Iterable[tuple[int, np.ndarray, float]]:
    it = iter_row_chunks(array, rows)
    while True:
        t0 = time.perf_counter()
        try:
            row, block = next(it)
        except StopIteration:
            return
        yield row, block, time.perf_counter() - t0
