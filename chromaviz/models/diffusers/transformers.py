"""Transformer pipelines as chromaviz latent denoisers: SD3/3.5 and Flux.1 (flow matching), PixArt-Σ, Sana.

Each adapter answers the :class:`~chromaviz.models.base.Denoiser` question for its transformer, as its
pipeline's ``__call__`` asks it, so that ``sample(model, ...)`` with the pipeline's own scheduler
(``scheduler="default"``) reproduces ``pipe(...)`` with the same seed, steps and guidance
(tests/test_transformer_pipelines.py):

- :class:`SD3Denoiser`: ``StableDiffusion3Pipeline`` (``SD3Transformer2DModel``, MMDiT). Latents
  (B, 16, H/8, W/8); the transformer takes the scheduler's timestep t ∈ [0, 1000], the token embeddings
  of CLIP-L, CLIP-G and T5 and their pooled CLIP embedding. Classifier-free guidance batches
  [negative, positive] as the pipeline does.
- :class:`FluxDenoiser`: ``FluxPipeline`` (``FluxTransformer2DModel``). The pipeline packs its latents
  into 2×2 patches, (B, 16, h, w) → (B, h·w/4, 64); chromaviz keeps the unpacked (B, C, h, w) grid and
  packs around each transformer call (the scheduler's Euler step is elementwise, so stepping either
  form is the same arithmetic). The transformer takes t/1000, the T5 token embeddings, the pooled CLIP
  embedding, position ids and, for guidance-distilled models (``guidance_embeds``), the guidance
  embedding :attr:`FluxDenoiser.embedded_guidance`. chromaviz's ``guidance`` is the pipeline's
  ``true_cfg_scale`` with the empty negative prompt. The dynamic shift μ comes from the image's
  token count (h/2)·(w/2) (:func:`~chromaviz.noise.schedulers.dynamic_shift_mu`, ``patch_size = 2``),
  and the step σ from the pipeline's own spacing linspace(1, 1/N, N)
  (:data:`~chromaviz.noise.schedulers.STEP_SIGMAS`).
- :class:`PixArtSigmaDenoiser`: ``PixArtSigmaPipeline`` (``PixArtTransformer2DModel``, T5 only, ε
  prediction with learned variance: the first half of the output channels is the prediction).
- :class:`SanaDenoiser`: ``SanaPipeline`` (``SanaTransformer2DModel``, Gemma-2, a deep-compression
  autoencoder; flow matching through DPM-Solver++ with flow sigmas).

SD3, Flux and the released Sana models are flow models (``parameterization = "flow"``: the output is
v = ε − x0 with x_t = (1 − σ)·x0 + σ·ε); PixArt-Σ predicts ε. All decode through their VAE as their
pipelines do (``z/scaling_factor``, ``+ shift_factor`` for SD3 and Flux) and preview with a linear map
fitted to that VAE (any channel count: 16 for SD3 and Flux). Emphasis weights are refused: their T5 or
Gemma encoders have no weighting chromaviz can apply.
"""

from __future__ import annotations

from typing import Any

import torch

from ...noise.plan import NoiseLevel
from .denoisers import DiffusersCond, DiffusersDenoiser, _TextConditioned

__all__ = ["FluxDenoiser", "PixArtSigmaDenoiser", "SD3Denoiser", "SanaDenoiser", "TRANSFORMER_PIPELINES"]


