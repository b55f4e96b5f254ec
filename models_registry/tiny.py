"""Tiny random-weight img2img pipelines, built in code with no hub access.

Each family mirrors its real model's pipeline class, components and scheduler at a few hundred
thousand parameters, so the tests and the demo run the same `from_pretrained` path as real
checkpoints. The `tiny_*` helpers are the building blocks of a user's own tiny builder
(`tiny.builder` in a registry entry; see docs/examples/flux_tiny.py). Weights come from a fixed seed: the same family always gives the same weights.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import torch

TINY_SEED = 0
CLIP_MAX_TOKENS = 77


def _byte_level_vocab() -> list[str]:
    """The 256 characters GPT-2 style byte-level BPE uses for raw bytes (printable bytes map to
    themselves, the others to code points from 256 up)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars, shift = [], 0
    for byte in range(256):
        if byte in printable:
            chars.append(chr(byte))
        else:
            chars.append(chr(256 + shift))
            shift += 1
    return chars


def tiny_clip_tokenizer():
    """A CLIP tokenizer over single bytes (no merges): every text tokenizes, nothing is downloaded."""
    from transformers import CLIPTokenizer

    chars = _byte_level_vocab()
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for piece in chars + [c + "</w>" for c in chars]:
        vocab.setdefault(piece, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=CLIP_MAX_TOKENS, pad_token="<|endoftext|>")


def tiny_t5_tokenizer():
    """A T5 (Unigram) tokenizer over single characters, built in memory."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -1.0)]
    pieces += [(chr(c), -2.0) for c in range(33, 127)]
    return T5Tokenizer(vocab=pieces, extra_ids=0)


def tiny_clip_text_config(projection_dim: int | None = None, hidden_size: int = 32):
    from transformers import CLIPTextConfig

    vocab_size = len(tiny_clip_tokenizer())
    return CLIPTextConfig(
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        hidden_size=hidden_size,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        max_position_embeddings=CLIP_MAX_TOKENS,
        vocab_size=vocab_size,
        projection_dim=projection_dim or hidden_size,
    )


def tiny_t5_encoder(d_model: int):
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=len(tiny_t5_tokenizer()),
        d_model=d_model,
        d_ff=37,
        d_kv=8,
        num_layers=2,
        num_heads=4,
        dropout_rate=0.0,
        pad_token_id=0,
        eos_token_id=1,
    )
    return T5EncoderModel(config)


def tiny_vae(latent_channels: int = 4, **extra):
    from diffusers import AutoencoderKL

    # Two blocks: scale factor 2. One block (factor 1) makes SD3 twenty times slower.
    return AutoencoderKL(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=latent_channels,
        norm_num_groups=32,
        sample_size=64,
        **extra,
    )


def _unet(cross_attention_dim: int, in_channels: int = 4, **extra):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=32,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        norm_num_groups=32,
        **extra,
    )


def sd2_img2img(vae, text_encoder, unet):
    """An SD2 img2img pipeline around the given modules: SD2's DDIM scheduler settings, the
    byte-level tiny tokenizer, no safety checker. The tiny family and the full-size GPU
    benchmark (random weights) both assemble their pipelines here."""
    from diffusers import DDIMScheduler, StableDiffusionImg2ImgPipeline

    return StableDiffusionImg2ImgPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tiny_clip_tokenizer(),
        unet=unet,
        scheduler=DDIMScheduler(
            beta_schedule="scaled_linear",
            beta_start=0.00085,
            beta_end=0.012,
            clip_sample=False,
            steps_offset=1,
        ),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def build_sd2():
    from transformers import CLIPTextModel

    return sd2_img2img(tiny_vae(), CLIPTextModel(tiny_clip_text_config()), _unet(cross_attention_dim=32))


def build_sdxl():
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLImg2ImgPipeline
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    time_dim, pooled_dim = 8, 32
    return StableDiffusionXLImg2ImgPipeline(
        vae=tiny_vae(force_upcast=True),
        text_encoder=CLIPTextModel(tiny_clip_text_config()),
        text_encoder_2=CLIPTextModelWithProjection(tiny_clip_text_config(projection_dim=pooled_dim)),
        tokenizer=tiny_clip_tokenizer(),
        tokenizer_2=tiny_clip_tokenizer(),
        # cross attention sees both text encoders' hidden states side by side: 32 + 32
        unet=_unet(
            cross_attention_dim=64,
            addition_embed_type="text_time",
            addition_time_embed_dim=time_dim,
            projection_class_embeddings_input_dim=6 * time_dim + pooled_dim,
        ),
        scheduler=EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
        requires_aesthetics_score=False,
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )


def build_kandinsky3():
    from diffusers import DDPMScheduler, Kandinsky3Img2ImgPipeline, Kandinsky3UNet, VQModel

    t5_dim = 32
    unet = Kandinsky3UNet(
        in_channels=4,
        time_embedding_dim=4,
        groups=2,
        attention_head_dim=4,
        layers_per_block=3,
        block_out_channels=(32, 64),
        cross_attention_dim=4,
        encoder_hid_dim=t5_dim,
    )
    movq = VQModel(
        block_out_channels=[32, 64],
        down_block_types=["DownEncoderBlock2D", "AttnDownEncoderBlock2D"],
        in_channels=3,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        norm_type="spatial",
        num_vq_embeddings=12,
        out_channels=3,
        up_block_types=["AttnUpDecoderBlock2D", "UpDecoderBlock2D"],
        vq_embed_dim=4,
    )
    scheduler = DDPMScheduler(
        beta_schedule="squaredcos_cap_v2", clip_sample=True, thresholding=False, steps_offset=1
    )
    return Kandinsky3Img2ImgPipeline(
        tokenizer=tiny_t5_tokenizer(),
        text_encoder=tiny_t5_encoder(t5_dim),
        unet=unet,
        scheduler=scheduler,
        movq=movq,
    )


def build_sd3():
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Img2ImgPipeline,
    )
    from transformers import CLIPTextModelWithProjection

    clip_dim, t5_dim = 32, 64  # the two CLIP states (32 + 32) are zero-padded up to the T5 width
    transformer = SD3Transformer2DModel(
        sample_size=32,
        patch_size=1,
        in_channels=16,
        out_channels=16,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=t5_dim,
        caption_projection_dim=32,
        pooled_projection_dim=2 * clip_dim,
        pos_embed_max_size=64,
    )
    return StableDiffusion3Img2ImgPipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=tiny_vae(
            latent_channels=16,
            use_quant_conv=False,
            use_post_quant_conv=False,
            shift_factor=0.0609,
            scaling_factor=1.5305,
        ),
        text_encoder=CLIPTextModelWithProjection(tiny_clip_text_config(projection_dim=clip_dim)),
        tokenizer=tiny_clip_tokenizer(),
        text_encoder_2=CLIPTextModelWithProjection(tiny_clip_text_config(projection_dim=clip_dim)),
        tokenizer_2=tiny_clip_tokenizer(),
        text_encoder_3=tiny_t5_encoder(t5_dim),
        tokenizer_3=tiny_t5_tokenizer(),
    )


_SPM_CORPUS = [
    "a photo of a cat sitting on a wooden table in the sun",
    "turn the sky into a watercolor painting with warm colors",
    "make it look like a pencil sketch, in the style of an old engraving",
    "a city street at night in the rain, neon lights, cinematic",
    "replace the background with snowy mountains and a frozen lake",
    "0123456789 ,.;:!?'\"()-",
]


def _chatglm_tokenizer_file(folder) -> str:
    """Train a small sentencepiece model (about 10 ms); ChatGLM's tokenizer needs a real file."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_SPM_CORPUS * 4),
        model_writer=model,
        vocab_size=320,
        byte_fallback=True,
        model_type="unigram",
        num_threads=1,
        minloglevel=2,
    )
    path = f"{folder}/tokenizer.model"
    with open(path, "wb") as out:
        out.write(model.getvalue())
    return path


