"""A small workspace for builder tests: origin images, manifest with splits, and prompts, written
with the same columns `oripid origins ingest`, `oripid splits` and `oripid prompts generate` write."""

from __future__ import annotations

import hashlib
from pathlib import Path

import imagehash
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from PIL import Image

from oripid.builders import layout


def make_workspace(
    workdir: Path,
    splits: dict[str, int] | None = None,
    prompts_per_origin: int = 2,
    config: dict | None = None,
) -> Path:
    splits = splits or {"train": 2, "test": 2, "distractor": 1}
    workdir = Path(workdir)
    (workdir / layout.ORIGIN_IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    (workdir / "prompts").mkdir(parents=True, exist_ok=True)
    rows, prompt_rows = [], []
    rng = np.random.default_rng(0)
    number = 0
    for split, count in splits.items():
        for _ in range(count):
            origin_id = f"T{number:06d}"
            number += 1
            pixels = (rng.random((48, 40, 3)) * 255).astype(np.uint8)
            image = Image.fromarray(pixels)
            image.save(layout.origin_image_path(workdir, origin_id))
            rows.append(
                {
                    "origin_id": origin_id,
                    "status": "ok",
                    "split": split,
                    "sha256": hashlib.sha256(pixels.tobytes()).hexdigest(),
                    "phash": str(imagehash.phash(image)),
                }
            )
            for idx in range(prompts_per_origin):
                prompt_rows.append(
                    {"origin_id": origin_id, "prompt_idx": idx, "prompt": f"a painting, style {idx}"}
                )
    pq.write_table(pa.Table.from_pylist(rows), workdir / layout.ORIGINS_MANIFEST)
    pq.write_table(pa.Table.from_pylist(prompt_rows), workdir / layout.PROMPTS_TABLE)
    base = {
        "generate": {
            "train": {"models": ["sd2"], "prompts_per_origin": prompts_per_origin},
            "query": {"models": ["sd2", "sdxl"], "prompts_per_origin": 1},
        },
        "shards": {"max_samples": 3},
        "build": {"variant": "tiny", "batch_size": 2},
        "models": {},
    }
    for key, value in (config or {}).items():
        base[key] = value
    for model in {m for s in base["generate"].values() for m in s["models"]}:
        base["models"].setdefault(model, {}).setdefault("num_inference_steps", 2)
    (workdir / layout.CONFIG).write_text(yaml.safe_dump(base))
    return workdir
