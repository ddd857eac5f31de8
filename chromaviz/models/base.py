"""The denoiser contract every chromaviz model fulfils.

A denoiser answers one question: given the network input x_t (shape (B, C, H, W)), its noise level
and an encoded conditioning, what is its prediction, in its own parametrisation (clean sample,
ε, or v)? It also knows its noise schedule, encodes prompts, and maps samples to RGB for display.

Beyond that, a model *declares* what it can do, so that callers never probe it with ``hasattr``:
the size of its samples for an image size (:meth:`Denoiser.latent_size`), the exact power spectrum
of its data if it knows one (:meth:`Denoiser.data_power`), how its samples become the final image
(:meth:`Denoiser.decode`) and the scheduler ``"default"`` means for it
(:attr:`Denoiser.default_scheduler`), and whether it can draw samples of its data
(:meth:`Denoiser.draw_data`, from a :class:`DataSource`) and knows the data's exact moments per
Fourier mode (:meth:`Denoiser.data_moments`); :meth:`Denoiser.capabilities` sums them up. Wrappers
(:class:`Wrapper`) forward each of these by name, never implicitly.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from .. import _checks
from ..noise.plan import NoiseLevel
from ..noise.schedulers import scheduler_name
from ..noise.schedules import Schedule

PARAMETERIZATIONS = ("sample", "epsilon", "v_prediction", "flow")
"""What a denoiser's output means: x̂0, ε, v = α·ε − σ·x0, or the flow velocity ε − x0."""


