"""Matching speed: blocked exact cosine top-k (+ positive counting) vs a full-matrix matmul baseline.

Prints pairs/s for (a) the blocked matcher at a size whose score matrix would not fit in RAM, (b) the
same matcher and (c) a plain ``Q @ G.T`` + ``topk`` baseline on a size that fits, all in this process,
and relates them to the machine's measured float32 matmul rate (2 d FLOP per pair) and to the paper's
0.53e-10 s/pair (GPU). Usage: ``python benchmarks/bench_matching.py [--queries 10000 --gallery 1000000]``.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from machine import matmul_rate

from oripid.eval.matcher import match

PAPER_S_PER_PAIR = 0.53e-10


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--gallery", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512, help="matched dimension (after W: 512)")
    parser.add_argument("--small-gallery", type=int, default=50_000, help="size for the baseline comparison")
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"threads {torch.get_num_threads()}, load average {os.getloadavg()}")
    flops = matmul_rate()
    print(
        f"float32 matmul: {flops / 1e9:.1f} GFLOP/s -> ideal {flops / (2 * args.dim):.3e} pairs/s at d={args.dim}"
    )

    q = torch.nn.functional.normalize(torch.randn(args.queries, args.dim), dim=1)
    positives = torch.randint(0, args.small_gallery, (args.queries,)).numpy()

    # Baseline vs blocked on a size whose full matrix fits (Q x small_gallery float32).
    g_small = torch.nn.functional.normalize(torch.randn(args.small_gallery, args.dim), dim=1)
    pairs_small = args.queries * args.small_gallery

    def baseline():
        s = q @ g_small.T
        return torch.topk(s, args.k, dim=1)

    (base_scores, _), t_base = timed(baseline)
    res, t_block = timed(lambda: match(q, g_small, k=args.k, device="cpu"))
    print(f"max |blocked - baseline| top-k score difference: {(res.scores - base_scores).abs().max():.2e}")
    _, t_block_pos = timed(lambda: match(q, g_small, k=args.k, positives=positives, device="cpu"))
    print(f"{args.queries} x {args.small_gallery} (full matrix {pairs_small * 4 / 1e9:.1f} GB):")
    for name, t in (
        ("full-matrix matmul+topk", t_base),
        ("blocked top-k", t_block),
        ("blocked top-k + counts", t_block_pos),
    ):
        print(
            f"  {name:26s} {t:7.2f} s  {pairs_small / t:.3e} pairs/s  {t / pairs_small:.3e} s/pair  "
            f"{pairs_small / t / (flops / (2 * args.dim)):.2f} of matmul rate  x{t_base / t:.2f} vs baseline"
        )

    # The large case: the full score matrix would need Q x G x 4 bytes.
    g = torch.nn.functional.normalize(torch.randn(args.gallery, args.dim), dim=1)
    positives_big = torch.randint(0, args.gallery, (args.queries,)).numpy()
    pairs = args.queries * args.gallery
    res, t_big = timed(lambda: match(q, g, k=args.k, positives=positives_big, device="cpu"))
    print(
        f"{args.queries} x {args.gallery} (full matrix would be {pairs * 4 / 1e9:.1f} GB), top-{args.k} + counts: "
        f"{t_big:.1f} s  {pairs / t_big:.3e} pairs/s  {t_big / pairs:.3e} s/pair  "
        f"{pairs / t_big / (flops / (2 * args.dim)):.2f} of matmul rate  paper/ours s/pair {PAPER_S_PER_PAIR / (t_big / pairs):.3f}"
    )
    print(f"load average at end {os.getloadavg()}")


if __name__ == "__main__":
    main()
