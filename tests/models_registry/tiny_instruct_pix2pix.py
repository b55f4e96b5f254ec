"""A user's own tiny builder for an eighth model, InstructPix2Pix, imported by `tiny.builder`."""

from __future__ import annotations


def build():
    from diffusers import (
        EulerAncestralDiscreteScheduler,
        StableDiffusionInstructPix2PixPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel

    from oripid.models_registry.tiny import tiny_clip_text_config, tiny_clip_tokenizer, tiny_vae

    # InstructPix2Pix conditions on the image latents by concatenation: 8 input channels.
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=32,
        in_channels=8,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
    )
    return StableDiffusionInstructPix2PixPipeline(
        vae=tiny_vae(),
        text_encoder=CLIPTextModel(tiny_clip_text_config()),
        tokenizer=tiny_clip_tokenizer(),
        unet=unet,
        scheduler=EulerAncestralDiscreteScheduler(
            beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012
        ),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