def split_prediction(output: torch.Tensor, x_t: torch.Tensor, noise: NoiseLevel, parameterization: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(x̂0, ε̂) from a model output, using x_t = α·x0 + σ·ε at the noise level ``noise``.

    Shapes of ``output`` and ``x_t`` are (B, C, H, W); both results have that shape.
    """
    a, s = noise.alpha, noise.sigma
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


def join_prediction(x0: torch.Tensor, eps: torch.Tensor, noise: NoiseLevel, parameterization: str) -> torch.Tensor:
    """The model output a scheduler expects (``parameterization``) from x̂0 and ε̂ at the noise level ``noise``."""
    if parameterization == "sample":
        return x0
    if parameterization == "epsilon":
        return eps
    if parameterization == "v_prediction":
        return noise.alpha * eps - noise.sigma * x0
    if parameterization == "flow":
        return eps - x0
    raise ValueError(f"unknown parameterization {parameterization!r}; choose one of {PARAMETERIZATIONS}")


@dataclass(frozen=True)
class Capabilities:
    """What a model declares it can do (:meth:`Denoiser.capabilities`).

    Attributes
    ----------
    latent : bool
        Its samples live in a latent space: :meth:`Denoiser.latent_size` differs from the image
        size, and :meth:`Denoiser.decode` maps latents to pixels.
    exact_spectrum : bool
        :meth:`Denoiser.data_power` returns the exact data spectrum (else None: callers measure one).
    decoder : str
        What :meth:`Denoiser.decode` uses, e.g. ``"to_rgb"`` or ``"vae"``.
    default_scheduler : str
        The scheduler ``"default"`` means for this model.
    data : str
        Where :meth:`Denoiser.draw_data` draws data from (:attr:`DataSource.description`), or
        ``"none"`` where the model cannot draw any (then there is no ideal-process curve).
    """

    latent: bool
    exact_spectrum: bool
    decoder: str
    default_scheduler: str
    data: str = "none"


class DataSource(abc.ABC):
    """Data a model can be fed forward-noised: its own data, its training distribution, or user images.

    What :meth:`Denoiser.draw_data` draws from. The ideal-process curve (:func:`chromaviz.analysis.compare`,
    ``Comparison.ideal``) applies the model's denoiser to x_t = α·x0 + σ·ε with x0 drawn here, and the
    data's power per band (the denominator of every signal fraction) is estimated from these draws
    where the model does not declare it exactly (:meth:`Denoiser.data_moments`).

    Attributes
    ----------
    description : str
        Shown in tables and legends, e.g. ``"the shapes training distribution"``.
    exact : bool
        The model's denoiser is the exact posterior mean of this data (the ideal process is then exact).
    gaussian : bool
        The data is zero-mean Gaussian with the model's declared spectrum (:meth:`Denoiser.data_power`)
        and the denoiser its Wiener filter: the ideal process is then the spectrum-aware curve in
        closed form (THEORY §4c), and nothing is drawn.
    """

    description: str = "data"
    exact: bool = False
    gaussian: bool = False

    @abc.abstractmethod
    def draw(self, prompt: str | None, n: int, size: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
        """``n`` samples x0 of the data for ``prompt`` (None: unconditional) at ``size`` = (H, W) image
        pixels, in the model's space: shape (n, C, h, w) with (h, w) = ``model.latent_size(H, W)``.

        Raises
        ------
        ValueError
            If the source holds no data for this prompt or size.
        """


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
    emphasis : bool
        Whether the model applies emphasis weights (``(word:1.2)``, ``((word))``, ``[word]``) with a
        text encoder; for a model without one such prompts are refused (``docs/prompts.md``).
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
    emphasis: bool = False
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
    def __call__(self, x_t: torch.Tensor, noise: NoiseLevel, cond: Any) -> torch.Tensor:
        """The prediction for network input ``x_t`` (B, C, H, W) at the noise level ``noise``, same shape."""

    # ------------------------------------------------------------------ what the model can do
    latent: bool = False
    """Whether samples are latents (set by latent models together with :meth:`latent_size`)."""
    decoder: str = "to_rgb"
    """What :meth:`decode` uses (``"to_rgb"`` unless a model has a real decoder, e.g. ``"vae"``)."""

    def latent_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) of the samples for an image of (height, width) pixels; the same for pixel models."""
        return height, width

    def data_power(self, height: int, width: int) -> np.ndarray | None:
        """The exact power of the data at each mode of the orthonormal (H, W) FFT of the samples
        (white noise = 1), shape (H, W), or None where the model does not know it (the default)."""
        return None

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Samples (B, C, h, w) → the final image, RGB (B, 3, H, W) in [0, 1]; :meth:`to_rgb` unless overridden."""
        return self.to_rgb(x)

    data: DataSource | None = None
    """Where :meth:`draw_data` draws from; None (the default) where the model cannot draw data."""

    def draw_data(self, prompt: str | None, n: int, size: tuple[int, int],
                  generator: torch.Generator) -> torch.Tensor | None:
        """``n`` samples of the model's data for ``prompt`` at ``size`` = (H, W) image pixels, shape
        (n, C, h, w) in the model's space, or None where the model cannot draw data (the default).

        Raises
        ------
        ValueError
            If the model has data but none for this prompt or size.
        """
        return None if self.data is None else self.data.draw(prompt, n, size, generator)

    def data_mean(self, prompt: str | None, height: int, width: int) -> np.ndarray | None:
        """The exact mean E[x0] of the data for ``prompt``, shape (C, h, w), or None where unknown: what one
        sample is measured about. The default: :meth:`data_moments`' mean (a model whose moments are
        costly gives a cheaper way to its mean)."""
        moments = self.data_moments(prompt, height, width)
        return None if moments is None else moments[0]

    def data_moments(self, prompt: str | None, height: int, width: int) -> tuple[np.ndarray, np.ndarray] | None:
        """The exact mean and power per Fourier mode of the data for ``prompt``, or None where unknown.

        Parameters
        ----------
        prompt : str or None
            A canonical prompt (:meth:`check_prompt`); None: the unconditional data.
        height, width : int
            The sample grid (h, w) in the model's space.

        Returns
        -------
        (mean, power) : ndarray, shape (C, h, w) each, or None
            ``mean`` is E[x0] in sample space; ``power`` is E|F(x0 − E x0)|² at each mode of the
            orthonormal 2-D FFT (white noise = 1), the variance of each mode. The default: zero mean
            and :meth:`data_power` where the model declares it (a stationary Gaussian), else None.
        """
        power = self.data_power(height, width)
        if power is None:
            return None
        power = np.broadcast_to(np.asarray(power, dtype=np.float64).reshape(-1, height, width),
                                (self.channels, height, width)).copy()
        return np.zeros_like(power), power

    @property
    def default_scheduler(self) -> str:
        """The scheduler ``scheduler="default"`` means for this model (a name or a diffusers class name)."""
        return scheduler_name("default", self.schedule)

    def capabilities(self) -> Capabilities:
        """What this model declares it can do (at its ``default_size``)."""
        h, w = self.default_size
        size = self.latent_size(h, w)
        return Capabilities(self.latent, self.data_power(*size) is not None, self.decoder, self.default_scheduler,
                            "none" if self.data is None else self.data.description)

    def to_rgb(self, x: torch.Tensor) -> torch.Tensor:
        """Samples (B, C, H, W) in the model's space → RGB in [0, 1], shape (B, 3, H', W')."""
        x = x.float()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return ((x[:, :3] + 1) / 2).clamp(0, 1)

    def to(self, device: str | torch.device) -> Denoiser:
        """Move the model's tensors to ``device``; returns self.

        Raises
        ------
        TypeError, ValueError
            For anything but a device this machine has (:func:`chromaviz._checks.torch_device`).
        """
        self.device = _checks.torch_device("device", device)
        return self

    def describe(self) -> dict[str, Any]:
        """JSON-safe description stored with every trajectory."""
        return {"name": self.name, "parameterization": self.parameterization, "schedule": self.schedule.name}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.parameterization}, schedule {self.schedule.name})"


