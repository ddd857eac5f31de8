"""Resolution bands, radial power spectra and measured signal fractions.

Averaging an m×m block of pixels (the operator D_m) divides the variance of white noise by m².
The *resolution levels* m = 1, 2, 4, …, M index octaves of spatial scale: level 1 is the finest
detail (single pixels), larger m is coarser. This module splits images into one band per level,
either in pixel space (:func:`box_pyramid`) or in frequency space (:func:`ring_bands`), measures
radially averaged power spectra (:func:`rapsd`, :func:`fit_power_law`) and turns a sampler's
clean-sample predictions into measured explained-variance curves per level
(:func:`signal_fractions`, :func:`measured_chromatogram`).

Conventions
-----------
- Images are torch tensors of shape ``(B, C, H, W)``: batch, channels, height, width. Any
  channel count works (C = 3 for RGB, C = 4 for Stable Diffusion latents); every channel is
  treated independently. CPU and CUDA tensors are both supported; results stay on the input's
  device.
- Levels are consecutive powers of two starting at 1: ``(1, 2, 4, …, M)``. A band stack has
  shape ``(L, B, C, H, W)`` with ``L = len(levels)``, finest level first.
- Frequencies are in cycles per pixel (Nyquist = 0.5), laid out as :func:`torch.fft.fftfreq`
  (unshifted: DC at index 0).
"""

from __future__ import annotations

import functools
import operator
from typing import Iterable, Sequence

import numpy as np
import torch

from .noise.levels import check_levels

__all__ = [
    "levels_for",
    "pool",
    "upsample",
    "box_pyramid",
    "octave_ring_masks",
    "ring_bands",
    "decompose",
    "band_weights",
    "rapsd",
    "centred_rapsd",
    "fit_power_law",
    "band_energies",
    "batch_reference",
    "degrees_of_freedom",
    "signal_fractions",
    "step_band_energies",
    "measured_chromatogram",
    "METHODS",
]

METHODS: tuple[str, ...] = ("rings", "pyramid")
"""Band decomposition methods accepted by :func:`decompose` and :func:`signal_fractions`."""

_MAX_CHUNK_ELEMENTS = 20_000_000
"""Upper bound on S·B·C·H·W·L band elements that :func:`signal_fractions` builds at once."""


# --------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------


def _check_image(x: object, name: str = "x") -> torch.Tensor:
    """Check that ``x`` is a real floating (B, C, H, W) torch tensor and return it."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(
            f"{name} must be a torch.Tensor of shape (B, C, H, W); got {type(x).__name__}"
        )
    if x.ndim != 4:
        raise ValueError(
            f"{name} must have 4 dimensions (B, C, H, W); got shape {tuple(x.shape)}"
            + ("; add batch and channel dimensions, e.g. x[None, None]" if x.ndim == 2 else "")
            + ("; add a batch dimension, e.g. x[None]" if x.ndim == 3 else "")
        )
    if not x.is_floating_point():
        raise ValueError(
            f"{name} must be a real floating-point tensor; got dtype {x.dtype}; "
            "convert with x.float()"
        )
    if min(x.shape[-2:]) < 1:
        raise ValueError(f"{name} must have non-empty height and width; got shape {tuple(x.shape)}")
    return x


def _check_size(value: object, name: str) -> int:
    """Check a positive integer image size."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    try:
        v = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(f"{name} must be a positive integer; got {value!r}") from None
    if v < 1:
        raise ValueError(f"{name} must be a positive integer; got {v}")
    return v


def _check_levels(levels: Iterable[int], size: tuple[int, int] | None = None) -> tuple[int, ...]:
    """The levels of a band stack, ``(1, 2, 4, …, M)`` (:func:`chromaviz.noise.levels.check_levels`
    with ``ladder=True``), none coarser than an image of ``size``; returned as a tuple of ints."""
    return tuple(int(m) for m in check_levels(levels, ladder=True, size=size))


def _check_divisible(height: int, width: int, m: int, what: str, alternative: str = "") -> None:
    """Raise ``ValueError`` unless both sides are multiples of ``m`` (``what`` names m in the message)."""
    for name, size in (("height", height), ("width", width)):
        if size % m:
            raise ValueError(f"{name} {size} is not divisible by {what}; use a size that is a multiple of {m}{alternative}")


def check_pyramid_size(height: int, width: int) -> tuple[int, ...]:
    """The default levels of an image (:func:`levels_for`), checked to split into a box pyramid:
    raises ValueError naming the size and what to use unless H and W are multiples of the
    coarsest level (30×30 has levels (1, 2, 4) and is refused)."""
    levels = levels_for(height, width)
    _check_divisible(height, width, levels[-1], f"{levels[-1]}, the coarsest level of the pyramid", " or method rings")
    return levels


def _check_method(method: object) -> str:
    if method not in METHODS:
        raise ValueError(
            f"unknown decomposition method {method!r}; use 'rings' (FFT octave rings) "
            "or 'pyramid' (box-filter pyramid)"
        )
    return method  # type: ignore[return-value]


