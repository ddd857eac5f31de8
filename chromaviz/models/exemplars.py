"""A prompt-conditional mixture of photographs, with its exact posterior mean.

Data for prompt p: pick one H×W window of photograph p (resized so that it is ``1 + margin`` times
the window; every integer shift, and its mirror image when ``flips``) uniformly, then add a weak
stationary power-law texture: x0 = y_k + n, n ~ N(0, Σ_tex). The unconditional distribution
(prompt None) mixes all photographs with equal weight.

Because C = α²·Σ_tex + σ²·I is diagonal in the FFT, the exact posterior is cheap:
log w_k = α·y_kᵀC⁻¹x_t − ½·α²·y_kᵀC⁻¹y_k + const, where the first term for all shifts k at once
is one FFT cross-correlation of the photograph with C⁻¹x_t, and the second is precomputed from the
windows' radial power spectra. Then E[x0 | x_t] = ȳ + α·Σ_tex·C⁻¹(x_t − α·ȳ), ȳ = Σ_k w_k·y_k.

Exact scores of a finite set memorise: this model commits to one window early in the run (with the
cat photograph at 64×64 and SD's schedule the posterior is concentrated by t ≈ 880 of 1000) and
then reveals that window's detail at every level at once. Set against :class:`GaussianPowerLaw`,
whose levels appear one after another exactly as the theory says, that contrast is itself a lesson
about what memorisation does to the coarse-to-fine order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from .. import _checks
from ..noise.plan import NoiseLevel
from ..noise.schedules import Schedule
from .base import DataSource, Denoiser
from .gaussian import power_law_grid
from .photos import PHOTOS, load_photo, match_prompt


@dataclass
class _Bank:
    """Everything precomputed for one photograph at one window size."""

    photo_hat: torch.Tensor  # (S, C, Hp, Wp//2+1) complex128: rfft2 of each source (photo, mirror)
    window_power: torch.Tensor  # (S, nh, nw, K) float64: Σ_c |FFT y_k|² summed per radial class

    @property
    def nbytes(self) -> int:
        return self.photo_hat.nbytes + self.window_power.nbytes


BANK_CACHE_BYTES = 512 * 2**20
"""The most memory one model keeps in precomputed photo banks beyond those of the prompts it is
evaluating (a bank is 8 MiB at 64², 106 MiB at 128²); the least recently used bank goes first."""


class ExemplarMixture(Denoiser):
    """Exact denoiser of a mixture of shifted, mirrored photographs plus a weak texture.

    Parameters
    ----------
    size : int or (int, int)
        Default sample size (H, W) in pixels.
    margin : float
        The photograph is resized to (1 + margin) times the window, so a 64×64 window with margin
        0.5 has 33×33 = 1,089 positions.
    flips : bool
        Add the mirror image of every window.
    texture_std : float
        Per-pixel standard deviation of the stationary texture added to every window.
    texture_exponent : float
        Its power-law exponent.
    schedule : Schedule or str
        Noise schedule (default ``scaled_linear``).

    Examples
    --------
    >>> from chromaviz.models import ExemplarMixture
    >>> model = ExemplarMixture()
    >>> model.check_prompt("a photo of a cat")
    'cat'
    """

    parameterization = "sample"
    conditional = True

    def __init__(
        self,
        *,
        size: int | tuple[int, int] = 64,
        margin: float = 0.5,
        flips: bool = True,
        texture_std: float = 0.05,
        texture_exponent: float = 2.0,
        schedule: Schedule | str = "scaled_linear",
    ) -> None:
        self.margin = _checks.real("margin", margin, minimum=0, maximum=4)
        self.texture_std = _checks.real("texture_std", texture_std)
        if not self.texture_std > 0:
            raise ValueError(f"texture_std must be positive, got {texture_std}")
        self.texture_exponent = _checks.real("texture_exponent", texture_exponent)
        self.flips = _checks.boolean("flips", flips)
        self.name = "exemplars"
        self.schedule = Schedule.coerce(schedule)
        self.default_size = _checks.image_size("size", size)
        self.check_size(*self.default_size)
        self.vocabulary = tuple(PHOTOS)
        self.example_prompts = ("cat", "moon")
        self.channels = 3
        self._banks: dict[tuple[str, int, int, str], _Bank] = {}
        self._grids: dict[tuple[int, int, str], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self._moments: dict[tuple[str | None, int, int], tuple[np.ndarray, np.ndarray]] = {}
        self.data = _Windows(self)

    # ------------------------------------------------------------------ prompts
    def check_prompt(self, prompt: str | None) -> str | None:
        return None if prompt in (None, "") else match_prompt(prompt)

    def encode(self, prompts: Sequence[str | None]) -> list[str | None]:
        """One vocabulary word (or None) per batch element."""
        return [self.check_prompt(p) for p in prompts]

    # ------------------------------------------------------------------ precomputation
    def texture_power(self, height: int, width: int) -> np.ndarray:
        """Power of the texture on the (H, W) FFT grid, scaled so its pixel variance is texture_std²."""
        shape = power_law_grid(height, width, 1.0, self.texture_exponent)
        return shape * (self.texture_std**2 / shape.mean())

    def _grid(self, h: int, w: int, device: torch.device):
        """Texture power per radial class, class index of each mode, and the rfft-layout power."""
        key = (h, w, str(device))
        if key not in self._grids:
            power = self.texture_power(h, w)
            classes, inverse = np.unique(np.round(power, 12), return_inverse=True)
            self._grids[key] = (
                torch.from_numpy(classes).to(device),
                torch.from_numpy(inverse.reshape(-1)).to(device),
                torch.from_numpy(power[:, : w // 2 + 1]).to(device),
            )
        return self._grids[key]

    def _source_size(self, h: int, w: int) -> tuple[int, int]:
        return h + int(round(self.margin * h)), w + int(round(self.margin * w))

    def _banks_for(self, words: Sequence[str], h: int, w: int) -> list[_Bank]:
        """The banks of ``words`` at (h, w), from a cache of at most :data:`BANK_CACHE_BYTES` beyond
        the banks these words need (those stay, however large)."""
        keys = [(word, h, w, str(self.device)) for word in words]
        banks = [self._banks.pop(key, None) or self._new_bank(key[0], h, w) for key in keys]
        self._banks.update(zip(keys, banks))  # the most recently used are last
        spare = [key for key in self._banks if key not in keys]  # least recently used first
        held = sum(bank.nbytes for bank in self._banks.values())
        while spare and held > BANK_CACHE_BYTES:
            held -= self._banks.pop(spare.pop(0)).nbytes
        return banks

    def _new_bank(self, word: str, h: int, w: int) -> _Bank:
        hp, wp = self._source_size(h, w)
        photo = torch.from_numpy(load_photo(word, hp, wp)).double()
        sources = torch.stack([photo, photo.flip(-1)]) if self.flips else photo[None]
        _, class_index, _ = self._grid(h, w, torch.device("cpu"))
        half_index, half_weight = _half_plane(class_index.reshape(h, w))
        n_classes = int(class_index.max()) + 1
        windows = sources.unfold(-2, h, 1).unfold(-2, w, 1)  # view (S, C, nh, nw, h, w), nothing copied
        s, c, nh, nw = windows.shape[:4]
        power = torch.zeros(s, nh, nw, n_classes, dtype=torch.float64)
        for src in range(s):
            for row in range(nh):  # one row of window positions at a time keeps memory small
                spectra = torch.fft.rfft2(windows[src, :, row].transpose(0, 1), norm="ortho").abs().square().sum(1)
                power[src, row].index_add_(1, half_index, spectra.reshape(nw, -1) * half_weight)
        return _Bank(photo_hat=torch.fft.rfft2(sources).to(self.device), window_power=power.to(self.device))

    # ------------------------------------------------------------------ the data itself
    def _sources(self, word: str, h: int, w: int) -> torch.Tensor:
        """The photograph resized for (h, w) windows, and its mirror image when ``flips``: (S, C, Hp, Wp) float64."""
        photo = torch.from_numpy(load_photo(word, *self._source_size(h, w))).double()
        return torch.stack([photo, photo.flip(-1)]) if self.flips else photo[None]

    def data_mean(self, prompt: str | None, height: int, width: int) -> np.ndarray:
        """The exact mean of this model's data for ``prompt``, (3, H, W): every window's average, a box
        average of the photograph over the window shifts (what :meth:`data_moments` gives, without the
        per-window spectra that make those take seconds at 128×128)."""
        word = self.check_prompt(prompt)
        if (word, height, width) in self._moments:
            return self._moments[(word, height, width)][0].copy()
        words = list(PHOTOS) if word is None else [word]
        mean = torch.zeros(3, height, width, dtype=torch.float64)
        for wd in words:
            sources = self._sources(wd, height, width)
            shifts = (sources.shape[-2] - height + 1, sources.shape[-1] - width + 1)
            mean += torch.nn.functional.avg_pool2d(sources, shifts, stride=1).mean(0) / len(words)
        return mean.numpy()

    def data_moments(self, prompt: str | None, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """The exact mean and per-mode variance of this model's data for ``prompt``, each (3, H, W).

        Every window of the photograph (every shift, and its mirror image when ``flips``) is
        enumerated once: mean = E[y]; power = E|F y|² − |F E[y]|² + P_tex (orthonormal FFT), the
        texture being independent of the window. The unconditional data (prompt None) mixes every
        photograph with equal weight. Cached per prompt and size.

        Raises
        ------
        ValueError
            For a prompt that names none, or several, of the photographs.
        """
        word = self.check_prompt(prompt)
        key = (word, height, width)
        if key not in self._moments:
            words = list(PHOTOS) if word is None else [word]
            first = torch.from_numpy(self.data_mean(prompt, height, width))
            second = torch.zeros(3, height, width, dtype=torch.float64)
            mirrored = (-torch.arange(width)) % width
            for wd in words:
                photo = self._sources(wd, height, width)[0]
                windows = (photo.shape[-2] - height + 1) * (photo.shape[-1] - width + 1)
                power = _window_power(photo, height, width) / (len(words) * windows)
                # a mirrored window's spectrum is the window's at (k1, −k2), so its power is too
                second += (power + power[..., mirrored]) / 2 if self.flips else power
            mean_power = torch.fft.fft2(first, norm="ortho").abs().square()
            power = (second - mean_power).clamp_min(0).numpy() + self.texture_power(height, width)[None]
            self._moments[key] = (first.numpy(), power)
        mean, power = self._moments[key]
        return mean.copy(), power.copy()

    # ------------------------------------------------------------------ posterior
    def posterior(self, x_t: torch.Tensor, noise: NoiseLevel, cond: Sequence[str | None]):
        """Exact posterior over components, for inputs (B, C, H, W) at the noise level ``noise``.

        Returns
        -------
        words : list of str
            The photographs considered (those named in ``cond``; all if any element is None).
        weights : Tensor, shape (B, len(words), S, nh, nw)
            Posterior probability of each photograph, source (original, mirror) and shift.
        """
        b, c, h, w = x_t.shape
        if len(cond) != b:
            raise ValueError(f"got {len(cond)} prompts for a batch of {b}")
        words = list(PHOTOS) if any(p is None for p in cond) else sorted(set(cond), key=list(PHOTOS).index)
        banks = self._banks_for(words, h, w)
        a, s = noise.alpha, noise.sigma
        classes, _, power_r = self._grid(h, w, x_t.device)
        hp, wp = self._source_size(h, w)
        nh, nw = hp - h + 1, wp - w + 1
        x = x_t.double()
        z = torch.fft.irfft2(torch.fft.rfft2(x) / (a * a * power_r + s * s), s=(h, w))
        z_hat = torch.fft.rfft2(z, s=(hp, wp)).conj()  # (B, C, Hp, Wf)
        photo_hat = torch.stack([bk.photo_hat for bk in banks])  # (Wn, S, C, Hp, Wf)
        cross = torch.fft.irfft2(torch.einsum("wschf,bchf->bwshf", photo_hat, z_hat), s=(hp, wp))[..., :nh, :nw]
        inv_c = 1 / (a * a * classes + s * s)
        energy = torch.stack([bk.window_power @ inv_c for bk in banks])  # (Wn, S, nh, nw)
        logits = a * cross - 0.5 * a * a * energy[None]
        allowed = torch.tensor([[p is None or p == word for word in words] for p in cond], device=x.device)
        logits = logits.masked_fill(~allowed[:, :, None, None, None], -torch.inf)
        weights = torch.softmax(logits.reshape(b, -1), dim=1).reshape(logits.shape)
        return words, weights

    def __call__(self, x_t: torch.Tensor, noise: NoiseLevel, cond: Sequence[str | None]) -> torch.Tensor:
        """The exact posterior mean E[x0 | x_t] for inputs (B, C, H, W) at the noise level ``noise``."""
        b, c, h, w = x_t.shape
        a, s = noise.alpha, noise.sigma
        words, weights = self.posterior(x_t, noise, cond)
        hp, wp = self._source_size(h, w)
        photo_hat = torch.stack([bank.photo_hat for bank in self._banks_for(words, h, w)])
        weights_hat = torch.fft.rfft2(weights, s=(hp, wp)).conj()  # (B, Wn, S, Hp, Wf)
        y_bar = torch.fft.irfft2(torch.einsum("wschf,bwshf->bchf", photo_hat, weights_hat), s=(hp, wp))[..., :h, :w]
        _, _, power_r = self._grid(h, w, x_t.device)
        gain = a * power_r / (a * a * power_r + s * s)
        residual = torch.fft.irfft2(torch.fft.rfft2(x_t.double() - a * y_bar) * gain, s=(h, w))
        return (y_bar + residual).to(x_t.dtype)

    def to(self, device) -> ExemplarMixture:
        """Move to ``device``; the precomputed photo banks are rebuilt there on first use."""
        if _checks.torch_device("device", device) != self.device:
            super().to(device)
            self._banks.clear()
            self._grids.clear()
        return self

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "margin": self.margin,
            "flips": self.flips,
            "texture_std": self.texture_std,
            "texture_exponent": self.texture_exponent,
        }

    def __repr__(self) -> str:
        return f"ExemplarMixture({len(self.vocabulary)} photographs, flips={self.flips}, schedule={self.schedule.name})"


def _window_power(photo: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Σ over every h×w window of ``photo`` (C, Hp, Wp) of its power |F y|² (orthonormal 2-D FFT):
    (C, h, w) float64. Real FFTs of one row of window positions at a time; the negative frequencies
    along w are the conjugates of the positive ones."""
    windows = photo.unfold(-2, h, 1).unfold(-2, w, 1)  # view (C, nh, nw, h, w), nothing copied
    c, nh = windows.shape[:2]
    wf = w // 2 + 1
    half = torch.zeros(c, h, wf, dtype=torch.float64)
    for row in range(nh):
        half += torch.fft.rfft2(windows[:, row], norm="ortho").abs().square().sum(1)
    power = torch.empty(c, h, w, dtype=torch.float64)
    power[..., :wf] = half
    power[..., wf:] = half[:, (-torch.arange(h)) % h, 1 : w - wf + 1].flip(-1)  # P(k1, k2) = P(−k1, −k2)
    return power


