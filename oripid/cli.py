"""The `oripid` command line: it only parses arguments and calls one entry function per stage.

Each command group lives in its own `oripid/cli_*.py` module exposing `register(subparsers)`;
a command sets `func` to a callable taking the parsed namespace and returning an exit code.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from oripid import __version__
from oripid.errors import OripidError

# Command groups, in the order of the data flow. Imported lazily so that `oripid --help`
# does not pay for torch and diffusers.
COMMAND_MODULES = [
    "oripid.cli_models",
    "oripid.cli_data",
    "oripid.cli_build",
    "oripid.cli_validate",
    "oripid.cli_eval",
    "oripid.cli_publish",
]


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(
        prog="oripid",
        description="Build, validate and publish origin-identification datasets (ID2 / OriPID).",
    )
    parser.add_argument("--version", action="version", version=f"oripid {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # a command group not written yet
                continue
            raise
        module.register(subparsers)
    return parser


def _close_process_group(barrier: bool) -> None:
    """Leave a distributed run cleanly: gloo's threads abort the process (SIGABRT) if the group
    outlives main, or if one rank tears it down while another still uses it."""
    torch = sys.modules.get("torch")  # never import torch just for this
    if torch is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
        if barrier:
            torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def main(argv: Sequence[str] | None = None) -> int:
    import os

    # transformers warns at import about optional backends (torchvision) oripid never uses.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        code = int(args.func(args) or 0)
        _close_process_group(barrier=True)
        return code
    except OripidError as exc:
        print(f"oripid: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("oripid: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `oripid ... | head` closed the pipe: not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
        return 0
    finally:  # after an error, no barrier: the other ranks may never reach it
        _close_process_group(barrier=False)


if __name__ == "__main__":
    raise SystemExit(main())
