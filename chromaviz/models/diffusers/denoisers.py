"""The denoisers of diffusers UNet pipelines: what a chromaviz model of a pipeline is.

- :class:`DiffusersDenoiser`: latent models, ``StableDiffusionPipeline`` (1.x/2.x, ε or v) and
  ``StableDiffusionXLPipeline`` (pooled text embeddings and ``add_time_ids`` as added conditioning);
  also the base of the transformer adapters (:mod:`~chromaviz.models.diffusers.transformers`).
- :class:`DiffusersPixelDenoiser`: pixel-space ``UNet2DModel`` pipelines (``DDPMPipeline``).
- :class:`DiffusersTextPixelDenoiser`: chromaviz's own text-to-pixels pipeline.

:func:`~chromaviz.models.diffusers.adapter.from_pipeline` chooses among them and the transformer
adapters; :mod:`~chromaviz.models.diffusers.adapter` re-exports these classes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from ... import _checks
from ...noise.plan import NoiseLevel
from ...noise.schedulers import DEFAULT_IS_OWN_CLASS, STEP_SIGMAS, is_flow_scheduler
from ...noise.schedules import Schedule
from ..base import PARAMETERIZATIONS, Denoiser
from ...prompts import parse_emphasis, plain_text, split_and
from .previews import LinearPreview, TinyVaeDecoder, VaeDecoder, fit_linear_preview


PREVIEWS = ("linear", "taesd", "vae")
"""Preview decoders :meth:`DiffusersDenoiser.to_rgb` can use."""


@dataclass
class DiffusersCond:
    """Encoded prompts of a diffusers model, one row per batch element.

    Attributes
    ----------
    prompt_embeds : Tensor, shape (B, L, D)
        ``encoder_hidden_states`` of the UNet.
    text_embeds : Tensor or None, shape (B, P)
        The pooled text embedding: SDXL's ``added_cond_kwargs["text_embeds"]``, SD3's and Flux's
        ``pooled_projections``.
    attention_mask : Tensor or None, shape (B, L)
        Which tokens of ``prompt_embeds`` are text (1) and which padding (0), for transformers that take it
        (PixArt-Σ's ``encoder_attention_mask``).
    """

    prompt_embeds: torch.Tensor
    text_embeds: torch.Tensor | None = None
    attention_mask: torch.Tensor | None = None

    def concat(self, other: DiffusersCond) -> DiffusersCond:
        """Batch ``self`` before ``other`` (guidance puts [negative, positive])."""
        pooled = None if self.text_embeds is None else torch.cat([self.text_embeds, other.text_embeds])
        mask = None if self.attention_mask is None else torch.cat([self.attention_mask, other.attention_mask])
        return DiffusersCond(torch.cat([self.prompt_embeds, other.prompt_embeds]), pooled, mask)

    def __len__(self) -> int:
        return len(self.prompt_embeds)


def _prediction_type(scheduler) -> str:
    if is_flow_scheduler(scheduler):  # FlowMatch* schedulers step with the velocity ε − x0
        return "flow"
    pred = scheduler.config.get("prediction_type", "epsilon")
    if pred not in PARAMETERIZATIONS:
        raise ValueError(f"the pipeline's scheduler predicts {pred!r}; chromaviz supports {PARAMETERIZATIONS}")
    return pred


class _DiffusersBase(Denoiser):
    """What latent and pixel adapters share: the pipeline, its scheduler and schedule, devices."""

    step_sigmas: str | None = None
    """How the pipeline spaces its steps where it hands the scheduler a σ list of its own
    (:data:`~chromaviz.noise.schedulers.STEP_SIGMAS`, e.g. ``"1/N"`` for Flux); None: the scheduler's own."""

    def __init__(self, pipe, name: str | None) -> None:
        self.pipe = pipe
        self.unet = getattr(pipe, "unet", None)
        self.network = self.unet if self.unet is not None else pipe.transformer  # what predicts: UNet or transformer
        self.scheduler = pipe.scheduler
        schedule = Schedule.from_scheduler(pipe.scheduler)
        # "default" means the pipeline's scheduler class everywhere (plan_steps, the explorer)
        config = {**schedule.scheduler_config, DEFAULT_IS_OWN_CLASS: True}
        if self.step_sigmas is not None and is_flow_scheduler(pipe.scheduler):
            config[STEP_SIGMAS] = self.step_sigmas
        self.schedule = Schedule(schedule.timesteps, schedule.signal_variance, schedule.kind, config, schedule.name)
        self.parameterization = _prediction_type(pipe.scheduler)
        self.name = name or getattr(pipe, "name_or_path", None) or type(pipe).__name__
        self.name = Path(str(self.name)).name or type(pipe).__name__
        param = next(self.network.parameters())
        self.device, self.dtype = param.device, param.dtype

    def to(self, device: str | torch.device) -> _DiffusersBase:
        device = _checks.torch_device("device", device)
        if device != self.device:
            self.pipe.to(device)
            self.device = device
        return self

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "pipeline": type(self.pipe).__name__,
            "scheduler": type(self.scheduler).__name__,
            "dtype": str(self.dtype).replace("torch.", ""),
        }


