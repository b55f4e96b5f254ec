"""`oripid plan`: expand the config and the origin/prompt tables into shards with fixed membership.

The plan never depends on the number of processes: it fixes which samples go in which shard,
and processes only decide who builds which shard.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from oripid.builders import layout
from oripid.builders.seeds import choose_prompts
from oripid.config import DatasetConfig
from oripid.errors import OripidError

ORIGIN_MODEL = "origin"  # the "model" of shards that hold origin images
ORIGIN_SPLITS = {"gallery": ("test", "distractor"), "train_origins": ("train",)}
SOURCE_SPLIT = {"train": "train", "query": "test"}  # generated split -> origin split it draws from
PLAN_VERSION = 1

# Rough bytes per pixel for estimating shard size before any image exists.
_BYTES_PER_PIXEL = {"jpg": 0.45, "webp": 0.3, "png": 2.0}


@dataclass
class ShardPlan:
    split: str
    model: str
    index: int
    samples: list[tuple[str, int]]  # (origin_id, prompt_idx); prompt_idx -1 for origin images
    # Hash of everything that decides the shard's bytes: its samples and its model's settings. A
    # finished shard whose stats carry another digest was built from other settings: rebuilt.
    digest: str = ""

    @property
    def stem(self) -> str:
        return layout.shard_stem(self.split, self.model, self.index)


@dataclass
class Plan:
    seed: int
    variant: str
    config_digest: str
    shards: list[ShardPlan]
    unplanned: list[dict] = field(default_factory=list)  # origins that could not get their samples, and why

    def to_json(self) -> str:
        data = asdict(self)
        data["version"] = PLAN_VERSION
        return json.dumps(data, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Plan:
        data = json.loads(text)
        data.pop("version", None)
        shards = [
            ShardPlan(s["split"], s["model"], s["index"], [tuple(x) for x in s["samples"]], s["digest"])
            for s in data.pop("shards")
        ]
        return cls(shards=shards, **data)

    def sample_count(self) -> int:
        return sum(len(shard.samples) for shard in self.shards)


def _sha256(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def generation_settings(config: DatasetConfig, entry=None) -> dict:
    """What decides a shard's pixels: for origin shards the image format; for generated ones also
    the seed, variant, resize policy and the model's registry entry and overrides. Execution
    choices (batch size, retries, threads, device, queues) are left out: changing them after an
    out-of-memory error must not rebuild finished shards."""
    settings: dict = {"image": config.image.model_dump()}
    if entry is not None:
        override = config.models.get(entry.key)
        settings.update(
            seed=config.seed,
            variant=config.build.variant,
            resize=config.build.resize,
            entry=entry.model_dump(mode="json"),
            override=override.model_dump(mode="json") if override else None,
        )
    return settings


def config_digest(config: DatasetConfig, registry) -> str:
    """What a plan is made from: the generated splits, shard sizes and every used model's
    settings (registry entries included). A plan made from other ones is stale."""
    models = sorted({m for build in config.generate.values() for m in build.models})
    return _sha256(
        {
            "generate": config.model_dump(mode="json")["generate"],
            "shards": config.shards.model_dump(),
            "models": {m: generation_settings(config, registry.get(m)) for m in models},
        }
    )


def _read_tables(workdir: Path) -> tuple[dict[str, list[str]], dict[str, list[int]]]:
    manifest_path = workdir / layout.ORIGINS_MANIFEST
    prompts_path = workdir / layout.PROMPTS_TABLE
    for path, fix in (
        (manifest_path, "oripid origins ingest SRC"),
        (prompts_path, "oripid prompts generate"),
    ):
        if not path.is_file():
            raise OripidError(f"{path}: missing; run `{fix} --workdir {workdir}` first")
    manifest = pq.read_table(manifest_path, columns=["origin_id", "status", "split"]).to_pylist()
    origins_by_split: dict[str, list[str]] = defaultdict(list)
    for row in manifest:
        if row["status"] != "ok":
            continue
        if row["split"] is None:
            raise OripidError(
                f"{manifest_path}: origin {row['origin_id']} has no split; run `oripid splits --workdir {workdir}`"
            )
        origins_by_split[row["split"]].append(row["origin_id"])
    prompt_indices: dict[str, list[int]] = defaultdict(list)
    for row in pq.read_table(prompts_path, columns=["origin_id", "prompt_idx"]).to_pylist():
        prompt_indices[row["origin_id"]].append(int(row["prompt_idx"]))
    return {k: sorted(v) for k, v in origins_by_split.items()}, dict(prompt_indices)


def _cut(
    samples: list[tuple[str, int]], max_samples: int, max_bytes: int, bytes_per_sample: float
) -> list[list]:
    """Cut samples into shards at origin boundaries (an origin's prompts are batched together),
    unless one origin alone exceeds a shard."""
    limit = max(1, min(max_samples, int(max_bytes // max(bytes_per_sample, 1))))
    shards: list[list] = [[]]
    by_origin: dict[str, list] = defaultdict(list)
    for sample in samples:
        by_origin[sample[0]].append(sample)
    for origin_id in sorted(by_origin):
        group = by_origin[origin_id]
        if shards[-1] and len(shards[-1]) + len(group) > limit:
            shards.append([])
        for sample in group:
            if len(shards[-1]) >= limit:
                shards.append([])
            shards[-1].append(sample)
    return [shard for shard in shards if shard]


def make_plan(config: DatasetConfig, workdir: Path, registry=None) -> Plan:
    """Every shard of the dataset, in a fixed order: generated splits by model, then origin shards."""
    from oripid.models_registry.registry import load_registry

    workdir = Path(workdir)
    registry = registry or load_registry(workdir)
    origins_by_split, prompt_indices = _read_tables(workdir)
    fmt = config.image.format
    shards: list[ShardPlan] = []
    unplanned: list[dict] = []

    def add_shards(split: str, model: str, samples: list[tuple[str, int]], pixels: int, entry=None) -> None:
        groups = _cut(
            samples, config.shards.max_samples, config.shards.max_bytes, pixels * _BYTES_PER_PIXEL[fmt]
        )
        settings = _sha256(generation_settings(config, entry))
        for i, group in enumerate(groups):
            digest = _sha256([settings, split, model, i, group])
            shards.append(ShardPlan(split, model, i, group, digest))

    for split, build in config.generate.items():
        origin_ids = origins_by_split.get(SOURCE_SPLIT[split], [])
        for model in build.models:
            entry = registry.get(model)
            _check_denoising_steps(config, entry)
            samples = []
            for origin_id in origin_ids:
                available = prompt_indices.get(origin_id, [])
                if len(available) < build.prompts_per_origin:
                    unplanned.append(
                        {
                            "split": split,
                            "model": model,
                            "origin_id": origin_id,
                            "reason": f"has {len(available)} prompts, needs {build.prompts_per_origin}",
                        }
                    )
                if split == "train":
                    chosen = available[: build.prompts_per_origin]
                else:
                    chosen = choose_prompts(
                        config.seed, model, origin_id, available, build.prompts_per_origin
                    )
                samples += [(origin_id, idx) for idx in chosen]
            side = resolution_for(config, entry, config.build.variant)
            add_shards(split, model, samples, side * side, entry)
    for split, source_splits in ORIGIN_SPLITS.items():
        samples = sorted((o, -1) for s in source_splits for o in origins_by_split.get(s, []))
        add_shards(split, ORIGIN_MODEL, samples, 512 * 512)
    return Plan(
        seed=config.seed,
        variant=config.build.variant,
        config_digest=config_digest(config, registry),
        shards=shards,
        unplanned=unplanned,
    )


def _check_denoising_steps(config: DatasetConfig, entry) -> None:
    """img2img denoises int(steps x strength) steps; zero makes every sample fail, so say it now."""
    override = config.models.get(entry.key)
    steps = (override and override.num_inference_steps) or entry.defaults.num_inference_steps
    strength = (override and override.strength) or entry.defaults.strength
    if strength is not None and int(steps * strength) < 1:
        raise OripidError(
            f"models.{entry.key}: num_inference_steps {steps} x strength {strength} leaves no denoising step; "
            f"raise num_inference_steps to at least {math.ceil(1 / strength)} or the strength"
        )


def resolution_for(config: DatasetConfig, entry, variant: str) -> int:
    """The square side a model generates at: the tiny variant's, an override, or the native one."""
    if variant == "tiny":
        return entry.tiny.resolution
    override = config.models.get(entry.key)
    if override is not None and isinstance(override.resolution, int):
        return override.resolution
    return entry.native_resolution


def is_done(workdir: Path, shard: ShardPlan) -> bool:
    """Finished, and from the settings the plan holds now (stats json last, with the shard digest)."""
    stats = layout.shard_paths(workdir, shard.split, shard.model, shard.index)["stats"]
    if not stats.is_file():
        return False
    try:
        return json.loads(stats.read_text()).get("digest") == shard.digest
    except (OSError, json.JSONDecodeError):
        return False


def write_plan(plan: Plan, workdir: Path) -> Path:
    path = Path(workdir) / layout.PLAN
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(plan.to_json())
    tmp.replace(path)
    return path


def read_plan(workdir: Path) -> Plan:
    path = Path(workdir) / layout.PLAN
    if not path.is_file():
        raise OripidError(f"{path}: no plan; run `oripid plan --workdir {workdir}` first")
    return Plan.from_json(path.read_text())
