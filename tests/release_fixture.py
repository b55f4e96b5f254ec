"""A small, fake-but-valid workspace, written exactly to the contracts of docs/workspace.md.

The images are real (tiny JPEGs from PIL), the shards are real WebDataset tars written with
`webdataset.TarWriter`, and the validation report carries the real shard index digest, so the
card and publishing code under test reads what the builder and validator will write.

    from tests.release_fixture import write_release_workspace
    info = write_release_workspace(tmp_path / "ws")
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import webdataset as wds
from PIL import Image

from oripid.builders import layout

ORIPID_VERSION = "0.1.0"
MTIME = 1_700_000_000.0  # fixed tar mtime: reproducible shards, as the builder writes them

# Per-model settings as a real registry would pin them (values are illustrative, not the paper's).
MODEL_SETTINGS: dict[str, dict] = {
    "sd2": {
        "checkpoint": "stabilityai/stable-diffusion-2-1-base",
        "revision": "5ede9e4bf3e3fd1cb0ef2f7a3fff13ee514fdf06",
        "pipeline": "StableDiffusionImg2ImgPipeline",
        "strength": 0.8,
        "guidance_scale": 7.5,
        "num_inference_steps": 50,
        "scheduler": "PNDMScheduler",
        "width": 512,
        "height": 512,
        "dtype": "float16",
    },
    "sdxl": {
        "checkpoint": "stabilityai/stable-diffusion-xl-base-1.0",
        "revision": "462165984030d82259a11f4367a4eed129e94a7b",
        "pipeline": "StableDiffusionXLImg2ImgPipeline",
        "strength": 0.5,
        "guidance_scale": 5.0,
        "num_inference_steps": 40,
        "scheduler": "EulerDiscreteScheduler",
        "width": 1024,
        "height": 1024,
        "dtype": "float16",
    },
    "opendalle": {
        "checkpoint": "dataautogpt3/OpenDalleV1.1",
        "revision": "0c1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c",
        "pipeline": "StableDiffusionXLImg2ImgPipeline",
        "strength": 0.5,
        "guidance_scale": 7.0,
        "num_inference_steps": 35,
        "scheduler": "DPMSolverMultistepScheduler",
        "width": 1024,
        "height": 1024,
        "dtype": "float16",
    },
    "sd3": {
        "checkpoint": "stabilityai/stable-diffusion-3-medium-diffusers",
        "revision": "ea42f8cef0f178587cf766dc8129abd379c90671",
        "pipeline": "StableDiffusion3Img2ImgPipeline",
        "strength": 0.6,
        "guidance_scale": 7.0,
        "num_inference_steps": 28,
        "scheduler": "FlowMatchEulerDiscreteScheduler",
        "width": 1024,
        "height": 1024,
        "dtype": "bfloat16",
    },
    "kolors": {
        "checkpoint": "Kwai-Kolors/Kolors-diffusers",
        "revision": "7e091c75199e910a26cd1b5a06ed5b2bd39a4fb3",
        "pipeline": "KolorsImg2ImgPipeline",
        "strength": 0.6,
        "guidance_scale": 6.5,
        "num_inference_steps": 25,
        "scheduler": "EulerDiscreteScheduler",
        "width": 1024,
        "height": 1024,
        "dtype": "float16",
    },
}


def _jpeg(rng: np.random.Generator, size: int = 16) -> bytes:
    pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _write_shard(
    workdir: Path,
    split: str,
    model: str,
    index: int,
    samples: list[tuple[str, dict, bytes, int, int]],
    *,
    planned: int,
    failures: list[dict],
    settings: dict,
) -> None:
    """Write tar, then index, then stats (the done marker), as the builder does."""
    paths = layout.shard_paths(workdir, split, model, index)
    paths["tar"].parent.mkdir(parents=True, exist_ok=True)
    rows = []
    with wds.TarWriter(str(paths["tar"]), mtime=MTIME) as sink:
        for key, meta, image, prompt_idx, seed in sorted(samples, key=lambda s: s[0]):
            sink.write({"__key__": key, "jpg": image, "json": json.dumps(meta, sort_keys=True).encode()})
            rows.append(
                {
                    "key": key,
                    "origin_id": meta["origin_id"],
                    "prompt_idx": prompt_idx,
                    "seed": seed,
                    "sha256": meta["sha256"],
                    "bytes": len(image),
                    "width": meta["width"],
                    "height": meta["height"],
                    "image_ext": "jpg",
                }
            )
    pq.write_table(pa.Table.from_pylist(rows), paths["index"])
    reasons: dict[str, int] = {}
    for failure in failures:
        reasons[failure["reason"]] = reasons.get(failure["reason"], 0) + 1
    stats = {
        "split": split,
        "model": model,
        "shard": layout.shard_stem(split, model, index),
        "planned": planned,
        "written": len(rows),
        "failed": len(failures),
        "failures": failures,
        "failure_reasons": reasons,
        "seconds": 1.5,
        "images_per_second": round(len(rows) / 1.5, 3),
        "rank": 0,
        "world_size": 1,
        "settings": settings,
    }
    paths["stats"].write_text(json.dumps(stats, indent=2, sort_keys=True))


def write_validation_report(workdir: Path, *, passed: bool = True, digest: str | None = None) -> dict:
    """validation/report.json (+ .md and a plot) for the workspace as it is now."""
    workdir = Path(workdir)
    vdir = workdir / layout.VALIDATION_DIR
    vdir.mkdir(parents=True, exist_ok=True)
    report = {
        "passed": passed,
        "digest": digest if digest is not None else layout.shard_index_digest(workdir),
        "checks": {
            "integrity": {"passed": True, "details": {"shards": 0, "bad_samples": []}},
            "leakage": {"passed": passed, "details": "no origin shared between train and test"},
        },
        "metrics": {
            "reference_eval": {
                "sd2": {"mAP": 0.912, "acc": 0.88, "micro_ap": 0.9},
                "sdxl": {"mAP": 0.801, "acc": 0.75, "micro_ap": 0.78},
            },
            "queries": 12,
        },
    }
    (vdir / "report.json").write_text(json.dumps(report, indent=2))
    (vdir / "report.md").write_text(
        "# Validation\n\nAll checks passed.\n" if passed else "# Validation\n\nFAILED\n"
    )
    # A real (tiny) PNG plot, the kind the validator embeds.
    Image.new("RGB", (8, 8), (200, 30, 30)).save(vdir / "map_per_model.png")
    return report


def write_release_workspace(
    workdir: Path,
    *,
    models: Sequence[str] = ("sd2", "sdxl", "sd3"),
    train_origins: int = 3,
    test_origins: int = 3,
    distractors: int = 2,
    prompts_per_origin: int = 2,
    shards_per_query_model: int = 2,
    validated: bool = True,
    seed: int = 0,
) -> dict:
    """Write a complete small workspace; returns what was written (for assertions).

    Each query model gets `shards_per_query_model` shards; the first shard of every model
    records one failed sample (planned = written + 1) so that failure counting is exercised.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    (workdir / layout.CONFIG).write_text("name: tiny-oripid\nseed: 0\n")

    train_ids = [f"T{i:06d}" for i in range(train_origins)]
    test_ids = [f"Q{i:06d}" for i in range(test_origins)]
    distractor_ids = [f"R{i:06d}" for i in range(distractors)]

    # 1. Origins manifest and prompts table (the card reads the prompt sources).
    origin_images = {oid: _jpeg(rng) for oid in train_ids + test_ids + distractor_ids}
    manifest = [
        {
            "origin_id": oid,
            "path": f"/data/origins/{oid}.jpg",
            "sha256": hashlib.sha256(img).hexdigest(),
            "phash": "0" * 16,
            "width": 16,
            "height": 16,
            "split": "train" if oid in train_ids else ("test" if oid in test_ids else "distractor"),
        }
        for oid, img in origin_images.items()
    ]
    (workdir / layout.ORIGINS_MANIFEST).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(manifest), workdir / layout.ORIGINS_MANIFEST)
    prompts = [
        {
            "origin_id": oid,
            "prompt_idx": p,
            "prompt": f"a photo of {oid} in style {p}",
            "source": "templates" if p % 2 == 0 else "file:prompts.txt",
        }
        for oid in train_ids + test_ids
        for p in range(prompts_per_origin)
    ]
    (workdir / layout.PROMPTS_TABLE).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(prompts), workdir / layout.PROMPTS_TABLE)
    prompt_text = {(r["origin_id"], r["prompt_idx"]): r["prompt"] for r in prompts}

    def generated(split: str, model: str, origin_ids: list[str]) -> list[tuple]:
        settings = MODEL_SETTINGS[model]
        out = []
        for oid in origin_ids:
            for p in range(prompts_per_origin):
                image = _jpeg(rng)
                sample_seed = int.from_bytes(
                    hashlib.sha256(f"{seed}/{model}/{oid}/{p}".encode()).digest()[:4]
                )
                meta = {
                    "origin_id": oid,
                    "model": model,
                    **{k: settings[k] for k in ("checkpoint", "revision", "pipeline", "dtype")},
                    "prompt": prompt_text[(oid, p)],
                    "prompt_idx": p,
                    "seed": sample_seed,
                    **{
                        k: settings[k]
                        for k in ("strength", "guidance_scale", "num_inference_steps", "scheduler")
                    },
                    "width": 16,
                    "height": 16,
                    "split": split,
                    "sha256": hashlib.sha256(image).hexdigest(),
                    "oripid_version": ORIPID_VERSION,
                }
                out.append((layout.sample_key(oid, model, p), meta, image, p, sample_seed))
        return out

    written: dict[tuple[str, str], int] = {}
    failed: dict[tuple[str, str], int] = {}

    def write_split(split: str, model: str, samples: list[tuple], n_shards: int, settings: dict) -> None:
        per_shard = -(-len(samples) // n_shards)
        for i in range(n_shards):
            chunk = samples[i * per_shard : (i + 1) * per_shard]
            failures = []
            if i == 0 and model != "origin":
                # The last sample of the first shard "failed": it is recorded, not silently dropped.
                lost = chunk.pop()
                failures = [
                    {
                        "key": lost[0],
                        "origin_id": lost[1]["origin_id"],
                        "prompt_idx": lost[3],
                        "reason": "nan_image",
                    }
                ]
            _write_shard(
                workdir,
                split,
                model,
                i,
                chunk,
                planned=len(chunk) + len(failures),
                failures=failures,
                settings=settings,
            )
            written[(split, model)] = written.get((split, model), 0) + len(chunk)
            failed[(split, model)] = failed.get((split, model), 0) + len(failures)

    # 2. Generated shards: SD2 train, then each model's queries.
    if "sd2" in models:
        write_split("train", "sd2", generated("train", "sd2", train_ids), 1, MODEL_SETTINGS["sd2"])
    for model in models:
        write_split(
            "query", model, generated("query", model, test_ids), shards_per_query_model, MODEL_SETTINGS[model]
        )

    # 3. Origin shards: gallery (test origins + distractors) and training origins.
    def origin_samples(split: str, ids: list[str]) -> list[tuple]:
        out = []
        for oid in ids:
            image = origin_images[oid]
            meta = {
                "origin_id": oid,
                "split": split,
                "sha256": hashlib.sha256(image).hexdigest(),
                "width": 16,
                "height": 16,
                "source": f"/data/origins/{oid}.jpg",
            }
            out.append((oid, meta, image, -1, -1))
        return out

    write_split("gallery", "origin", origin_samples("gallery", test_ids + distractor_ids), 1, {})
    write_split("train_origins", "origin", origin_samples("train_origins", train_ids), 1, {})

    # 4. Plan (internal; not part of the release) and the validation report.
    (workdir / layout.PLAN).write_text(json.dumps({"shards": [], "seed": seed}))
    report = write_validation_report(workdir) if validated else None
    return {
        "workdir": workdir,
        "models": list(models),
        "written": written,
        "failed": failed,
        "report": report,
    }
