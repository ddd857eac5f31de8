"""Classifier-free guidance: one model evaluation per step, batched as [negative, positive].

The guidance rescale φ of Lin et al. (2023) §3.4 is diffusers' own ``rescale_noise_cfg``.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from diffusers.guiders.guider_utils import rescale_noise_cfg

from ..models.base import Denoiser
from ..noise.plan import NoiseLevel


class Guidance:
    """Classifier-free guidance with scale ``scale`` (1: none) and rescale φ = ``rescale``.

    Parameters
    ----------
    scale : float
        w in ε̃ = ε_u + w·(ε_c − ε_u); 1 means a single conditional model call per step.
    rescale : float
        φ in [0, 1]: diffusers' ``rescale_noise_cfg(ε̃, ε_c, guidance_rescale=φ)``.
    """

    def __init__(self, scale: float, rescale: float = 0.0) -> None:
        self.scale, self.rescale = scale, rescale

    def combine(self, uncond: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """The guided output from the unconditional and conditional ones, each (B, C, H, W)."""
        guided = uncond + self.scale * (cond - uncond)
        if self.rescale > 0:
            guided = rescale_noise_cfg(guided, cond, guidance_rescale=self.rescale)
        return guided

    def predict(self, model: Denoiser, x_in: torch.Tensor, noise: NoiseLevel, prompt: str | None,
                negative: str | None, encode: Callable[[str | None], Any]) -> torch.Tensor:
        """One model evaluation at ``noise`` for ``prompt``, guided away from ``negative``."""
        if self.scale == 1.0 or prompt is None:
            return model(x_in, noise, encode(prompt))
        both = model(torch.cat([x_in, x_in]), noise, concat_conditioning(encode(negative), encode(prompt)))
        uncond, cond = both.chunk(2)
        return self.combine(uncond, cond)


def concat_conditioning(a: Any, b: Any) -> Any:
    """Two batches of conditioning joined along the batch: tensors, lists, None, or ``.concat``."""
    if isinstance(a, torch.Tensor):
        return torch.cat([a, b])
    if isinstance(a, list):
        return a + b
    if a is None and b is None:
        return None
    if hasattr(a, "concat"):
        return a.concat(b)
    raise TypeError(f"cannot batch conditioning of type {type(a).__name__} for guidance")
