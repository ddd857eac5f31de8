"""Upsample guidance: sample at m× the resolution a model was built (or trained) for.

Hwang, Park & Jo, *Upsample Guidance: Scale Up Diffusion Models without Training*, arXiv:2404.01709.

A model asked directly for an image m times larger (in each direction) than its own size draws
content at its own pixel scale: layouts repeat and coarse structure is missing. Upsample guidance
keeps the coarse levels of the large image consistent with what the model generates at its own size:

    ε̃(x_t, t) = ε(x_t, t) + w_t·U_m[(1/m)·ε(D_m[x_t]/ρ, τ) − D_m[ε(x_t, t)]]

with D_m the m×m average pooling and U_m nearest-neighbour upsampling (:mod:`chromaviz.spectral`).

Why these factors. With x_t = α·x0 + σ·ε, pooling gives D_m[x_t] = α·D_m[x0] + (σ/m)·ε', where
ε' = m·D_m[ε] is again N(0, I). So y = D_m[x_t]/ρ has signal scale α/ρ and noise scale σ/(m·ρ):
log-SNR λ + 2·ln m, the model's timestep τ with λ(τ) = λ(t) + 2·ln m (:func:`chromaviz.theory.
time_adjustment`), and the intensity factor ρ puts y on the schedule's family of noise levels:
ρ = √(α² + σ²/m²) for variance-preserving inputs (α² + σ² = 1) and ρ = α + σ/m for flow matching
(α + σ = 1). The model's ε̂ of y estimates ε' = m·D_m[ε], hence the 1/m. Its x̂0 estimates
D_m[x0] directly, and the same correction written for x̂0 is x̂0 + w·U_m[x̂0(y, τ) − D_m[x̂0]]; the
two are one correction (α·Δx̂0 + σ·Δε̂ = w·U_m[ρ·y − D_m[x_t]] = 0), so :class:`UpsampleGuided`
corrects both and hands back the model's own parameterisation (x̂0, ε, v or flow velocity) through
:func:`~chromaviz.models.base.join_prediction`.

The guidance weight w_t is θ while the timestep lies in the first fraction η of the training
timeline, t ≥ t_max − η·(t_max − t_min), and 0 after; with evenly spaced timesteps (DDIM, DDPM,
Euler) this is the first fraction η of the sampling steps. Where λ(t) + 2·ln m lies beyond the
schedule's least noisy timestep (the last steps), τ does not exist and w_t is 0.
η is called ``guidance_fraction`` here, so that ``eta`` stays DDIM's η of
:func:`~chromaviz.sampling.sample` (``upscale(..., guidance_fraction=0.5, eta=1.0)``).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch

from ..models.base import Denoiser, Wrapper, join_prediction, split_prediction
from ..models.gaussian import GaussianPowerLaw
from ..noise.levels import level_offset
from ..noise.plan import NoiseLevel
from ..noise.schedules import Schedule
from ..sampling import sample
from ..sampling.trajectory import Trajectory
from ..spectral import octave_ring_masks, pool, upsample


def _check_factor(factor: Any) -> int:
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 2:
        raise ValueError(f"factor must be an integer ≥ 2 (the large image is factor× the model's size), got {factor!r}")
    return int(factor)


def adjusted_level(schedule: Schedule, noise: NoiseLevel, factor: int) -> tuple[NoiseLevel, float] | None:
    """Noise level of the pooled input D_m[x_t]/ρ, and the intensity factor ρ.

    Parameters
    ----------
    schedule : Schedule
        The model's schedule; it maps the pooled log-SNR to the timestep τ.
    noise : NoiseLevel
        Noise level (α, σ) of the large network input x_t at its timestep t.
    factor : int
        Pooling factor m.

    Returns
    -------
    (NoiseLevel, float) or None
        ``NoiseLevel(τ, α/ρ, σ/(m·ρ))`` with λ(τ) = λ + 2·ln m, and ρ (dimensionless): √(α² + σ²/m²)
        for variance-preserving schedules, α + σ/m for flow matching. None where τ does not exist
        (λ + 2·ln m beyond the schedule's least noisy timestep, or α = 0).
    """
    m = _check_factor(factor)
    a, s = noise.alpha, noise.sigma
    if not a > 0:
        return None
    lam = noise.log_snr + float(level_offset(m)[0])
    tau = float(schedule.t_of_log_snr(lam)) if math.isfinite(lam) else math.nan
    if not math.isfinite(tau):
        return None
    rho = a + s / m if schedule.kind == "flow" else math.sqrt(a * a + (s / m) ** 2)
    return NoiseLevel(tau, a / rho, s / (m * rho)), rho


def guidance_weight(schedule: Schedule, noise: NoiseLevel, theta: float, guidance_fraction: float) -> float:
    """w_t: θ while t ≥ t_max − η·(t_max − t_min) (the first fraction η of the timeline), else 0.

    ``guidance_fraction`` is η of Upsample Guidance, the fraction of the timeline (noisiest
    first) during which guidance acts.
    """
    if guidance_fraction <= 0:
        return 0.0
    start = schedule.t_max - guidance_fraction * (schedule.t_max - schedule.t_min)
    return float(theta) if noise.timestep >= start - 1e-9 else 0.0


class UpsampleGuided(Wrapper):
    """A denoiser that answers at ``factor``× the size of ``model``, with upsample guidance.

    It keeps the base model's schedule, parameterisation, prompts and decoding (forwarded by
    :class:`~chromaviz.models.base.Wrapper`) and overrides what it changes: the default size, the
    sizes it accepts, the prediction and the data spectrum. Every evaluation calls the base model
    on x_t (the large input) and, while w_t > 0, a second time on D_m[x_t]/ρ at the adjusted
    timestep τ (fractional in general: diffusers UNets embed float timesteps sinusoidally and the
    built-in models read only α and σ, so both accept it).

    Parameters
    ----------
    model : Denoiser
        The base model (built-in or a diffusers adapter).
    factor : int
        m ≥ 2: the large sample is m× the base size in each direction (on the model's sample grid,
        i.e. latents for a latent model).
    theta : float
        Guidance scale θ ≥ 0 (0: the plain base model at the large size; 1: the coarse levels
        follow the model at its own size; the paper uses θ ≈ 1–1.2).
    guidance_fraction : float
        η ∈ [0, 1] of Upsample Guidance: the fraction of the timeline, noisiest first, during which
        guidance acts (default 0.5).

    Raises
    ------
    ValueError
        For a model that is not a Denoiser, a factor that is not an integer ≥ 2, θ < 0 or not
        finite, a guidance fraction outside [0, 1].

    Examples
    --------
    >>> from chromaviz.models import GaussianPowerLaw
    >>> model = UpsampleGuided(GaussianPowerLaw(size=32), factor=2)
    >>> model.default_size
    (64, 64)
    """

    def __init__(self, model: Denoiser, factor: int = 2, theta: float = 1.0, guidance_fraction: float = 0.5) -> None:
        super().__init__(model)
        fraction = guidance_fraction
        self.factor = _check_factor(factor)
        if isinstance(theta, bool) or not isinstance(theta, (int, float)) or not (math.isfinite(theta) and theta >= 0):
            raise ValueError(f"theta must be a finite number ≥ 0, got {theta!r}")
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction <= 1:
            raise ValueError(f"guidance_fraction (η) must be a number in [0, 1] (a fraction of the "
                             f"timeline), got {fraction!r}")
        self.theta, self.guidance_fraction = float(theta), float(fraction)
        self.name = f"{model.name}-upsampled{self.factor}x"
        h, w = model.default_size
        self.default_size = (h * self.factor, w * self.factor)

    def check_size(self, height: int, width: int) -> None:
        """Raise ``ValueError`` unless (height, width) pixels is m× a size the base model samples."""
        m = self.factor
        if height % m or width % m:
            raise ValueError(f"size {height}×{width} is not divisible by the upsampling factor {m}")
        self.model.check_size(height // m, width // m)
        self.model.check_size(height, width)
        h, w = self.model.latent_size(height, width)
        if h % m or w % m:
            raise ValueError(f"latents of {h}×{w} for {height}×{width} pixels are not divisible by the upsampling factor {m}")

    def data_power(self, height: int, width: int) -> np.ndarray | None:
        """The spectrum of the process upsample guidance samples: the base model's data at m× its size.

        For :class:`~chromaviz.models.gaussian.GaussianPowerLaw` that is :func:`upscaled_truth`
        (the base spectrum itself only when α = 2); None for models whose data at m× is unknown.
        """
        if isinstance(self.model, GaussianPowerLaw):
            return upscaled_truth(self.model, self.factor).power(height, width)
        return None

    @property
    def data(self):  # the base model's data is not this process's data at m× its size
        return None

    def draw_data(self, prompt, n, size, generator):
        """None: the data upsample guidance samples at m× the base size cannot be drawn."""
        return None

    def data_moments(self, prompt, height, width):
        """Zero mean and :meth:`data_power` where it is known (the Gaussian base model), else None."""
        return Denoiser.data_moments(self, prompt, height, width)

    def weight(self, noise: NoiseLevel) -> float:
        """w_t at the noise level ``noise``: θ in the first fraction η of the timeline where τ exists, else 0."""
        w = guidance_weight(self.schedule, noise, self.theta, self.guidance_fraction)
        return w if w and adjusted_level(self.schedule, noise, self.factor) is not None else 0.0

    def __call__(self, x_t: torch.Tensor, noise: NoiseLevel, cond: Any) -> torch.Tensor:
        """The guided prediction for the large input ``x_t`` (B, C, m·h, m·w), in the base model's parameterisation."""
        m = self.factor
        out = self.model(x_t, noise, cond)
        w = guidance_weight(self.schedule, noise, self.theta, self.guidance_fraction)
        small = adjusted_level(self.schedule, noise, m) if w else None
        if small is None:
            return out
        small_noise, rho = small
        y = pool(x_t, m) / rho
        out_small = self.model(y, small_noise, cond)
        p = self.parameterization
        x0, eps = split_prediction(out.to(x_t.dtype), x_t, noise, p)
        x0_small, eps_small = split_prediction(out_small.to(x_t.dtype), y, small_noise, p)
        x0 = x0 + w * upsample(x0_small - pool(x0, m), m)
        eps = eps + w * upsample(eps_small / m - pool(eps, m), m)
        return join_prediction(x0, eps, noise, p).to(out.dtype)

    def describe(self) -> dict[str, Any]:
        return {**self.model.describe(), "name": self.name,
                "upsample_guidance": {"factor": self.factor, "theta": self.theta,
                                      "guidance_fraction": self.guidance_fraction, "base": self.model.name}}

    def __repr__(self) -> str:
        return (f"UpsampleGuided({self.model!r}, factor={self.factor}, theta={self.theta:g}, "
                f"guidance_fraction={self.guidance_fraction:g})")


