"""`oripid models list | show KEY`: what the registry holds, and where each setting came from."""

from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    models = subparsers.add_parser("models", help="list and inspect the diffusion models in the registry")
    models_sub = models.add_subparsers(dest="models_command", metavar="ACTION")
    list_parser = models_sub.add_parser("list", help="one line per model")
    show_parser = models_sub.add_parser("show", help="every setting of one model, and where it came from")
    show_parser.add_argument("key")
    show_parser.add_argument("--json", action="store_true", help="machine-readable output")
    for parser in (list_parser, show_parser):
        parser.add_argument("--workdir", default=None, help="also read <workdir>/models/*.yaml")
    list_parser.set_defaults(func=_list)
    show_parser.set_defaults(func=_show)
    models.set_defaults(func=lambda args: models.print_help() or 2)


def _list(args: argparse.Namespace) -> int:
    from oripid.models_registry.registry import load_registry

    registry = load_registry(args.workdir)
    rows = [("key", "checkpoint", "pipeline", "px", "licence")]
    for key in registry.keys():
        entry = registry.get(key)
        licence = entry.license + (" (gated)" if entry.gated else "")
        rows.append((key, entry.checkpoint, entry.pipeline, str(entry.native_resolution), licence))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def _show(args: argparse.Namespace) -> int:
    from oripid.models_registry.registry import load_registry

    registry = load_registry(args.workdir)
    entry = registry.get(args.key)
    settings = entry.model_dump(mode="json")
    if args.json:
        print(json.dumps({"settings": settings, "sources": registry.sources[entry.key]}, indent=2))
        return 0
    sources = registry.sources[entry.key]
    for name, value in settings.items():
        if name == "architecture":
            value = {part: f"{c['library']}.{c['class_name']}" for part, c in value.items()}
        print(f"{name:22} {json.dumps(value)}")
        print(f"{'':22} from {sources.get(name, 'default')}")
    return 0
