"""`oripid build`: every process builds the pending shards it is given, model by model.

Run it plainly for one process or with `accelerate launch -m oripid build` for many. Shards,
not samples, are divided between processes, so the files do not depend on the world size.
"""

from __future__ import annotations

import gc
import json
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq
import torch
from PIL import Image, ImageOps

from oripid import __version__
from oripid.builders import layout
from oripid.builders.generate import Img2ImgRunner, settings_for
from oripid.builders.plan import (
    ORIGIN_MODEL,
    ShardPlan,
    config_digest,
    is_done,
    read_plan,
    resolution_for,
)
from oripid.builders.seeds import sample_seed
from oripid.builders.shard_writer import BackgroundShardWriter, Sample
from oripid.config import DatasetConfig, load_config
from oripid.errors import OripidError

log = logging.getLogger(__name__)


@dataclass
class BuildSummary:
    rank: int
    world_size: int
    shards_built: int = 0
    samples_written: int = 0
    samples_failed: int = 0
    seconds: float = 0.0
    per_model: dict[str, dict] = field(default_factory=dict)


def distributed_state():
    """Accelerate's process state. Without an accelerator, ask for CPU (gloo) explicitly: a plain
    PartialState() then reports one process even when the launcher started several."""
    from datetime import timedelta

    from accelerate import PartialState

    # A process that finishes early waits for the others at the last barrier: give it a day,
    # not the default half hour, before the process group gives up.
    return PartialState(cpu=not torch.cuda.is_available(), timeout=timedelta(hours=24))


def load_origin(workdir: Path, origin_id: str) -> Image.Image:
    with Image.open(layout.origin_image_path(workdir, origin_id)) as image:
        return image.convert("RGB")


def fit_square(image: Image.Image, side: int, policy: str) -> Image.Image:
    if policy == "stretch":
        return image.resize((side, side), Image.Resampling.BICUBIC)
    return ImageOps.fit(image, (side, side), Image.Resampling.BICUBIC)


def _read_prompts(workdir: Path, wanted: set[tuple[str, int]]) -> dict[tuple[str, int], str]:
    table = pq.read_table(workdir / layout.PROMPTS_TABLE, columns=["origin_id", "prompt_idx", "prompt"])
    prompts = {}
    for origin_id, idx, prompt in zip(
        *(table.column(c).to_pylist() for c in table.column_names), strict=True
    ):
        if (origin_id, int(idx)) in wanted:
            prompts[(origin_id, int(idx))] = prompt
    return prompts


def _batches(samples: list[tuple[str, int]], batch_size: int) -> list[list[tuple[str, int]]]:
    """Batches follow origins: one origin's prompts go together, a batch never mixes a split origin."""
    batches: list[list] = []
    for sample in samples:
        if batches and len(batches[-1]) < batch_size:
            batches[-1].append(sample)
        else:
            batches.append([sample])
    return batches


class _Progress:
    """One bar on the main process: its own samples plus other processes' finished shards."""

    def __init__(self, enabled: bool, total: int, workdir: Path):
        from tqdm.auto import tqdm

        self.enabled, self.workdir = enabled, workdir
        self.bar = tqdm(total=total, unit="img", desc="build", disable=not enabled, dynamic_ncols=True)
        self.others = 0

    def add(self, count: int) -> None:
        self.bar.update(count)

    def refresh_others(self, pending_others: list[ShardPlan]) -> None:
        if not self.enabled:
            return
        others = sum(len(s.samples) for s in pending_others if is_done(self.workdir, s))
        self.bar.update(others - self.others)
        self.others = others

    def close(self) -> None:
        self.bar.close()