def upscale(
    model: Denoiser,
    prompt: Any = None,
    *,
    factor: int = 2,
    theta: float = 1.0,
    guidance_fraction: float = 0.5,
    height: int | None = None,
    width: int | None = None,
    **kwargs: Any,
) -> Trajectory:
    """Sample ``model`` at ``factor``× its size with upsample guidance.

    Parameters
    ----------
    model : Denoiser
        The base model.
    prompt : str, PromptSchedule, callable or None
        As for :func:`chromaviz.sampling.sample`.
    factor, theta, guidance_fraction
        m, θ and η of :class:`UpsampleGuided`.
    height, width : int, optional
        Size of the result in pixels; default ``factor`` × the model's ``default_size``.
    **kwargs
        Any other argument of :func:`chromaviz.sampling.sample` (num_inference_steps, scheduler, guidance,
        seed, batch_size, device, record, and DDIM's ``eta`` …).

    Returns
    -------
    Trajectory
        The run; ``trajectory.final`` has shape (B, C, m·h, m·w) on the model's sample grid.
    """
    guided = UpsampleGuided(model, factor=factor, theta=theta, guidance_fraction=guidance_fraction)
    h, w = guided.default_size
    return sample(guided, prompt, height=h if height is None else height, width=w if width is None else width, **kwargs)