class _TextConditioned(_DiffusersBase):
    """Pipelines whose prompts go through their own ``encode_prompt`` into a ``UNet2DConditionModel``."""

    conditional = True
    vocabulary = None
    emphasis = True
    pooled = False  # whether the UNet also takes a pooled text embedding (SDXL; the text-to-pixels model)
    emphasis_arithmetic = "a1111"  # how emphasis weights change the token embeddings: "a1111" or "compel"
    _compel: tuple[torch.device, list] | None = None

    def check_prompt(self, prompt: str | None) -> str | None:
        """Any text (None = unconditional, which is the empty prompt or, for SDXL, zeros); a model that
        declares a ``vocabulary`` (the bundled shapes model) takes only its words."""
        if prompt is not None and not isinstance(prompt, str):
            raise ValueError(f"a prompt must be a str or None, got {type(prompt).__name__}")
        if prompt and self.vocabulary is not None:
            words = re.findall(r"[a-z]+", " ".join(plain_text(term) for term, _ in split_and(prompt)).lower())
            unknown = [w for w in dict.fromkeys(words) if w not in self.vocabulary]
            if unknown:
                raise ValueError(f"the {self.name} model was never taught {', '.join(map(repr, unknown))}; it knows "
                                 f"{', '.join(self.vocabulary)} (e.g. {(self.example_prompts or ('',))[0]!r})")
        return prompt

    @torch.no_grad()
    def encode(self, prompts: Sequence[str | None]) -> DiffusersCond:
        """Encode with the pipeline's own ``encode_prompt``; one row per prompt.

        None is the unconditional prompt ``pipe(...)`` uses for its negative half: the empty
        string's embedding or, for SDXL with ``force_zeros_for_empty_prompt``, zeros.
        Emphasis (``(word:1.2)``, ``((word))``, ``[word]``, AUTOMATIC1111's syntax) is read by
        :func:`~chromaviz.prompts.emphasis.parse_emphasis`; a prompt whose weights are all 1 is the
        text without the syntax, encoded as ``pipe(...)`` encodes it. Weights other than 1 are
        applied with AUTOMATIC1111's arithmetic (:mod:`~chromaviz.models.diffusers.weighting`:
        token embeddings times their weights, the mean restored), or compel's
        (``EmbeddingsProvider``) when :attr:`emphasis_arithmetic` is ``"compel"`` (``docs/prompts.md``).
        """
        rows: dict[str | None, DiffusersCond] = {}
        for p in dict.fromkeys(prompts):
            rows[p] = self._encode_one(p)
        embeds = torch.cat([rows[p].prompt_embeds for p in prompts])
        pooled = torch.cat([rows[p].text_embeds for p in prompts]) if self.pooled else None
        masked = all(rows[p].attention_mask is not None for p in prompts)
        mask = torch.cat([rows[p].attention_mask for p in prompts]) if masked else None
        return DiffusersCond(embeds, pooled, mask)

    def _encode_one(self, prompt: str | None) -> DiffusersCond:
        if prompt is None:
            return self._encode_text(None)
        fragments = parse_emphasis(prompt)
        if all(w == 1.0 for _, w in fragments):
            return self._encode_text("".join(t for t, _ in fragments))
        return self._encode_weighted(fragments)

    def _encode_text(self, text: str | None) -> DiffusersCond:
        """Text without emphasis syntax (None: unconditional) through the pipeline's ``encode_prompt``."""
        embeds, _ = self.pipe.encode_prompt("" if text is None else text, self.device, 1, False)
        return DiffusersCond(embeds.to(self.dtype))

    def _text_encoders(self) -> list[tuple[Any, Any, str]]:
        """(tokenizer, text encoder, compel's ``ReturnedEmbeddingsType`` name) as ``encode_prompt`` uses them."""
        return [(self.pipe.tokenizer, self.pipe.text_encoder, "LAST_HIDDEN_STATES_NORMALIZED")]

    def _encode_weighted(self, fragments: list[tuple[str, float]]) -> DiffusersCond:
        """Weighted fragments: token embeddings of every text encoder, side by side (SDXL), and the
        pooled embedding of the text without weights (as the webui and compel both take it)."""
        if self.emphasis_arithmetic == "compel":
            return self._encode_weighted_compel(fragments)
        if self.emphasis_arithmetic != "a1111":
            raise ValueError(f"emphasis_arithmetic must be 'a1111' or 'compel', got {self.emphasis_arithmetic!r}")
        from .weighting import encode_weighted

        states = {"LAST_HIDDEN_STATES_NORMALIZED": "last", "PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED": "penultimate"}
        embeds = torch.cat([encode_weighted(tok, enc, fragments, hidden_states=states[kind], device=self.device)
                            for tok, enc, kind in self._text_encoders()], dim=-1)
        pooled = self._encode_text("".join(t for t, _ in fragments)).text_embeds if self.pooled else None
        return DiffusersCond(embeds.to(self.dtype), pooled)

    def _encode_weighted_compel(self, fragments: list[tuple[str, float]]) -> DiffusersCond:
        """Weighted fragments through compel's ``EmbeddingsProvider``."""
        from compel import EmbeddingsProvider, ReturnedEmbeddingsType

        if self._compel is None or self._compel[0] != self.device:
            self._compel = (self.device, [
                EmbeddingsProvider(tokenizer=tok, text_encoder=enc, truncate=True,
                                   returned_embeddings_type=getattr(ReturnedEmbeddingsType, kind))
                for tok, enc, kind in self._text_encoders()
            ])
        providers = self._compel[1]
        texts, weights = [t for t, _ in fragments], [w for _, w in fragments]
        embeds = torch.cat([p.get_embeddings_for_weighted_prompt_fragments([texts], [weights], device=self.device)
                            for p in providers], dim=-1)
        pooled = providers[-1].get_pooled_embeddings(["".join(texts)], device=self.device) if self.pooled else None
        return DiffusersCond(embeds.to(self.dtype), None if pooled is None else pooled.to(self.dtype))

    def _added_conditioning(self, x_t: torch.Tensor, cond: DiffusersCond) -> dict[str, Any]:
        """Keyword arguments of the UNet besides the sample, timestep and token embeddings."""
        return {}

    @torch.no_grad()
    def __call__(self, x_t: torch.Tensor, noise: NoiseLevel, cond: DiffusersCond) -> torch.Tensor:
        """The UNet's output (ε or v, the scheduler's ``prediction_type``) for inputs (B, C, h, w) at ``noise``."""
        if cond is None or len(cond) != len(x_t):
            raise ValueError(f"conditioning for {0 if cond is None else len(cond)} samples given for a batch of {len(x_t)}")
        t = torch.tensor(noise.timestep, device=x_t.device)
        return self.unet(x_t.to(self.dtype), t, encoder_hidden_states=cond.prompt_embeds, return_dict=False,
                         **self._added_conditioning(x_t, cond))[0]


