"""`oripid status`: done, pending and failed shards and samples per split and model."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from oripid.builders import layout
from oripid.builders.plan import is_done, read_plan


def build_status(workdir: str | Path) -> list[dict]:
    """One row per (split, model): shards done/pending, samples planned/written/failed, failure reasons."""
    workdir = Path(workdir)
    plan = read_plan(workdir)
    rows: dict[tuple[str, str], dict] = {}
    reasons: dict[tuple[str, str], dict] = defaultdict(lambda: defaultdict(int))
    for shard in plan.shards:
        row = rows.setdefault(
            (shard.split, shard.model),
            {
                "split": shard.split,
                "model": shard.model,
                "shards_done": 0,
                "shards_pending": 0,
                "planned": 0,
                "written": 0,
                "failed": 0,
            },
        )
        row["planned"] += len(shard.samples)
        stats_path = layout.shard_paths(workdir, shard.split, shard.model, shard.index)["stats"]
        if is_done(workdir, shard):
            stats = json.loads(stats_path.read_text())
            row["shards_done"] += 1
            row["written"] += stats["written"]
            row["failed"] += stats["failed"]
            for reason, count in stats["failure_reasons"].items():
                reasons[(shard.split, shard.model)][reason] += count
        else:
            row["shards_pending"] += 1
    for key, row in rows.items():
        row["failure_reasons"] = dict(reasons[key])
    return list(rows.values())


def format_table(rows: list[dict], columns: list[str]) -> str:
    cells = [columns] + [[str(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in cells
    )
