"""One loader for every stage: `load_pipeline(key, variant="real" | "tiny")`.

Both variants end in the same `from_pretrained` call: the tiny variant is a random-weight pipeline
built in code and saved once with `save_pretrained`, so tests exercise the real loading path.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Literal

import torch

from oripid.errors import OripidError
from oripid.models_registry.registry import Registry, load_registry
from oripid.models_registry.schema import ModelEntry
from oripid.models_registry.tiny import FAMILIES, build_tiny

log = logging.getLogger(__name__)

Variant = Literal["real", "tiny"]
TINY_REVISION = "tiny"


def tiny_cache_root() -> Path:
    return Path(os.environ.get("ORIPID_TINY_CACHE", Path.home() / ".cache" / "oripid" / "tiny"))


def _tiny_builder(entry: ModelEntry):
    spec = entry.tiny
    if spec.family is not None:
        if spec.family not in FAMILIES:
            raise OripidError(
                f"model {entry.key!r}: field 'tiny.family': unknown family {spec.family!r}; "
                f"built-in families: {', '.join(FAMILIES)}, or give tiny.builder: 'module:function'"
            )
        return spec.family
    module_name, _, function_name = spec.builder.partition(":")
    try:
        return getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as exc:
        raise OripidError(
            f"model {entry.key!r}: field 'tiny.builder': cannot import {spec.builder!r} ({exc}); "
            "give an importable 'package.module:function'"
        ) from None


def tiny_seed(key: str) -> int:
    """Each model's tiny weights come from its own fixed seed, so SDXL fine-tunes differ from SDXL."""
    return int.from_bytes(hashlib.sha256(f"oripid-tiny:{key}".encode()).digest()[:4], "little")


def tiny_path(entry: ModelEntry, cache_root: Path | None = None) -> Path:
    """Build and save the tiny pipeline once; later calls (and other processes) reuse the folder."""
    import diffusers
    import transformers

    spec = f"{entry.key}|{entry.pipeline}|{entry.tiny.model_dump_json()}|{diffusers.__version__}|{transformers.__version__}"
    folder = (
        cache_root or tiny_cache_root()
    ) / f"{entry.key}-{hashlib.sha256(spec.encode()).hexdigest()[:12]}"
    if (folder / "model_index.json").is_file():
        return folder
    if (
        torch.distributed.is_available()
        and torch.distributed.is_initialized()
        and torch.distributed.get_rank() != 0
    ):
        # transformers writes weights only on rank 0 of a process group: a folder saved here would
        # lack them. Callers build tiny pipelines under `main_process_first()`.
        raise OripidError(f"tiny pipeline {folder} must be built by the main process first")
    folder.parent.mkdir(parents=True, exist_ok=True)
    pipeline = build_tiny(_tiny_builder(entry), seed=tiny_seed(entry.key))
    expected = getattr(diffusers, entry.pipeline)
    if not isinstance(pipeline, expected):
        raise OripidError(
            f"model {entry.key!r}: the tiny builder made a {type(pipeline).__name__}, but field 'pipeline' says "
            f"{entry.pipeline}; make them agree"
        )
    # Save beside the target and rename: several processes may build the same tiny model at once.
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    pipeline.save_pretrained(staging, safe_serialization=True)
    try:
        staging.rename(folder)
    except OSError:  # another process won the race; its folder is identical
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def resolved_revision(entry: ModelEntry, variant: Variant, revision: str | None = None) -> str:
    """The revision actually used, for the provenance of every sample: a pinned one as given,
    otherwise the commit the Hub cache resolved the default branch to."""
    if variant == "tiny":
        return TINY_REVISION
    if revision or entry.revision:
        return revision or entry.revision
    if Path(entry.checkpoint).is_dir():
        return "local"
    from huggingface_hub import constants

    ref = Path(constants.HF_HUB_CACHE) / f"models--{entry.checkpoint.replace('/', '--')}" / "refs" / "main"
    return ref.read_text().strip() if ref.is_file() else "unresolved"


