"""A stationary Gaussian process with a power-law spectrum, denoised exactly by a Wiener filter.

Data: x0 ~ N(0, Σ) on the H×W torus, each channel independent, with Σ diagonal in the
orthonormal 2-D FFT: the power of mode f (cycles/pixel, white noise = 1) is P(f) = A·|f|^(−α).
The DC mode takes the power of the lowest non-zero frequency, 1/max(H, W).

The posterior mean is exact: E[x0 | x_t] = F⁻¹[ α·P / (α²·P + σ²) · F x_t ]. Driven by a diffusers
scheduler this is a real diffusion model of a known distribution, the one on which the
spectrum-aware chromatography of :mod:`chromaviz.theory` must agree with measurement.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from .. import _checks, spectral
from ..noise.plan import NoiseLevel
from ..noise.schedules import Schedule
from .base import DataSource, Denoiser


def power_law_grid(height: int, width: int, amplitude: float, exponent: float) -> np.ndarray:
    """P(f) = A·|f|^(−α) on the unshifted (H, W) FFT grid, f in cycles/pixel; DC as f = 1/max(H, W)."""
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.fftfreq(width)[None, :]
    radius = np.sqrt(fy**2 + fx**2)
    radius[0, 0] = 1.0 / max(height, width)
    return amplitude * radius ** (-exponent)


class GaussianPowerLaw(Denoiser):
    """Exact denoiser of a stationary power-law Gaussian (no weights, no downloads).

    Parameters
    ----------
    exponent : float
        α in P(f) = A·|f|^(−α); natural images have α ≈ 2.
    amplitude : float
        A, the power at 1 cycle/pixel relative to unit white noise. The default 0.04 gives unit
        per-pixel variance at 64×64 (1.04), the normalisation in which the m² law is stated.
    schedule : Schedule or str
        Noise schedule (default Stable Diffusion's ``scaled_linear``).
    channels : int
        Independent channels (3 renders as RGB).
    size : int or (int, int)
        Default sample size in pixels.

    Examples
    --------
    >>> from chromaviz.models import GaussianPowerLaw
    >>> model = GaussianPowerLaw(exponent=2.0)
    >>> model.power(64, 64).shape
    (64, 64)
    """

    parameterization = "sample"

    def __init__(
        self,
        exponent: float = 2.0,
        amplitude: float = 0.04,
        *,
        schedule: Schedule | str = "scaled_linear",
        channels: int = 3,
        size: int | tuple[int, int] = 64,
    ) -> None:
        self.exponent = _checks.real("exponent", exponent, minimum=0)
        self.amplitude = _checks.real("amplitude", amplitude)
        if not self.amplitude > 0:
            raise ValueError(f"amplitude must be positive, got {amplitude}")
        self.schedule = Schedule.coerce(schedule)
        self.channels = _checks.positive_int("channels", channels)
        self.default_size = _checks.image_size("size", size)
        self.check_size(*self.default_size)
        self.name = "gaussian"
        self.data = _GaussianData(self)
        self._power_cache: dict[tuple[int, int, str], torch.Tensor] = {}

    @classmethod
    def fitted_to(cls, photo: str = "cat", size: int = 64, **kwargs) -> GaussianPowerLaw:
        """Natural-image statistics: A and α fitted to a bundled photograph's RAPSD at ``size``."""
        from .photos import load_photo

        img = torch.from_numpy(load_photo(photo, size, size)).unsqueeze(0)
        img = img - img.mean(dim=(-2, -1), keepdim=True)
        freqs, power = spectral.rapsd(img)
        amplitude, exponent = spectral.fit_power_law(freqs, power)
        return cls(exponent=exponent, amplitude=amplitude, size=size, **kwargs)

    def power(self, height: int, width: int) -> np.ndarray:
        """P(f) on the (H, W) FFT grid, shape (H, W): the data power of each mode."""
        return power_law_grid(height, width, self.amplitude, self.exponent)

    def _power_tensor(self, height: int, width: int, device: torch.device) -> torch.Tensor:
        """P on the rfft grid, (H, W//2 + 1) float64, cached per size and device."""
        key = (height, width, str(device))
        if key not in self._power_cache:
            self._power_cache[key] = torch.from_numpy(self.power(height, width)[:, : width // 2 + 1]).to(device)
        return self._power_cache[key]

    def encode(self, prompts: Sequence[str | None]) -> Any:
        for p in prompts:
            self.check_prompt(p)
        return None

    def data_power(self, height: int, width: int) -> np.ndarray:
        """The exact data spectrum, :meth:`power`: this model knows its data."""
        return self.power(height, width)

    def __call__(self, x_t: torch.Tensor, noise: NoiseLevel, cond: Any = None) -> torch.Tensor:
        """The posterior mean E[x0 | x_t] for inputs (B, C, H, W) at the noise level ``noise`` (a Wiener filter)."""
        h, w = x_t.shape[-2:]
        p = self._power_tensor(h, w, x_t.device)
        gain = noise.alpha * p / (noise.alpha**2 * p + noise.sigma**2)
        spec = torch.fft.rfft2(x_t.double()) * gain
        return torch.fft.irfft2(spec, s=(h, w)).to(x_t.dtype)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "exponent": self.exponent, "amplitude": self.amplitude}

    def __repr__(self) -> str:
        return f"GaussianPowerLaw(exponent={self.exponent:g}, amplitude={self.amplitude:g}, schedule={self.schedule.name})"


class _GaussianData(DataSource):
    """Draws of x0 ~ N(0, Σ) of a :class:`GaussianPowerLaw`: F⁻¹[√P·F ε] with ε white (orthonormal FFT)."""

    description = "the model's own Gaussian data (exact)"
    exact = True
    gaussian = True

    def __init__(self, model: GaussianPowerLaw) -> None:
        self.model = model

    def draw(self, prompt: str | None, n: int, size: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
        """``n`` draws, shape (n, C, H, W), float32 on the generator's device (the prompt is ignored: unconditional)."""
        h, w = size
        white = torch.randn((n, self.model.channels, h, w), generator=generator, dtype=torch.float64,
                            device=generator.device)
        root = torch.from_numpy(np.sqrt(self.model.power(h, w))[:, : w // 2 + 1]).to(white.device)
        return torch.fft.irfft2(torch.fft.rfft2(white, norm="ortho") * root, s=(h, w), norm="ortho").float()
