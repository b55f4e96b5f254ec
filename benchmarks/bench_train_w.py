"""Trainer speed on this machine, extrapolated to the public recipe (25 x 2000 iterations).

Runs the real trainer (``oripid.eval.train_w``) at OriPID's shapes: D=4096 -> 512, CosFace over
100,000 origin classes, batch P=128 x K=4, Adam and EMA, on random features held in memory (one row
per origin, K draws with replacement: the same arithmetic). Two runs of different length in the
same process give the per-iteration time without setup; the baseline is the machine's float32
matmul rate times the iteration's FLOP count, measured in the same process. Paper: 0.17 h on 8 GPUs.
Usage: ``python benchmarks/bench_train_w.py [--classes 100000 --iters 10]``.
"""

from __future__ import annotations

import argparse
import logging
import os

import numpy as np
import torch
from machine import matmul_rate

from oripid.eval.train_w import TrainWConfig, train_w

PAPER_HOURS = 0.17


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--classes", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=4096)
    parser.add_argument("--out-dim", type=int, default=512)
    parser.add_argument("--iters", type=int, default=10, help="timed iterations (difference of two runs)")
    args = parser.parse_args()
    logging.disable(logging.INFO)
    print(f"threads {torch.get_num_threads()}, load average {os.getloadavg()}")
    rate = matmul_rate()
    rng = np.random.default_rng(0)
    features = rng.standard_normal((args.classes, args.dim), dtype=np.float32)
    labels = np.arange(args.classes)
    base = TrainWConfig(
        out_dim=args.out_dim, epochs=1, warmup_epochs=0, flat_epochs=0, include_origins=False, log_every=10**9
    )
    short = train_w(features, labels, config=base.model_copy(update={"iters_per_epoch": 2}), cpu=True)
    long = train_w(
        features, labels, config=base.model_copy(update={"iters_per_epoch": 2 + args.iters}), cpu=True
    )
    per_iter = (long.seconds - short.seconds) / args.iters
    batch = base.p_origins * base.k_instances
    # forward + input-free backward of W (2x), forward + both backwards of the CosFace product (3x)
    flop = 2 * batch * args.dim * args.out_dim * 2 + 2 * batch * args.out_dim * args.classes * 3
    ideal = flop / rate
    total_iters = TrainWConfig().total_iters
    print(
        f"float32 matmul {rate / 1e9:.1f} GFLOP/s; iteration = {flop / 1e9:.1f} GFLOP -> ideal {ideal:.3f} s"
    )
    print(
        f"trainer: {per_iter:.3f} s/iteration ({1 / per_iter:.2f} it/s) at D={args.dim}, out={args.out_dim}, "
        f"{args.classes} classes, batch {batch}; x{ideal / per_iter:.2f} of the matmul-rate bound"
    )
    hours = per_iter * total_iters / 3600
    print(
        f"extrapolated to {total_iters} iterations: {hours:.1f} h on this CPU vs paper {PAPER_HOURS} h "
        f"(8 GPUs): x{hours / PAPER_HOURS:.0f}"
    )
    print(f"load average at end {os.getloadavg()}")


if __name__ == "__main__":
    main()