class DiffusersDenoiser(_TextConditioned):
    """A Stable Diffusion (1.x/2.x) or SDXL pipeline as a chromaviz latent denoiser.

    Parameters
    ----------
    pipe : StableDiffusionPipeline or StableDiffusionXLPipeline
        A loaded pipeline (any device and dtype).
    preview : {"linear", "taesd", "vae"}, optional
        What :meth:`to_rgb` uses: default ``"taesd"`` when ``tiny_vae`` is given, else ``"linear"``.
    tiny_vae : AutoencoderTiny, optional
        A TAESD for fast previews (it is moved to the pipeline's device and dtype).
    name : str, optional

    Attributes
    ----------
    channels : int
        Latent channels (4).
    vae_scale_factor : int
        Pixels per latent pixel (8 for SD; whatever the VAE has for tiny test models).
    default_size : tuple of int
        (H, W) in pixels: the UNet's ``sample_size`` times ``vae_scale_factor``.
    latent, decoder
        Declared: samples are latents, :meth:`decode` is the pipeline's VAE.
    """

    latent = True
    decoder = "vae"

    def __init__(self, pipe, *, preview: str | None = None, tiny_vae=None, name: str | None = None) -> None:
        if getattr(pipe, "vae", None) is None or not hasattr(pipe, "encode_prompt"):
            raise ValueError(f"{type(pipe).__name__} is not a latent text-to-image pipeline (no vae or encode_prompt)")
        super().__init__(pipe, name)
        self.xl = self.pooled = getattr(pipe, "text_encoder_2", None) is not None or hasattr(pipe, "_get_add_time_ids")
        self.channels = int(self.unet.config.in_channels)
        self.vae_scale_factor = int(getattr(pipe, "vae_scale_factor", 8))
        size = self.unet.config.sample_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        self.default_size = (size[0] * self.vae_scale_factor, size[1] * self.vae_scale_factor)
        self._multiple = self.vae_scale_factor * 2 ** (len(self.unet.config.block_out_channels) - 1)
        self._init_vae(pipe, preview, tiny_vae)

    def _init_vae(self, pipe, preview: str | None, tiny_vae) -> None:
        """The VAE decoder and the preview (see the class's parameters); raises ValueError for a bad preview."""
        self.vae_decoder = VaeDecoder(pipe.vae)
        self.tiny_decoder = TinyVaeDecoder(tiny_vae.to(self.device, self.dtype)) if tiny_vae is not None else None
        self._linear: LinearPreview | None = None
        preview = preview or ("taesd" if tiny_vae is not None else "linear")
        if preview not in PREVIEWS:
            raise ValueError(f"unknown preview {preview!r}; choose one of {PREVIEWS}")
        if preview == "taesd" and tiny_vae is None:
            raise ValueError("preview='taesd' needs tiny_vae=AutoencoderTiny.from_pretrained(<a local TAESD folder>)")
        self.preview = preview

    # ------------------------------------------------------------------ sizes and prompts
    def latent_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) of the latents for an image of (height, width) pixels."""
        return height // self.vae_scale_factor, width // self.vae_scale_factor

    def check_size(self, height: int, width: int) -> None:
        m = max(self._multiple, 8)
        if height % m or width % m or height < m or width < m:
            raise ValueError(f"size {height}×{width} does not fit {self.name}: height and width must be positive multiples of {m} pixels")

    def _encode_text(self, text: str | None) -> DiffusersCond:
        if self.xl:
            embeds, _, pooled, _ = self.pipe.encode_prompt(
                "" if text is None else text, device=self.device, num_images_per_prompt=1,
                do_classifier_free_guidance=False,
            )
            if text is None and self.pipe.config.get("force_zeros_for_empty_prompt", False):
                embeds, pooled = torch.zeros_like(embeds), torch.zeros_like(pooled)
            return DiffusersCond(embeds.to(self.dtype), pooled.to(self.dtype))
        return super()._encode_text(text)

    def _text_encoders(self) -> list[tuple[Any, Any, str]]:
        if not self.xl:
            return super()._text_encoders()
        # SDXL's encode_prompt: the penultimate hidden states of both encoders, side by side
        pairs = [(self.pipe.tokenizer, self.pipe.text_encoder), (self.pipe.tokenizer_2, self.pipe.text_encoder_2)]
        return [(tok, enc, "PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED") for tok, enc in pairs if enc is not None]

    # ------------------------------------------------------------------ prediction
    def _time_ids(self, x_t: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        h, w = x_t.shape[-2] * self.vae_scale_factor, x_t.shape[-1] * self.vae_scale_factor
        te2 = getattr(self.pipe, "text_encoder_2", None)
        proj = int(pooled.shape[-1]) if te2 is None else te2.config.projection_dim
        ids = self.pipe._get_add_time_ids((h, w), (0, 0), (h, w), dtype=pooled.dtype, text_encoder_projection_dim=proj)
        return ids.to(x_t.device).repeat(x_t.shape[0], 1)

    def _added_conditioning(self, x_t: torch.Tensor, cond: DiffusersCond) -> dict[str, Any]:
        if not self.xl:
            return {}
        return {"added_cond_kwargs": {"text_embeds": cond.text_embeds, "time_ids": self._time_ids(x_t, cond.text_embeds)}}

    # ------------------------------------------------------------------ RGB
    @property
    def linear_preview(self) -> LinearPreview:
        """The least-squares latent → RGB map of this pipeline's VAE (fitted on first use)."""
        if self._linear is None:
            self._linear = fit_linear_preview(self.vae_decoder, self.channels, self.vae_scale_factor,
                                              upsample=self.vae_scale_factor)
        return self._linear

    def to_rgb(self, x: torch.Tensor) -> torch.Tensor:
        """Latents (B, C, h, w) → preview RGB (B, 3, H, W) in [0, 1], by ``self.preview``."""
        if self.preview == "vae":
            return self.vae_decoder(x)
        if self.preview == "taesd":
            return self.tiny_decoder(x)
        return self.linear_preview(x.to(self.device))

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Latents (B, C, h, w) → the final image (B, 3, H, W) in [0, 1] with the pipeline's VAE."""
        return self.vae_decoder(x)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "preview": self.preview, "vae_scale_factor": self.vae_scale_factor, "xl": self.xl}