class Wrapper(Denoiser):
    """A denoiser built on another one: the whole contract forwarded by name, nothing implicitly.

    Subclasses override what they change (e.g. :class:`~chromaviz.apps.upscaling.UpsampleGuided`
    changes the size, the prediction and the data spectrum); everything else is the wrapped
    model's. Declared attributes are copied when the wrapper is made.

    Parameters
    ----------
    model : Denoiser
        The wrapped model (``self.model``).

    Raises
    ------
    ValueError
        If ``model`` is not a chromaviz :class:`Denoiser`.
    """

    DECLARED = ("name", "parameterization", "schedule", "channels", "default_size", "vocabulary", "conditional",
                "example_prompts", "recommended_guidance", "emphasis", "latent", "decoder")
    """Attributes copied from the wrapped model."""

    def __init__(self, model: Denoiser) -> None:
        if not isinstance(model, Denoiser):
            raise ValueError(f"model must be a chromaviz Denoiser, got {type(model).__name__}")
        self.model = model
        for attribute in self.DECLARED:
            setattr(self, attribute, getattr(model, attribute))

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:  # type: ignore[override]
        return self.model.dtype

    def to(self, device: str | torch.device) -> Wrapper:
        self.model.to(device)
        return self

    def check_prompt(self, prompt: str | None) -> str | None:
        return self.model.check_prompt(prompt)

    def check_size(self, height: int, width: int) -> None:
        self.model.check_size(height, width)

    def encode(self, prompts: Sequence[str | None]) -> Any:
        return self.model.encode(prompts)

    def __call__(self, x_t: torch.Tensor, noise: NoiseLevel, cond: Any) -> torch.Tensor:
        return self.model(x_t, noise, cond)

    def to_rgb(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.to_rgb(x)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.decode(x)

    def latent_size(self, height: int, width: int) -> tuple[int, int]:
        return self.model.latent_size(height, width)

    def data_power(self, height: int, width: int) -> np.ndarray | None:
        return self.model.data_power(height, width)

    @property
    def data(self) -> DataSource | None:  # type: ignore[override]
        return self.model.data

    def draw_data(self, prompt: str | None, n: int, size: tuple[int, int],
                  generator: torch.Generator) -> torch.Tensor | None:
        return self.model.draw_data(prompt, n, size, generator)

    def data_moments(self, prompt: str | None, height: int, width: int) -> tuple[np.ndarray, np.ndarray] | None:
        return self.model.data_moments(prompt, height, width)

    @property
    def default_scheduler(self) -> str:
        return self.model.default_scheduler

    def describe(self) -> dict[str, Any]:
        return self.model.describe()