def _fft_dtype(dtype: torch.dtype) -> torch.dtype:
    """Real dtype to run FFTs in: float32 or float64 (half precision is promoted)."""
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def _radial_frequency(height: int, width: int, device: torch.device | str | None) -> torch.Tensor:
    """Radial frequency sqrt(fy² + fx²) in cycles/pixel on the unshifted FFT grid, float64 (H, W)."""
    fy = torch.fft.fftfreq(height, dtype=torch.float64, device=device)
    fx = torch.fft.fftfreq(width, dtype=torch.float64, device=device)
    return torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)


# --------------------------------------------------------------------------------------------
# levels, pooling, pyramids
# --------------------------------------------------------------------------------------------


def levels_for(height: int, width: int, depth: int | None = None) -> tuple[int, ...]:
    """Default resolution levels ``(1, 2, 4, …, M)`` for an image of the given size.

    Parameters
    ----------
    height, width : int
        Image size in pixels.
    depth : int, optional
        Maximum number of levels. ``None`` (default) means no cap.

    Returns
    -------
    tuple of int
        ``(1, 2, 4, …, M)`` where M is the largest power of two with ``M <= min(H, W) // 4``,
        so the coarsest band still has at least 4 pixels per side, and at most ``depth``
        levels. Images smaller than 8 pixels on a side get the single level ``(1,)``.
        For 64×64: ``(1, 2, 4, 8, 16)``.

    Notes
    -----
    :func:`box_pyramid` additionally needs H and W to be divisible by M; :func:`ring_bands`
    works for any size.

    Examples
    --------
    >>> levels_for(64, 64), levels_for(64, 64, depth=3)
    ((1, 2, 4, 8, 16), (1, 2, 4))
    """
    h = _check_size(height, "height")
    w = _check_size(width, "width")
    if depth is not None:
        depth = _check_size(depth, "depth")
    limit = max(min(h, w) // 4, 1)
    n = limit.bit_length()  # number of powers of two 1, 2, …, 2^(n-1) that are <= limit
    if depth is not None:
        n = min(n, depth)
    return tuple(2**i for i in range(n))


def pool(x: torch.Tensor, m: int) -> torch.Tensor:
    """D_m: average every non-overlapping m×m block of pixels.

    Parameters
    ----------
    x : torch.Tensor, shape (B, C, H, W)
        Real floating-point images, any units.
    m : int
        Block size in pixels (positive integer). H and W must be divisible by m.

    Returns
    -------
    torch.Tensor, shape (B, C, H/m, W/m)
        Block means, same dtype and device as ``x``.

    Raises
    ------
    ValueError
        If ``x`` is not a (B, C, H, W) float tensor, or H or W is not divisible by m.

    Examples
    --------
    >>> x = torch.arange(16.0).reshape(1, 1, 4, 4)
    >>> pool(x, 2)[0, 0].tolist()
    [[2.5, 4.5], [10.5, 12.5]]
    """
    x = _check_image(x)
    m = _check_size(m, "pooling factor m")
    b, c, h, w = x.shape
    _check_divisible(h, w, m, f"the pooling factor {m}")
    if m == 1:
        return x
    return x.reshape(b, c, h // m, m, w // m, m).mean(dim=(3, 5))


def upsample(x: torch.Tensor, m: int) -> torch.Tensor:
    """U_m: nearest-neighbour upsampling, repeating every pixel as an m×m block.

    Parameters
    ----------
    x : torch.Tensor, shape (B, C, h, w)
        Real floating-point images.
    m : int
        Upsampling factor (positive integer).

    Returns
    -------
    torch.Tensor, shape (B, C, h·m, w·m)
        Same dtype and device as ``x``. ``pool(upsample(x, m), m)`` equals ``x``.

    Examples
    --------
    >>> upsample(torch.tensor([[[[1.0, 2.0]]]]), 2)[0, 0].tolist()
    [[1.0, 1.0, 2.0, 2.0], [1.0, 1.0, 2.0, 2.0]]
    """
    x = _check_image(x)
    m = _check_size(m, "upsampling factor m")
    if m == 1:
        return x
    b, c, h, w = x.shape
    return x[:, :, :, None, :, None].expand(b, c, h, m, w, m).reshape(b, c, h * m, w * m)


def box_pyramid(x: torch.Tensor, levels: Sequence[int]) -> torch.Tensor:
    """Split images into box-filter (Haar-like) pyramid bands, one per resolution level.

    The band of level m is ``U_m D_m x − U_2m D_2m x`` (detail present at block size m but
    averaged away at 2m) for every level but the last; the coarsest level M gets the residual
    ``U_M D_M x`` (the M×M block means, DC included). The bands sum to ``x`` up to float rounding.

    Parameters
    ----------
    x : torch.Tensor, shape (B, C, H, W)
        Real floating-point images. H and W must be divisible by M = ``levels[-1]``.
    levels : sequence of int
        Consecutive powers of two starting at 1, e.g. ``(1, 2, 4, 8)``.

    Returns
    -------
    torch.Tensor, shape (L, B, C, H, W)
        Bands at full resolution, finest first; same dtype and device as ``x``.

    Raises
    ------
    ValueError
        Bad levels, or H or W not divisible by the deepest pyramid level.

    Examples
    --------
    >>> x = torch.randn(2, 3, 16, 16)
    >>> bands = box_pyramid(x, (1, 2, 4))
    >>> bands.shape, bool(torch.allclose(bands.sum(0), x, atol=1e-6))
    (torch.Size([3, 2, 3, 16, 16]), True)
    """
    x = _check_image(x)
    _, _, h, w = x.shape
    lv = _check_levels(levels, (h, w))
    deepest = lv[-1]
    _check_divisible(h, w, deepest, f"{deepest}, the deepest pyramid level", " or fewer levels")
    out = x.new_empty((len(lv),) + tuple(x.shape))
    coarse = x  # D_m x
    up = x  # U_m D_m x
    for i, m in enumerate(lv):
        if i == len(lv) - 1:
            out[i] = up
            break
        coarse = pool(coarse, 2)  # D_2m x = D_2 D_m x
        up_next = upsample(coarse, 2 * m)
        out[i] = up - up_next
        up = up_next
    return out


# --------------------------------------------------------------------------------------------
# frequency rings
# --------------------------------------------------------------------------------------------


def octave_ring_masks(
    height: int,
    width: int,
    levels: Sequence[int],
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Partition the FFT grid into octave rings of radial frequency, one per level.

    With radial frequency ``f = sqrt(fy² + fx²)`` in cycles/pixel on the unshifted grid of
    :func:`torch.fft.fftfreq`, level m owns ``0.5/(2m) <= f < 0.5/m``; the finest level (m = 1)
    also owns every ``f >= 0.5`` (the corners beyond Nyquist radius) and the coarsest level M
    owns every ``f < 0.5/M``, DC included. Every grid cell belongs to exactly one level.

    Parameters
    ----------
    height, width : int
        Grid size (image size in pixels).
    levels : sequence of int
        Consecutive powers of two starting at 1.
    device : torch.device or str, optional
        Device of the result (default CPU).

    Returns
    -------
    torch.BoolTensor, shape (L, H, W)
        ``masks[i]`` selects the cells of level ``levels[i]``. ``masks.sum(0)`` is all ones.

    Examples
    --------
    >>> masks = octave_ring_masks(16, 16, (1, 2, 4))
    >>> masks.shape, masks.sum(dim=(1, 2)).tolist(), bool(masks.sum(0).eq(1).all())
    (torch.Size([3, 16, 16]), [211, 36, 9], True)
    """
    h = _check_size(height, "height")
    w = _check_size(width, "width")
    lv = _check_levels(levels)  # any grid: levels coarser than it own empty rings
    f = _radial_frequency(h, w, device)
    # edges[i] is the upper edge of level i; level i is [edges[i+1], edges[i]).
    edges = [float("inf")] + [0.5 / m for m in lv[1:]] + [float("-inf")]
    masks = torch.empty((len(lv), h, w), dtype=torch.bool, device=f.device)
    for i in range(len(lv)):
        masks[i] = (f >= edges[i + 1]) & (f < edges[i])
    return masks


def ring_bands(x: torch.Tensor, levels: Sequence[int]) -> torch.Tensor:
    """Split images into octave frequency rings, one band per resolution level.

    Each band is the real part of the inverse FFT of the spectrum ``fft2(x)`` restricted to
    that level's ring of :func:`octave_ring_masks`. The rings are symmetric under f → −f, so the
    bands are real; they sum to ``x`` up to float rounding. Any H and W work.

    Parameters
    ----------
    x : torch.Tensor, shape (B, C, H, W)
        Real floating-point images.
    levels : sequence of int
        Consecutive powers of two starting at 1.

    Returns
    -------
    torch.Tensor, shape (L, B, C, H, W)
        Bands, finest first; same dtype and device as ``x`` (half-precision inputs are
        transformed in float32 and cast back).

    Examples
    --------
    >>> x = torch.randn(1, 1, 16, 16)
    >>> bands = ring_bands(x, (1, 2, 4))
    >>> bands.shape, bool(torch.allclose(bands.sum(0), x, atol=1e-5))
    (torch.Size([3, 1, 1, 16, 16]), True)
    """
    x = _check_image(x)
    _, _, h, w = x.shape
    lv = _check_levels(levels)
    spectrum = torch.fft.fft2(x.to(_fft_dtype(x.dtype)))
    masks = octave_ring_masks(h, w, lv, device=x.device)
    out = x.new_empty((len(lv),) + tuple(x.shape))
    zero = spectrum.new_zeros(())
    for i in range(len(lv)):
        out[i] = torch.fft.ifft2(torch.where(masks[i], spectrum, zero)).real
    return out


def decompose(x: torch.Tensor, levels: Sequence[int], method: str) -> torch.Tensor:
    """Split images into resolution bands with the chosen method.

    Parameters
    ----------
    x : torch.Tensor, shape (B, C, H, W)
        Real floating-point images.
    levels : sequence of int
        Consecutive powers of two starting at 1.
    method : {"rings", "pyramid"}
        ``"rings"``: :func:`ring_bands` (sharp octave rings in frequency, any size);
        ``"pyramid"``: :func:`box_pyramid` (box-filter bands in pixel space, needs H and W
        divisible by the deepest level).

    Returns
    -------
    torch.Tensor, shape (L, B, C, H, W)
        Bands, finest first; they sum to ``x``.

    Examples
    --------
    >>> decompose(torch.randn(1, 3, 16, 16), (1, 2), 'pyramid').shape
    torch.Size([2, 1, 3, 16, 16])
    """
    method = _check_method(method)
    if method == "rings":
        return ring_bands(x, levels)
    return box_pyramid(x, levels)


def _box_response(n: int, m: int) -> np.ndarray:
    """Ŵ_m(f) = (1/m)·Σ_{j<m} e^{2πi·f·j} on the n-point FFT grid (complex, shape (n,))."""
    f = np.fft.fftfreq(n)
    return np.exp(2j * np.pi * np.outer(f, np.arange(m))).mean(axis=1)


def band_weights(height: int, width: int, levels: Sequence[int], method: str = "rings") -> np.ndarray:
    """How much of each Fourier mode's power each band holds, shape (L, H, W), float64.

    Parameters
    ----------
    height, width : int
        Grid size in pixels.
    levels : sequence of int
        Consecutive powers of two starting at 1.
    method : {"rings", "pyramid"}
        ``"rings"``: the 0/1 masks of :func:`octave_ring_masks`. ``"pyramid"``:
        E‖B_m x‖² per unit power of mode k, |Ŵ_m(k)|² − |Ŵ_2m(k)|², with |Ŵ_m(k)|² the product over
        both axes of the Fejér kernel sin²(π·f·m)/(m·sin(π·f))² of m×m block averaging (:func:`box_pyramid`);
        the coarsest level M holds |Ŵ_M(k)|² (THEORY §4b). H and W must be divisible by M.

    Returns
    -------
    ndarray, shape (L, H, W)
        Weights on the unshifted FFT grid, read-only (computed once per grid); they sum to 1 over the
        levels at every mode.

    Examples
    --------
    >>> w = band_weights(16, 16, (1, 2, 4), "pyramid")
    >>> w.shape, bool(np.allclose(w.sum(0), 1.0)), round(float(w[:, 0, 0][-1]), 6)
    ((3, 16, 16), True, 1.0)
    """
    lv = _check_levels(levels)
    method = _check_method(method)
    if method == "pyramid":
        _check_divisible(height, width, lv[-1], f"{lv[-1]}, the deepest pyramid level", " or fewer levels")
    return _band_weights(int(height), int(width), lv, method)


@functools.lru_cache(maxsize=16)
def _band_weights(height: int, width: int, levels: tuple[int, ...], method: str) -> np.ndarray:
    if method == "rings":
        weights = octave_ring_masks(height, width, levels).numpy().astype(np.float64)
    else:
        def response(m: int) -> np.ndarray:
            return np.abs(_box_response(height, m))[:, None] ** 2 * np.abs(_box_response(width, m))[None, :] ** 2

        kept = [response(m) for m in levels]
        weights = np.stack([kept[i] - kept[i + 1] for i in range(len(levels) - 1)] + [kept[-1]])
    weights.flags.writeable = False
    return weights


# --------------------------------------------------------------------------------------------
# power spectra
# --------------------------------------------------------------------------------------------


def rapsd(x: torch.Tensor, per_channel: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Radially averaged power spectral density.

    Power is ``|fft2(x, norm="ortho")|²`` per image and channel, so white noise of unit variance
    has expected power 1 at every frequency. Grid cells are binned by
    ``r = round(f · N)`` with ``N = max(H, W)`` and ``f`` the radial frequency in cycles/pixel
    (from :func:`torch.fft.fftfreq`); bins ``r = 0 … N//2`` are kept (cells beyond the Nyquist
    radius, in the corners, are dropped).

    Parameters
    ----------
    x : torch.Tensor, shape (B, C, H, W)
        Real floating-point images.
    per_channel : bool, default False
        If True, average over the batch only and return one spectrum per channel.

    Returns
    -------
    freqs : torch.Tensor, shape (R,), float64
        Bin frequencies ``r / N`` in cycles/pixel, ``R = N//2 + 1``. Bin 0 is DC (the squared
        mean of each image times H·W), not part of any power law.
    power : torch.Tensor, float64, shape (R,) or (C, R) if ``per_channel``
        Mean power in each bin, averaged over batch, channels (unless ``per_channel``) and the
        grid cells of the bin. Units: squared input units (per cycle²/pixel² density up to the
        constant grid spacing).

    Examples
    --------
    >>> freqs, power = rapsd(torch.randn(64, 1, 32, 32, generator=torch.Generator().manual_seed(0)))
    >>> freqs.shape, bool(abs(power[1:].mean() - 1) < 0.02)  # white noise: power 1
    (torch.Size([17]), True)
    """
    x = _check_image(x)
    b, c, h, w = x.shape
    n = max(h, w)
    spectrum = torch.fft.fft2(x.to(_fft_dtype(x.dtype)), norm="ortho")
    power = spectrum.real.square() + spectrum.imag.square()  # (B, C, H, W)
    r = torch.round(_radial_frequency(h, w, x.device) * n).long().flatten()
    keep = r <= n // 2
    r = r[keep]
    nbins = n // 2 + 1
    counts = torch.bincount(r, minlength=nbins).to(torch.float64).clamp_min(1.0)
    if per_channel:
        cell = power.sum(dim=0, dtype=torch.float64).reshape(c, h * w)[:, keep]
        sums = torch.zeros((c, nbins), dtype=torch.float64, device=x.device)
        sums.index_add_(1, r, cell)
        mean = sums / (counts * b)
    else:
        cell = power.sum(dim=(0, 1), dtype=torch.float64).reshape(h * w)[keep]
        sums = torch.zeros(nbins, dtype=torch.float64, device=x.device)
        sums.index_add_(0, r, cell)
        mean = sums / (counts * (b * c))
    freqs = torch.arange(nbins, dtype=torch.float64, device=x.device) / n
    return freqs, mean


def centred_rapsd(x: torch.Tensor, *, dc: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """:func:`rapsd` of samples with the batch mean removed, unbiased for that removal.

    Removing the batch mean takes away 1/B of every mode's variance, so the power is scaled by
    B/(B − 1) (white noise of unit variance gives 1 at every frequency). A batch of one has each
    image's own mean removed instead (its DC bin is then 0).

    Parameters
    ----------
    x : torch.Tensor, shape (B, C, H, W)
        Real floating-point samples.
    dc : bool
        Keep the DC bin (bin 0); ``False`` drops it, as log-log plots and power-law fits need.

    Returns
    -------
    freqs, power : ndarray (float64), shape (R,), or (R − 1,) without DC
        As :func:`rapsd`: cycles/pixel and power (white noise = 1); with ``dc``, bin 0 is DC.

    Examples
    --------
    >>> noise = torch.randn(64, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    >>> freqs, power = centred_rapsd(noise)
    >>> freqs.shape, bool(abs(power[1:].mean() - 1) < 0.02)
    ((17,), True)
    """
    x = _check_image(x).double()
    b = x.shape[0]
    x = x - x.mean(0) if b > 1 else x - x.mean(dim=(-2, -1), keepdim=True)
    freqs, power = rapsd(x)
    if b > 1:
        power = power * (b / (b - 1))
    start = 0 if dc else 1
    return freqs[start:].cpu().numpy(), power[start:].cpu().numpy()


def _as_numpy_1d(a: object, name: str) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().to("cpu", torch.float64).numpy()
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(
            f"{name} must be one-dimensional; got shape {arr.shape}"
            + ("; fit each channel of a per-channel spectrum separately" if arr.ndim == 2 else "")
        )
    return arr


def fit_power_law(
    freqs: np.ndarray | torch.Tensor,
    power: np.ndarray | torch.Tensor,
    fmin: float | None = None,
    fmax: float | None = None,
    num: int = 32,
) -> tuple[float, float]:
    """Fit ``P(f) = A · f^(−α)`` to a radial power spectrum.

    Bins with ``f <= 0`` (DC), outside ``[fmin, fmax]``, or with non-positive or non-finite
    power are dropped. log P is then resampled (linear interpolation in log-log space) onto
    ``num`` points evenly spaced in log f, so the many high-frequency bins do not dominate, and
    a least-squares line is fitted to log P against log f.

    Parameters
    ----------
    freqs : array-like or torch.Tensor, shape (R,)
        Frequencies in cycles/pixel, e.g. from :func:`rapsd`.
    power : array-like or torch.Tensor, shape (R,)
        Power per bin.
    fmin, fmax : float, optional
        Inclusive frequency range in cycles/pixel to fit. Default: all positive frequencies.
    num : int, default 32
        Number of log-spaced resampling points (at least 2).

    Returns
    -------
    A : float
        Amplitude: the fitted power at f = 1 cycle/pixel.
    alpha : float
        Spectral slope; positive for spectra that decay with frequency (natural images: ≈ 2).

    Examples
    --------
    >>> f = np.linspace(0.0, 0.5, 17)
    >>> amplitude, exponent = fit_power_law(f, 0.04 * np.where(f > 0, f, 1.0) ** -2.5)
    >>> round(amplitude, 4), round(exponent, 4)
    (0.04, 2.5)
    """
    f = _as_numpy_1d(freqs, "freqs")
    p = _as_numpy_1d(power, "power")
    if f.shape != p.shape:
        raise ValueError(f"freqs and power must have the same length; got {f.size} and {p.size}")
    num = _check_size(num, "num")
    if num < 2:
        raise ValueError(f"num must be at least 2 resampling points; got {num}")
    if fmin is not None and fmax is not None and fmin > fmax:
        raise ValueError(f"fmin ({fmin}) must not exceed fmax ({fmax})")
    keep = (f > 0) & np.isfinite(f) & np.isfinite(p) & (p > 0)
    if fmin is not None:
        keep &= f >= fmin
    if fmax is not None:
        keep &= f <= fmax
    f, p = f[keep], p[keep]
    if np.unique(f).size < 2:
        raise ValueError(
            f"need at least 2 distinct positive frequencies with positive power in "
            f"[{fmin}, {fmax}] to fit a power law; got {np.unique(f).size}"
        )
    order = np.argsort(f, kind="stable")
    logf, logp = np.log(f[order]), np.log(p[order])
    grid = np.linspace(logf[0], logf[-1], num)
    resampled = np.interp(grid, logf, logp)
    slope, intercept = np.polyfit(grid, resampled, 1)
    return float(np.exp(intercept)), float(-slope)


# --------------------------------------------------------------------------------------------
# band energies and measured signal fractions
# --------------------------------------------------------------------------------------------


def batch_reference(batch_size: int) -> str | None:
    """What a batch's band energies are measured about when the caller does not say (``"auto"``).

    The per-pixel batch mean (``"batch"``, the energy of the sample-to-sample variation) for a batch
    of two samples or more; zero (None) for one sample, which is its own batch mean.

    Examples
    --------
    >>> batch_reference(4), batch_reference(1)
    ('batch', None)
    """
    return "batch" if batch_size >= 2 else None


def degrees_of_freedom(batch_size: int, reference: str | None) -> int:
    """How many samples' worth of energy a batch's band energies hold: B − 1 about the batch mean
    (``reference="batch"``), B about zero (None); expected energies are this multiple of one sample's.

    Examples
    --------
    >>> degrees_of_freedom(4, "batch"), degrees_of_freedom(4, None)
    (3, 4)
    """
    return batch_size - 1 if reference == "batch" else batch_size


def _check_reference(reference: object, batch: int, what: str) -> None:
    if reference is None:
        return
    if isinstance(reference, str):
        if reference != "batch":
            raise ValueError(
                f"unknown reference {reference!r}; use None (energy about zero), 'batch' "
                "(about the per-pixel batch mean) or a tensor broadcastable to (L, B, C, H, W)"
            )
        if batch < 2:
            raise ValueError(
                f"reference='batch' needs at least 2 samples in the batch of {what} (got {batch}): "
                "with one sample the batch mean is the sample itself; use reference=None"
            )
        return
    if not isinstance(reference, torch.Tensor):
        raise ValueError(
            "reference must be None, 'batch' or a torch.Tensor broadcastable to "
            f"(L, B, C, H, W); got {type(reference).__name__}"
        )
    if reference.ndim > 5:
        raise ValueError(
            "a reference tensor must be broadcastable to (L, B, C, H, W); "
            f"got shape {tuple(reference.shape)}"
        )


def _check_reference_shape(reference: object, shape: tuple[int, ...]) -> None:
    """Check that a tensor reference broadcasts to the band shape (L, B, C, H, W)."""
    if not isinstance(reference, torch.Tensor):
        return
    try:
        full = tuple(torch.broadcast_shapes(reference.shape, shape))
    except RuntimeError:
        full = None
    if full != shape:
        raise ValueError(
            f"reference of shape {tuple(reference.shape)} is not broadcastable to the bands' "
            f"shape {shape} (L, B, C, H, W)"
        )


def _energies(bands: torch.Tensor, reference: object) -> torch.Tensor:
    """Energies of bands of shape (L, *lead, B, C, H, W) → (L, *lead); reference pre-checked."""
    if reference is None:
        d = bands
    elif isinstance(reference, str):  # "batch"
        d = bands - bands.mean(dim=-4, keepdim=True)
    else:
        ref = reference.to(device=bands.device, dtype=bands.dtype)
        ref = ref.reshape((1,) * (5 - ref.ndim) + tuple(ref.shape))
        ref = ref.reshape(ref.shape[:1] + (1,) * (bands.ndim - 5) + ref.shape[1:])
        d = bands - ref
    return d.square().sum(dim=(-4, -3, -2, -1))


def band_energies(bands: torch.Tensor, reference: object = None) -> torch.Tensor:
    """Energy of each band: Σ over batch, channels and pixels of (band − reference)².

    Parameters
    ----------
    bands : torch.Tensor, shape (L, B, C, H, W)
        Bands from :func:`decompose`.
    reference : None, "batch" or torch.Tensor
        What to subtract before squaring. ``None``: nothing (energy about zero). ``"batch"``:
        the mean over the batch dimension, per level, channel and pixel (the energy of the
        sample-to-sample variation; needs B >= 2). A tensor: broadcastable to
        ``(L, B, C, H, W)``.

    Returns
    -------
    torch.Tensor, shape (L,)
        Energies in squared input units, same dtype and device as ``bands``.

    Examples
    --------
    >>> bands = box_pyramid(torch.randn(4, 1, 8, 8), (1, 2))
    >>> band_energies(bands).shape, band_energies(bands, 'batch').shape
    (torch.Size([2]), torch.Size([2]))
    """
    if not isinstance(bands, torch.Tensor) or bands.ndim != 5:
        shape = tuple(bands.shape) if isinstance(bands, torch.Tensor) else type(bands).__name__
        raise ValueError(f"bands must be a tensor of shape (L, B, C, H, W); got {shape}")
    if not bands.is_floating_point():
        raise ValueError(f"bands must be real floating point; got dtype {bands.dtype}")
    _check_reference(reference, bands.shape[1], "bands")
    _check_reference_shape(reference, tuple(bands.shape))
    return _energies(bands, reference)


def _fast_energies(x: torch.Tensor, levels: tuple[int, ...], method: str, reference: object) -> torch.Tensor:
    """Band energies of each step without materialising the bands, shape (L, N).

    ``x`` is (N, B, C, H, W) float64 and ``reference`` None or "batch". Rings use Parseval: a
    ring band's energy is the sum of |FFT|² (orthonormal) over its modes, the masks being
    symmetric under f → −f. Pyramid bands are piecewise constant on m×m blocks, so
    ‖B_m x‖² = m²·‖D_m x − U_2 D_{2m} x‖² is computed at the pooled resolution.
    """
    if reference == "batch":
        x = x - x.mean(dim=1, keepdim=True)
    n, b, c, h, w = x.shape
    flat = x.reshape(n * b, c, h, w)
    if method == "rings":
        power = torch.fft.fft2(flat, norm="ortho").abs().square().reshape(n, b * c, h * w).sum(1)  # (N, H·W)
        masks = octave_ring_masks(h, w, levels, device=x.device).reshape(len(levels), h * w).to(power.dtype)
        return masks @ power.T
    pooled = {m: pool(flat, m) for m in levels}
    out = []
    for m in levels:
        diff = pooled[m] if m == levels[-1] else pooled[m] - upsample(pooled[2 * m], 2)
        out.append(m * m * diff.square().reshape(n, -1).sum(1))
    return torch.stack(out)


def step_band_energies(
    x0_steps: torch.Tensor, levels: Sequence[int], method: str = "rings", reference: object = "batch"
) -> torch.Tensor:
    """Band energy of each step's x̂0, shape (S, L), float64: the numerators of :func:`signal_fractions`.

    Each row depends on its own step alone, so a live view can compute new steps only and divide
    by the energy of whichever sample it treats as final.

    Parameters
    ----------
    x0_steps : torch.Tensor, shape (S, B, C, H, W)
    levels : sequence of int
    method : {"rings", "pyramid"}
    reference : None or "batch"
        As in :func:`band_energies` (tensor references need :func:`signal_fractions`).

    Examples
    --------
    >>> step_band_energies(torch.randn(5, 2, 1, 8, 8), (1, 2), 'rings').shape
    torch.Size([5, 2])
    """
    if not isinstance(x0_steps, torch.Tensor) or x0_steps.ndim != 5:
        raise ValueError("x0_steps must be a tensor of shape (S, B, C, H, W)")
    if not (reference is None or (isinstance(reference, str) and reference == "batch")):
        raise ValueError("step_band_energies takes reference None or 'batch'")
    lv, method = _check_levels(levels, x0_steps.shape[-2:]), _check_method(method)
    _check_reference(reference, x0_steps.shape[1], "x0_steps")
    s, b, c, h, w = x0_steps.shape
    chunk = max(1, _MAX_CHUNK_ELEMENTS // max(b * c * h * w, 1))
    parts = [_fast_energies(x0_steps[i : i + chunk].to(torch.float64), lv, method, reference) for i in range(0, s, chunk)]
    if not parts:
        return torch.empty((0, len(lv)), dtype=torch.float64, device=x0_steps.device)
    return torch.cat(parts, dim=1).T.contiguous()


def signal_fractions(
    x0_steps: torch.Tensor,
    x0_final: torch.Tensor,
    levels: Sequence[int],
    method: str = "rings",
    reference: object = "batch",
) -> torch.Tensor:
    """Measured explained-variance ratio per sampling step and resolution level.

    ``G_b(step) = E_b(x̂0(step)) / E_b(x0_final)`` where ``E_b`` is the :func:`band_energies` of
    band b (with the same ``reference`` in numerator and denominator). It is 1 at a step whose
    prediction equals the final sample, and typically grows from ≈0 towards 1 as sampling
    proceeds, coarse levels first.

    Parameters
    ----------
    x0_steps : torch.Tensor, shape (S, B, C, H, W)
        The model's clean-sample prediction x̂0 at each of S sampling steps.
    x0_final : torch.Tensor, shape (B, C, H, W)
        The final samples.
    levels : sequence of int
        Consecutive powers of two starting at 1.
    method : {"rings", "pyramid"}, default "rings"
        Band decomposition, see :func:`decompose`.
    reference : None, "batch" or torch.Tensor, default "batch"
        See :func:`band_energies`. ``"batch"`` measures sample-to-sample variation and needs
        B >= 2.

    Returns
    -------
    torch.Tensor, shape (S, L), float64
        Fractions G; a level whose final energy is zero yields NaN or inf.

    Notes
    -----
    Computed in float64. With ``reference`` None or "batch" the band energies come straight from
    the spectrum (rings, by Parseval) or the pooled images (pyramid), without building the bands;
    a tensor reference decomposes the steps in chunks of bounded size.

    Examples
    --------
    >>> final = torch.randn(2, 1, 8, 8)
    >>> steps = torch.stack([0 * final, 0.5 * final, final])
    >>> signal_fractions(steps, final, (1, 2)).round(decimals=3).tolist()
    [[0.0, 0.0], [0.25, 0.25], [1.0, 1.0]]
    """
    if not isinstance(x0_steps, torch.Tensor) or x0_steps.ndim != 5:
        shape = tuple(x0_steps.shape) if isinstance(x0_steps, torch.Tensor) else type(x0_steps).__name__
        raise ValueError(f"x0_steps must be a tensor of shape (S, B, C, H, W); got {shape}")
    x0_final = _check_image(x0_final, "x0_final")
    if not x0_steps.is_floating_point():
        raise ValueError(f"x0_steps must be real floating point; got dtype {x0_steps.dtype}")
    if tuple(x0_steps.shape[1:]) != tuple(x0_final.shape):
        raise ValueError(
            f"x0_steps has per-step shape {tuple(x0_steps.shape[1:])} but x0_final has shape "
            f"{tuple(x0_final.shape)}; they must match (B, C, H, W)"
        )
    lv = _check_levels(levels, x0_steps.shape[-2:])
    method = _check_method(method)
    s, b, c, h, w = x0_steps.shape
    _check_reference(reference, b, "x0_final")
    _check_reference_shape(reference, (len(lv), b, c, h, w))

    if reference is None or (isinstance(reference, str) and reference == "batch"):
        denom = step_band_energies(x0_final[None], lv, method, reference)[0]
        return step_band_energies(x0_steps, lv, method, reference) / denom

    final = decompose(x0_final.to(torch.float64), lv, method)
    denom = _energies(final, reference)  # (L,)
    del final

    per_step = b * c * h * w * len(lv)
    chunk = max(1, _MAX_CHUNK_ELEMENTS // max(per_step, 1))
    numer = []
    for start in range(0, s, chunk):
        part = x0_steps[start : start + chunk].to(torch.float64)
        k = part.shape[0]
        bands = decompose(part.reshape(k * b, c, h, w), lv, method)
        numer.append(_energies(bands.reshape(len(lv), k, b, c, h, w), reference))  # (L, k)
        del bands, part
    if not numer:
        return torch.empty((0, len(lv)), dtype=torch.float64, device=x0_final.device)
    return (torch.cat(numer, dim=1) / denom[:, None]).T.contiguous()


def measured_chromatogram(fractions: torch.Tensor) -> torch.Tensor:
    """Signal generated at each step: the step-to-step increase of the signal fractions.

    Parameters
    ----------
    fractions : torch.Tensor, shape (S, L)
        Signal fractions G from :func:`signal_fractions`.

    Returns
    -------
    torch.Tensor, shape (S, L)
        ``c[i] = G[i] − G[i−1]`` with ``G[−1] := 0``, so ``c[0] = G[0]`` and the column sums
        equal ``G[-1]``. Same dtype and device as ``fractions``.

    Examples
    --------
    >>> measured_chromatogram(torch.tensor([[0.0, 0.25], [0.5, 0.75], [1.0, 1.0]])).tolist()
    [[0.0, 0.25], [0.5, 0.5], [0.5, 0.25]]
    """
    if not isinstance(fractions, torch.Tensor) or fractions.ndim != 2:
        shape = tuple(fractions.shape) if isinstance(fractions, torch.Tensor) else type(fractions).__name__
        raise ValueError(f"fractions must be a tensor of shape (S, L); got {shape}")
    return torch.diff(fractions, dim=0, prepend=torch.zeros_like(fractions[:1]))
