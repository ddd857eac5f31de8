"""Real diffusers pipelines as chromaviz denoisers.

:func:`from_pipeline` wraps a loaded pipeline, :func:`load_pipeline` loads one from a local folder
(or a model id already in the Hugging Face cache, or from the hub when it can be reached):

- :class:`DiffusersDenoiser`: latent models, ``StableDiffusionPipeline`` (1.x/2.x, ε or v) and
  ``StableDiffusionXLPipeline`` (pooled text embeddings and ``add_time_ids`` as added conditioning).
  Prompts go through the pipeline's own ``encode_prompt``; samples are latents (C = 4) and
  ``height``/``width`` of a run are in pixels.
- :class:`DiffusersPixelDenoiser`: pixel-space ``UNet2DModel`` pipelines (``DDPMPipeline``).
- :mod:`~chromaviz.models.diffusers.transformers`: the transformers, SD3/3.5
  (``StableDiffusion3Pipeline``), Flux.1 (``FluxPipeline``), PixArt-Σ (``PixArtSigmaPipeline``) and Sana
  (``SanaPipeline``).
- :class:`DiffusersTextPixelDenoiser`: chromaviz's own text-to-pixels pipeline
  (:class:`~chromaviz.models.diffusers.text_pixels.TextToPixelsPipeline`, the bundled shapes model): a
  ``UNet2DConditionModel`` over RGB pixels, prompts through its ``encode_prompt`` like SDXL's.

The model keeps the pipeline's scheduler (``model.scheduler``): ``sample(model, ...)`` with
``scheduler="default"`` steps with a copy of it, so a chromaviz run with no intervention reproduces
``pipe(...)`` with the same seed, steps and guidance (tests/test_diffusers.py).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from ... import _checks
from ..base import DataSource, Denoiser
from .denoisers import DiffusersDenoiser, DiffusersPixelDenoiser, DiffusersTextPixelDenoiser, _DiffusersBase
from .transformers import TRANSFORMER_PIPELINES

__all__ = ["IMAGE_SUFFIXES", "ImageFolder", "from_pipeline", "load_pipeline", "quiet_loading"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
"""Files :class:`ImageFolder` reads."""


class ImageFolder(DataSource):
    """A folder of the user's own images as a model's data (e.g. ``compare(traj, model, data=folder)``).

    Each draw picks one image uniformly (with replacement; the prompt is not read: the folder is taken
    to hold data of the run's prompt), centre-crops it to the aspect H:W, resizes it to (H, W) and maps
    it to [−1, 1]; a latent model's VAE then encodes it (a sample of the latent distribution, less the VAE's
    ``shift_factor`` where it has one, times its ``scaling_factor``, as the pipelines train on), so draws
    are in the model's space.

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
            encoded = vae.encode(pixels.to(vae.device, vae.dtype))
            dist = getattr(encoded, "latent_dist", None)
            if dist is None:  # a deterministic encoder (Sana's AutoencoderDC): its latent as it is
                z = encoded.latent
            else:
                noise = torch.randn(dist.mean.shape, generator=generator, device=generator.device,
                                    dtype=torch.float32).to(dist.mean.device, dist.mean.dtype)
                z = dist.mean + dist.std * noise
            shift = getattr(vae.config, "shift_factor", None) or 0.0  # SD3, Flux: (z − shift)·scaling_factor
            latents = (z - shift) * vae.config.scaling_factor
        return latents.float().cpu()


