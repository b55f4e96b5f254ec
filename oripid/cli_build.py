"""`oripid init | plan | build | status`: from the tables to WebDataset shards."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from oripid.errors import OripidError

log = logging.getLogger("oripid.build")


def register(subparsers) -> None:
    init = subparsers.add_parser("init", help="write a commented OriPID default oripid.yaml")
    init.add_argument("--workdir", required=True)
    init.add_argument("--force", action="store_true", help="overwrite an existing oripid.yaml")
    init.set_defaults(func=_init)

    plan = subparsers.add_parser(
        "plan", help="expand the config into shards with fixed membership (plan.json)"
    )
    plan.add_argument("--workdir", required=True)
    plan.add_argument("--estimate", action="store_true", help="print images, storage and GPU-hours per model")
    plan.add_argument(
        "--utilization", type=float, default=0.4, help="assumed fraction of peak FLOP/s (estimate)"
    )
    plan.add_argument("--peak-tflops", type=float, default=989.0, help="GPU dense bf16 peak (H100 SXM: 989)")
    plan.set_defaults(func=_plan)

    build = subparsers.add_parser(
        "build", help="generate the pending shards (also under `accelerate launch -m oripid`)"
    )
    build.add_argument("--workdir", required=True)
    build.set_defaults(func=_build)

    status = subparsers.add_parser("status", help="done, pending and failed per split and model")
    status.add_argument("--workdir", required=True)
    status.set_defaults(func=_status)

    register_demo(subparsers)


def _init(args: argparse.Namespace) -> int:
    from oripid.builders import layout
    from oripid.config import DEFAULT_CONFIG_TEXT

    path = Path(args.workdir) / layout.CONFIG
    if path.exists() and not args.force:
        raise OripidError(f"{path}: exists; pass --force to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(DEFAULT_CONFIG_TEXT)
    print(f"wrote {path}")
    return 0


def _plan(args: argparse.Namespace) -> int:
    from oripid.builders import layout
    from oripid.builders.plan import make_plan, write_plan
    from oripid.builders.status import format_table
    from oripid.config import load_config

    workdir = Path(args.workdir)
    config = load_config(workdir / layout.CONFIG)
    plan = make_plan(config, workdir)
    path = write_plan(plan, workdir)
    print(f"wrote {path}: {len(plan.shards)} shards, {plan.sample_count()} samples")
    for item in plan.unplanned[:10]:
        print(f"  unplanned: {item['split']}/{item['model']} {item['origin_id']}: {item['reason']}")
    if len(plan.unplanned) > 10:
        print(f"  ... and {len(plan.unplanned) - 10} more in plan.json 'unplanned'")
    if args.estimate:
        from oripid.builders.estimate import estimate_plan
        from oripid.models_registry.registry import load_registry

        rows = estimate_plan(
            plan,
            config,
            utilization=args.utilization,
            peak_tflops=args.peak_tflops,
            registry=load_registry(workdir),
        )
        print(format_table(rows, list(rows[0].keys())) if rows else "nothing to estimate")
    return 0


def _build(args: argparse.Namespace) -> int:
    from oripid.builders.build import build
    from oripid.builders.status import build_status, format_table

    summary = build(args.workdir)
    log.info(
        "rank %d of %d: built %d shards, %d images written, %d failed, in %.1f s",
        summary.rank,
        summary.world_size,
        summary.shards_built,
        summary.samples_written,
        summary.samples_failed,
        summary.seconds,
    )
    if summary.rank == 0:
        rows = build_status(args.workdir)
        print(
            format_table(
                rows, ["split", "model", "shards_done", "shards_pending", "planned", "written", "failed"]
            )
        )
    return 0


def _status(args: argparse.Namespace) -> int:
    from oripid.builders.status import build_status, format_table

    rows = build_status(args.workdir)
    for row in rows:
        row["failure_reasons"] = ", ".join(f"{k}: {v}" for k, v in row["failure_reasons"].items()) or "-"
    print(
        format_table(
            rows,
            [
                "split",
                "model",
                "shards_done",
                "shards_pending",
                "planned",
                "written",
                "failed",
                "failure_reasons",
            ],
        )
    )
    return 0


def register_demo(subparsers) -> None:
    demo = subparsers.add_parser(
        "demo", help="run the whole pipeline offline on the embedded sample origins with tiny models"
    )
    demo.add_argument("--workdir", default="demo-workdir")
    demo.add_argument("--processes", type=int, default=2, help="Accelerate processes for build and features")
    demo.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from oripid.builders.status import format_table
    from oripid.demo import run_demo
    from oripid.eval.metrics import format_table as format_metrics

    result = run_demo(args.workdir, processes=args.processes)
    print("\nshards")
    print(format_table(result["status"], ["split", "model", "shards_done", "planned", "written", "failed"]))
    print("\nreference evaluation, learned W (%; tiny random-weight models: figures near chance)")
    print(format_metrics(result["metrics"]["learned_w"]))
    print(f"\nworkspace:  {Path(result['workdir']).resolve()}")
    print(f"release:    {Path(result['release']).resolve()}   (datasets.load_dataset(<release>, '<model>'))")
    print(f"report:     {Path(result['report']).resolve()}")
    for plot in result["plots"]:
        print(f"plot:       {Path(plot).resolve()}")
    print(f"wall time:  {result['seconds']:.1f} s")
    return 0
