"""`oripid plan --estimate`: images, storage and GPU-hours per model, from FLOPs counted on the
registry's full-size architectures (instantiated on the meta device: no weights, no memory).

Per image: the denoiser runs int(steps x strength) times on a batch of 2 (classifier-free
guidance; 1 for guidance-distilled models or guidance_scale <= 1), the VAE encodes the origin
once and decodes the result once. Text encoders run once
per prompt and are left out (under 1% for these models).
"""

from __future__ import annotations

import logging
from functools import lru_cache

import torch
from torch.utils.flop_counter import FlopCounterMode

from oripid.builders.generate import settings_for
from oripid.builders.plan import _BYTES_PER_PIXEL, ORIGIN_MODEL, Plan, resolution_for
from oripid.config import DatasetConfig
from oripid.errors import OripidError
from oripid.models_registry.architecture import build_component
from oripid.models_registry.schema import ModelEntry

# Text sequence lengths the pipelines use by default.
log = logging.getLogger(__name__)
SEQUENCE = {"UNet2DConditionModel": 77, "Kandinsky3UNet": 128, "SD3Transformer2DModel": 77 + 256}
KOLORS_SEQUENCE = 256


def _count(function) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        function()
    return counter.get_total_flops()


def denoiser_inputs(entry: ModelEntry, side: int, batch: int = 2) -> dict:
    """Meta tensors shaped as the pipeline feeds the denoiser (batch 2: classifier-free guidance)."""
    component = entry.architecture[entry.denoiser_name]
    if component.class_name not in SEQUENCE:
        raise OripidError(
            f"model {entry.key!r}: the estimate has no input recipe for {component.class_name} "
            f"(known: {', '.join(SEQUENCE)})"
        )
    config = component.config
    latent = side // 8
    meta = {"device": "meta"}
    if component.class_name == "SD3Transformer2DModel":
        return {
            "hidden_states": torch.empty(batch, config["in_channels"], latent, latent, **meta),
            "encoder_hidden_states": torch.empty(
                batch, SEQUENCE[component.class_name], config["joint_attention_dim"], **meta
            ),
            "pooled_projections": torch.empty(batch, config["pooled_projection_dim"], **meta),
            "timestep": torch.empty(batch, **meta),
        }
    if component.class_name == "Kandinsky3UNet":
        sequence = SEQUENCE[component.class_name]
        return {
            "sample": torch.empty(batch, config["in_channels"], latent, latent, **meta),
            "timestep": torch.empty(batch, **meta),
            "encoder_hidden_states": torch.empty(batch, sequence, config["encoder_hid_dim"], **meta),
            "encoder_attention_mask": torch.ones(batch, sequence, **meta),
        }
    text_dim = config.get("encoder_hid_dim") or config["cross_attention_dim"]
    sequence = KOLORS_SEQUENCE if config.get("encoder_hid_dim") else SEQUENCE[component.class_name]
    inputs = {
        "sample": torch.empty(batch, config.get("in_channels", 4), latent, latent, **meta),
        "timestep": torch.empty(batch, **meta),
        "encoder_hidden_states": torch.empty(batch, sequence, text_dim, **meta),
    }
    if config.get("addition_embed_type") == "text_time":
        time_ids = 6
        pooled = (
            config["projection_class_embeddings_input_dim"] - time_ids * config["addition_time_embed_dim"]
        )
        inputs["added_cond_kwargs"] = {
            "text_embeds": torch.empty(batch, pooled, **meta),
            "time_ids": torch.empty(batch, time_ids, **meta),
        }
    return inputs


@lru_cache(maxsize=32)
def _flops_per_call(entry_json: str, side: int, batch: int) -> tuple[int, int]:
    """(denoiser FLOPs per step, VAE encode + decode FLOPs per image) at `side` pixels."""
    entry = ModelEntry.model_validate_json(entry_json)
    inputs = denoiser_inputs(entry, side, batch)  # first: it names a denoiser it cannot feed
    denoiser = build_component(entry.architecture[entry.denoiser_name])
    denoiser_flops = _count(lambda: denoiser(**inputs))
    vae_name = "vae" if "vae" in entry.architecture else "movq"
    vae = build_component(entry.architecture[vae_name])
    pixels = torch.empty(1, 3, side, side, device="meta")

    def vae_round_trip():
        encoded = vae.encode(pixels)
        latents = encoded.latent_dist.mean if hasattr(encoded, "latent_dist") else encoded.latents
        vae.decode(latents)

    return denoiser_flops, _count(vae_round_trip)


def flops_per_image(
    entry: ModelEntry, side: int, steps: int, strength: float | None, guidance_scale: float = 7.5
) -> float:
    batch = 2 if entry.classifier_free_guidance and guidance_scale > 1 else 1
    denoiser, vae = _flops_per_call(entry.model_dump_json(), side, batch)
    denoising_steps = max(1, int(steps * (strength if strength is not None else 1.0)))
    return denoiser * denoising_steps + vae


def estimate_plan(
    plan: Plan, config: DatasetConfig, utilization: float = 0.4, peak_tflops: float = 989.0, registry=None
) -> list[dict]:
    """One row per (split, model): images, storage, TFLOP per image and GPU-hours at the stated
    utilization of a GPU with `peak_tflops` dense bf16 (H100 SXM: 989)."""
    from oripid.models_registry.registry import load_registry

    registry = registry or load_registry()
    counts: dict[tuple[str, str], int] = {}
    for shard in plan.shards:
        counts[(shard.split, shard.model)] = counts.get((shard.split, shard.model), 0) + len(shard.samples)
    rows = []
    bytes_per_pixel = _BYTES_PER_PIXEL[config.image.format]
    for (split, model), images in counts.items():
        if model == ORIGIN_MODEL:
            rows.append(
                {
                    "split": split,
                    "model": model,
                    "images": images,
                    "storage_GB": round(images * 512 * 512 * bytes_per_pixel / 1e9, 2),
                    "TFLOP/img": "-",
                    "GPU_hours": "-",
                }
            )
            continue
        entry = registry.get(model)
        side = resolution_for(config, entry, "real")
        settings = settings_for(entry, config.models.get(model), side)
        try:
            flops = flops_per_image(
                entry, side, settings.num_inference_steps, settings.strength, settings.guidance_scale
            )
        except OripidError as exc:  # an added model the estimate cannot run: say so, keep the rest
            log.warning("%s", exc)
            rows.append(
                {
                    "split": split,
                    "model": model,
                    "images": images,
                    "storage_GB": round(images * side * side * bytes_per_pixel / 1e9, 2),
                    "TFLOP/img": "n/a",
                    "GPU_hours": "n/a",
                }
            )
            continue
        tflop = flops / 1e12
        hours = images * tflop / (peak_tflops * utilization) / 3600
        rows.append(
            {
                "split": split,
                "model": model,
                "images": images,
                "storage_GB": round(images * side * side * bytes_per_pixel / 1e9, 2),
                "TFLOP/img": round(tflop, 1),
                "GPU_hours": round(hours, 1),
            }
        )
    return rows
