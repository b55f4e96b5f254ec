"""`oripid card` and `oripid push`: render the dataset card, publish the release to the Hub."""

from __future__ import annotations

import argparse
from pathlib import Path


def _card(args: argparse.Namespace) -> int:
    from oripid.builders.card import render_card

    path = render_card(workdir=args.workdir, repo_id=args.repo)
    print(f"wrote {path}")
    return 0


def _push(args: argparse.Namespace) -> int:
    from oripid.builders.publish import describe, push_dataset

    result = push_dataset(
        workdir=args.workdir,
        repo_id=args.repo,
        dry_run=args.dry_run,
        public=args.public,
        endpoint=args.endpoint,
        include_features=args.include_features,
    )
    print(describe(result))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    card = subparsers.add_parser("card", help="render the Hub dataset card into <workdir>/README.md")
    card.add_argument("--workdir", type=Path, required=True, help="the workspace `oripid build` wrote")
    card.add_argument("--repo", default=None, help="user/name to show in the loading examples")
    card.set_defaults(func=_card)

    push = subparsers.add_parser(
        "push",
        help="upload the validated release to a Hub dataset repository and verify it",
        description="Token: the standard Hugging Face login (`hf auth login`) or HF_TOKEN; never printed.",
    )
    push.add_argument("--workdir", type=Path, required=True, help="the validated workspace")
    push.add_argument("--repo", required=True, help="dataset repository, user/name or org/name")
    push.add_argument(
        "--dry-run", action="store_true", help="list the files and bytes to upload; change nothing"
    )
    push.add_argument("--public", action="store_true", help="create the repository public (default: private)")
    push.add_argument(
        "--endpoint", default=None, help="Hub endpoint (default: HF_ENDPOINT or huggingface.co)"
    )
    push.add_argument(
        "--include-features", action="store_true", help="also upload features/ (precomputed VAE features)"
    )
    push.set_defaults(func=_push)