# --------------------------------------------------------------------------------------------
# where the truth is known: the power-law Gaussian at m× its size
# --------------------------------------------------------------------------------------------


def upscaled_truth(model: GaussianPowerLaw, factor: int) -> GaussianPowerLaw:
    """The true process of ``model`` at ``factor``× its size: the same scene, m× more pixels.

    A stationary field on the unit torus with spectrum S(k) (k in cycles per image), sampled on an
    N×N grid, has power N²·S(k) per mode of the orthonormal FFT. The model's power A·(|k|/N)^(−α)
    per mode is therefore the field S(k) = A·N^(α−2)·|k|^(−α); on the (m·N)² grid the same field has
    power (mN)²·S(k) = A·m^(2−α)·(|k|/(mN))^(−α): the model's power law in cycles/pixel again, with
    amplitude A·m^(2−α) (its DC convention, f = 1/max(H, W), obeys the same rule). For α = 2 this is
    the model itself (scale invariance); otherwise the plain model at m× is off by m^(α−2).

    Parameters
    ----------
    model : GaussianPowerLaw
        The model at its design size ``model.default_size``.
    factor : int
        m ≥ 2.

    Returns
    -------
    GaussianPowerLaw
        Same exponent, schedule and channels; amplitude A·m^(2−α), default size m× the model's.
    """
    m = _check_factor(factor)
    if not isinstance(model, GaussianPowerLaw):
        raise ValueError(f"the true upscaled process is known for GaussianPowerLaw only, got {type(model).__name__}")
    h, w = model.default_size
    return GaussianPowerLaw(model.exponent, model.amplitude * m ** (2 - model.exponent), schedule=model.schedule,
                            channels=model.channels, size=(h * m, w * m))


