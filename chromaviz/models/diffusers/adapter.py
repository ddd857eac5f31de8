"""Real diffusers pipelines as chromaviz denoisers.

:func:`from_pipeline` wraps a loaded pipeline, :func:`load_pipeline` loads one from a local folder
(or a model id already in the Hugging Face cache, or from the hub when it can be reached):

- :class:`DiffusersDenoiser`: latent models, ``StableDiffusionPipeline`` (1.x/2.x, ε or v) and
  ``StableDiffusionXLPipeline`` (pooled text embeddings and ``add_time_ids`` as added conditioning).
  Prompts go through the pipeline's own ``encode_prompt``; samples are latents (C = 4) and
  ``height``/``width`` of a run are in pixels.
- :class:`DiffusersPixelDenoiser`: pixel-space ``UNet2DModel`` pipelines (``DDPMPipeline``).
- :class:`DiffusersTextPixelDenoiser`: chromaviz's own text-to-pixels pipeline
  (:class:`~chromaviz.models.diffusers.text_pixels.TextToPixelsPipeline`, the bundled shapes model): a
  ``UNet2DConditionModel`` over RGB pixels, prompts through its ``encode_prompt`` like SDXL's.

The model keeps the pipeline's scheduler (``model.scheduler``): ``sample(model, ...)`` with
``scheduler="default"`` steps with a copy of it, so a chromaviz run with no intervention reproduces
``pipe(...)`` with the same seed, steps and guidance (tests/test_diffusers.py).
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Sequence

import torch

from ... import _checks
from ...noise.plan import NoiseLevel
from ...noise.schedulers import DEFAULT_IS_OWN_CLASS
from ...noise.schedules import Schedule
from ..base import PARAMETERIZATIONS, DataSource, Denoiser
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
        SDXL's pooled text embedding (``added_cond_kwargs["text_embeds"]``).
    """

    prompt_embeds: torch.Tensor
    text_embeds: torch.Tensor | None = None

    def concat(self, other: DiffusersCond) -> DiffusersCond:
        """Batch ``self`` before ``other`` (guidance puts [negative, positive])."""
        pooled = None if self.text_embeds is None else torch.cat([self.text_embeds, other.text_embeds])
        return DiffusersCond(torch.cat([self.prompt_embeds, other.prompt_embeds]), pooled)

    def __len__(self) -> int:
        return len(self.prompt_embeds)


def _prediction_type(scheduler) -> str:
    pred = scheduler.config.get("prediction_type", "epsilon")
    if pred not in PARAMETERIZATIONS:
        raise ValueError(f"the pipeline's scheduler predicts {pred!r}; chromaviz supports {PARAMETERIZATIONS}")
    return pred


