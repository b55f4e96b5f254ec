"""Run one model's img2img pipeline on a batch, with the failure handling the builder needs.

NaN, inf or all-black images are retried with the VAE in float32 (the SDXL-family fp16 fix);
out-of-memory halves the batch; whatever still fails comes back as a failure with its reason.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from oripid.models_registry.schema import ModelEntry

log = logging.getLogger(__name__)

BLACK_LEVEL = 2 / 255  # a maximum pixel value below this counts as an all-black image


@dataclass(frozen=True)
class GenerationSettings:
    """The call arguments actually used; they go into every sample's json."""

    strength: float | None
    guidance_scale: float
    num_inference_steps: int
    width: int
    height: int
    extra: tuple[tuple[str, object], ...] = ()


@dataclass
class Generated:
    image: Image.Image | None
    failure: str | None = None


def settings_for(entry: ModelEntry, override, side: int) -> GenerationSettings:
    """Registry defaults, replaced field by field by the dataset config's override."""
    defaults = entry.defaults

    def pick(name: str):
        value = getattr(override, name, None)
        return value if value is not None else getattr(defaults, name)

    return GenerationSettings(
        strength=pick("strength"),
        guidance_scale=pick("guidance_scale"),
        num_inference_steps=pick("num_inference_steps"),
        width=side,
        height=side,
        extra=tuple(sorted(defaults.extra.items())),
    )


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def image_problem(array: np.ndarray) -> str | None:
    if not np.isfinite(array).all():
        return "nonfinite_output"
    if float(array.max()) < BLACK_LEVEL:
        return "all_black_output"
    return None


class Img2ImgRunner:
    """Calls a loaded pipeline with explicit arguments: one generator per image, fixed size."""

    def __init__(
        self,
        pipeline,
        entry: ModelEntry,
        settings: GenerationSettings,
        min_batch_size: int = 1,
        nonfinite_retries: int = 1,
    ):
        self.pipeline = pipeline
        self.entry = entry
        self.settings = settings
        self.min_batch_size = min_batch_size
        self.nonfinite_retries = nonfinite_retries
        self.device = getattr(pipeline, "device", torch.device("cpu"))
        accepted = inspect.signature(pipeline.__call__).parameters
        self._pass_size = entry.pass_height_width or ("height" in accepted and "width" in accepted)
        self._pass_strength = settings.strength is not None and "strength" in accepted

    def call_kwargs(self) -> dict:
        s = self.settings
        kwargs = {
            "guidance_scale": s.guidance_scale,
            "num_inference_steps": s.num_inference_steps,
            **dict(s.extra),
        }
        if self._pass_strength:
            kwargs["strength"] = s.strength
        if self._pass_size:
            kwargs.update(height=s.height, width=s.width)
        return kwargs

    def _call(self, images: list[Image.Image], prompts: list[str], seeds: list[int]) -> np.ndarray:
        generators = [torch.Generator(device="cpu").manual_seed(seed) for seed in seeds]
        output = self.pipeline(
            prompt=prompts, image=images, generator=generators, output_type="np", **self.call_kwargs()
        )
        return np.asarray(output.images)

    def _upcast_vae(self) -> bool:
        """Switch the VAE to float32 for the rest of the run; False if it already was."""
        vae = getattr(self.pipeline, "vae", None) or getattr(self.pipeline, "movq", None)
        if vae is None or vae.dtype == torch.float32:
            return False
        log.warning("%s: NaN/black output; decoding with the VAE in float32 from now on", self.entry.key)
        vae.to(dtype=torch.float32)
        if "force_upcast" in vae.config:
            vae.register_to_config(force_upcast=True)
        return True

    def generate(self, images: list[Image.Image], prompts: list[str], seeds: list[int]) -> list[Generated]:
        """One result per input, in order: an image or a failure reason."""
        try:
            arrays = self._call(images, prompts, seeds)
        except Exception as exc:  # noqa: BLE001  (every failure must become a recorded reason)
            if _is_oom(exc) and len(images) > self.min_batch_size:
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                half = max(self.min_batch_size, len(images) // 2)
                log.warning(
                    "%s: out of memory at batch %d; retrying at %d", self.entry.key, len(images), half
                )
                return self.generate(images[:half], prompts[:half], seeds[:half]) + self.generate(
                    images[half:], prompts[half:], seeds[half:]
                )
            reason = "out_of_memory" if _is_oom(exc) else f"pipeline_error: {type(exc).__name__}: {exc}"
            return [Generated(None, reason[:500]) for _ in images]
        results = []
        for i, array in enumerate(arrays):
            problem = image_problem(array)
            retries = self.nonfinite_retries
            while problem and retries > 0:
                retries -= 1
                self._upcast_vae()
                array = self._call([images[i]], [prompts[i]], [seeds[i]])[0]
                problem = image_problem(array)
            if problem:
                results.append(Generated(None, problem))
            else:
                results.append(
                    Generated(Image.fromarray((np.clip(array, 0, 1) * 255).round().astype(np.uint8)))
                )
        return results
