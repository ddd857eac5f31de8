"""The denoiser contract every chromaviz model fulfils.

A denoiser answers one question: given the network input x_t (shape (B, C, H, W)), its noise level
and an encoded conditioning, what is its prediction, in its own parametrisation (clean sample,
ε, or v)? It also knows its noise schedule, encodes prompts, and maps samples to RGB for display.
"""

from __future__ import annotations

import abc
from typing import Any, Sequence

import torch

from ..noise.plan import NoiseLevel
from ..noise.schedules import Schedule

PARAMETERIZATIONS = ("sample", "epsilon", "v_prediction", "flow")
"""What a denoiser's output means: x̂0, ε, v = α·ε − σ·x0, or the flow velocity ε − x0."""


def split_prediction(output: torch.Tensor, x_t: torch.Tensor, level: NoiseLevel, parameterization: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(x̂0, ε̂) from a model output, using x_t = α·x0 + σ·ε.

    Shapes of ``output`` and ``x_t`` are (B, C, H, W); both results have that shape.
    """
    a, s = level.alpha, level.sigma
    if parameterization == "sample":
        x0 = output
        eps = (x_t - a * x0) / s if s > 0 else torch.zeros_like(x0)
    elif parameterization == "epsilon":
        eps = output
        x0 = (x_t - s * eps) / a if a > 0 else torch.zeros_like(eps)
    elif parameterization == "v_prediction":  # valid for α² + σ² = 1
        x0 = a * x_t - s * output
        eps = s * x_t + a * output
    elif parameterization == "flow":  # x_t = (1 − σ)·x0 + σ·ε, v = ε − x0
        x0 = x_t - s * output
        eps = x_t + a * output
    else:
        raise ValueError(f"unknown parameterization {parameterization!r}; choose one of {PARAMETERIZATIONS}")
    return x0, eps


def join_prediction(x0: torch.Tensor, eps: torch.Tensor, level: NoiseLevel, parameterization: str) -> torch.Tensor:
    """The model output a scheduler expects (``parameterization``) from x̂0 and ε̂."""
    if parameterization == "sample":
        return x0
    if parameterization == "epsilon":
        return eps
    if parameterization == "v_prediction":
        return level.alpha * eps - level.sigma * x0
    if parameterization == "flow":
        return eps - x0
    raise ValueError(f"unknown parameterization {parameterization!r}; choose one of {PARAMETERIZATIONS}")


class Denoiser(abc.ABC):
    """Base class of chromaviz models.

    Attributes
    ----------
    name : str
        Short identifier used in trajectories and the CLI.
    parameterization : str
        One of :data:`PARAMETERIZATIONS`.
    schedule : Schedule
        The noise schedule the model was built (or trained) for.
    channels : int
        C of the samples (3 for RGB pixels, 4 for Stable Diffusion latents).
    default_size : tuple of int
        (H, W) a run uses when none is given.
    vocabulary : tuple of str or None
        Prompts the model understands, or None if it is unconditional (or takes free text).
    conditional : bool
        Whether prompts change its prediction (classifier-free guidance needs this).
    example_prompts : tuple of str or None
        Two prompts that show the model off (a UI's defaults for prompt A and prompt B).
    recommended_guidance : float
        The classifier-free guidance scale the model is documented with (1 = none).
    """

    name: str = "denoiser"
    parameterization: str = "sample"
    schedule: Schedule
    channels: int = 3
    default_size: tuple[int, int] = (64, 64)
    vocabulary: tuple[str, ...] | None = None
    conditional: bool = False
    example_prompts: tuple[str, str] | None = None
    recommended_guidance: float = 1.0
    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32

    def check_prompt(self, prompt: str | None) -> str | None:
        """Validate one prompt and return its canonical form; raise ``ValueError`` if unusable."""
        if prompt not in (None, "") and not self.conditional:
            raise ValueError(f"{self.name} is unconditional and takes no prompt (got {prompt!r}); pass prompt=None")
        return prompt or None

    def check_size(self, height: int, width: int) -> None:
        """Raise ``ValueError`` if the model cannot sample at (height, width) pixels."""
        if height < 8 or width < 8:
            raise ValueError(f"size {height}×{width} is too small; use at least 8×8")

    @abc.abstractmethod
    def encode(self, prompts: Sequence[str | None]) -> Any:
        """Encode one prompt per batch element (None = unconditional) into conditioning."""

    @abc.abstractmethod
    def __call__(self, x_t: torch.Tensor, level: NoiseLevel, cond: Any) -> torch.Tensor:
        """The prediction for network input ``x_t`` (B, C, H, W) at ``level``, same shape."""

    def to_rgb(self, x: torch.Tensor) -> torch.Tensor:
        """Samples (B, C, H, W) in the model's space → RGB in [0, 1], shape (B, 3, H', W')."""
        x = x.float()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return ((x[:, :3] + 1) / 2).clamp(0, 1)

    def to(self, device: str | torch.device) -> Denoiser:
        """Move the model's tensors to ``device``; returns self."""
        self.device = torch.device(device)
        return self

    def describe(self) -> dict[str, Any]:
        """JSON-safe description stored with every trajectory."""
        return {"name": self.name, "parameterization": self.parameterization, "schedule": self.schedule.name}