class _LatentTransformer(DiffusersDenoiser):
    """What the transformer adapters share: sizes in patches, prompts through ``encode_prompt``, the VAE.

    Parameters
    ----------
    pipe : DiffusionPipeline
        The loaded pipeline (any device and dtype).
    preview, tiny_vae, name
        As for :class:`~chromaviz.models.diffusers.denoisers.DiffusersDenoiser`; a ``tiny_vae`` must
        have the pipeline's latent channels (16 for SD3 and Flux: e.g. TAESD3 or TAEF1).
    max_sequence_length : int, optional
        Text tokens per prompt, as the pipeline's ``max_sequence_length`` (default: the pipeline's own,
        256 for SD3, 512 for Flux, 300 for PixArt-Σ and Sana); a run and ``pipe(...)`` must use the same.

    Raises
    ------
    ValueError
        For a pipeline without a VAE or transformer, a flow transformer (SD3, Flux) given a scheduler that
        is not flow matching, or a ``max_sequence_length`` that is not a positive integer.

    Attributes
    ----------
    channels : int
        Latent channels C of the unpacked grid (16 for SD3 and Flux, 4 for PixArt-Σ, 32 for Sana).
    patch_size : int
        Latent pixels per token side; the dynamic shift counts tokens (h/p)·(w/p).
    vae_scale_factor : int
        Pixels per latent pixel (8 for SD3, Flux and PixArt-Σ, 32 for Sana).
    default_size : tuple of int
        (H, W) in pixels: the pipeline's ``default_sample_size`` (else the transformer's ``sample_size``)
        times ``vae_scale_factor``.
    """

    emphasis = False
    pooled = True
    xl = False
    flow = True  # the transformer predicts the flow velocity and needs a flow scheduler (SD3, Flux)
    recommended_guidance = 1.0
    default_max_sequence_length = 256

    def __init__(self, pipe, *, preview: str | None = None, tiny_vae=None, name: str | None = None,
                 max_sequence_length: int | None = None) -> None:
        if getattr(pipe, "vae", None) is None or getattr(pipe, "transformer", None) is None:
            raise ValueError(f"{type(pipe).__name__} is not a latent transformer pipeline (no vae or transformer)")
        _TextConditioned.__init__(self, pipe, name)
        if self.flow and self.parameterization != "flow":
            raise ValueError(f"{type(pipe).__name__} comes with {type(pipe.scheduler).__name__}, not a flow-matching "
                             "scheduler; its transformer predicts the flow velocity and must be stepped by one "
                             "(FlowMatchEulerDiscreteScheduler)")
        length = self.default_max_sequence_length if max_sequence_length is None else max_sequence_length
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise ValueError(f"max_sequence_length must be a positive integer, got {max_sequence_length!r}")
        self.max_sequence_length = length
        self.vae_scale_factor = int(pipe.vae_scale_factor)
        self._init_geometry()
        size = getattr(pipe, "default_sample_size", None) or self.network.config.sample_size  # PixArt: the latter
        size = int(size) * self.vae_scale_factor
        self.default_size = (size, size)
        self._multiple = self.vae_scale_factor * self.patch_size
        self._init_vae(pipe, preview, tiny_vae)

    def _init_geometry(self) -> None:
        raise NotImplementedError

    def check_size(self, height: int, width: int) -> None:
        m = self._multiple
        if height % m or width % m or height < m or width < m:
            raise ValueError(f"size {height}×{width} does not fit {self.name}: height and width must be positive "
                             f"multiples of {m} pixels (the VAE's factor {self.vae_scale_factor} × patch size {self.patch_size})")

    def _text_encoders(self) -> list[tuple[Any, Any, str]]:  # never reached: emphasis is refused before encoding
        raise ValueError(f"{self.name} does not apply emphasis weights")

    def _check_cond(self, x_t: torch.Tensor, cond: DiffusersCond) -> None:
        if cond is None or len(cond) != len(x_t):
            raise ValueError(f"conditioning for {0 if cond is None else len(cond)} samples given for a batch of {len(x_t)}")

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "patch_size": self.patch_size, "max_sequence_length": self.max_sequence_length}


