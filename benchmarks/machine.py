"""What the benchmarks compare against: this machine's own matrix-multiply rate, measured in-process."""

from __future__ import annotations

import time

import torch


def matmul_rate(dtype: torch.dtype = torch.float32, n: int = 2048, repeats: int = 3) -> float:
    """Best-of square matmul rate in FLOP/s (2 n^3 per product), after one warm-up product."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best
