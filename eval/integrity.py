"""Integrity: every planned sample present exactly once, readable, decodable, its hash as indexed."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
from PIL import Image

from oripid.builders import layout
from oripid.builders.plan import ORIGIN_MODEL, Plan, is_done

IMAGE_EXTENSIONS = ("jpg", "png", "webp")
MAX_LISTED = 20  # problems listed by name; all are counted


def planned_key(shard_model: str, origin_id: str, prompt_idx: int) -> str:
    return origin_id if shard_model == ORIGIN_MODEL else layout.sample_key(origin_id, shard_model, prompt_idx)


def _tar_samples(path: Path) -> dict[str, dict[str, bytes]]:
    """key -> {extension: bytes}; a key seen twice in one tar is reported by the caller."""
    samples: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path) as tar:
        for member in tar:
            if not member.isfile():
                continue
            key, _, ext = member.name.partition(".")
            samples.setdefault(key, {})
            if ext in samples[key]:
                samples[key][ext + "#duplicate"] = b""
            samples[key][ext] = tar.extractfile(member).read()
    return samples


def check_integrity(workdir: str | Path, plan: Plan, max_failed_fraction: float) -> dict:
    """Problems by kind, with counts and the first few keys of each; `passed` when there are none."""
    workdir = Path(workdir)
    problems: dict[str, list[str]] = {
        "pending_shards": [],
        "stale_shards": [],
        "unplanned_files": [],
        "unreadable_shards": [],
        "missing": [],
        "duplicated": [],
        "unexpected": [],
        "undecodable": [],
        "hash_mismatch": [],
        "index_mismatch": [],
    }
    planned = Counter()
    seen = Counter()
    failed: Counter = Counter()
    n_failed = 0
    for shard in plan.shards:
        paths = layout.shard_paths(workdir, shard.split, shard.model, shard.index)
        shard_keys = [planned_key(shard.model, o, i) for o, i in shard.samples]
        planned.update(shard_keys)
        if not is_done(workdir, shard):
            stale = paths["stats"].is_file()  # finished, but from settings the plan no longer holds
            problems["stale_shards" if stale else "pending_shards"].append(shard.stem)
            continue
        stats = json.loads(paths["stats"].read_text())
        n_failed += stats["failed"]
        failed.update(stats["failure_reasons"])
        failed_keys = {f["key"] for f in stats["failures"]}
        try:
            samples = _tar_samples(paths["tar"])
            index = pq.read_table(paths["index"]).to_pylist()
        except (OSError, tarfile.TarError, ValueError) as exc:
            problems["unreadable_shards"].append(f"{shard.stem}: {exc}")
            continue
        indexed = {row["key"]: row for row in index}
        if len(indexed) != len(index) or set(indexed) != set(samples):
            problems["index_mismatch"].append(shard.stem)
        for key, members in samples.items():
            seen[key] += 1
            if any(ext.endswith("#duplicate") for ext in members):
                seen[key] += 1
            ext = next((e for e in IMAGE_EXTENSIONS if e in members), None)
            data = members.get(ext, b"")
            try:
                with Image.open(io.BytesIO(data)) as image:
                    image.load()
                json.loads(members["json"])
            except Exception as exc:  # noqa: BLE001  (any decode failure is a finding, not a crash)
                problems["undecodable"].append(f"{key}: {type(exc).__name__}")
                continue
            row = indexed.get(key)
            if row is None or hashlib.sha256(data).hexdigest() != row["sha256"]:
                problems["hash_mismatch"].append(key)
        for key in set(shard_keys) - set(samples) - failed_keys:
            problems["missing"].append(key)
    # Files of shards the plan no longer holds (a model removed, a re-split) would be published.
    planned_files = {
        path
        for shard in plan.shards
        for kind, path in layout.shard_paths(workdir, shard.split, shard.model, shard.index).items()
        if kind != "partial"
    }
    problems["unplanned_files"] = sorted(
        path.relative_to(workdir).as_posix()
        for path in (workdir / layout.DATA_DIR).rglob("*")
        if path.is_file() and path not in planned_files and not path.name.endswith(".partial")
    )
    problems["duplicated"] = sorted(k for k, n in seen.items() if n > 1)
    problems["unexpected"] = sorted(set(seen) - set(planned))
    total = sum(planned.values())
    failed_fraction = n_failed / total if total else 0.0
    counts = {kind: len(keys) for kind, keys in problems.items()}
    passed = not any(counts.values()) and failed_fraction <= max_failed_fraction
    messages = [
        f"{n} {kind.replace('_', ' ')}: {', '.join(sorted(problems[kind])[:5])}"
        for kind, n in counts.items()
        if n
    ]
    if failed_fraction > max_failed_fraction:
        messages.append(
            f"{n_failed} of {total} samples failed ({failed_fraction:.2%} > max_failed_fraction "
            f"{max_failed_fraction:.2%}): {dict(failed)}"
        )
    return {
        "passed": passed,
        "planned": total,
        "failed": n_failed,
        "failure_reasons": dict(failed),
        "counts": counts,
        "examples": {kind: sorted(keys)[:MAX_LISTED] for kind, keys in problems.items() if keys},
        "messages": messages,
    }