class SD3Denoiser(_LatentTransformer):
    """A ``StableDiffusion3Pipeline`` (SD3, SD3.5) as a chromaviz latent flow denoiser.

    See :class:`_LatentTransformer` for the parameters. Prompts go through the pipeline's
    ``encode_prompt`` (CLIP-L and CLIP-G token embeddings beside T5's, or zeros where the pipeline has
    no T5); None is the empty prompt, the negative half ``pipe(...)`` uses.
    """

    recommended_guidance = 7.0

    def _init_geometry(self) -> None:
        cfg = self.network.config
        self.channels = int(cfg.in_channels)
        self.patch_size = int(cfg.patch_size)

    def _encode_text(self, text: str | None) -> DiffusersCond:
        embeds, _, pooled, _ = self.pipe.encode_prompt(
            prompt="" if text is None else text, prompt_2=None, prompt_3=None, device=self.device,
            num_images_per_prompt=1, do_classifier_free_guidance=False, max_sequence_length=self.max_sequence_length,
        )
        return DiffusersCond(embeds.to(self.dtype), pooled.to(self.dtype))

    @torch.no_grad()
    def __call__(self, x_t: torch.Tensor, noise: NoiseLevel, cond: DiffusersCond) -> torch.Tensor:
        """The velocity v = ε − x0 (B, C, h, w) for latents (B, C, h, w) at ``noise``, as the pipeline's loop calls
        the transformer (timestep t ∈ [0, 1000] in float32)."""
        self._check_cond(x_t, cond)
        t = torch.full((len(x_t),), noise.timestep, dtype=torch.float32, device=x_t.device)
        return self.network(hidden_states=x_t.to(self.dtype), timestep=t, encoder_hidden_states=cond.prompt_embeds,
                            pooled_projections=cond.text_embeds, return_dict=False)[0]