def band_log_ratio(x: torch.Tensor, power: np.ndarray | torch.Tensor, levels: Sequence[int]) -> np.ndarray:
    """ln(measured / expected power) of samples in each octave ring of the FFT.

    Parameters
    ----------
    x : torch.Tensor, shape (B, C, H, W)
        Samples.
    power : array, shape (H, W)
        Expected power of each mode of the orthonormal FFT (white noise = 1), e.g.
        ``GaussianPowerLaw.power(H, W)`` of the true process.
    levels : sequence of int
        Levels 1, 2, 4, … of :func:`chromaviz.spectral.octave_ring_masks` (level m owns
        0.25/m ≤ f < 0.5/m cycles/pixel).

    Returns
    -------
    ndarray, shape (len(levels),)
        For each ring, ln of the mean |FFT x|² (over batch, channels and the ring's cells) over the
        mean of ``power`` on the same cells: 0 where the samples have the true spectrum, ln 2 where
        they have twice its power.
    """
    h, w = x.shape[-2:]
    masks = octave_ring_masks(h, w, levels)
    measured = torch.fft.fft2(x.double(), norm="ortho").abs().square().mean(dim=(0, 1))
    expected = torch.as_tensor(np.asarray(power), dtype=torch.float64)
    if expected.shape != (h, w):
        raise ValueError(f"power must have the samples' grid shape {(h, w)}, got {tuple(expected.shape)}")
    return np.array([float(torch.log(measured[k].mean() / expected[k].mean())) for k in masks])
