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


# ---------------------------------------------------------------------- flow-matching transformers (issue 27)
def _t5_encoder(tokenizer, d_model: int = 32):
    """A tiny T5 encoder for ``tokenizer``'s vocabulary (the pipelines call it on token ids only)."""
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(
        vocab_size=len(tokenizer), d_model=d_model, d_kv=8, d_ff=37, num_layers=1, num_heads=4,
        relative_attention_num_buckets=8, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )).eval()


def _vae16(shift_factor: float, scaling_factor: float):
    """A tiny 16-channel ``AutoencoderKL`` (factor 2) with the SD3/Flux latent normalisation."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(32, 64),
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1, norm_num_groups=32, sample_size=32, shift_factor=shift_factor,
        scaling_factor=scaling_factor, use_quant_conv=False, use_post_quant_conv=False,
    )


def save_sd3(folder: Path, *, seed: int = 0) -> Path:
    """A tiny ``StableDiffusion3Pipeline`` (MMDiT, 16-channel latents, VAE factor 2, CLIP-L/G and T5
    with the local CLIP tokenizer, flow matching with shift 3) saved to ``folder``."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    torch.manual_seed(seed)
    tok = clip_tokenizer(folder.parent / f"{folder.name}-tokenizer")
    transformer = SD3Transformer2DModel(
        sample_size=16, patch_size=2, in_channels=16, num_layers=1, attention_head_dim=8, num_attention_heads=4,
        joint_attention_dim=32, caption_projection_dim=32, pooled_projection_dim=64, out_channels=16,
        pos_embed_max_size=16,
    )
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=_vae16(0.0609, 1.5305), text_encoder=CLIPTextModelWithProjection(_text_config(tok)).eval(), tokenizer=tok,
        text_encoder_2=CLIPTextModelWithProjection(_text_config(tok)).eval(), tokenizer_2=tok,
        text_encoder_3=_t5_encoder(tok), tokenizer_3=tok,
    )
    pipe.save_pretrained(folder)
    return folder


