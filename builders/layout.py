"""Where everything lives in a workspace (see DESIGN.md), and the digest of its shard indexes.

Every stage names paths through this module, so the layout is written down once.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

CONFIG = "oripid.yaml"
ORIGINS_MANIFEST = "origins/manifest.parquet"
PROMPTS_TABLE = "prompts/prompts.parquet"
SPLITS_SUMMARY = "splits.json"
PLAN = "plan.json"
DATA_DIR = "data"
FEATURES_DIR = "features"
VALIDATION_DIR = "validation"
CARD = "README.md"


def shard_stem(split: str, model: str, index: int) -> str:
    """`<split>-<model>-<NNNNNN>`, the common name of a shard's tar, index and stats files."""
    return f"{split}-{model}-{index:06d}"


def shard_dir(workdir: Path, split: str, model: str) -> Path:
    return Path(workdir) / DATA_DIR / split / model


def shard_paths(workdir: Path, split: str, model: str, index: int) -> dict[str, Path]:
    base = shard_dir(workdir, split, model) / shard_stem(split, model, index)
    return {
        "tar": base.with_suffix(".tar"),
        "partial": base.with_suffix(".tar.partial"),
        "index": base.with_suffix(".parquet"),
        "stats": base.with_suffix(".json"),
    }


def sample_key(origin_id: str, model: str, prompt_idx: int) -> str:
    """`{origin_id}-{model}-{prompt_idx:02d}`; no dots, since WebDataset cuts keys at the first dot."""
    return f"{origin_id}-{model}-{prompt_idx:02d}"


def shard_index_digest(workdir: Path) -> str:
    """sha256 over every shard index (relative path, then bytes) and every tar's size and
    modification time, sorted.

    Validation records it; publishing refuses a workspace whose digest has no passing report.
    The indexes hold each sample's sha256, which validation checks against the tars; a tar is
    known by its size and mtime, because hashing every tar again would cost a pass over the whole
    dataset (a copy that does not keep mtimes therefore needs `oripid validate` again).
    """
    root = Path(workdir)
    digest = hashlib.sha256()
    for index in sorted((root / DATA_DIR).rglob("*.parquet")):
        digest.update(index.relative_to(root).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(index.read_bytes()).digest())
    for tar in sorted((root / DATA_DIR).rglob("*.tar")):
        info = tar.stat()
        digest.update(f"{tar.relative_to(root).as_posix()}\0{info.st_size}\0{info.st_mtime_ns}\0".encode())
    return digest.hexdigest()


ORIGIN_IMAGES_DIR = "origins/images"  # <origin_id>.png, RGB, written by ingest
LOGS_DIR = "logs"  # per-rank build logs: timings and throughput, which vary run to run


def origin_image_path(workdir: Path, origin_id: str) -> Path:
    return Path(workdir) / ORIGIN_IMAGES_DIR / f"{origin_id}.png"
