"""Layouts with textures: a prompt-conditional Gaussian model whose coarse and fine content are named apart.

A prompt names up to three things: a **layout** (one of scikit-image's photographs, blurred so that
only its coarse structure is left, e.g. ``"horse"``), and a **texture**, a colour and a pattern at
periods of 4, 8 and 16 pixels (``"red stripes"``). The data of a prompt that names all three is Gaussian,

    x0 = μ_j + n,   μ_j = g·blur(photo_l) + a·pattern_p ⊗ colour_c,   n ~ N(0, Σ),

with Σ stationary and the same for every prompt: each channel an independent power-law field,
P(f) = A·|f|^(−α) per mode of the orthonormal 2-D FFT (white noise = 1; the spectrum of
:class:`~chromaviz.models.gaussian.GaussianPowerLaw`). A prompt that leaves a part unnamed (``"a
cat"``, ``"blue checks"``; None for the unconditional model) mixes the named parts with every choice
of the others, with equal weight: a mixture Σ_j π_j·N(μ_j, Σ) of components sharing one covariance.

Its posterior mean is exact (the Gaussian-mixture posterior; ``docs/composing.md``):

    E[x0 | x_t] = μ̄ + F⁻¹[ α·P / (α²·P + σ²) · F(x_t − α·μ̄) ],   μ̄ = Σ_j w_j·μ_j,
    log w_j = log π_j − ½·‖F(x_t − α·μ_j)‖²_C,   C = α²·P + σ²  (per mode),

one Wiener filter around the posterior-weighted mean (the shared covariance makes the component
posteriors' linear parts equal, and its determinant cancels in w_j).

Why this model composes
-----------------------
With one covariance for every prompt, the deviation x_t − α·μ runs through the same per-mode gains
whatever the prompt, and the prompts differ only in their means. On the probability-flow path of a
mode whose signal fraction at the switch is r = α²P/(α²P + σ²), switching from prompt A to B leaves

    x0 = x0_A + (1 − √r)/(1 − √r_T)·(x0_B − x0_A)

(x0_A, x0_B the single-prompt runs from the same noise, r_T the fraction at the first step): the
modes already decided at the switch (r → 1) keep A, those not yet formed (r → 0) take B. And the
fine content of the data is independent of its coarse content (a stationary Gaussian around a mean),
so B can supply fine content for any layout A has fixed, which a model that memorises photographs
(:class:`~chromaviz.models.exemplars.ExemplarMixture`) cannot. This is the time-dependent prompt
composing of J. Hwang, Y.-H. Park, J. Jo, "Resolution Chromatography of Diffusion Models",
arXiv:2401.10247 (2023), on a model where it can be predicted mode by mode
(:func:`chromaviz.apps.composing.switch_law`).
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np
import torch

from .. import _checks
from ..noise.levels import check_levels
from ..noise.plan import NoiseLevel
from ..noise.schedules import Schedule
from .base import DataSource, Denoiser
from .gaussian import power_law_grid
from .photos import load_photo

LAYOUTS: dict[str, str] = {"horse": "horse", "cameraman": "camera", "cat": "cat", "coffee": "coffee"}
"""Layout words → the scikit-image photograph (a key of :data:`chromaviz.models.photos.PHOTOS`) blurred into it."""

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (1.0, -1.0, -1.0),
    "green": (-1.0, 1.0, -1.0),
    "blue": (-1.0, -1.0, 1.0),
    "yellow": (1.0, 1.0, -1.0),
}
"""Colour words → the RGB direction (in [−1, 1] pixel units) the pattern moves a pixel towards."""

PATTERNS = ("stripes", "checks", "dots", "diagonals")
"""Pattern words (vertical stripes, a checkerboard, a lattice of dots, diagonal stripes)."""

FILLERS = ("a", "an", "the", "with", "in", "on", "of", "and", "photo")
"""Words a prompt may hold that name nothing."""

VOCABULARY = (*LAYOUTS, *COLOURS, *PATTERNS, *FILLERS)
"""Every word the model knows."""

EXAMPLE_PROMPTS = ("a horse with red stripes", "a cameraman with blue checks")
"""Prompt A and prompt B of the composing demo: ``by_resolution(coarse=A, fine=B, level=4)`` is a
blurred horse with blue checks."""

_Spec = tuple[str | None, str | None, str | None]  # (layout, colour, pattern); None: any


def default_schedule() -> Schedule:
    """The layout model's noise schedule: ``squaredcos_cap_v2`` rescaled to zero terminal SNR (Lin et al.
    2023), sampled with trailing timestep spacing, so the first step is pure noise (λ = −∞).

    On a schedule whose first step has a finite λ the coarsest modes are partly inherited from the
    initial noise (THEORY §4b): a sample then holds only part of its layout, and a prompt switch has
    less of it to leave to prompt A.
    """
    return Schedule.preset("squaredcos_cap_v2").zero_terminal_snr()


class LayoutTexture(Denoiser):
    """Exact denoiser of blurred photographs with named textures over a shared power-law Gaussian.

    Parameters
    ----------
    size : int or (int, int)
        Default sample size (H, W) in pixels.
    amplitude : float
        A in the shared field's spectrum P(f) = A·|f|^(−α) (f in cycles/pixel, white noise = 1). The
        default 0.04 is :class:`~chromaviz.models.gaussian.GaussianPowerLaw`'s: about unit
        per-pixel variance at 64×64, the normalisation the m² law is stated in.
    exponent : float
        α of that spectrum.
    layout_blur : float
        Standard deviation in pixels of the Gaussian blur of the layout photographs (3: of the
        difference between the horse and the cameraman layouts at 64×64, 88% of the box-pyramid
        energy lies at levels 8 and coarser and 4% at levels 1 and 2).
    layout_gain : float
        g: the blurred photograph (in [−1, 1] pixel units) is multiplied by it (3: the layout stands
        out of the shared field, whose per-pixel standard deviation is about 1).
    texture_levels : sequence of int
        The box-pyramid levels the patterns live at: a pattern is the sum of its motif at the period
        4·m for each level m here (a cosine of period 4·m, sampled half a pixel off its peaks, lies
        wholly in the band of level m).
    texture_amplitude : float
        a: root-mean-square of a pattern's motif at each of its levels, in pixel units, along its colour.
    schedule : Schedule or str, optional
        Noise schedule (default :func:`default_schedule`: the cosine schedule rescaled to zero
        terminal SNR, so that no level is inherited from the initial noise and a switch at any level
        has coarser levels to leave to A; ``docs/composing.md``).

    Raises
    ------
    ValueError, TypeError
        For a bad argument, naming it.

    Examples
    --------
    >>> from chromaviz.models import LayoutTexture
    >>> model = LayoutTexture(size=16)
    >>> model.check_prompt("a photo of a cat with red stripes")
    'a cat with red stripes'
    >>> model.check_prompt("blue checks")
    'blue checks'
    """

    parameterization = "sample"
    conditional = True
    vocabulary = VOCABULARY
    example_prompts = EXAMPLE_PROMPTS
    recommended_guidance = 1.0

    def __init__(
        self,
        *,
        size: int | tuple[int, int] = 64,
        amplitude: float = 0.04,
        exponent: float = 2.0,
        layout_blur: float = 3.0,
        layout_gain: float = 3.0,
        texture_levels: Sequence[int] = (1, 2, 4),
        texture_amplitude: float = 1.0,
        schedule: Schedule | str | None = None,
    ) -> None:
        self.amplitude = _checks.real("amplitude", amplitude)
        if not self.amplitude > 0:
            raise ValueError(f"amplitude must be positive, got {amplitude}")
        self.exponent = _checks.real("exponent", exponent, minimum=0)
        self.layout_blur = _checks.real("layout_blur", layout_blur, minimum=0)
        self.layout_gain = _checks.real("layout_gain", layout_gain, minimum=0)
        if isinstance(texture_levels, (str, bytes)) or not isinstance(texture_levels, Sequence) or not texture_levels:
            raise ValueError(f"texture_levels must be a non-empty sequence of powers of two, got {texture_levels!r}")
        self.texture_levels = tuple(int(m) for m in check_levels(texture_levels, name="texture_levels", dyadic=True))
        self.texture_amplitude = _checks.real("texture_amplitude", texture_amplitude, minimum=0)
        self.schedule = default_schedule() if schedule is None else Schedule.coerce(schedule)
        self.default_size = _checks.image_size("size", size)
        self.check_size(*self.default_size)
        self.name = "layout"
        self.channels = 3
        self.components: tuple[_Spec, ...] = tuple((lay, col, pat) for lay in LAYOUTS for col in COLOURS
                                                   for pat in PATTERNS)
        """Every (layout, colour, pattern) of the data, in the order of :meth:`means`."""
        self.data = _LayoutData(self)
        self._means: dict[tuple[int, int], np.ndarray] = {}
        self._tensors: dict[tuple[int, int, str], tuple[torch.Tensor, ...]] = {}

    # ------------------------------------------------------------------ prompts
    def parse(self, prompt: str) -> _Spec:
        """(layout, colour, pattern) named by ``prompt``, None for a part it leaves open.

        Raises
        ------
        ValueError
            For a word the model does not know, a part named twice, or a prompt that names nothing;
            the message lists the words it knows.
        """
        if not isinstance(prompt, str):
            raise ValueError(f"a prompt must be a str or None, got {type(prompt).__name__}")
        words = re.findall(r"[a-z]+", prompt.lower())
        unknown = [w for w in dict.fromkeys(words) if w not in VOCABULARY]
        if unknown:
            raise ValueError(f"the layout model was never taught {', '.join(map(repr, unknown))} (prompt {prompt!r}); "
                             f"it knows the layouts {', '.join(LAYOUTS)}, "
                             f"the colours {', '.join(COLOURS)} and the patterns {', '.join(PATTERNS)} "
                             f"(e.g. {EXAMPLE_PROMPTS[0]!r})")
        spec: list[str | None] = []
        for kind, known in (("layout", tuple(LAYOUTS)), ("colour", tuple(COLOURS)), ("pattern", PATTERNS)):
            named = [w for w in dict.fromkeys(words) if w in known]
            if len(named) > 1:
                raise ValueError(f"prompt {prompt!r} names {len(named)} {kind}s ({', '.join(named)}); name at most one")
            spec.append(named[0] if named else None)
        if spec == [None, None, None]:
            raise ValueError(f"prompt {prompt!r} names no layout, colour or pattern; use e.g. {EXAMPLE_PROMPTS[0]!r} "
                             "(or None for the unconditional model)")
        return spec[0], spec[1], spec[2]

    @staticmethod
    def canonical(spec: _Spec) -> str:
        """The prompt text of a (layout, colour, pattern): ``"a cat with red stripes"``, ``"blue checks"``."""
        layout, colour, pattern = spec
        texture = " ".join(w for w in (colour, pattern) if w)
        if layout is None:
            return texture
        return f"a {layout}" + (f" with {texture}" if texture else "")

    def check_prompt(self, prompt: str | None) -> str | None:
        """The canonical form of ``prompt`` (None or "" → None, the unconditional model).

        Raises
        ------
        ValueError
            As :meth:`parse`.
        """
        if prompt is None or prompt == "":
            return None
        return self.canonical(self.parse(prompt))

    def encode(self, prompts: Sequence[str | None]) -> list[_Spec | None]:
        """One (layout, colour, pattern) per batch element (None: unconditional)."""
        return [None if p in (None, "") else self.parse(p) for p in prompts]

    def allowed(self, spec: _Spec | None) -> np.ndarray:
        """Which of :attr:`components` the data of ``spec`` mixes, a bool array (J,)."""
        if spec is None:
            return np.ones(len(self.components), dtype=bool)
        return np.array([all(s is None or s == c for s, c in zip(spec, comp)) for comp in self.components])

    def _allowed_rows(self, cond: Sequence[_Spec | None], device: torch.device) -> torch.Tensor:
        """:meth:`allowed` for each batch element, (B, J) bool on ``device``, cached per conditioning."""
        key = (tuple(cond), str(device))
        cache = self.__dict__.setdefault("_allowed_cache", {})
        if key not in cache:
            cache[key] = torch.from_numpy(np.stack([self.allowed(spec) for spec in cond])).to(device)
        return cache[key]

    # ------------------------------------------------------------------ the data
    def power(self, height: int, width: int) -> np.ndarray:
        """P(f) of the shared field on the unshifted (H, W) FFT grid, shape (H, W) (white noise = 1)."""
        return power_law_grid(height, width, self.amplitude, self.exponent)

    def data_power(self, height: int, width: int) -> np.ndarray:
        """The exact spectrum of the data about its mean, :meth:`power`: every prompt's covariance
        (for a prompt naming layout, colour and pattern the data is exactly N(μ_j, Σ))."""
        return self.power(height, width)

    def means(self, height: int, width: int) -> np.ndarray:
        """μ_j of every component, shape (J, 3, H, W) float64, in the order of :attr:`components`."""
        key = (height, width)
        if key not in self._means:
            fy = np.fft.fftfreq(height)[:, None]
            fx = np.fft.fftfreq(width)[None, :]
            blur = np.exp(-2 * np.pi**2 * self.layout_blur**2 * (fy**2 + fx**2))
            layouts = [self.layout_gain * np.fft.ifft2(np.fft.fft2(load_photo(photo, height, width)) * blur).real
                       for photo in LAYOUTS.values()]
            patterns = [sum(_pattern(p, height, width, 4 * m) for m in self.texture_levels) for p in PATTERNS]
            out = np.empty((len(self.components), 3, height, width))
            for j, (lay, col, pat) in enumerate(self.components):
                colour = np.asarray(COLOURS[col])[:, None, None] / np.sqrt(3)  # unit length
                out[j] = layouts[list(LAYOUTS).index(lay)] + self.texture_amplitude * colour * patterns[PATTERNS.index(pat)]
            self._means[key] = out
        return self._means[key]

    def data_moments(self, prompt: str | None, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """The exact mean and per-mode variance of the data of ``prompt``, each (3, H, W).

        mean = Σ_j π_j·μ_j over the components the prompt mixes; power = P + Σ_j π_j·|F(μ_j − mean)|²
        (orthonormal FFT): the shared field's spectrum, plus the spread of the means where the
        prompt leaves a part open.

        Raises
        ------
        ValueError
            As :meth:`parse`.
        """
        spec = None if prompt in (None, "") else self.parse(prompt)
        mu = self.means(height, width)[self.allowed(spec)]
        mean = mu.mean(0)
        spread = (np.abs(np.fft.fft2(mu - mean, norm="ortho")) ** 2).mean(0)
        return mean, spread + self.power(height, width)[None]

    def _bank(self, h: int, w: int, device: torch.device):
        """Means (J, 3, h, w), their rfft2 (J, 3, h, w//2+1), its squared modulus counted over the full
        grid (J, 3, h, w//2+1) and P on the rfft grid (h, w//2+1), on ``device``."""
        key = (h, w, str(device))
        if key not in self._tensors:
            mu = torch.from_numpy(self.means(h, w)).to(device)
            power = torch.from_numpy(self.power(h, w)[:, : w // 2 + 1]).to(device)
            mu_hat = torch.fft.rfft2(mu)
            self._tensors[key] = (mu, mu_hat, mu_hat.abs().square() * _half_plane_weight(w, device), power)
        return self._tensors[key]

    # ------------------------------------------------------------------ posterior
    def posterior(self, x_t: torch.Tensor, noise: NoiseLevel, cond: Sequence[_Spec | None]) -> torch.Tensor:
        """The exact posterior probability of each component, shape (B, J), for inputs (B, 3, H, W).

        log w_j = −½·Σ_k |F(x_t − α·μ_j)|²_k / (α²·P_k + σ²) + const over the components the
        element's prompt mixes (equal prior weights), −∞ elsewhere.

        Raises
        ------
        ValueError
            If ``cond`` does not hold one entry per batch element.
        """
        b, c, h, w = x_t.shape
        if len(cond) != b:
            raise ValueError(f"got {len(cond)} prompts for a batch of {b}")
        _, mu_hat, mu_power, power = self._bank(h, w, x_t.device)
        a, s = float(noise.alpha), float(noise.sigma)
        inv = 1 / (a * a * power + s * s) / (h * w)  # (h, wf): C⁻¹ per mode, for the unnormalised FFT
        weighted = torch.fft.rfft2(x_t.double()) * inv * _half_plane_weight(w, x_t.device)  # mirrored modes twice
        cross = (weighted.reshape(b, -1) @ mu_hat.reshape(len(mu_hat), -1).conj().T).real  # Re Σ_k x̂·conj(μ̂)/C
        energy = (mu_power * inv).reshape(len(mu_hat), -1).sum(1)  # Σ_k |μ̂|²/C
        logits = a * cross - 0.5 * a * a * energy[None]
        allowed = self._allowed_rows(cond, x_t.device)
        return torch.softmax(logits.masked_fill(~allowed, -torch.inf), dim=1)

    def __call__(self, x_t: torch.Tensor, noise: NoiseLevel, cond: Sequence[_Spec | None]) -> torch.Tensor:
        """The exact posterior mean E[x0 | x_t] for inputs (B, 3, H, W) at the noise level ``noise``, same shape."""
        if x_t.ndim != 4 or x_t.shape[1] != 3:
            raise ValueError(f"the layout model takes samples of shape (B, 3, H, W), got {tuple(x_t.shape)}")
        h, w = x_t.shape[-2:]
        mu, _, _, power = self._bank(h, w, x_t.device)
        a, s = float(noise.alpha), float(noise.sigma)
        b = x_t.shape[0]
        mean = (self.posterior(x_t, noise, cond) @ mu.reshape(len(mu), -1)).reshape(b, 3, h, w)
        gain = a * power / (a * a * power + s * s)
        residual = torch.fft.irfft2(torch.fft.rfft2(x_t.double() - a * mean) * gain, s=(h, w))
        return (mean + residual).to(x_t.dtype)

    def to_rgb(self, x: torch.Tensor) -> torch.Tensor:
        """Samples (B, 3, H, W) → RGB in [0, 1]: (x/4 + 1)/2, clipped (the data spans about [−4, 4])."""
        return ((x.float() / 4 + 1) / 2).clamp(0, 1)

    def to(self, device) -> LayoutTexture:
        """Move to ``device``; the means are copied there on first use."""
        super().to(device)
        return self

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "amplitude": self.amplitude, "exponent": self.exponent,
                "layout_blur": self.layout_blur, "layout_gain": self.layout_gain,
                "texture_levels": list(self.texture_levels), "texture_amplitude": self.texture_amplitude}

    def __repr__(self) -> str:
        return (f"LayoutTexture({len(LAYOUTS)} layouts × {len(COLOURS)} colours × {len(PATTERNS)} patterns, "
                f"schedule={self.schedule.name})")


class _LayoutData(DataSource):
    """Draws of a :class:`LayoutTexture`'s data: a component the prompt allows, uniformly, plus the
    shared field F⁻¹[√P·F ε] (ε white, orthonormal FFT)."""

    description = "the model's own layouts and textures (exact posterior)"
    exact = True

    def __init__(self, model: LayoutTexture) -> None:
        self.model = model

    def draw(self, prompt: str | None, n: int, size: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
        """``n`` draws, shape (n, 3, H, W) float32 on the generator's device.

        Raises
        ------
        ValueError
            As :meth:`LayoutTexture.parse`.
        """
        model = self.model
        h, w = size
        model.check_size(h, w)
        spec = None if prompt in (None, "") else model.parse(prompt)
        choices = np.flatnonzero(model.allowed(spec))
        pick = torch.randint(0, len(choices), (n,), generator=generator, device=generator.device).cpu().numpy()
        mean = torch.from_numpy(model.means(h, w)[choices[pick]])
        white = torch.randn((n, 3, h, w), generator=generator, dtype=torch.float64, device=generator.device).cpu()
        root = torch.from_numpy(np.sqrt(model.power(h, w))[:, : w // 2 + 1])
        field = torch.fft.irfft2(torch.fft.rfft2(white, norm="ortho") * root, s=(h, w), norm="ortho")
        return (mean + field).float().to(generator.device)


def _pattern(name: str, height: int, width: int, period: int) -> np.ndarray:
    """Pattern ``name`` on an (H, W) grid, zero mean, unit root-mean-square, shape (H, W)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    cx, cy = np.cos(2 * np.pi * (x + 0.5) / period), np.cos(2 * np.pi * (y + 0.5) / period)
    if name == "stripes":
        p = cx
    elif name == "checks":
        p = np.sign(cx) * np.sign(cy)
    elif name == "dots":
        p = (1 + cx) * (1 + cy)
    elif name == "diagonals":
        p = np.cos(2 * np.pi * (x + y + 0.5) / period)
    else:  # pragma: no cover - the names are PATTERNS
        raise ValueError(f"unknown pattern {name!r}; choose one of {PATTERNS}")
    p = p - p.mean()
    return p / max(float(np.sqrt((p**2).mean())), 1e-12)


def _half_plane_weight(width: int, device: torch.device) -> torch.Tensor:
    """Weight of each rfft2 column, shape (W//2 + 1,): 2 for the columns whose mirror image is not stored."""
    weight = torch.full((width // 2 + 1,), 2.0, dtype=torch.float64, device=device)
    weight[0] = 1.0
    if width % 2 == 0:
        weight[-1] = 1.0
    return weight