def build(
    workdir: str | Path,
    config: DatasetConfig | None = None,
    registry=None,
    state=None,
) -> BuildSummary:
    """Build every pending shard of the plan that falls to this process; return its summary."""
    from oripid.models_registry.loader import load_pipeline, resolved_revision, tiny_path
    from oripid.models_registry.registry import load_registry

    # 1. Check inputs: the config and the plan made from it.
    workdir = Path(workdir)
    config = config or load_config(workdir / layout.CONFIG)
    plan = read_plan(workdir)
    registry = registry or load_registry(workdir)
    if plan.config_digest != config_digest(config, registry):
        raise OripidError(
            f"{workdir / layout.PLAN}: made from another config or registry entry; "
            f"rerun `oripid plan --workdir {workdir}`"
        )
    state = state or distributed_state()
    rank, world = state.process_index, state.num_processes

    # 2. Agree on the pending shards before anyone builds (the main process's view, so that a
    # shared filesystem's stale metadata cannot give two processes different lists), then take
    # every world-th one.
    pending_ids = [i for i, shard in enumerate(plan.shards) if not is_done(workdir, shard)]
    if world > 1:
        from accelerate.utils import broadcast_object_list

        holder = [pending_ids if state.is_main_process else None]
        broadcast_object_list(holder)
        pending_ids = holder[0]
    pending = [plan.shards[i] for i in pending_ids]
    mine = pending[rank::world]
    others = [shard for i, shard in enumerate(pending) if i % world != rank]
    log.info(
        "rank %d of world size %d: %d of %d pending shards (%d samples)",
        rank,
        world,
        len(mine),
        len(pending),
        sum(len(s.samples) for s in mine),
    )
    for shard in mine:  # what a killed run left behind
        layout.shard_paths(workdir, shard.split, shard.model, shard.index)["partial"].unlink(missing_ok=True)

    prompts = _read_prompts(
        workdir, {s for shard in mine if shard.model != ORIGIN_MODEL for s in shard.samples}
    )
    writer = BackgroundShardWriter(
        workdir, config.image.format, config.image.quality, config.build.writer_queue
    )
    progress = _Progress(state.is_main_process, sum(len(s.samples) for s in pending), workdir)
    summary = BuildSummary(rank=rank, world_size=world)
    log_path = workdir / layout.LOGS_DIR / f"build-rank{rank}.jsonl"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    # 3. Model by model: load the pipeline once, build its shards, free it.
    by_model: dict[str, list[ShardPlan]] = defaultdict(list)
    for shard in mine:
        by_model[shard.model].append(shard)
    if config.build.variant == "tiny":
        with state.main_process_first():  # build and save each tiny pipeline once
            for model in {s.model for s in pending if s.model != ORIGIN_MODEL}:
                tiny_path(registry.get(model))
    device = torch.device(config.build.device) if config.build.device else state.device
    if device.type == "cpu":
        torch.set_num_threads(config.build.cpu_threads)
    try:
        for model, shards in by_model.items():
            if model == ORIGIN_MODEL:
                runner, meta_base, side = None, {}, None
            else:
                entry = registry.get(model)
                override = config.models.get(model)
                dtype = override.dtype if override and override.dtype else None
                pipeline = load_pipeline(
                    entry, config.build.variant, device=device, dtype=dtype, registry=registry
                )
                if override and override.scheduler:
                    import diffusers

                    pipeline.scheduler = getattr(diffusers, override.scheduler).from_config(
                        pipeline.scheduler.config
                    )
                side = resolution_for(config, entry, config.build.variant)
                settings = settings_for(entry, override, side)
                runner = Img2ImgRunner(
                    pipeline, entry, settings, config.build.min_oom_batch_size, config.build.nonfinite_retries
                )
                meta_base = {
                    "model": model,
                    "checkpoint": entry.checkpoint if config.build.variant == "real" else f"tiny:{entry.key}",
                    "revision": resolved_revision(entry, config.build.variant),
                    "pipeline": entry.pipeline,
                    "license": entry.license,
                    "scheduler": type(pipeline.scheduler).__name__,
                    "strength": settings.strength,
                    "guidance_scale": settings.guidance_scale,
                    "num_inference_steps": settings.num_inference_steps,
                    "dtype": str(
                        next(pipeline.components[entry.denoiser_name].parameters()).dtype
                    ).removeprefix("torch."),
                    "variant": config.build.variant,
                    "oripid_version": __version__,
                }
            for shard in shards:
                shard_start = time.perf_counter()
                if runner is None:
                    counts = _build_origin_shard(workdir, shard, writer, progress)
                else:
                    counts = _build_generated_shard(
                        workdir, config, shard, runner, meta_base, side, prompts, writer, progress
                    )
                seconds = time.perf_counter() - shard_start
                summary.shards_built += 1
                summary.samples_written += counts[0]
                summary.samples_failed += counts[1]
                per_model = summary.per_model.setdefault(model, {"images": 0, "seconds": 0.0})
                per_model["images"] += counts[0]
                per_model["seconds"] += seconds
                record = {
                    "rank": rank,
                    "world_size": world,
                    "shard": shard.stem,
                    "images": counts[0],
                    "failed": counts[1],
                    "seconds": round(seconds, 3),
                    "images_per_second": round(counts[0] / seconds, 3) if seconds else None,
                }
                with log_path.open("a") as out:
                    out.write(json.dumps(record) + "\n")
                log.info(
                    "rank %d/%d: %s: %d images, %d failed, %.2f img/s",
                    rank,
                    world,
                    shard.stem,
                    counts[0],
                    counts[1],
                    record["images_per_second"] or 0.0,
                )
                progress.refresh_others(others)
            if runner is not None:
                del runner, pipeline
                gc.collect()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
    finally:
        writer.close()
        progress.close()
    summary.seconds = time.perf_counter() - started
    state.wait_for_everyone()
    return summary