def save_flux(folder: Path, *, seed: int = 0, guidance_embeds: bool = True) -> Path:
    """A tiny ``FluxPipeline`` (16-channel latents packed 2×2, VAE factor 2, CLIP and T5 with the local
    CLIP tokenizer, dynamic shift; a guidance embedding when ``guidance_embeds``) saved to ``folder``."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    tok = clip_tokenizer(folder.parent / f"{folder.name}-tokenizer")
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=guidance_embeds,
        axes_dims_rope=(4, 4, 8),
    )
    sched = FlowMatchEulerDiscreteScheduler(
        shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    pipe = FluxPipeline(
        scheduler=sched, vae=_vae16(0.1159, 0.3611), text_encoder=CLIPTextModel(_text_config(tok)).eval(),
        tokenizer=tok, text_encoder_2=_t5_encoder(tok), tokenizer_2=tok, transformer=transformer,
    )
    pipe.save_pretrained(folder)
    return folder


def save_lcm(folder: Path, *, seed: int = 0) -> Path:
    """A tiny ``LatentConsistencyModelPipeline`` (a guidance-distilled UNet with ``time_cond_proj_dim``,
    ``LCMScheduler``): a pipeline chromaviz has no native adapter for, saved to ``folder``."""
    from diffusers import LatentConsistencyModelPipeline, LCMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    tok = clip_tokenizer(folder.parent / f"{folder.name}-tokenizer")
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=32, time_cond_proj_dim=32,
    )
    sched = LCMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", set_alpha_to_one=True,
                         steps_offset=1)
    pipe = LatentConsistencyModelPipeline(
        vae=_vae(), text_encoder=CLIPTextModel(_text_config(tok)).eval(), tokenizer=tok, unet=unet, scheduler=sched,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)
    return folder


def save_pixart_sigma(folder: Path, *, seed: int = 0) -> Path:
    """A tiny ``PixArtSigmaPipeline`` (learned-variance transformer, 4-channel latents, VAE factor 2, T5 with
    the local CLIP tokenizer, DPM-Solver++) saved to ``folder``."""
    from diffusers import DPMSolverMultistepScheduler, PixArtSigmaPipeline, PixArtTransformer2DModel

    torch.manual_seed(seed)
    tok = clip_tokenizer(folder.parent / f"{folder.name}-tokenizer")
    transformer = PixArtTransformer2DModel(
        sample_size=16, num_layers=1, patch_size=2, attention_head_dim=8, num_attention_heads=4, caption_channels=32,
        in_channels=4, cross_attention_dim=32, out_channels=8, attention_bias=True, activation_fn="gelu-approximate",
        num_embeds_ada_norm=1000, norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6,
    )
    sched = DPMSolverMultistepScheduler(beta_start=0.0001, beta_end=0.02, beta_schedule="linear")
    PixArtSigmaPipeline(tokenizer=tok, text_encoder=_t5_encoder(tok), vae=_vae(), transformer=transformer,
                        scheduler=sched).save_pretrained(folder)
    return folder


def save_sana(folder: Path, *, seed: int = 0) -> Path:
    """A tiny ``SanaPipeline`` (linear-attention DiT, 4-channel deep-compression autoencoder with factor 2,
    Gemma-2 with the local CLIP tokenizer, DPM-Solver++ with flow sigmas and shift 3) saved to ``folder``."""
    from diffusers import AutoencoderDC, DPMSolverMultistepScheduler, SanaPipeline, SanaTransformer2DModel
    from transformers import Gemma2Config, Gemma2Model

    torch.manual_seed(seed)
    tok = clip_tokenizer(folder.parent / f"{folder.name}-tokenizer")
    transformer = SanaTransformer2DModel(
        patch_size=1, in_channels=4, out_channels=4, num_layers=1, num_attention_heads=2, attention_head_dim=8,
        num_cross_attention_heads=2, cross_attention_head_dim=8, cross_attention_dim=16, caption_channels=32,
        sample_size=16,
    )
    vae = AutoencoderDC(
        in_channels=3, latent_channels=4, attention_head_dim=2, encoder_block_types=("ResBlock", "EfficientViTBlock"),
        decoder_block_types=("ResBlock", "EfficientViTBlock"), encoder_block_out_channels=(8, 8),
        decoder_block_out_channels=(8, 8), encoder_qkv_multiscales=((), (5,)), decoder_qkv_multiscales=((), (5,)),
        encoder_layers_per_block=(1, 1), decoder_layers_per_block=(1, 1), downsample_block_type="conv",
        upsample_block_type="interpolate", decoder_norm_types="rms_norm", decoder_act_fns="silu", scaling_factor=0.41407,
    )
    text = Gemma2Model(Gemma2Config(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=512, pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, attn_implementation="eager",
    )).eval()
    sched = DPMSolverMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=3.0,
                                        algorithm_type="dpmsolver++")
    SanaPipeline(tokenizer=tok, text_encoder=text, vae=vae, transformer=transformer, scheduler=sched).save_pretrained(folder)
    return folder


def save_qwen_image(folder: Path, *, seed: int = 0) -> Path:
    """A tiny ``QwenImagePipeline`` (MMDiT over packed 2×2 latents, a one-frame video VAE with factor 2, a
    Qwen2.5-VL text encoder with the local CLIP tokenizer, dynamic shift with a terminal σ) saved to
    ``folder``: a family chromaviz records through the universal path."""
    from diffusers import AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImagePipeline
    from diffusers import QwenImageTransformer2DModel
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(seed)
    tok = clip_tokenizer(folder.parent / f"{folder.name}-tokenizer")
    text = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(
        text_config=dict(hidden_size=16, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=2, rope_theta=1e6, vocab_size=len(tok), max_position_embeddings=2048,
                         rope_scaling={"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id),
        vision_config=dict(depth=1, hidden_size=16, intermediate_size=16, num_heads=2, out_hidden_size=16),
        vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )).eval()
    transformer = QwenImageTransformer2DModel(
        patch_size=2, in_channels=16, out_channels=4, num_layers=1, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=16, axes_dims_rope=(4, 6, 6),
    )
    vae = AutoencoderKLQwenImage(base_dim=8, z_dim=4, dim_mult=[1, 2], num_res_blocks=1, temperal_downsample=[False],
                                 latents_mean=[0.1, -0.2, 0.3, 0.0], latents_std=[1.5, 0.7, 2.0, 1.1])
    sched = FlowMatchEulerDiscreteScheduler(
        base_image_seq_len=256, base_shift=0.5, max_image_seq_len=8192, max_shift=0.9, shift=1.0, shift_terminal=0.02,
        time_shift_type="exponential", use_dynamic_shifting=True,
    )
    QwenImagePipeline(scheduler=sched, vae=vae, text_encoder=text, tokenizer=tok, transformer=transformer).save_pretrained(folder)
    return folder
