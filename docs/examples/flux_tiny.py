"""A tiny random-weight FluxImg2ImgPipeline, built in code with no download.

oripid ships tiny builders only for the families of its seven OriPID models (sd2, sdxl,
kandinsky3, sd3, kolors). A registry entry for another family names its own builder with
`tiny: {builder: "flux_tiny:build_flux_img2img"}`: a function that takes no argument and returns
the pipeline. oripid calls it under a fixed seed, saves the result once with `save_pretrained` and
loads it back with `from_pretrained`, exactly like a real checkpoint. The module must be importable
in every process (put this folder on PYTHONPATH, or ship the function in your own package).
"""

from __future__ import annotations


def build_flux_img2img():
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxImg2ImgPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel

    # oripid's tiny building blocks: byte-level tokenizers, small text encoders, a 2-block VAE.
    from oripid.models_registry.tiny import (
        tiny_clip_text_config,
        tiny_clip_tokenizer,
        tiny_t5_encoder,
        tiny_t5_tokenizer,
        tiny_vae,
    )

    clip_dim, t5_dim, latent_channels = 32, 32, 4
    text_encoder = CLIPTextModel(tiny_clip_text_config(hidden_size=clip_dim))
    text_encoder_2 = tiny_t5_encoder(t5_dim)
    # FLUX packs 2x2 latent patches into tokens: in_channels = 4 x latent_channels, and the
    # rotary axes (16 + 8 + 8) add up to attention_head_dim.
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=4 * latent_channels,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=32,
        num_attention_heads=2,
        joint_attention_dim=t5_dim,
        pooled_projection_dim=clip_dim,
        guidance_embeds=True,
        axes_dims_rope=[16, 8, 8],
    )
    vae = tiny_vae(
        latent_channels=latent_channels,
        use_quant_conv=False,
        use_post_quant_conv=False,
        scaling_factor=0.3611,
        shift_factor=0.1159,
    )
    return FluxImg2ImgPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tiny_clip_tokenizer(),
        text_encoder_2=text_encoder_2,
        tokenizer_2=tiny_t5_tokenizer(),
        transformer=transformer,
    )