def build_kolors():
    import tempfile

    from diffusers import EulerDiscreteScheduler, KolorsImg2ImgPipeline
    from diffusers.pipelines.kolors import ChatGLMModel, ChatGLMTokenizer
    from diffusers.pipelines.kolors.text_encoder import ChatGLMConfig

    hidden, time_dim = 32, 8
    # The tokenizer reads its file again in save_pretrained, so the file outlives this function.
    tokenizer = ChatGLMTokenizer(
        vocab_file=_chatglm_tokenizer_file(tempfile.mkdtemp(prefix="oripid-chatglm-"))
    )
    config = ChatGLMConfig(
        num_layers=2,
        padded_vocab_size=len(tokenizer) + 16,  # the tokenizer adds 9 special tokens past its vocabulary
        hidden_size=hidden,
        ffn_hidden_size=37,
        kv_channels=8,
        num_attention_heads=4,
        seq_length=256,
        original_rope=True,
        torch_dtype="float32",
    )
    # empty_init=True (the default) leaves layers uninitialised and outputs NaN.
    text_encoder = ChatGLMModel(config, empty_init=False)
    for module in text_encoder.modules():
        if type(module).__name__ == "RMSNorm":
            torch.nn.init.ones_(module.weight)
    return KolorsImg2ImgPipeline(
        vae=tiny_vae(force_upcast=True),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=_unet(
            cross_attention_dim=hidden,
            addition_embed_type="text_time",
            addition_time_embed_dim=time_dim,
            projection_class_embeddings_input_dim=6 * time_dim + hidden,
        ),
        scheduler=EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.014),
    )


FAMILIES: dict[str, Callable] = {
    "sd2": build_sd2,
    "sdxl": build_sdxl,
    "kandinsky3": build_kandinsky3,
    "sd3": build_sd3,
    "kolors": build_kolors,
}


def build_tiny(family_or_builder: Callable | str, seed: int = TINY_SEED):
    """Build a family (or a user's builder) under a fixed seed, in eval mode.

    Modules built in code start in train mode; T5's dropout would then make two identical calls
    differ, so everything is switched to eval as from_pretrained would.
    """
    builder = FAMILIES[family_or_builder] if isinstance(family_or_builder, str) else family_or_builder
    torch.manual_seed(seed)
    pipeline = builder()
    for component in pipeline.components.values():
        if isinstance(component, torch.nn.Module):
            component.eval()
    return pipeline
