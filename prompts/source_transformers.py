"""Prompts from local Hugging Face models: caption the origin, then write N edit prompts.

Two models, both local folders (nothing is downloaded):
- the captioner, an image-text-to-text model (BLIP, BLIP-2, LLaVA, Qwen-VL, ...) loaded with
  `AutoModelForImageTextToText` + `AutoProcessor`, describes each origin;
- the writer, a causal language model (`AutoModelForCausalLM` + `AutoTokenizer`), is given the
  caption and asked for N prompts, one per line (a JSON list is accepted too).
When `model_path` is itself an image-text-to-text model and no captioner is given, that one
model sees the origin and writes the prompts directly ("vlm" mode).
Origins go through in batches of `batch_size`, on CUDA when there is one (else CPU), sampling
with a fixed torch seed per batch and round; rounds repeat until each origin has N distinct
candidates or `rounds` run out (the checks then report it short).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from oripid.errors import OripidError
from oripid.prompts.base import OriginRef, parse_prompt_lines

log = logging.getLogger(__name__)

CAPTION_PROMPT = "Describe this photo in one sentence."
WRITER_PROMPT = (
    "Photo: {caption}\n"
    "Write {n} different prompts for a text-guided image-to-image diffusion model, each an edited "
    "version of this photo (style, season, lighting, weather, setting or medium), one per line.\n"
)


class TransformersOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_path: str | None = Field(None, description="local folder of the writer (or a VLM that does both)")
    captioner_path: str | None = Field(None, description="local image-text-to-text model folder")
    batch_size: int = Field(8, ge=1)
    device: str | None = Field(None, description="cuda, cpu, ...; default: cuda when available")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    max_new_tokens: int = Field(512, ge=1)
    caption_max_new_tokens: int = Field(40, ge=1)
    temperature: float = Field(0.9, gt=0)
    top_p: float = Field(0.95, gt=0, le=1)
    rounds: int = Field(3, ge=1, description="generation rounds to collect N distinct prompts")
    seed: int = 0


def _is_vlm(path: Path) -> bool:
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    return (
        AutoConfig.from_pretrained(path, local_files_only=True).model_type
        in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES
    )


class TransformersSource:
    name = "transformers"

    def __init__(self, options: TransformersOptions):
        # 1. Check inputs: paths exist, libraries import, model kinds fit; all before any work.
        self.options = options
        if not options.model_path:
            raise OripidError(
                "prompts source 'transformers' needs transformers.model_path (CLI: --model PATH)"
            )
        model_path = Path(options.model_path)
        if not (model_path / "config.json").is_file():
            raise OripidError(
                f"prompts source 'transformers': {model_path} is not a local model folder (no config.json)"
            )
        caption_path = Path(options.captioner_path) if options.captioner_path else None
        if caption_path and not (caption_path / "config.json").is_file():
            raise OripidError(f"prompts source 'transformers': captioner {caption_path} has no config.json")
        try:
            import torch
        except ImportError as exc:
            raise OripidError(
                f"prompts source 'transformers' needs torch and transformers installed ({exc})"
            ) from None
        self.torch = torch
        self.device = options.device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = "auto" if options.dtype == "auto" else getattr(torch, options.dtype)
        writer_is_vlm = _is_vlm(model_path)
        if caption_path is None and not writer_is_vlm:
            raise OripidError(
                f"prompts source 'transformers': {model_path} is a text-only model, so it cannot see the origin; "
                "give transformers.captioner_path (an image-text-to-text model folder)"
            )
        if caption_path is not None and not _is_vlm(caption_path):
            raise OripidError(
                f"prompts source 'transformers': captioner {caption_path} is not an image-text-to-text model"
            )
        # 2. Load. Two steps (captioner VLM, then writer LM), or one VLM that sees the image and writes.
        self.mode = "caption+write" if caption_path is not None else "vlm"
        self.vlm, self.processor = self._load_vlm(caption_path or model_path, dtype)
        self.writer = self.tokenizer = None
        if self.mode == "caption+write":
            from transformers import AutoModelForCausalLM, AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
            self.writer = AutoModelForCausalLM.from_pretrained(model_path, local_files_only=True, dtype=dtype)
            self.writer.to(self.device).eval()
            self.tokenizer.padding_side = "left"  # decoder-only batches pad on the left
            if self.tokenizer.pad_token is None:
                self.tokenizer.pad_token = self.tokenizer.eos_token
        self.stats = {"mode": self.mode, "batches": 0, "rounds": 0, "device": self.device}

    def _load_vlm(self, path: Path, dtype):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        processor = AutoProcessor.from_pretrained(path, local_files_only=True)
        model = AutoModelForImageTextToText.from_pretrained(path, local_files_only=True, dtype=dtype)
        return model.to(self.device).eval(), processor

    def settings(self) -> dict:
        return self.options.model_dump() | {
            "mode": self.mode,
            "caption_prompt": CAPTION_PROMPT,
            "writer_prompt": WRITER_PROMPT,
        }

    # 3. The VLM on a batch of images with one text each (captions, or prompts in "vlm" mode).
    def _ask_vlm(
        self, origins: list[OriginRef], texts: list[str], sample: bool, max_new_tokens: int
    ) -> list[str]:
        from PIL import Image

        images = []
        for origin in origins:
            with Image.open(origin.image) as image:
                images.append(image.convert("RGB"))
        inputs = self.processor(images=images, text=texts, return_tensors="pt", padding=True).to(self.device)
        options = {"do_sample": sample, "max_new_tokens": max_new_tokens}
        if sample:
            options |= {"temperature": self.options.temperature, "top_p": self.options.top_p}
        with self.torch.inference_mode():
            out = self.vlm.generate(**inputs, **options)
        if not self.vlm.config.is_encoder_decoder and "input_ids" in inputs:
            out = out[:, inputs["input_ids"].shape[1] :]  # decoder-only VLMs return the prompt first
        decoded = self.processor.batch_decode(out, skip_special_tokens=True)
        return [d.replace(t, "").strip() for d, t in zip(decoded, texts, strict=True)]

    def captions(self, origins: list[OriginRef]) -> list[str]:
        texts = [CAPTION_PROMPT] * len(origins)
        answers = self._ask_vlm(
            origins, texts, sample=False, max_new_tokens=self.options.caption_max_new_tokens
        )
        return [" ".join(a.split()) for a in answers]

    # 4. The writer on a batch of captions.
    def write(self, captions: list[str], n: int) -> list[list[str]]:
        texts = [WRITER_PROMPT.format(caption=c or "a photo", n=n) for c in captions]
        enc = self.tokenizer(texts, return_tensors="pt", padding=True).to(self.device)
        with self.torch.inference_mode():
            out = self.writer.generate(
                **enc,
                do_sample=True,
                temperature=self.options.temperature,
                top_p=self.options.top_p,
                max_new_tokens=self.options.max_new_tokens,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        new = out[:, enc["input_ids"].shape[1] :]
        return [parse_prompt_lines(t) for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]

    def generate(self, origins: list[OriginRef], n: int) -> Iterator[tuple[str, Iterable[str]]]:
        size = self.options.batch_size
        for start in range(0, len(origins), size):
            batch = origins[start : start + size]
            captions = self.captions(batch) if self.mode == "caption+write" else []
            found: list[list[str]] = [[] for _ in batch]
            for round_no in range(self.options.rounds):
                todo = [i for i, got in enumerate(found) if len(set(got)) < n]
                if not todo:
                    break
                self.stats["rounds"] += 1
                # A fixed seed per (batch, round): the same run gives the same prompts.
                self.torch.manual_seed(self.options.seed + start * self.options.rounds + round_no)
                if self.mode == "caption+write":
                    written = self.write([captions[i] for i in todo], n)
                else:
                    texts = [WRITER_PROMPT.format(caption="the image shown", n=n)] * len(todo)
                    answers = self._ask_vlm(
                        [batch[i] for i in todo], texts, True, self.options.max_new_tokens
                    )
                    written = [parse_prompt_lines(a) for a in answers]
                for i, prompts in zip(todo, written, strict=True):
                    found[i].extend(prompts)
            self.stats["batches"] += 1
            for origin, prompts in zip(batch, found, strict=True):
                yield origin.origin_id, prompts
