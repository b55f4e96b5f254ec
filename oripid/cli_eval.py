"""`oripid train-w` (and, later, `features` / `validate`): the evaluation side of the data flow."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    _register_train_w(subparsers)


def _register_train_w(subparsers) -> None:
    p = subparsers.add_parser(
        "train-w",
        help="fit the reference linear W on training features (public SGD recipe or closed form)",
        description="Fit W ([out, in], features = x @ W.T) and save it as safetensors. Defaults are the "
        "public recipe; a YAML --config sets any field, the flags below override it.",
    )
    p.add_argument(
        "--features", required=True, help="[N, D] .npy of generation features, or a folder of .npy chunks"
    )
    p.add_argument("--labels", required=True, help="1-D .npy of origin ids, one per feature row")
    p.add_argument("--origin-features", help="[C, D] .npy of the training origins' own features")
    p.add_argument("--origin-labels", help="1-D .npy of their origin ids")
    p.add_argument("--out", required=True, help="where to write W (.safetensors)")
    p.add_argument("--method", choices=["sgd", "closed-form"], default="sgd")
    p.add_argument("--config", help="YAML mapping of the method's config fields")
    p.add_argument("--out-dim", type=int, help="rows of W (default 512)")
    p.add_argument("--epochs", type=int, help="sgd: epochs (default 25)")
    p.add_argument("--iters-per-epoch", type=int, help="sgd: iterations per epoch (default 2000)")
    p.add_argument("--seed", type=int, help="sgd: seed (default 0)")
    p.add_argument(
        "--no-origins",
        dest="include_origins",
        action="store_const",
        const=False,
        help="train on generations only (origin features are not instances of their class)",
    )
    p.add_argument("--cpu", action="store_true", help="sgd: stay on the CPU even with a GPU present")
    p.set_defaults(func=_train_w)


def _train_w(args: argparse.Namespace) -> int:
    from oripid.eval.fit import fit_w

    overrides = {"out_dim": args.out_dim, "include_origins": args.include_origins}
    if args.method == "sgd":
        overrides.update(epochs=args.epochs, iters_per_epoch=args.iters_per_epoch, seed=args.seed)
    path = fit_w(
        features=args.features,
        labels=args.labels,
        out=args.out,
        method=args.method,
        origin_features=args.origin_features,
        origin_labels=args.origin_labels,
        config=args.config,
        overrides=overrides,
        cpu=args.cpu,
    )
    from accelerate import PartialState

    if PartialState().is_main_process:
        print(f"wrote {path}")
    return 0
