"""The dataset config (`oripid.yaml`), validated with errors that name the field and the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from oripid.builders.ingest import IngestConfig
from oripid.builders.splits import SplitsConfig
from oripid.errors import OripidError, validated
from oripid.prompts.generate import PromptsConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelOverride(_Strict):
    """Per-model settings that replace the registry's img2img defaults for this dataset."""

    strength: float | None = Field(None, gt=0, le=1)
    guidance_scale: float | None = Field(None, ge=0)
    num_inference_steps: int | None = Field(None, ge=1)
    resolution: int | Literal["native"] | None = Field(
        None, description="square output side in pixels, or 'native' for the model's own"
    )
    scheduler: str | None = None
    dtype: Literal["float16", "bfloat16", "float32"] | None = None


class SplitBuild(_Strict):
    """Which models generate a split, and how many prompts of each origin they use."""

    models: list[str] = Field(..., min_length=1)
    prompts_per_origin: int = Field(..., ge=1)

    @field_validator("models")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        repeated = sorted({m for m in value if value.count(m) > 1})
        if repeated:
            raise ValueError(f"{repeated} listed more than once: each model builds a split once")
        return value


class ImageFormat(_Strict):
    format: Literal["jpg", "png", "webp"] = "jpg"
    quality: int = Field(95, ge=1, le=100, description="jpg and webp quality; png is lossless")


class ShardSize(_Strict):
    max_samples: int = Field(1000, ge=1)
    # The Hub suggests shards of about 1 GB; bytes are estimated from format and resolution at plan time.
    max_bytes: int = Field(1_000_000_000, ge=1_000_000)


class BuildSettings(_Strict):
    variant: Literal["real", "tiny"] = "real"
    batch_size: int = Field(8, ge=1, description="images per pipeline call; an origin's prompts go together")
    device: str | None = Field(None, description="default: the process's accelerator, else cpu")
    nonfinite_retries: int = Field(1, ge=0, description="retries of NaN/inf/black outputs, VAE in float32")
    min_oom_batch_size: int = Field(1, ge=1)
    writer_queue: int = Field(64, ge=1, description="images waiting for the background writer")
    resize: Literal["center_crop", "stretch"] = "center_crop"
    cpu_threads: int = Field(
        1,
        ge=1,
        description="torch threads per process when generating on the CPU: float sums depend on the thread "
        "count, so it is fixed to keep the bytes the same whatever the number of processes",
    )


class ValidationThresholds(_Strict):
    """What `oripid validate` requires; None switches a check off. mAP values are fractions."""

    max_failed_fraction: float = Field(0.01, ge=0, le=1, description="failed / planned samples")
    min_map_seen: float | None = Field(0.5, ge=0, le=1, description="learned-W mAP on the seen model (SD2)")
    min_map_unseen: float | None = Field(0.3, ge=0, le=1, description="learned-W mean mAP on unseen models")
    min_gain_over_identity: float | None = Field(
        0.0, description="learned-W mean mAP minus raw-VAE-feature mAP, over all models"
    )


class ValidationSettings(_Strict):
    vae_model: str = Field("sd2", description="registry key whose VAE embeds images (the paper: SD2's)")
    latent: Literal["mean", "sample"] = "mean"
    feature_batch_size: int = Field(32, ge=1)
    method: Literal["closed-form", "sgd"] = Field(
        "closed-form",
        description="how the reference W is fitted: one streaming pass, or the public SGD recipe",
    )
    out_dim: int = Field(512, ge=1)
    sgd: dict = Field(
        default_factory=dict, description="overrides of the SGD recipe (epochs, iters_per_epoch, ...)"
    )
    seen_models: list[str] = Field(default_factory=lambda: ["sd2"])
    near_duplicate_threshold: int = Field(8, ge=0, le=64, description="phash distance counted as leakage")
    blur_radii: list[float] = Field(default_factory=lambda: [1.0, 2.0, 4.0])
    jpeg_qualities: list[int] = Field(default_factory=lambda: [90, 70, 50])
    robustness_queries_per_model: int = Field(500, ge=0, description="0 skips the robustness evaluation")
    thresholds: ValidationThresholds = Field(default_factory=ValidationThresholds)


