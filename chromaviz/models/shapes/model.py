"""The bundled shapes model: a small trained text-to-pixels diffusion network shipped in the package.

A ``UNet2DConditionModel`` (4.0 M parameters) and a ``CLIPTextModel`` (0.1 M) trained together by
``python -m chromaviz.models.shapes.train`` on :mod:`chromaviz.models.shapes.dataset` (captions like ``"a red circle on blue
stripes"``), 32×32 RGB, DDIM over the cosine schedule. It is saved with ``save_pretrained`` in
``weights/shapes32`` and loaded here with ``from_pretrained`` from that folder, so it runs through
the same adapter as any diffusers pipeline (prompt encoding, guidance, recording, switches).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ... import _checks
from ..diffusers.adapter import from_pipeline, quiet_loading
from ..diffusers.denoisers import DiffusersTextPixelDenoiser
from .dataset import VOCABULARY, TrainingData

WEIGHTS = Path(__file__).parent / "weights" / "shapes32"
"""The folder ``save_pretrained`` wrote the bundled pipeline to."""

GUIDANCE = 3.0
"""Classifier-free guidance the docs recommend for it (the quality figures are measured with it)."""

EXAMPLE_PROMPTS = ("a red circle on blue stripes", "a yellow star on green checks")


def load_shapes(*, size: int | None = None, schedule=None, device: str | torch.device | None = None,
                folder: str | Path | None = None) -> DiffusersTextPixelDenoiser:
    """The bundled shapes model as a chromaviz denoiser.

    Parameters
    ----------
    size : int, optional
        Default sample size in pixels (it was trained at 32; other multiples of 4 run, but show
        what a convolutional network does out of its training size).
    schedule : None
        A trained network is tied to the schedule it was trained with; anything else is refused.
    device : str or torch.device, optional
    folder : path, optional
        Another pipeline folder written by the training script (default: the bundled one).
    """
    from ..diffusers.text_pixels import TextToPixelsPipeline  # imports diffusers' pipelines: only when used


    if size is not None:
        _checks.positive_int("size", size)
    if device is not None:
        _checks.torch_device("device", device)  # before loading anything
    if schedule is not None:
        raise ValueError("the shapes model keeps the schedule it was trained with (cosine, 1000 timesteps); "
                         f"it cannot take schedule={schedule!r}")
    path = Path(folder) if folder is not None else WEIGHTS
    if not (path / "model_index.json").is_file():
        raise FileNotFoundError(f"no trained shapes pipeline in {path} (model_index.json missing); "
                                "train one with python -m chromaviz.models.shapes.train --out runs/shapes")
    with quiet_loading():  # transformers' and diffusers' notices and loading bars say nothing to a user
        pipe = TextToPixelsPipeline.from_pretrained(path, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    model = from_pipeline(pipe, name="shapes")
    model.example_prompts = EXAMPLE_PROMPTS
    model.vocabulary = VOCABULARY
    model.recommended_guidance = GUIDANCE
    model.data = TrainingData()  # its dataset generator: the ideal process and the data power (docs/chromatography.md)
    if size is not None:
        model.check_size(size, size)
        model.default_size = (size, size)
    if device is not None:
        model.to(device)
    return model
