"""`oripid origins ingest`, `oripid prompts generate`, `oripid splits`: parse, call, print a summary."""

from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    # origins ingest SRC --workdir W
    origins = subparsers.add_parser("origins", help="ingest origin images into the workspace")
    origins_sub = origins.add_subparsers(dest="origins_command", metavar="ACTION")
    ingest = origins_sub.add_parser("ingest", help="decode, check, deduplicate and number the origin images")
    ingest.add_argument(
        "src", help="image folder, .parquet/.csv table, saved HF dataset folder, or WebDataset .tar(s)"
    )
    ingest.add_argument("--workdir", required=True)
    ingest.add_argument("--kind", default=None, help="auto (default), folder, table, hf, webdataset")
    ingest.add_argument("--column", default=None, help="image column of a table or HF dataset")
    ingest.add_argument("--id-pattern", default=None, help="default T{index:06d}; also {hash:.12}, {stem}")
    ingest.add_argument("--min-side", type=int, default=None)
    ingest.add_argument("--max-pixels", type=int, default=None)
    ingest.add_argument("--max-file-bytes", type=int, default=None)
    ingest.add_argument(
        "--near-duplicate-threshold", type=int, default=None, help="phash distance; -1 turns it off"
    )
    ingest.add_argument("--workers", type=int, default=None, help="decoding processes (default: all cores)")
    ingest.add_argument("--no-progress", action="store_true")
    ingest.set_defaults(func=_ingest)
    origins.set_defaults(func=lambda args: origins.print_help() or 2)

    # prompts generate --workdir W --per-origin N --source S
    prompts = subparsers.add_parser("prompts", help="write prompts for the ingested origins")
    prompts_sub = prompts.add_subparsers(dest="prompts_command", metavar="ACTION")
    gen = prompts_sub.add_parser("generate", help="N checked prompts per origin from one source")
    gen.add_argument("--workdir", required=True)
    gen.add_argument("--per-origin", type=int, default=None, help="default 20 (OriPID)")
    gen.add_argument("--source", choices=("file", "template", "transformers", "openai"), default=None)
    gen.add_argument("--seed", type=int, default=None)
    gen.add_argument("--prompts-file", default=None, help="file source: JSONL, CSV or parquet")
    gen.add_argument("--template-dir", default=None, help="template source: folder of the .txt files")
    gen.add_argument("--model", default=None, help="transformers source: local writer (or VLM) folder")
    gen.add_argument("--captioner", default=None, help="transformers source: local image-text-to-text folder")
    gen.add_argument("--batch-size", type=int, default=None)
    gen.add_argument("--device", default=None)
    gen.add_argument("--base-url", default=None, help="openai source: endpoint root, e.g. http://host/v1")
    gen.add_argument("--api-model", default=None, help="openai source: model name (default gpt-4o)")
    gen.add_argument("--api-key-env", default=None, help="openai source: variable holding the key")
    gen.add_argument("--concurrency", type=int, default=None)
    gen.add_argument("--length-policy", choices=("warn", "truncate", "reject"), default=None)
    gen.add_argument(
        "--tokenizer", action="append", default=[], metavar="TARGET=PATH", help="exact token counts"
    )
    gen.add_argument(
        "--no-cached-tokenizers",
        action="store_true",
        help="estimate token counts instead of using the models' tokenizers from the Hugging Face cache",
    )
    gen.add_argument("--on-short", choices=("error", "keep"), default=None)
    gen.set_defaults(func=_prompts)
    prompts.set_defaults(func=lambda args: prompts.print_help() or 2)

    # splits --workdir W
    splits = subparsers.add_parser("splits", help="assign origins to train, test and distractor, leak-free")
    splits.add_argument("--workdir", required=True)
    splits.add_argument("--key", default=None, help="key of the hash that ranks origins")
    for name in ("train", "test", "distractor"):
        splits.add_argument(
            f"--{name}", type=_size, default=None, help="count, fraction in (0, 1], or 'rest'"
        )
    splits.add_argument("--test-queries-per-model", type=int, default=None)
    splits.add_argument("--queries-per-test-origin", type=int, default=None)
    splits.add_argument("--leak-threshold", type=int, default=None)
    splits.add_argument(
        "--assignment",
        default=None,
        help="reproduce a released partition: CSV/JSONL/parquet of (origin_id or file, split)",
    )
    splits.add_argument(
        "--assignment-leaks",
        choices=("error", "report"),
        default=None,
        help="near duplicates across the assignment's splits: refuse (default) or only report",
    )
    splits.set_defaults(func=_splits)