def load_pipeline(
    key: str | ModelEntry,
    variant: Variant = "real",
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    registry: Registry | None = None,
    revision: str | None = None,
):
    """Load a model's img2img pipeline with oripid's pitfall fixes applied.

    >>> pipe = load_pipeline("sdxl", variant="tiny", device="cpu")   # doctest: +SKIP
    >>> pipe = load_pipeline("sd3", device="cuda")                     # doctest: +SKIP  (gated: log in first)

    `dtype` defaults to the entry's dtype for real checkpoints on a GPU and float32 otherwise
    (half precision on a CPU is slow and poorly supported).
    """
    import diffusers
    import transformers

    # 1. Resolve the entry and what to load from.
    entry = key if isinstance(key, ModelEntry) else (registry or load_registry()).get(key)
    if variant not in ("real", "tiny"):
        raise OripidError(f"variant must be 'real' or 'tiny', not {variant!r}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dtype is None:
        dtype = entry.dtype if (variant == "real" and device.type != "cpu") else "float32"
    torch_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    if variant == "tiny":
        location, load_revision, load_variant = str(tiny_path(entry)), None, None
    else:
        location, load_revision, load_variant = entry.checkpoint, revision or entry.revision, entry.variant

    # 2. Load through diffusers' from_pretrained, the same call for both variants. Their
    # per-component progress bars would drown the builder's own progress display.
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    pipeline_class = getattr(diffusers, entry.pipeline)
    init_kwargs = {"add_watermarker": False} if entry.disable_watermarker else {}
    try:
        pipeline = pipeline_class.from_pretrained(
            location, revision=load_revision, variant=load_variant, dtype=torch_dtype, **init_kwargs
        )
    except OSError as exc:
        hint = " (gated: accept its licence on the Hub, then `hf auth login`)" if entry.gated else ""
        raise OripidError(f"model {entry.key!r}: cannot load {location!r}{hint}: {exc}") from exc

    # 3. Apply the entry's settings and known pitfalls.
    if entry.scheduler:
        scheduler_class = getattr(diffusers, entry.scheduler, None)
        if scheduler_class is None:
            raise OripidError(f"model {entry.key!r}: field 'scheduler': diffusers has no {entry.scheduler!r}")
        pipeline.scheduler = scheduler_class.from_config(pipeline.scheduler.config)
    if entry.vae_force_upcast and getattr(pipeline, "vae", None) is not None:
        pipeline.vae.register_to_config(force_upcast=True)  # fp16 SDXL VAEs overflow to NaN
    if entry.disable_watermarker and hasattr(pipeline, "watermark"):
        pipeline.watermark = None
    pipeline.set_progress_bar_config(disable=True)
    return pipeline.to(device)


def load_vae(
    key: str | ModelEntry,
    variant: Variant = "real",
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    registry: Registry | None = None,
):
    """Only a model's image autoencoder (`vae`, or Kandinsky's `movq`), through from_pretrained."""
    import diffusers

    entry = key if isinstance(key, ModelEntry) else (registry or load_registry()).get(key)
    subfolder = "vae" if "vae" in entry.architecture else "movq"
    component = entry.architecture[subfolder]
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch_dtype = getattr(torch, dtype) if isinstance(dtype, str) else (dtype or torch.float32)
    vae_class = getattr(diffusers, component.class_name)
    if variant == "tiny":
        location, revision = str(tiny_path(entry)), None
    else:
        location, revision = entry.checkpoint, entry.revision
    try:
        vae = vae_class.from_pretrained(location, subfolder=subfolder, revision=revision, dtype=torch_dtype)
    except OSError as exc:
        raise OripidError(
            f"model {entry.key!r}: cannot load its {subfolder} from {location!r}: {exc}"
        ) from exc
    return vae.to(device).eval()