class DatasetConfig(_Strict):
    name: str = "oripid"
    seed: int = Field(0, description="dataset seed; every image's seed derives from it")
    # The options of the stages before the build, each owned by its stage's module.
    origins: IngestConfig = Field(default_factory=IngestConfig)
    prompts: PromptsConfig = Field(default_factory=PromptsConfig)
    splits: SplitsConfig = Field(default_factory=SplitsConfig)
    generate: dict[str, SplitBuild] = Field(
        default_factory=lambda: {
            "train": SplitBuild(models=["sd2"], prompts_per_origin=20),
            "query": SplitBuild(
                models=["sd2", "sdxl", "opendalle", "colorfulxl", "kandinsky3", "sd3", "kolors"],
                prompts_per_origin=1,
            ),
        }
    )
    models: dict[str, ModelOverride] = Field(default_factory=dict)
    image: ImageFormat = Field(default_factory=ImageFormat)
    shards: ShardSize = Field(default_factory=ShardSize)
    build: BuildSettings = Field(default_factory=BuildSettings)
    validation: ValidationSettings = Field(default_factory=ValidationSettings)

    @field_validator("generate")
    @classmethod
    def _known_splits(cls, value: dict[str, SplitBuild]) -> dict[str, SplitBuild]:
        unknown = set(value) - {"train", "query"}
        if unknown:
            raise ValueError(
                f"unknown split(s) {sorted(unknown)}: generated splits are 'train' (from training origins) "
                "and 'query' (from test origins)"
            )
        return value


def parse_config(data: dict, source: str = "config") -> DatasetConfig:
    return validated(
        DatasetConfig,
        data,
        source,
        unknown_hint="remove it or check its spelling (`oripid init` writes every field)",
    )


def load_config(path: str | Path) -> DatasetConfig:
    path = Path(path)
    if not path.is_file():
        raise OripidError(f"{path}: no config file; write one with `oripid init --workdir {path.parent}`")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise OripidError(f"{path}: not valid YAML ({exc})") from None
    if data is not None and not isinstance(data, dict):
        raise OripidError(f"{path}: expected a mapping of config fields at the top level")
    return parse_config(data, str(path))


DEFAULT_CONFIG_TEXT = """\
# oripid dataset config: the OriPID defaults. Every field is optional; delete what you keep as is.
name: oripid
seed: 0                      # dataset seed: every image's seed is hash(seed, model, origin_id, prompt_idx)

# Origin ingest (`oripid origins ingest`), prompts (`oripid prompts generate`) and the origin
# splits (`oripid splits`). Sizes: an int counts origins, a float is a fraction, "rest" the remainder;
# `assignment: partition.csv` (origin_id or file, split) reproduces a released partition instead.
origins: {id_pattern: "T{index:06d}", min_side: 64, near_duplicate_threshold: 4}
prompts: {source: template, per_origin: 20}
splits: {train: 100000, test: null, distractor: 0, test_queries_per_model: 5000}

# Generated splits. `train`: SD2 generations of the training origins, 20 prompts each (2,000,000
# images for 100,000 origins). `query`: each model's generations of the test origins, one prompt
# each (chosen per model and origin by a keyed hash). Origins themselves are written as the
# `gallery` (test origins + distractors) and `train_origins` shards.
generate:
  train: {models: [sd2], prompts_per_origin: 20}
  query: {models: [sd2, sdxl, opendalle, colorfulxl, kandinsky3, sd3, kolors], prompts_per_origin: 1}

# Per-model overrides of the registry defaults (`oripid models show KEY` lists them), e.g.
# models:
#   sdxl: {strength: 0.6, guidance_scale: 5.0, num_inference_steps: 30, resolution: native, dtype: float16}
#   colorfulxl: {num_inference_steps: 8, guidance_scale: 1.5}     # the -Lightning variant
models: {}

image: {format: jpg, quality: 95}         # jpg | png | webp
shards: {max_samples: 1000, max_bytes: 1000000000}   # the Hub suggests shards of about 1 GB

build:
  variant: real              # real checkpoints; `tiny` runs offline random-weight pipelines (tests, demo)
  batch_size: 8              # images per pipeline call; an origin's prompts go together
  nonfinite_retries: 1       # NaN/inf/black outputs are retried with the VAE in float32
  min_oom_batch_size: 1      # out of memory halves the batch down to this, then records a failure
  writer_queue: 64
  resize: center_crop        # origins become square at the model's resolution: center_crop | stretch
  cpu_threads: 1             # CPU only: float sums depend on the thread count; fixed so that the
                             # bytes do not depend on the number of processes

# `oripid validate`: integrity, leakage and the reference linear-W evaluation; `oripid push`
# refuses data without a passing report. Thresholds are fractions; null switches a check off.
validation:
  vae_model: sd2             # whose VAE embeds images (the paper: SD2's); latent mean, 4096 values
  method: closed-form        # closed-form (one streaming pass) | sgd (the public recipe)
  seen_models: [sd2]
  blur_radii: [1.0, 2.0, 4.0]
  jpeg_qualities: [90, 70, 50]
  robustness_queries_per_model: 500
  thresholds: {max_failed_fraction: 0.01, min_map_seen: 0.5, min_map_unseen: 0.3, min_gain_over_identity: 0.0}
"""
