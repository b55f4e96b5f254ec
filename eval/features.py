"""`oripid features`: VAE latents of every image in the shards, as the reference method embeds them.

As in the public ID2 code: resize to 256x256, scale to [-1, 1], encode with SD2's VAE, take the
latent (the mean by default; `sample` draws from it with a per-image seed), flatten: 4x32x32 =
4096 values. Features are cached per shard as safetensors beside the data
(`features/<split>/<model>/<stem>.safetensors`: tensor `features` [n, D] and the keys in order),
so they can be published next to the images as OriPID does.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from oripid.builders import layout
from oripid.errors import OripidError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = ("jpg", "png", "webp")


@dataclass(frozen=True)
class FeatureSettings:
    vae_model: str = "sd2"
    variant: str = "real"
    size: int | None = None  # None: 256 for real VAEs, the tiny variant's resolution for tiny ones
    latent: str = "mean"  # "mean" (deterministic) or "sample" (as the public code)
    batch_size: int = 32
    dtype: str | None = None  # None: float16 on GPU, float32 on CPU

    def image_size(self, entry) -> int:
        if self.size is not None:
            return self.size
        return entry.tiny.resolution if self.variant == "tiny" else 256


def to_model_input(images: list[Image.Image], size: int) -> torch.Tensor:
    """Resize to size x size (bilinear, antialiased), scale to [-1, 1]: Normalize(0.5, 0.5)."""
    arrays = [
        np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)
        for image in images
    ]
    batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 255.0
    return batch * 2.0 - 1.0


@torch.no_grad()
def encode(vae, pixels: torch.Tensor, latent: str = "mean", seeds: list[int] | None = None) -> torch.Tensor:
    """Flattened latents [n, C*h*w] in float32; no scaling factor, as the public code."""
    pixels = pixels.to(device=vae.device, dtype=vae.dtype)
    encoded = vae.encode(pixels)
    if hasattr(encoded, "latent_dist"):
        dist = encoded.latent_dist
        if latent == "sample":
            noise = torch.stack(
                [torch.randn(dist.mean.shape[1:], generator=torch.Generator().manual_seed(s)) for s in seeds]
            ).to(dist.mean)
            z = dist.mean + dist.std * noise
        else:
            z = dist.mean
    else:  # VQModel (Kandinsky's MoVQ) returns its latents directly
        z = encoded.latents
    return z.float().flatten(1).cpu()


def feature_path(workdir: Path, split: str, model: str, stem: str) -> Path:
    return Path(workdir) / layout.FEATURES_DIR / split / model / f"{stem}.safetensors"


def _every_shard(urls):
    return urls


def iter_shard_images(tar_path: Path):
    """(key, PIL image) for every sample of a shard, in order."""
    import webdataset as wds

    # Shards are divided between processes by oripid, so webdataset must not split them again.
    dataset = wds.WebDataset(str(tar_path), shardshuffle=False, empty_check=False, nodesplitter=_every_shard)
    for sample in dataset:
        ext = next((e for e in IMAGE_EXTENSIONS if e in sample), None)
        if ext is None:
            raise OripidError(
                f"{tar_path}: sample {sample['__key__']} has no image member (jpg, png or webp)"
            )
        yield sample["__key__"], Image.open(io.BytesIO(sample[ext]))


def extract_shard(vae, tar_path: Path, out_path: Path, settings: FeatureSettings, size: int) -> int:
    from safetensors.torch import save_file

    from oripid.builders.seeds import keyed_int

    keys, chunks, batch, batch_keys = [], [], [], []

    def flush():
        if batch:
            seeds = [keyed_int("feature", key) for key in batch_keys]
            chunks.append(encode(vae, to_model_input(batch, size), settings.latent, seeds))
            keys.extend(batch_keys)
            batch.clear()
            batch_keys.clear()

    for key, image in iter_shard_images(tar_path):
        batch.append(image)
        batch_keys.append(key)
        if len(batch) >= settings.batch_size:
            flush()
    flush()
    features = torch.cat(chunks) if chunks else torch.zeros((0, 0))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(".tmp")
    metadata = {
        "index_sha256": _index_sha256(tar_path),
        "keys": json.dumps(keys),
        "vae_model": settings.vae_model,
        "variant": settings.variant,
        "latent": settings.latent,
        "size": str(size),
    }
    save_file({"features": features.to(torch.float16).contiguous()}, str(tmp), metadata=metadata)
    os.replace(tmp, out_path)
    return len(keys)


def _index_sha256(tar: Path) -> str:
    return hashlib.sha256(tar.with_suffix(".parquet").read_bytes()).hexdigest()


def missing_features(workdir: str | Path) -> list[tuple[Path, Path]]:
    """(shard tar, feature file) for every shard whose features are absent or were computed from
    an earlier version of the shard (the feature file records the hash of the shard's index)."""
    from safetensors import safe_open

    todo = []
    for tar in sorted((Path(workdir) / layout.DATA_DIR).rglob("*.tar")):
        split, model = tar.parent.parent.name, tar.parent.name
        out = feature_path(workdir, split, model, tar.name.removesuffix(".tar"))
        if out.is_file():
            with safe_open(str(out), framework="np") as handle:
                if handle.metadata().get("index_sha256") == _index_sha256(tar):
                    continue
        todo.append((tar, out))
    return todo


def extract_features(
    workdir: str | Path, settings: FeatureSettings | None = None, registry=None, state=None
) -> int:
    """Features for every finished shard that has none yet; shards are split between processes."""
    from oripid.builders.build import distributed_state
    from oripid.models_registry.loader import load_vae
    from oripid.models_registry.registry import load_registry

    workdir = Path(workdir)
    settings = settings or FeatureSettings()
    registry = registry or load_registry(workdir)
    entry = registry.get(settings.vae_model)
    state = state or distributed_state()
    if not list((workdir / layout.DATA_DIR).rglob("*.tar")):
        raise OripidError(
            f"{workdir / layout.DATA_DIR}: no shards; run `oripid build --workdir {workdir}` first"
        )
    todo = missing_features(workdir)
    if settings.variant == "tiny":
        from oripid.models_registry.loader import tiny_path

        with state.main_process_first():
            tiny_path(entry)
    state.wait_for_everyone()
    mine = todo[state.process_index :: state.num_processes]
    if not mine:
        state.wait_for_everyone()
        return 0
    device = state.device
    dtype = settings.dtype or ("float16" if device.type == "cuda" else "float32")
    vae = load_vae(entry, settings.variant, device=device, dtype=dtype)
    size = settings.image_size(entry)
    count = 0
    for tar, out in mine:
        count += extract_shard(vae, tar, out, settings, size)
    log.info(
        "rank %d/%d: features of %d images in %d shards",
        state.process_index,
        state.num_processes,
        count,
        len(mine),
    )
    state.wait_for_everyone()
    return count


def load_features(workdir: str | Path, split: str, model: str) -> tuple[list[str], np.ndarray]:
    """All keys and features [n, D] of one (split, model), in shard order."""
    from safetensors import safe_open

    folder = Path(workdir) / layout.FEATURES_DIR / split / model
    keys, arrays = [], []
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), framework="np") as handle:
            keys += json.loads(handle.metadata()["keys"])
            arrays.append(handle.get_tensor("features").astype(np.float32))
    if not arrays:
        raise OripidError(f"{folder}: no features; run `oripid features --workdir {workdir}`")
    return keys, np.concatenate(arrays)
