"""Tiny diffusers pipelines with random weights, built from local files only.

Each builder makes the pipeline, writes it with ``save_pretrained`` into a folder and returns that
folder, so tests load it back through the real ``from_pretrained`` path. Nothing is downloaded:
the CLIP tokenizer is written from a byte-level vocabulary and a handful of merges
(``chromaviz.models.shapes.tokenizer``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from chromaviz.models.shapes.tokenizer import clip_tokenizer as words_tokenizer

WORDS = ("a", "photo", "of", "cat", "dog", "moon", "red", "blue", "house", "tree")


def clip_tokenizer(folder: Path, max_length: int = 16):
    """A CLIP tokenizer for :data:`WORDS` (byte-level otherwise), written into ``folder``."""
    return words_tokenizer(folder, WORDS, max_length)


def _text_config(tokenizer, hidden: int = 32):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=37, num_attention_heads=4,
        num_hidden_layers=2, max_position_embeddings=tokenizer.model_max_length, projection_dim=32,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, hidden_act="gelu",
    )


def _vae(block_out_channels=(32, 64)):
    from diffusers import AutoencoderKL

    n = len(block_out_channels)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=block_out_channels,
        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
        layers_per_block=1, norm_num_groups=32, sample_size=32,
    )


def sd_unet(block_out_channels=(32, 64), cross_attention_dim=32, layers_per_block=1, sample_size=16, head_dim=8):
    from diffusers import UNet2DConditionModel

    n = len(block_out_channels)
    return UNet2DConditionModel(
        sample_size=sample_size, in_channels=4, out_channels=4, layers_per_block=layers_per_block,
        block_out_channels=block_out_channels,
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",),
        cross_attention_dim=cross_attention_dim, attention_head_dim=head_dim, norm_num_groups=32,
    )


def save_sd(folder: Path, *, prediction_type: str = "epsilon", scheduler: str = "DDIMScheduler", seed: int = 0,
            unet_channels=(32, 64)) -> Path:
    """A tiny Stable Diffusion 1.x/2.x pipeline (VAE factor 2) saved to ``folder``."""
    import diffusers
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    tok = clip_tokenizer(folder.parent / f"{folder.name}-tokenizer")
    sched = getattr(diffusers, scheduler)(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
        prediction_type=prediction_type, steps_offset=1,
        **({"clip_sample": False, "set_alpha_to_one": False} if scheduler == "DDIMScheduler" else {}),
    )
    pipe = StableDiffusionPipeline(
        vae=_vae(), text_encoder=CLIPTextModel(_text_config(tok)).eval(), tokenizer=tok,
        unet=sd_unet(unet_channels), scheduler=sched, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)
    return folder


def save_sdxl(folder: Path, *, seed: int = 0) -> Path:
    """A tiny SDXL pipeline (two CLIP text encoders, text/time added conditioning) saved to ``folder``."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    tok = clip_tokenizer(folder.parent / f"{folder.name}-tokenizer")
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * 8 + 32, cross_attention_dim=64, norm_num_groups=1,
    )
    sched = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
        timestep_spacing="leading", interpolation_type="linear", prediction_type="epsilon",
    )
    pipe = StableDiffusionXLPipeline(
        vae=_vae(), text_encoder=CLIPTextModel(_text_config(tok)).eval(),
        text_encoder_2=CLIPTextModelWithProjection(_text_config(tok)).eval(), tokenizer=tok, tokenizer_2=tok,
        unet=unet, scheduler=sched,
    )
    pipe.save_pretrained(folder)
    return folder


def save_ddpm(folder: Path, *, seed: int = 0) -> Path:
    """A tiny pixel-space ``DDPMPipeline`` (``UNet2DModel`` on 3×16×16 images) saved to ``folder``."""
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.manual_seed(seed)
    unet = UNet2DModel(
        sample_size=16, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    )
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=1000)).save_pretrained(folder)
    return folder


def save_taesd(folder: Path, *, seed: int = 0) -> Path:
    """A tiny ``AutoencoderTiny`` (4 latent channels, factor 2) saved to ``folder``."""
    from diffusers import AutoencoderTiny

    torch.manual_seed(seed)
    AutoencoderTiny(
        encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8), num_encoder_blocks=(1, 1),
        num_decoder_blocks=(1, 1), latent_channels=4, upsampling_scaling_factor=2,
    ).save_pretrained(folder)
    return folder


def benchmark_sd(folder: Path, *, sd15: bool = False):
    """A StableDiffusionPipeline with random weights for the benchmarks, not saved: SD-1.5's UNet,
    VAE and text-encoder sizes (512×512 pixels), or a small CPU-sized one; its tokenizer is
    written into ``folder``."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    torch.manual_seed(0)
    tok = clip_tokenizer(folder / "tokenizer", max_length=77)
    if sd15:
        unet = UNet2DConditionModel(
            sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, cross_attention_dim=768, attention_head_dim=8,
        )
        vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                            up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4, sample_size=512)
        text = _text_config(tok, hidden=768)
        text.num_hidden_layers, text.num_attention_heads, text.intermediate_size = 12, 12, 3072
    else:
        unet = sd_unet((64, 128), cross_attention_dim=64, layers_per_block=1, sample_size=32)
        vae = _vae()
        text = _text_config(tok, hidden=64)
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                          set_alpha_to_one=False, steps_offset=1)
    return StableDiffusionPipeline(vae=vae, text_encoder=CLIPTextModel(text).eval(), tokenizer=tok, unet=unet,
                                   scheduler=sched, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