class FluxDenoiser(_LatentTransformer):
    """A ``FluxPipeline`` (Flux.1 dev / schnell and their fine-tunes) as a chromaviz latent flow denoiser.

    See :class:`_LatentTransformer` for the parameters. Samples are the unpacked latents (B, C, h, w);
    each call packs them into 2×2 patches for the transformer and unpacks its output.

    Attributes
    ----------
    embedded_guidance : float
        The guidance a guidance-distilled transformer (``guidance_embeds``, Flux.1-dev) is told, the
        pipeline's ``guidance_scale`` (default 3.5); ignored by models without it (schnell).
        chromaviz's own ``guidance`` is true classifier-free guidance (the pipeline's ``true_cfg_scale``,
        two model evaluations per step).
    """

    step_sigmas = "1/N"
    default_max_sequence_length = 512

    def __init__(self, pipe, *, preview: str | None = None, tiny_vae=None, name: str | None = None,
                 max_sequence_length: int | None = None, embedded_guidance: float = 3.5) -> None:
        super().__init__(pipe, preview=preview, tiny_vae=tiny_vae, name=name, max_sequence_length=max_sequence_length)
        from ... import _checks

        self.embedded_guidance = _checks.real("embedded_guidance", embedded_guidance, minimum=0)

    def _init_geometry(self) -> None:
        cfg = self.network.config
        self.channels = int(cfg.in_channels) // 4
        self.patch_size = 2  # the pipeline's 2×2 packing (the transformer's own patch_size is 1)
        self.guidance_embeds = bool(getattr(cfg, "guidance_embeds", False))

    def _encode_text(self, text: str | None) -> DiffusersCond:
        embeds, pooled, _ = self.pipe.encode_prompt(
            prompt="" if text is None else text, prompt_2=None, device=self.device, num_images_per_prompt=1,
            max_sequence_length=self.max_sequence_length,
        )
        return DiffusersCond(embeds.to(self.dtype), pooled.to(self.dtype))

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """Latents (B, C, h, w) → the pipeline's packed tokens (B, h·w/4, 4·C)."""
        b, c, h, w = x.shape
        return self.pipe._pack_latents(x, b, c, h, w)

    def unpack(self, tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Packed tokens (B, h·w/4, 4·C) → latents (B, C, h, w) (the pipeline's ``_unpack_latents``)."""
        f = self.vae_scale_factor
        return self.pipe._unpack_latents(tokens, h * f, w * f, f)

    @torch.no_grad()
    def __call__(self, x_t: torch.Tensor, noise: NoiseLevel, cond: DiffusersCond) -> torch.Tensor:
        """The velocity v = ε − x0 (B, C, h, w) for latents (B, C, h, w) at ``noise``, as the pipeline's loop calls
        the transformer (packed tokens, timestep t/1000 in the latents' dtype, position ids, guidance embedding)."""
        self._check_cond(x_t, cond)
        b, _, h, w = x_t.shape
        x = self.pack(x_t.to(self.dtype))
        img_ids = self.pipe._prepare_latent_image_ids(b, h // 2, w // 2, x_t.device, self.dtype)
        txt_ids = torch.zeros(cond.prompt_embeds.shape[1], 3, device=x_t.device, dtype=self.dtype)
        t = torch.full((b,), noise.timestep, dtype=torch.float32, device=x_t.device).to(self.dtype)
        guidance = (torch.full((b,), self.embedded_guidance, dtype=torch.float32, device=x_t.device)
                    if self.guidance_embeds else None)
        out = self.network(hidden_states=x, timestep=t / 1000, guidance=guidance, pooled_projections=cond.text_embeds,
                           encoder_hidden_states=cond.prompt_embeds, txt_ids=txt_ids, img_ids=img_ids,
                           return_dict=False)[0]
        return self.unpack(out, h, w)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "embedded_guidance": self.embedded_guidance if self.guidance_embeds else None}


class PixArtSigmaDenoiser(_LatentTransformer):
    """A ``PixArtSigmaPipeline`` (PixArt-Σ; also PixArt-α's transformer) as a chromaviz latent denoiser.

    See :class:`_LatentTransformer` for the parameters (``max_sequence_length`` default 300). Latents
    (B, 4, H/8, W/8); prompts go through the pipeline's ``encode_prompt`` (T5 token embeddings and their
    attention mask, no caption cleaning); None is the empty prompt, the negative half ``pipe(...)`` uses.
    The scheduler's parametrisation (ε for the released models) is the model's.

    The transformer has learned variance (``out_channels = 2·C``): its first C channels are the
    prediction and the rest the variance, which the pipeline drops before the scheduler step; so does
    this adapter. The pipeline's resolution binning (``use_resolution_binning``, which samples at the
    nearest trained aspect ratio and resizes the decoded image) is not done: a run samples at the size
    asked for, as ``pipe(..., use_resolution_binning=False)``.
    """

    flow = False
    pooled = False
    recommended_guidance = 4.5
    default_max_sequence_length = 300

    def _init_geometry(self) -> None:
        cfg = self.network.config
        self.channels = int(cfg.in_channels)
        self.patch_size = int(cfg.patch_size)
        self.learned_variance = int(cfg.out_channels or cfg.in_channels) == 2 * self.channels

    def _encode_text(self, text: str | None) -> DiffusersCond:
        embeds, mask, _, _ = self.pipe.encode_prompt(
            "" if text is None else text, do_classifier_free_guidance=False, num_images_per_prompt=1,
            device=self.device, clean_caption=False, max_sequence_length=self.max_sequence_length,
        )
        return DiffusersCond(embeds.to(self.dtype), None, mask)

    @torch.no_grad()
    def __call__(self, x_t: torch.Tensor, noise: NoiseLevel, cond: DiffusersCond) -> torch.Tensor:
        """The prediction (B, C, h, w) in the scheduler's parametrisation for latents (B, C, h, w) at ``noise``
        (the mean half of a learned-variance output)."""
        self._check_cond(x_t, cond)
        t = torch.full((len(x_t),), noise.timestep, device=x_t.device)
        out = self.network(x_t.to(self.dtype), encoder_hidden_states=cond.prompt_embeds,
                           encoder_attention_mask=cond.attention_mask, timestep=t,
                           added_cond_kwargs={"resolution": None, "aspect_ratio": None}, return_dict=False)[0]
        return out[:, : x_t.shape[1]] if self.learned_variance else out


class SanaDenoiser(_LatentTransformer):
    """A ``SanaPipeline`` (Sana: linear-attention DiT over a deep-compression autoencoder) as a chromaviz
    latent denoiser.

    See :class:`_LatentTransformer` for the parameters (``max_sequence_length`` default 300). Latents
    (B, 32, H/32, W/32) for the released models; prompts go through the pipeline's ``encode_prompt`` (Gemma-2
    token embeddings and their attention mask, the prompt prefixed with the pipeline's
    ``complex_human_instruction``, :attr:`complex_human_instruction`); None is the negative half ``pipe(...)``
    uses (the empty prompt without the instruction). The released models are flow models (their
    DPM-Solver++ has ``use_flow_sigmas`` and ``flow_prediction``); the transformer takes
    t·``timestep_scale``. A learned-variance output (``out_channels = 2·C``) is cut to its first half,
    and resolution binning is not done, as for :class:`PixArtSigmaDenoiser`.

    Attributes
    ----------
    complex_human_instruction : list of str or None
        The instruction lines prefixed to every prompt (default: the pipeline's ``__call__`` default);
        a run and ``pipe(...)`` agree only with the same.
    """

    flow = False  # the scheduler decides: flow for the released models, ε for others
    pooled = False
    recommended_guidance = 4.5
    default_max_sequence_length = 300

    def _init_geometry(self) -> None:
        import inspect

        PixArtSigmaDenoiser._init_geometry(self)  # the same latent geometry and learned-variance rule
        default = inspect.signature(type(self.pipe).__call__).parameters.get("complex_human_instruction")
        self.complex_human_instruction = None if default is None else default.default

    def _encode_text(self, text: str | None) -> DiffusersCond:
        if text is None:  # the pipeline's negative half: the empty prompt, without the instruction
            _, _, embeds, mask = self.pipe.encode_prompt(
                "", do_classifier_free_guidance=True, negative_prompt="", num_images_per_prompt=1, device=self.device,
                clean_caption=False, max_sequence_length=self.max_sequence_length,
                complex_human_instruction=self.complex_human_instruction,
            )
        else:
            embeds, mask, _, _ = self.pipe.encode_prompt(
                text, do_classifier_free_guidance=False, num_images_per_prompt=1, device=self.device,
                clean_caption=False, max_sequence_length=self.max_sequence_length,
                complex_human_instruction=self.complex_human_instruction,
            )
        return DiffusersCond(embeds.to(self.dtype), None, mask)

    @torch.no_grad()
    def __call__(self, x_t: torch.Tensor, noise: NoiseLevel, cond: DiffusersCond) -> torch.Tensor:
        """The prediction (B, C, h, w) in the scheduler's parametrisation for latents (B, C, h, w) at ``noise``
        (float32, the mean half of a learned-variance output), as the pipeline's loop calls the transformer."""
        self._check_cond(x_t, cond)
        t = torch.full((len(x_t),), noise.timestep, dtype=torch.float32, device=x_t.device)
        out = self.network(x_t.to(self.dtype), encoder_hidden_states=cond.prompt_embeds.to(self.dtype),
                           encoder_attention_mask=cond.attention_mask,
                           timestep=t * self.network.config.timestep_scale, return_dict=False)[0].float()
        return out[:, : x_t.shape[1]] if self.learned_variance else out


TRANSFORMER_PIPELINES: dict[str, tuple[str, type[_LatentTransformer]]] = {
    "StableDiffusion3Pipeline": ("SD3Transformer2DModel", SD3Denoiser),
    "FluxPipeline": ("FluxTransformer2DModel", FluxDenoiser),
    "PixArtSigmaPipeline": ("PixArtTransformer2DModel", PixArtSigmaDenoiser),
    "SanaPipeline": ("SanaTransformer2DModel", SanaDenoiser),
}
"""Pipeline class → (its transformer class, the chromaviz adapter) of the native transformer adapters."""
