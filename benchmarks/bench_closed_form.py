"""Closed-form W on features streamed from disk, scaled down from OriPID and extrapolated.

OriPID's training set is 2,000,000 x 4096 float32 features (32 GB) of 100,000 origins. This script
writes a synthetic set of ``--rows`` rows (``--per-origin`` rows per origin) as .npy chunks, then runs
the one streaming pass (read + float64 accumulation) and the solve, timing each part, and extrapolates
to the full size: accumulation scales with rows (2 D^2 FLOP per row), the between-origin product with
the number of origins (2 D^2 FLOP per origin), the Cholesky/eigh part is constant in D. The baseline
is this machine's float64 / float32 matmul rate measured in the same process.
Usage: ``python benchmarks/bench_closed_form.py [--rows 50000 --dir /tmp/oripid-cf]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from machine import matmul_rate

from oripid.eval.arrays import iter_row_chunks, open_features
from oripid.eval.closed_form import ScatterAccumulator

FULL_ROWS, FULL_ORIGINS = 2_000_000, 100_000


def write_chunks(folder: Path, rows: int, per_origin: int, dim: int, chunk: int) -> np.ndarray:
    """Rows of origin c are its mean plus noise; returns the origin id of every row."""
    rng = np.random.default_rng(0)
    n_origins = rows // per_origin
    means = rng.standard_normal((n_origins, dim), dtype=np.float32)
    labels = rng.permutation(np.repeat(np.arange(n_origins), per_origin))
    folder.mkdir(parents=True, exist_ok=True)
    for i, start in enumerate(range(0, rows, chunk)):
        lab = labels[start : start + chunk]
        block = means[lab] + 0.5 * rng.standard_normal((len(lab), dim), dtype=np.float32)
        np.save(folder / f"part-{i:05d}.npy", block)
    return labels


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--per-origin", type=int, default=20)
    parser.add_argument("--dim", type=int, default=4096)
    parser.add_argument("--out-dim", type=int, default=512)
    parser.add_argument("--chunk-rows", type=int, default=8192)
    parser.add_argument("--dir", default="/tmp/oripid-bench-closed-form")
    args = parser.parse_args()
    folder = Path(args.dir)
    du = shutil.disk_usage(folder.parent if folder.parent.exists() else "/")
    print(
        f"disk free {du.free / 1e9:.0f} GB; full OriPID features need {FULL_ROWS * args.dim * 4 / 1e9:.0f} GB"
    )
    print(f"threads {torch.get_num_threads()}, load average {os.getloadavg()}")
    f64, f32 = matmul_rate(torch.float64), matmul_rate(torch.float32)
    print(f"matmul: float64 {f64 / 1e9:.1f} GFLOP/s, float32 {f32 / 1e9:.1f} GFLOP/s")

    t = time.perf_counter()
    labels = write_chunks(folder, args.rows, args.per_origin, args.dim, args.chunk_rows)
    n_origins = int(labels.max()) + 1
    print(
        f"wrote {args.rows} x {args.dim} ({args.rows * args.dim * 4 / 1e9:.2f} GB) in {time.perf_counter() - t:.1f} s"
    )
    features = open_features(folder)

    results = {}
    for dtype in ("float64", "float32"):
        acc = ScatterAccumulator(args.dim, n_origins, matmul_dtype=dtype)
        read = update = 0.0
        t = time.perf_counter()
        for start, block in iter_row_chunks(features, args.chunk_rows):
            t1 = time.perf_counter()
            read += t1 - t
            acc.update(block, labels[start : start + len(block)])
            t = time.perf_counter()
            update += t - t1
        results[dtype] = (acc, read, update)
        ideal = 2 * args.rows * args.dim**2 / (f64 if dtype == "float64" else f32)
        print(
            f"pass ({dtype} chunk products): read {read:.1f} s, accumulate {update:.1f} s "
            f"({args.rows / update:.0f} rows/s; ideal at matmul rate {ideal:.1f} s, x{ideal / update:.2f})"
        )
    a64, a32 = results["float64"][0], results["float32"][0]
    rel = float((a64.scatter - a32.scatter).norm() / a64.scatter.norm())
    print(f"float32 chunk products vs float64: relative scatter difference {rel:.2e}")

    # Solve, timing the origin-count-dependent product separately.
    sums, counts = a64.class_sums, a64.class_counts
    t = time.perf_counter()
    scaled = sums / counts.sqrt()[:, None]
    _ = scaled.T @ scaled
    between_time = time.perf_counter() - t
    t = time.perf_counter()
    weight = a64.solve(args.out_dim, 1e-3, True)
    solve_time = time.perf_counter() - t
    constant = max(solve_time - between_time, 0.0)
    print(
        f"solve: {solve_time:.1f} s (between-origin product {between_time:.1f} s for {n_origins} origins); W {tuple(weight.shape)}"
    )

    scale_rows = FULL_ROWS / args.rows
    scale_origins = FULL_ORIGINS / n_origins
    for dtype in ("float64", "float32"):
        _, read, update = results[dtype]
        total = (read + update) * scale_rows + between_time * scale_origins + constant
        print(
            f"extrapolated to {FULL_ROWS} x {args.dim}, {FULL_ORIGINS} origins ({dtype} chunk products): "
            f"pass {(read + update) * scale_rows / 60:.1f} min (read from page cache here) + solve "
            f"{(between_time * scale_origins + constant) / 60:.1f} min = {total / 3600:.2f} h; "
            f"class sums {FULL_ORIGINS * args.dim * 8 / 1e9:.1f} GB RAM"
        )
    print(f"load average at end {os.getloadavg()}")
    shutil.rmtree(folder)


if __name__ == "__main__":
    main()