class _Windows(DataSource):
    """Draws of an :class:`ExemplarMixture`'s data: a uniform window (shift, mirror) of the prompt's
    photograph (of a uniformly chosen photograph for prompt None) plus the texture N(0, Σ_tex)."""

    description = "the model's own photographs (exact posterior)"
    exact = True

    def __init__(self, model: ExemplarMixture) -> None:
        self.model = model

    def draw(self, prompt: str | None, n: int, size: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
        """``n`` draws, shape (n, 3, H, W) float32 (on the generator's device)."""
        model = self.model
        word = model.check_prompt(prompt)
        h, w = size
        words = list(PHOTOS) if word is None else [word]
        out = torch.empty(n, 3, h, w, dtype=torch.float64)
        which = torch.randint(0, len(words), (n,), generator=generator, device=generator.device).tolist()
        for k, wd in enumerate(set(which)):
            sources = model._sources(words[wd], h, w)
            s, _, hp, wp = sources.shape
            rows = [i for i, x in enumerate(which) if x == wd]
            picks = torch.rand(len(rows), 3, generator=generator, device=generator.device).cpu()
            for i, (u_s, u_y, u_x) in zip(rows, picks.tolist()):
                src, top, left = int(u_s * s), int(u_y * (hp - h + 1)), int(u_x * (wp - w + 1))
                out[i] = sources[src, :, top : top + h, left : left + w]
        white = torch.randn((n, 3, h, w), generator=generator, dtype=torch.float64, device=generator.device).cpu()
        root = torch.from_numpy(np.sqrt(model.texture_power(h, w))[:, : w // 2 + 1])
        texture = torch.fft.irfft2(torch.fft.rfft2(white, norm="ortho") * root, s=(h, w), norm="ortho")
        return (out + texture).float().to(generator.device)


def _half_plane(class_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Class index and weight of each rfft2 mode: Σ over the full grid of a real image's |FFT|²
    equals Σ over the half plane with columns 1 … ⌈W/2⌉−1 counted twice (their mirror images)."""
    h, w = class_index.shape
    half = w // 2 + 1
    weight = torch.full((half,), 2.0, dtype=torch.float64)
    weight[0] = 1.0
    if w % 2 == 0:
        weight[-1] = 1.0
    return class_index[:, :half].reshape(-1), weight.expand(h, half).reshape(-1)
