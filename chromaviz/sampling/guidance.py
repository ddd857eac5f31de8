"""Classifier-free guidance, with composable prompts (``AND``): one batched model evaluation per step.

A step's prompt text may hold several ``AND`` terms with weights (:func:`~chromaviz.prompts.split_and`).
The guided prediction is then the webui's composable-diffusion sum

    ε̃ = ε_u + w·Σ_i a_i·(ε_i − ε_u),

with ε_u the prediction for the negative (or unconditional) prompt, ε_i that for term i, a_i its
weight and w the guidance scale (Liu et al. 2022, *Compositional Visual Generation with Composable
Diffusion Models*, eq. 12; AUTOMATIC1111's ``CFGDenoiser.combine_denoised``). A single term of
weight 1 is plain classifier-free guidance, ε̃ = ε_u + w·(ε_c − ε_u) (Ho & Salimans 2022, eq. 6).
The guidance rescale φ of Lin et al. (2023) §3.4 is diffusers' own ``rescale_noise_cfg``.
"""

from __future__ import annotations

from functools import reduce
from typing import Any, Callable

import torch
from diffusers.guiders.guider_utils import rescale_noise_cfg

from ..models.base import Denoiser
from ..noise.plan import NoiseLevel
from ..prompts import has_weights, join_and, split_and

__all__ = ["Guidance", "check_prompt", "concat_conditioning"]


class Guidance:
    """Classifier-free guidance with scale ``scale`` (1: none) and rescale φ = ``rescale``.

    Parameters
    ----------
    scale : float
        w in ε̃ = ε_u + w·Σ_i a_i·(ε_i − ε_u); 1 with a plain prompt means a single conditional
        model call per step.
    rescale : float
        φ in [0, 1]: diffusers' ``rescale_noise_cfg(ε̃, ε_c, guidance_rescale=φ)``, with
        ε_c = ε_u + Σ_i a_i·(ε_i − ε_u) (the conditional prediction for a single term).
    """

    def __init__(self, scale: float, rescale: float = 0.0) -> None:
        self.scale, self.rescale = scale, rescale

    def combine(self, uncond: torch.Tensor, cond: torch.Tensor | list[torch.Tensor],
                weights: list[float] | None = None) -> torch.Tensor:
        """The guided output from the unconditional one and the conditional one(s), each (B, C, H, W).

        ``cond`` may be a list of term predictions ε_i with ``weights`` a_i (default: all 1).
        """
        conds = cond if isinstance(cond, list) else [cond]
        weights = [1.0] * len(conds) if weights is None else weights
        if len(conds) == 1 and weights[0] == 1.0:
            cond_sum = conds[0]
        else:
            cond_sum = uncond + sum(a * (c - uncond) for a, c in zip(weights, conds))
        guided = uncond + self.scale * (cond_sum - uncond)
        if self.rescale > 0:
            guided = rescale_noise_cfg(guided, cond_sum, guidance_rescale=self.rescale)
        return guided

    def predict(self, model: Denoiser, x_in: torch.Tensor, noise: NoiseLevel, prompt: str | None,
                negative: str | None, encode: Callable[[str | None], Any]) -> torch.Tensor:
        """One batched model evaluation at ``noise`` for the step's ``prompt``, guided away from ``negative``.

        Parameters
        ----------
        model : Denoiser
        x_in : Tensor, shape (B, C, H, W)
            The scaled network input.
        noise : NoiseLevel
        prompt : str or None
            The step's prompt text; its ``AND`` terms and weights are read here.
        negative : str or None
            The negative prompt (None: unconditional). ``AND`` is not read in it, as in the webui.
        encode : callable
            ``encode(text)`` → the model's conditioning for a batch of B.

        Returns
        -------
        Tensor, shape (B, C, H, W)
            In the model's parametrisation.
        """
        if prompt is None:
            return model(x_in, noise, encode(None))
        terms = split_and(prompt)
        plain = len(terms) == 1 and terms[0][1] == 1.0
        if plain:
            terms = [(prompt, 1.0)]  # the text as it is (the encoder's cache key)
        if self.scale == 1.0 and plain:
            return model(x_in, noise, encode(prompt))
        conds = [encode(negative)] + [encode(text) for text, _ in terms]
        out = model(torch.cat([x_in] * len(conds)), noise, reduce(concat_conditioning, conds))
        uncond, *cond = out.chunk(len(conds))
        return self.combine(uncond, cond, [a for _, a in terms])


def check_prompt(model: Denoiser, prompt: str | None) -> str | None:
    """One step's prompt checked by ``model``, term by term when it has ``AND``.

    Each term goes through ``model.check_prompt`` (which may canonicalise it, "a photo of a cat" →
    "cat"); the terms are joined back with their weights.

    Raises
    ------
    ValueError
        From the model, or if the text has emphasis weights (``(word:1.2)``, ``((word))``,
        ``[word]``) and the model has no text encoder to apply them (``model.emphasis`` false).
    """
    if prompt is None or not model.conditional:
        return model.check_prompt(prompt)
    terms = split_and(prompt)
    if len(terms) == 1 and terms[0][1] == 1.0:
        return _check_term(model, prompt)
    return join_and([(_check_term(model, text), w) for text, w in terms])


def _check_term(model: Denoiser, text: str) -> str | None:
    checked = model.check_prompt(text)
    if not getattr(model, "emphasis", False) and has_weights(text):
        raise ValueError(
            f"emphasis weights such as (word:1.2), ((word)) or [word] apply to models with a text encoder; "
            f"{model.name} reads its prompts without one, so they do not apply (got {text!r}); "
            f"write \\( \\) \\[ \\] for literal brackets"
        )
    return checked


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
