"""The typed shape of one registry entry; YAML files are validated against it on load."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# A pinned revision is a full commit sha or an explicit tag ref. Branch names such as "main"
# move under you, so they are refused; `null` means "latest", and the build records the commit
# it actually resolved.
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_TAG = re.compile(r"^refs/tags/[A-Za-z0-9._/-]+$")


class Img2ImgDefaults(BaseModel):
    """Call arguments set explicitly, because each diffusers pipeline has its own defaults."""

    model_config = ConfigDict(extra="forbid")

    strength: float | None = Field(None, gt=0, le=1, description="None for pipelines without strength")
    guidance_scale: float = Field(..., ge=0)
    num_inference_steps: int = Field(..., ge=1)
    extra: dict[str, Any] = Field(
        default_factory=dict, description="other call kwargs, e.g. image_guidance_scale"
    )


class Component(BaseModel):
    """One full-size component: its class and the config that instantiates it with random weights."""

    model_config = ConfigDict(extra="forbid")

    library: str = Field(
        ..., description="module that defines class_name: diffusers, transformers, or a submodule"
    )
    class_name: str
    config: dict[str, Any]


class TinySpec(BaseModel):
    """How to build the tiny random-weight variant: a built-in family, or `module:function`."""

    model_config = ConfigDict(extra="forbid")

    family: str | None = None
    builder: str | None = None
    resolution: int = Field(64, ge=16)

    def model_post_init(self, __context: Any) -> None:
        if (self.family is None) == (self.builder is None):
            raise ValueError(
                "give exactly one of tiny.family (a built-in family) or tiny.builder (module:function)"
            )


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(
        ..., pattern=r"^[a-z0-9][a-z0-9_]*$", description="lower case, digits, underscores; no dots or dashes"
    )
    display_name: str
    checkpoint: str = Field(..., description="Hub repo id or local folder")
    revision: str | None = None
    pipeline: str = Field(..., description="diffusers img2img pipeline class name")
    native_resolution: int = Field(..., ge=64)
    dtype: Literal["float16", "bfloat16", "float32"]
    variant: str | None = None
    scheduler: str | None = Field(
        None, description="diffusers scheduler class to swap in; None keeps the checkpoint's"
    )
    defaults: Img2ImgDefaults
    license: str
    license_url: str | None = None
    gated: bool = False
    vae_force_upcast: bool = Field(
        False, description="decode/encode the VAE in float32 (SDXL-family fp16 overflow)"
    )
    disable_watermarker: bool = Field(
        False, description="SDXL img2img adds an invisible watermark unless told not to"
    )
    pass_height_width: bool = Field(
        False, description="pipeline sizes its output from its config, not the input image (SD3, Kolors)"
    )
    classifier_free_guidance: bool = Field(
        True,
        description="the denoiser runs twice per step when guidance_scale > 1 (false: guidance-distilled, e.g. FLUX)",
    )
    notes: list[str] = Field(default_factory=list)
    architecture: dict[str, Component] = Field(
        ..., description="full-size components by pipeline attribute name"
    )
    tiny: TinySpec

    @field_validator("revision")
    @classmethod
    def _revision_is_pinned(cls, value: str | None) -> str | None:
        if value is None or _COMMIT.match(value) or _TAG.match(value):
            return value
        raise ValueError(
            f"{value!r} is not a commit sha (40 hex characters) or a tag ref (refs/tags/NAME); "
            "pin a commit, or write null to take the latest and let the build record it"
        )

    @field_validator("pipeline")
    @classmethod
    def _pipeline_exists(cls, value: str) -> str:
        import diffusers

        if not hasattr(diffusers, value):
            raise ValueError(
                f"diffusers {diffusers.__version__} has no pipeline class {value!r}; "
                "check the spelling (e.g. StableDiffusionXLImg2ImgPipeline) or upgrade diffusers"
            )
        return value

    @field_validator("architecture")
    @classmethod
    def _architecture_has_denoiser(cls, value: dict[str, Component]) -> dict[str, Component]:
        if not ({"unet", "transformer"} & set(value)):
            raise ValueError("architecture needs a 'unet' or 'transformer' component (the denoiser)")
        return value

    @property
    def denoiser_name(self) -> str:
        return "unet" if "unet" in self.architecture else "transformer"
