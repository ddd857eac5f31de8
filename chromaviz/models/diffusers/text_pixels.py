"""A text-to-image diffusers pipeline that samples pixels directly (no VAE).

:class:`TextToPixelsPipeline` has Stable Diffusion's parts minus the autoencoder: a
``UNet2DConditionModel`` conditioned on a ``CLIPTextModel`` (cross-attention over its token
embeddings, and its pooled embedding as the UNet's class embedding), a ``CLIPTokenizer`` and a
scheduler. Its ``encode_prompt`` and ``__call__`` follow ``StableDiffusionPipeline`` step for step
(noise drawn with ``randn_tensor``, the scheduler's ``init_noise_sigma`` and ``scale_model_input``,
classifier-free guidance as ``[negative, positive]`` halves, ``guidance_rescale``,
``callback_on_step_end``), so chromaviz can check its own runs against it exactly.
Samples are RGB images in [−1, 1].
"""

from __future__ import annotations

import inspect
from typing import Callable

import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput
from diffusers.guiders.guider_utils import rescale_noise_cfg
from diffusers.utils.torch_utils import randn_tensor


class TextToPixelsPipeline(DiffusionPipeline):
    """Text-conditioned pixel-space sampling with a ``UNet2DConditionModel``.

    Parameters
    ----------
    unet : UNet2DConditionModel
        ``in_channels == out_channels`` (3 for RGB), ``cross_attention_dim`` equal to the text
        encoder's hidden size.
    text_encoder : CLIPTextModel
    tokenizer : CLIPTokenizer
    scheduler : SchedulerMixin
    """

    model_cpu_offload_seq = "text_encoder->unet"
    _callback_tensor_inputs = ["latents", "prompt_embeds", "pooled_prompt_embeds"]

    def __init__(self, unet, text_encoder, tokenizer, scheduler) -> None:
        super().__init__()
        self.register_modules(unet=unet, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler)

    def embed_text(self, texts: list[str], device: torch.device, n: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Token embeddings (B·n, L, D) and pooled embeddings (B·n, D) of ``texts``, with gradients."""
        tokens = self.tokenizer(texts, padding="max_length", max_length=self.tokenizer.model_max_length,
                                truncation=True, return_tensors="pt")
        embeds, pooled = self.text_encoder(tokens.input_ids.to(device), return_dict=False)[:2]
        return embeds.repeat_interleave(n, dim=0), pooled.repeat_interleave(n, dim=0)

    @torch.no_grad()
    def encode_prompt(self, prompt: str | list[str], device: torch.device, num_images_per_prompt: int = 1,
                      do_classifier_free_guidance: bool = False, negative_prompt: str | list[str] | None = None):
        """Text embeddings of ``prompt`` and, with guidance, of ``negative_prompt`` ("" by default).

        Returns ``(prompt_embeds, negative_prompt_embeds, pooled_prompt_embeds,
        negative_pooled_prompt_embeds)`` as SDXL's ``encode_prompt`` does: token embeddings
        (B·n, L, D) for cross-attention and pooled embeddings (B·n, D) for the UNet's class
        embedding; the negatives are None without guidance.
        """
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        embeds, pooled = self.embed_text(prompts, device, num_images_per_prompt)
        negative = negative_pooled = None
        if do_classifier_free_guidance:
            negatives = negative_prompt if negative_prompt is not None else ""
            negatives = [negatives] * len(prompts) if isinstance(negatives, str) else list(negatives)
            negative, negative_pooled = self.embed_text(negatives, device, num_images_per_prompt)
        return embeds, negative, pooled, negative_pooled

    @torch.no_grad()
    def __call__(self, prompt: str | list[str], num_inference_steps: int = 50, guidance_scale: float = 3.0,
                 negative_prompt: str | list[str] | None = None, num_images_per_prompt: int = 1,
                 height: int | None = None, width: int | None = None, generator: torch.Generator | None = None,
                 latents: torch.Tensor | None = None, guidance_rescale: float = 0.0, eta: float = 0.0,
                 output_type: str = "pil", return_dict: bool = True,
                 callback_on_step_end: Callable | None = None,
                 callback_on_step_end_tensor_inputs: tuple[str, ...] = ("latents",)):
        """Sample images for ``prompt``.

        ``output_type`` is ``"pil"``, ``"np"`` ((B, H, W, 3) in [0, 1]), ``"pt"`` ((B, 3, H, W) in
        [0, 1]) or ``"latent"`` (the raw samples, (B, 3, H, W) in [−1, 1]).
        """
        device = self._execution_device
        size = self.unet.config.sample_size
        height, width = height or size, width or size
        guided = guidance_scale > 1
        embeds, negative, pooled, negative_pooled = self.encode_prompt(prompt, device, num_images_per_prompt, guided,
                                                                       negative_prompt)
        if guided:
            embeds, pooled = torch.cat([negative, embeds]), torch.cat([negative_pooled, pooled])
        batch = len(embeds) // (2 if guided else 1)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        shape = (batch, self.unet.config.in_channels, height, width)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=embeds.dtype)
        latents = latents.to(device) * self.scheduler.init_noise_sigma
        accepted = inspect.signature(self.scheduler.step).parameters
        extra = {k: v for k, v in {"eta": eta, "generator": generator}.items() if k in accepted}
        for i, t in enumerate(self.progress_bar(self.scheduler.timesteps)):
            model_input = torch.cat([latents] * 2) if guided else latents
            model_input = self.scheduler.scale_model_input(model_input, t)
            noise_pred = self.unet(model_input, t, encoder_hidden_states=embeds, class_labels=pooled, return_dict=False)[0]
            if guided:
                uncond, cond = noise_pred.chunk(2)
                noise_pred = uncond + guidance_scale * (cond - uncond)
                if guidance_rescale > 0:
                    noise_pred = rescale_noise_cfg(noise_pred, cond, guidance_rescale=guidance_rescale)
            latents = self.scheduler.step(noise_pred, t, latents, **extra, return_dict=False)[0]
            if callback_on_step_end is not None:
                local = {"latents": latents, "prompt_embeds": embeds, "pooled_prompt_embeds": pooled}
                out = callback_on_step_end(self, i, t, {k: local[k] for k in callback_on_step_end_tensor_inputs})
                latents = out.pop("latents", latents)
                embeds = out.pop("prompt_embeds", embeds)
                pooled = out.pop("pooled_prompt_embeds", pooled)
        if output_type == "latent":
            images = latents
        else:
            images = (latents / 2 + 0.5).clamp(0, 1)
            if output_type != "pt":
                images = images.cpu().permute(0, 2, 3, 1).float().numpy()
                if output_type == "pil":
                    images = self.numpy_to_pil(images)
        self.maybe_free_model_hooks()
        return ImagePipelineOutput(images=images) if return_dict else (images,)