def _size(text: str):
    if text == "rest":
        return text
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: give a count, a fraction or 'rest'") from None


def _with_config(workdir: str, section: str, options: dict) -> dict:
    """The workspace config's section (only what the file sets), with the command-line options over it."""
    from pathlib import Path

    from oripid.builders import layout
    from oripid.config import load_config

    path = Path(workdir) / layout.CONFIG
    if not path.is_file():
        return options
    merged = getattr(load_config(path), section).model_dump(exclude_unset=True)
    for name, value in options.items():
        if isinstance(value, dict) and isinstance(merged.get(name), dict):
            merged[name] = {**merged[name], **value}
        else:
            merged[name] = value
    return merged


def _given(**options) -> dict:
    """Only the options the user gave: the config's defaults stay in one place."""
    return {k: v for k, v in options.items() if v is not None}


def _print(summary) -> int:
    print(json.dumps(summary.model_dump(), indent=2, default=str))
    return 0


def _ingest(args: argparse.Namespace) -> int:
    from oripid.builders.ingest import ingest_origins

    threshold = args.near_duplicate_threshold
    options = _given(
        kind=args.kind,
        column=args.column,
        id_pattern=args.id_pattern,
        min_side=args.min_side,
        max_pixels=args.max_pixels,
        max_file_bytes=args.max_file_bytes,
        workers=args.workers,
    )
    if threshold is not None:
        options["near_duplicate_threshold"] = None if threshold < 0 else threshold
    options = _with_config(args.workdir, "origins", {**options, "progress": not args.no_progress})
    summary = ingest_origins(args.src, args.workdir, **options)
    summary_dict = summary.model_dump(exclude={"config"})
    print(json.dumps(summary_dict, indent=2))
    return 0


def _prompts(args: argparse.Namespace) -> int:
    from oripid.errors import OripidError
    from oripid.prompts.generate import generate_prompts

    tokenizers = {}
    for item in args.tokenizer:
        target, sep, path = item.partition("=")
        if not sep:
            raise OripidError(f"--tokenizer {item!r}: write TARGET=PATH, e.g. clip=/models/clip-tokenizer")
        tokenizers[target] = path
    options = _given(per_origin=args.per_origin, source=args.source, seed=args.seed, on_short=args.on_short)
    sections = {
        "file": _given(path=args.prompts_file),
        "template": _given(template_dir=args.template_dir),
        "transformers": _given(
            model_path=args.model,
            captioner_path=args.captioner,
            batch_size=args.batch_size,
            device=args.device,
        ),
        "openai": _given(
            base_url=args.base_url,
            model=args.api_model,
            api_key_env=args.api_key_env,
            concurrency=args.concurrency,
        ),
        "checks": _given(
            length_policy=args.length_policy,
            tokenizers=tokenizers or None,
            use_cached_tokenizers=False if args.no_cached_tokenizers else None,
        ),
    }
    options.update({name: values for name, values in sections.items() if values})
    return _print(generate_prompts(args.workdir, **_with_config(args.workdir, "prompts", options)))


def _splits(args: argparse.Namespace) -> int:
    from oripid.builders.splits import split_origins

    options = _given(
        key=args.key,
        train=args.train,
        test=args.test,
        distractor=args.distractor,
        test_queries_per_model=args.test_queries_per_model,
        queries_per_test_origin=args.queries_per_test_origin,
        leak_threshold=args.leak_threshold,
        assignment=args.assignment,
        assignment_leaks=args.assignment_leaks,
    )
    return _print(split_origins(args.workdir, **_with_config(args.workdir, "splits", options)))