class _PixelSpace:
    """Sizes of a pixel-space UNet: ``default_size`` is its ``sample_size``; sizes are multiples of its downsampling."""

    def _init_pixels(self) -> None:
        self.channels = int(self.unet.config.in_channels)
        size = self.unet.config.sample_size
        self.default_size = (size, size) if isinstance(size, int) else tuple(size)
        self._multiple = 2 ** (len(self.unet.config.block_out_channels) - 1)

    def check_size(self, height: int, width: int) -> None:
        m = self._multiple
        if height % m or width % m or height < m or width < m:
            raise ValueError(f"size {height}×{width} does not fit {self.name}: height and width must be positive multiples of {m}")


class DiffusersPixelDenoiser(_PixelSpace, _DiffusersBase):
    """A pixel-space ``UNet2DModel`` pipeline (``DDPMPipeline``, ``DDIMPipeline``) as a chromaviz denoiser.

    Samples are images (B, C, H, W) in [−1, 1]; the model is unconditional.
    """

    conditional = False
    vocabulary = None

    def __init__(self, pipe, *, name: str | None = None) -> None:
        super().__init__(pipe, name)
        self._init_pixels()

    def encode(self, prompts: Sequence[str | None]) -> None:
        return None

    @torch.no_grad()
    def __call__(self, x_t: torch.Tensor, noise: NoiseLevel, cond: Any) -> torch.Tensor:
        """The UNet's output for images (B, C, H, W) at the noise level ``noise``.

        A learned-variance UNet (``out_channels = 2·C``, improved DDPM) predicts the mean in its
        first C channels and the variance in the rest; the mean prediction is returned, as diffusers'
        pipelines split it for schedulers without learned variance (those with it are refused when
        the step plan is made).
        """
        t = torch.tensor(noise.timestep, device=x_t.device)
        out = self.unet(x_t.to(self.dtype), t, return_dict=False)[0]
        return out[:, : x_t.shape[1]] if out.shape[1] == 2 * x_t.shape[1] else out


class DiffusersTextPixelDenoiser(_PixelSpace, _TextConditioned):
    """A :class:`~chromaviz.models.diffusers.text_pixels.TextToPixelsPipeline` as a chromaviz denoiser.

    Samples are RGB images (B, 3, H, W) in [−1, 1]. Prompts go through the pipeline's
    ``encode_prompt``: token embeddings for cross-attention and the pooled embedding as the UNet's
    ``class_labels``; None is the empty prompt, the negative half ``pipe(...)`` uses.
    """

    pooled = True

    def __init__(self, pipe, *, name: str | None = None) -> None:
        super().__init__(pipe, name)
        self._init_pixels()

    def _encode_text(self, text: str | None) -> DiffusersCond:
        embeds, _, pooled, _ = self.pipe.encode_prompt("" if text is None else text, self.device, 1, False)
        return DiffusersCond(embeds.to(self.dtype), pooled.to(self.dtype))

    def _added_conditioning(self, x_t: torch.Tensor, cond: DiffusersCond) -> dict[str, Any]:
        return {"class_labels": cond.text_embeds}