def from_pipeline(pipe, *, preview: str | None = None, tiny_vae=None, name: str | None = None,
                  **options: Any) -> _DiffusersBase:
    """The chromaviz denoiser for a loaded diffusers pipeline.

    Parameters
    ----------
    pipe : DiffusionPipeline
        ``StableDiffusionPipeline``, ``StableDiffusionXLPipeline``, ``StableDiffusion3Pipeline``
        (:class:`~chromaviz.models.diffusers.transformers.SD3Denoiser`), ``FluxPipeline``
        (:class:`~chromaviz.models.diffusers.transformers.FluxDenoiser`), ``PixArtSigmaPipeline``
        (:class:`~chromaviz.models.diffusers.transformers.PixArtSigmaDenoiser`), ``SanaPipeline``
        (:class:`~chromaviz.models.diffusers.transformers.SanaDenoiser`), chromaviz's
        ``TextToPixelsPipeline``, or a pipeline whose ``unet`` is a ``UNet2DModel``
        (``DDPMPipeline``, ``DDIMPipeline``).
    preview, tiny_vae : see :class:`DiffusersDenoiser` (latent pipelines only).
    **options
        Options of the transformer adapters: ``max_sequence_length`` (SD3, Flux, PixArt-Σ, Sana) and
        ``embedded_guidance`` (Flux).

    Raises
    ------
    ValueError
        For any other pipeline (any text-to-image pipeline can still be recorded as it runs:
        :func:`chromaviz.sampling.pipeline_call.record_pipeline`), or options it does not take.
    """
    from .text_pixels import TextToPixelsPipeline  # imports diffusers' pipelines: only when one is used

    unet = getattr(pipe, "unet", None)
    kind = type(unet).__name__ if unet is not None else type(getattr(pipe, "transformer", None)).__name__
    native = TRANSFORMER_PIPELINES.get(type(pipe).__name__)
    if native is not None and kind == native[0]:
        return native[1](pipe, preview=preview, tiny_vae=tiny_vae, name=name, **options)
    if options:
        raise ValueError(f"{', '.join(sorted(options))} apply to the transformer pipelines "
                         f"({', '.join(TRANSFORMER_PIPELINES)}), not to {type(pipe).__name__}")
    if isinstance(pipe, TextToPixelsPipeline):
        if preview is not None or tiny_vae is not None:
            raise ValueError("preview and tiny_vae apply to latent pipelines; a pixel-space model shows its samples as they are")
        return DiffusersTextPixelDenoiser(pipe, name=name)
    if kind == "UNet2DConditionModel" and getattr(pipe, "vae", None) is not None and hasattr(pipe, "encode_prompt"):
        if getattr(unet.config, "time_cond_proj_dim", None) is not None:
            raise ValueError("guidance-distilled UNets (time_cond_proj_dim, e.g. LCM) are not supported natively; record "
                             "the pipeline as it runs with chromaviz.sampling.pipeline_call.record_pipeline(pipe, ...)")
        return DiffusersDenoiser(pipe, preview=preview, tiny_vae=tiny_vae, name=name)
    if kind == "UNet2DModel":
        if preview is not None or tiny_vae is not None:
            raise ValueError("preview and tiny_vae apply to latent pipelines; a pixel-space UNet2DModel shows its samples as they are")
        return DiffusersPixelDenoiser(pipe, name=name)
    what = "unet" if unet is not None else "transformer"
    raise ValueError(
        f"chromaviz cannot drive {type(pipe).__name__} ({what}: {kind}) natively; supported: StableDiffusionPipeline, "
        f"StableDiffusionXLPipeline, {', '.join(TRANSFORMER_PIPELINES)}, TextToPixelsPipeline and UNet2DModel pipelines "
        "such as DDPMPipeline. Any text-to-image pipeline can be recorded as pipe() runs it: "
        "chromaviz.sampling.pipeline_call.record_pipeline(pipe, prompt, ...)"
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
                         "does not have (chromaviz drives StableDiffusion(XL)Pipeline, StableDiffusion3Pipeline, "
                         "FluxPipeline, PixArtSigmaPipeline, SanaPipeline, DDPMPipeline and its own TextToPixelsPipeline)")
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


@contextmanager
def _unexpected_keywords() -> Iterator[list[str]]:
    """Collect what diffusers' ``from_pretrained`` says it will ignore (keyword arguments the pipeline
    does not take), which :func:`quiet_loading` would hide: the list is filled when loading ends."""
    import logging

    logger = logging.getLogger("diffusers.pipelines.pipeline_utils")
    said: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "are not expected by" in record.getMessage():
                said.append(record.getMessage())
            elif record.levelno >= logging.ERROR and logger.parent is not None:
                logger.parent.handle(record)

    handler = Collect(logging.WARNING)
    before = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    try:
        yield said
    finally:
        logger.removeHandler(handler)
        logger.setLevel(before[0])
        logger.propagate = before[1]


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
        Passed to ``DiffusionPipeline.from_pretrained``: its loading options (e.g. ``revision``,
        ``use_safetensors``) or components by name (e.g. ``scheduler=...``).

    Raises
    ------
    TypeError
        ``model`` is neither text nor a path; a keyword the pipeline does not take (diffusers would
        ignore it).
    ValueError
        An empty ``model``; the folder is not a diffusers pipeline, or the id is neither local nor reachable.
    """
    from diffusers import AutoencoderTiny, DiffusionPipeline

    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"model must be a pipeline folder or a hub id such as 'org/name' (str or path), got "
                        f"{model!r} ({type(model).__name__})")
    if not os.fspath(model).strip():
        raise ValueError("model is empty: give a pipeline folder written by save_pretrained or a hub id such as 'org/name'")
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
        with quiet_loading(), _unexpected_keywords() as said:
            pipe = _pipeline_class(path).from_pretrained(path, local_files_only=True, **opts)
    else:
        model = os.fspath(model)
        if _checks.written_as_path(model) or path.parent.is_dir() and path.parent != Path("."):
            raise ValueError(f"no folder {model!r} (the folder {path} is missing); pass a folder written by "
                             "pipe.save_pretrained(folder) or a hub id like 'owner/name'")
        no_folder = f"there is no folder {path}, and " if "/" in model else ""
        try:
            with quiet_loading(), _unexpected_keywords() as said:
                pipe = DiffusionPipeline.from_pretrained(model, local_files_only=True, **opts)
        except Exception as cached_error:  # not in the cache (or incomplete): try the hub if it answers
            if not _hub_reachable():
                raise _not_loadable(model, f"{no_folder}it is not in the local Hugging Face cache and the hub cannot be "
                                           "reached") from cached_error
            try:
                with quiet_loading(), _unexpected_keywords() as said:
                    pipe = DiffusionPipeline.from_pretrained(model, **opts)
            except Exception as exc:
                raise _not_loadable(model, f"{no_folder}the hub did not provide it ({type(exc).__name__}: {exc})") from exc
    if said:
        unknown = sorted(k for k in kwargs if repr(k) in said[0])
        raise TypeError(f"load_pipeline got {', '.join(unknown) or said[0]}, which {type(pipe).__name__} does not take; "
                        "pass loading options of DiffusionPipeline.from_pretrained (e.g. revision, use_safetensors) or "
                        f"components by name ({', '.join(sorted(pipe.components))})")
    denoiser = from_pipeline(pipe, preview=preview, tiny_vae=tiny_vae)
    if device is not None:
        denoiser.to(device)
    return denoiser