class _DiffusersBase(Denoiser):
    """What latent and pixel adapters share: the pipeline, its scheduler and schedule, devices."""

    def __init__(self, pipe, name: str | None) -> None:
        self.pipe = pipe
        self.unet = pipe.unet
        self.scheduler = pipe.scheduler
        schedule = Schedule.from_scheduler(pipe.scheduler)
        # "default" means the pipeline's scheduler class everywhere (plan_steps, the explorer)
        config = {**schedule.scheduler_config, DEFAULT_IS_OWN_CLASS: True}
        self.schedule = Schedule(schedule.timesteps, schedule.signal_variance, schedule.kind, config, schedule.name)
        self.parameterization = _prediction_type(pipe.scheduler)
        self.name = name or getattr(pipe, "name_or_path", None) or type(pipe).__name__
        self.name = Path(str(self.name)).name or type(pipe).__name__
        param = next(self.unet.parameters())
        self.device, self.dtype = param.device, param.dtype

    def to(self, device: str | torch.device) -> _DiffusersBase:
        device = torch.device(device)
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
        :func:`~chromaviz.prompts.emphasis.parse_emphasis`: the tokenizer gets the text without it,
        and weights other than 1 are applied to the token embeddings by compel's
        ``EmbeddingsProvider`` (``docs/prompts.md``).
        """
        rows: dict[str | None, DiffusersCond] = {}
        for p in dict.fromkeys(prompts):
            rows[p] = self._encode_one(p)
        embeds = torch.cat([rows[p].prompt_embeds for p in prompts])
        pooled = torch.cat([rows[p].text_embeds for p in prompts]) if self.pooled else None
        return DiffusersCond(embeds, pooled)

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
        """Weighted fragments through compel: token embeddings of every text encoder, side by side
        (SDXL), and the pooled embedding of the last one, of the text without weights (as compel)."""
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


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
"""Files :class:`ImageFolder` reads."""


class ImageFolder(DataSource):
    """A folder of the user's own images as a model's data (e.g. ``compare(traj, model, data=folder)``).

    Each draw picks one image uniformly (with replacement; the prompt is not read: the folder is taken
    to hold data of the run's prompt), centre-crops it to the aspect H:W, resizes it to (H, W) and maps
    it to [−1, 1]; a latent model's VAE then encodes it (a sample of the latent distribution times the
    VAE's ``scaling_factor``, as the pipelines train on), so draws are in the model's space.

    Parameters
    ----------
    folder : path
        A folder holding at least one image (:data:`IMAGE_SUFFIXES`; subfolders are not read).
    model : Denoiser
        The model whose space the draws are in (its VAE encodes them when it is a latent model).

    Raises
    ------
    ValueError
        If the folder does not exist or holds no image.
    """

    exact = False

    def __init__(self, folder: str | os.PathLike, model: Denoiser) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise ValueError(f"data={str(folder)!r} is not a folder of images")
        self.files = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise ValueError(f"{self.folder} holds no image ({', '.join(IMAGE_SUFFIXES)})")
        self.model = model
        self.description = f"{len(self.files)} images in {self.folder.name}"

    def _image(self, path: Path, height: int, width: int) -> torch.Tensor:
        import numpy as np
        from PIL import Image

        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            scale = min(h / height, w / width)
            ch, cw = round(height * scale), round(width * scale)
            top, left = (h - ch) // 2, (w - cw) // 2
            im = im.crop((left, top, left + cw, top + ch)).resize((width, height), Image.BICUBIC)
            return torch.from_numpy(np.asarray(im, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)

    def draw(self, prompt: str | None, n: int, size: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
        """``n`` draws, shape (n, C, h, w) in the model's space (latents for a latent model), float32 on CPU."""
        height, width = size
        picks = torch.randint(0, len(self.files), (n,), generator=generator, device=generator.device).tolist()
        pixels = torch.stack([self._image(self.files[i], height, width) for i in picks])
        model = self.model
        if not getattr(model, "latent", False):
            return pixels
        vae = model.pipe.vae
        with torch.no_grad():
            dist = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist
            noise = torch.randn(dist.mean.shape, generator=generator, device=generator.device,
                                dtype=torch.float32).to(dist.mean.device, dist.mean.dtype)
            latents = (dist.mean + dist.std * noise) * vae.config.scaling_factor
        return latents.float().cpu()


def from_pipeline(pipe, *, preview: str | None = None, tiny_vae=None, name: str | None = None) -> _DiffusersBase:
    """The chromaviz denoiser for a loaded diffusers pipeline.

    Parameters
    ----------
    pipe : DiffusionPipeline
        ``StableDiffusionPipeline``, ``StableDiffusionXLPipeline``, chromaviz's
        ``TextToPixelsPipeline``, or a pipeline whose ``unet`` is a ``UNet2DModel``
        (``DDPMPipeline``, ``DDIMPipeline``).
    preview, tiny_vae : see :class:`DiffusersDenoiser` (latent pipelines only).

    Raises
    ------
    ValueError
        For any other pipeline.
    """
    from .text_pixels import TextToPixelsPipeline  # imports diffusers' pipelines: only when one is used

    unet = getattr(pipe, "unet", None)
    kind = type(unet).__name__
    if isinstance(pipe, TextToPixelsPipeline):
        if preview is not None or tiny_vae is not None:
            raise ValueError("preview and tiny_vae apply to latent pipelines; a pixel-space model shows its samples as they are")
        return DiffusersTextPixelDenoiser(pipe, name=name)
    if kind == "UNet2DConditionModel" and getattr(pipe, "vae", None) is not None and hasattr(pipe, "encode_prompt"):
        if getattr(unet.config, "time_cond_proj_dim", None) is not None:
            raise ValueError("guidance-distilled UNets (time_cond_proj_dim, e.g. LCM) are not supported")
        return DiffusersDenoiser(pipe, preview=preview, tiny_vae=tiny_vae, name=name)
    if kind == "UNet2DModel":
        if preview is not None or tiny_vae is not None:
            raise ValueError("preview and tiny_vae apply to latent pipelines; a pixel-space UNet2DModel shows its samples as they are")
        return DiffusersPixelDenoiser(pipe, name=name)
    raise ValueError(
        f"chromaviz cannot drive {type(pipe).__name__} (unet: {kind}); supported: StableDiffusionPipeline, "
        "StableDiffusionXLPipeline, TextToPixelsPipeline and UNet2DModel pipelines such as DDPMPipeline"
    )


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers within ``timeout`` seconds (DNS included)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    import socket
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def _not_loadable(model: str, why: str) -> ValueError:
    return ValueError(
        f"cannot load diffusers model {model!r}: {why}. Pass a local folder instead: on a machine with "
        f"access, run DiffusionPipeline.from_pretrained({model!r}).save_pretrained('some/folder'), copy "
        "the folder here and call load_pipeline('some/folder')"
    )


def _pipeline_class(folder: Path):
    """The class to load ``folder`` with, after checking its ``model_index.json`` and component folders.

    Raises
    ------
    ValueError
        Naming the file or folder: ``model_index.json`` is not a JSON object, names a pipeline class
        diffusers does not have, or lists a component whose folder is missing.
    """
    import json

    import diffusers
    from diffusers import DiffusionPipeline

    from .text_pixels import TextToPixelsPipeline

    index_file = folder / "model_index.json"
    try:
        index = json.loads(index_file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeError) as err:
        raise ValueError(f"{index_file} is not valid JSON ({err}); re-save the pipeline with pipe.save_pretrained(folder)") from None
    if not isinstance(index, dict):
        raise ValueError(f"{index_file} holds a JSON {type(index).__name__}, not the object save_pretrained writes")
    name = index.get("_class_name")
    if name == TextToPixelsPipeline.__name__:
        return TextToPixelsPipeline
    if not isinstance(name, str) or not isinstance(getattr(diffusers, name, None), type):
        raise ValueError(f"{index_file} names the pipeline class {name!r}, which diffusers {diffusers.__version__} "
                         "does not have (chromaviz drives StableDiffusion(XL)Pipeline, DDPMPipeline and its own "
                         "TextToPixelsPipeline)")
    for component, spec in index.items():
        if component.startswith("_") or not isinstance(spec, list) or None in spec:
            continue
        if not (folder / component).is_dir():
            raise ValueError(f"{folder} is an incomplete pipeline: model_index.json lists the component {component!r} "
                             f"({spec[-1]}) but the folder {folder / component} is missing")
    return DiffusionPipeline


@contextmanager
def quiet_loading() -> Iterator[None]:
    """diffusers' and transformers' loading messages and progress bars off inside, restored after."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    libraries = (diffusers_logging, transformers_logging)
    before = [(lib.get_verbosity(), lib.is_progress_bar_enabled()) for lib in libraries]
    for lib in libraries:
        lib.set_verbosity_error()
        lib.disable_progress_bar()
    try:
        yield
    finally:
        for lib, (verbosity, bars) in zip(libraries, before):
            lib.set_verbosity(verbosity)
            if bars:
                lib.enable_progress_bar()


def load_pipeline(model: str | os.PathLike, *, torch_dtype: torch.dtype | None = None, device: str | torch.device | None = None,
                  preview: str | None = None, tiny_vae=None, variant: str | None = None, **kwargs) -> _DiffusersBase:
    """Load a diffusers pipeline and wrap it with :func:`from_pipeline`.

    Parameters
    ----------
    model : str or path
        A local folder written by ``save_pretrained`` (it has ``model_index.json``), or a hub id.
        An id is taken from the local cache; only if it is not there and the hub answers is it
        downloaded. Otherwise one ``ValueError`` says so at once.
    torch_dtype : torch.dtype, optional
        e.g. ``torch.float16`` or ``torch.bfloat16`` on CUDA.
    device : str or torch.device, optional
        Where to put the pipeline (default: where it loads, the CPU).
    preview, tiny_vae
        See :class:`DiffusersDenoiser`. ``tiny_vae`` may be a loaded ``AutoencoderTiny`` or a path to one.
    variant : str, optional
        Weight variant, e.g. ``"fp16"``.
    **kwargs
        Passed to ``DiffusionPipeline.from_pretrained``.

    Raises
    ------
    ValueError
        The folder is not a diffusers pipeline, or the id is neither local nor reachable.
    """
    from diffusers import AutoencoderTiny, DiffusionPipeline

    if isinstance(torch_dtype, str):  # "float16" as well as torch.float16, never silently float32
        torch_dtype = _checks.dtype_name("torch_dtype", torch_dtype)
    elif torch_dtype is not None and not isinstance(torch_dtype, torch.dtype):
        raise TypeError(f"torch_dtype must be a torch.dtype such as torch.float16, got {torch_dtype!r}")
    # diffusers ≥ 0.42 calls torch_dtype "dtype"
    opts = {k: v for k, v in {"dtype": torch_dtype, "variant": variant}.items() if v is not None}
    opts.update(kwargs)
    kind = type(tiny_vae).__name__
    if isinstance(tiny_vae, (str, os.PathLike)):
        if not Path(os.fspath(tiny_vae)).expanduser().is_dir():
            raise ValueError(f"tiny_vae {os.fspath(tiny_vae)!r} is not a folder; give the folder an AutoencoderTiny "
                             "was saved to (save_pretrained), or the AutoencoderTiny itself")
        with quiet_loading():
            tiny_vae = AutoencoderTiny.from_pretrained(tiny_vae, local_files_only=True, **({"dtype": torch_dtype} if torch_dtype else {}))
    elif tiny_vae is not None and kind != "AutoencoderTiny":
        raise ValueError(f"tiny_vae must be an AutoencoderTiny or a folder holding one, got {kind}")
    path = Path(os.fspath(model)).expanduser()
    if path.is_file():
        raise ValueError(f"{str(model)!r} is a file, not a diffusers pipeline folder; pass the folder "
                         "pipe.save_pretrained(folder) wrote (it holds model_index.json)")
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ValueError(f"{str(model)!r} is a folder but not a diffusers pipeline (no model_index.json); write one with pipe.save_pretrained(folder)")
        with quiet_loading():
            pipe = _pipeline_class(path).from_pretrained(path, local_files_only=True, **opts)
    else:
        model = os.fspath(model)
        if path.is_absolute() or model.startswith((".", "~")) or model.count("/") > 1 or path.parent.is_dir() and path.parent != Path("."):
            raise ValueError(f"no folder {model!r} (the folder {path} is missing); pass a folder written by "
                             "pipe.save_pretrained(folder) or a hub id like 'owner/name'")
        no_folder = f"there is no folder {path}, and " if "/" in model else ""
        try:
            with quiet_loading():
                pipe = DiffusionPipeline.from_pretrained(model, local_files_only=True, **opts)
        except Exception as cached_error:  # not in the cache (or incomplete): try the hub if it answers
            if not _hub_reachable():
                raise _not_loadable(model, f"{no_folder}it is not in the local Hugging Face cache and the hub cannot be "
                                           "reached") from cached_error
            try:
                with quiet_loading():
                    pipe = DiffusionPipeline.from_pretrained(model, **opts)
            except Exception as exc:
                raise _not_loadable(model, f"{no_folder}the hub did not provide it ({type(exc).__name__}: {exc})") from exc
    denoiser = from_pipeline(pipe, preview=preview, tiny_vae=tiny_vae)
    if device is not None:
        denoiser.to(device)
    return denoiser