def _build_generated_shard(workdir, config, shard, runner, meta_base, side, prompts, writer, progress):
    writer.open(
        shard.split,
        shard.model,
        shard.index,
        len(shard.samples),
        _settings_json(meta_base, side),
        shard.digest,
    )
    written = failed = 0
    for batch in _batches(shard.samples, config.build.batch_size):
        # 1. Prepare inputs; a sample whose origin or prompt is missing is recorded, not dropped.
        seeds = {s: sample_seed(config.seed, shard.model, s[0], s[1]) for s in batch}
        ready, images, failures = [], [], {}
        for origin_id, idx in batch:
            if (origin_id, idx) not in prompts:
                failures[(origin_id, idx)] = "prompt_missing"
                continue
            try:
                images.append(fit_square(load_origin(workdir, origin_id), side, config.build.resize))
                ready.append((origin_id, idx))
            except (OSError, ValueError) as exc:
                failures[(origin_id, idx)] = f"origin_unreadable: {exc}"
        # 2. Generate.
        results = (
            runner.generate(images, [prompts[s] for s in ready], [seeds[s] for s in ready]) if ready else []
        )
        generated = dict(zip(ready, results, strict=True))
        # 3. Hand every sample, in plan order, to the writer.
        for origin_id, idx in batch:
            result = generated.get((origin_id, idx))
            image = result.image if result is not None else None
            failure = failures.get((origin_id, idx)) or (result.failure if result is not None else None)
            meta = {
                **meta_base,
                "origin_id": origin_id,
                "prompt": prompts.get((origin_id, idx)),
                "prompt_idx": idx,
                "seed": seeds[(origin_id, idx)],
                "split": shard.split,
            }
            writer.write(
                Sample(
                    layout.sample_key(origin_id, shard.model, idx),
                    origin_id,
                    idx,
                    seeds[(origin_id, idx)],
                    image,
                    meta,
                    failure,
                )
            )
            written += image is not None
            failed += image is None
        progress.add(len(batch))
    writer.finish()
    return written, failed


def _build_origin_shard(workdir, shard, writer, progress):
    """Gallery and training-origin shards: each origin image, re-encoded in the dataset's format."""
    writer.open(
        shard.split,
        shard.model,
        shard.index,
        len(shard.samples),
        {"oripid_version": __version__},
        shard.digest,
    )
    written = failed = 0
    for origin_id, _ in shard.samples:
        meta = {
            "origin_id": origin_id,
            "split": shard.split,
            "model": ORIGIN_MODEL,
            "oripid_version": __version__,
        }
        try:
            image = load_origin(workdir, origin_id)
            writer.write(Sample(origin_id, origin_id, -1, -1, image, meta))
            written += 1
        except (OSError, ValueError) as exc:
            writer.write(Sample(origin_id, origin_id, -1, -1, None, meta, f"origin_unreadable: {exc}"))
            failed += 1
        progress.add(1)
    writer.finish()
    return written, failed


def _settings_json(meta_base: dict, side: int) -> dict:
    settings = {k: v for k, v in meta_base.items() if k not in ("oripid_version",)}
    settings.update(width=side, height=side)
    return settings
