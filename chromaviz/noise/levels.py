"""Resolution levels: the rules every other module reads, stated once.

A *resolution level* m is a block size in pixels of the sample grid: the image seen through m×m
average pooling D_m (Hwang, Park & Jo, "Resolution Chromatography of Diffusion Models",
arXiv:2401.10247). Pooling divides white-noise variance by m², so level m of an input at log-SNR λ
is at λ + 2·ln m and holds the signal fraction s_m = sigmoid(λ + 2·ln m) of unit-variance data.

The rules
---------
- **Levels.** The m² law holds for any block size m ≥ 1 (a finite real number), which is what
  :func:`check_levels` accepts by default (:mod:`chromaviz.theory`). Where a level names a band of
  a decomposition or a prompt switch it is a level of the dyadic ladder 1, 2, 4, …:
  ``check_levels(..., dyadic=True)`` asks for integer powers of two (:func:`is_power_of_two`), and
  ``check_levels(..., ladder=True)`` for the whole ladder ``(1, 2, 4, …, M)`` of a band stack
  (:mod:`chromaviz.spectral`). Given an image ``size``, a level coarser than the image (m above
  its shorter side) is refused.
- **Birth.** Level m is born at λ = −2·ln m (m²·SNR = 1, s_m = 1/2): :func:`birth_log_snr`.
- **Born at a step.** A step with log-SNR λ_i has seen level m born when
  λ_i ≥ −2·ln m − :data:`BIRTH_TOLERANCE` (:func:`is_born`); the first such step of a run is
  :func:`first_born_step`. Prompt boundaries, composing's ``plan``, the sampler's switches and
  schedule design's ``step_timings`` all use this one rule, so they name the same step.
- **Born, as a fraction shows it.** A measured (or spectrum-aware) signal fraction has no λ of its
  own: there level m is born at the first step whose fraction reaches one half, less the same
  tolerance (:data:`BORN_FRACTION`, :func:`born_steps`), so that the m² law's fractions give the
  steps of :func:`first_born_step`.
"""

from __future__ import annotations

import math
import numbers
import operator
from typing import Any

import numpy as np
from scipy.special import expit

__all__ = [
    "BIRTH_TOLERANCE", "sigmoid", "level_offset", "birth_log_snr", "check_levels", "is_power_of_two",
    "is_born", "first_born_step", "BORN_FRACTION", "born_steps",
]

BIRTH_TOLERANCE = 1e-5
"""A step counts as level m's birth when λ_i ≥ −2·ln m − this. Euler-type schedulers keep σ in
float32, which moves λ by about 1e-6, so a birth placed exactly on a step must not slip to the next."""


def sigmoid(x) -> np.ndarray:
    """The logistic function 1/(1 + e^(−x)), exact at ±∞ and without overflow (``scipy.special.expit``).

    Parameters
    ----------
    x : array_like
        Any shape; ±∞ allowed.

    Returns
    -------
    ndarray (float64), shape of ``x``

    Examples
    --------
    >>> sigmoid([-np.inf, 0.0, np.inf]).tolist()
    [0.0, 0.5, 1.0]
    """
    return expit(np.asarray(x, dtype=np.float64))


def is_power_of_two(m: Any) -> bool:
    """True for an integer (Python, numpy or torch; never a bool or a float) that is 1, 2, 4, 8, ….

    Examples
    --------
    >>> [is_power_of_two(m) for m in (1, 4, np.int64(8), 6, 0, 4.0, True)]
    [True, True, True, False, False, False, False]
    """
    if isinstance(m, (bool, np.bool_)):
        return False
    try:
        k = operator.index(m)
    except TypeError:
        return False
    return k >= 1 and k & (k - 1) == 0


def check_levels(levels: Any, *, name: str = "levels", dyadic: bool = False, ladder: bool = False,
                 size: tuple[int, int] | None = None) -> np.ndarray:
    """Validate a level or a list of levels (block sizes m in pixels) and return them as an array.

    Parameters
    ----------
    levels : real number or sequence of real numbers
        Block sizes m. A bare number is a list of one.
    name : str
        The argument's name in error messages.
    dyadic : bool
        Every m must be a positive power of two (1, 2, 4, …): a level that names a band or a switch.
    ladder : bool
        The list must be exactly ``(1, 2, 4, …, M)``: the levels of a band stack, finest first.
    size : (int, int), optional
        (H, W) of the images the levels refer to: a level above min(H, W) (a block larger than the
        image) is refused.

    Returns
    -------
    ndarray (float64), shape (L,)

    Raises
    ------
    ValueError
        Naming ``name``, what was given and what is allowed: not a number, a bool, not finite, m < 1,
        an empty list, not a power of two (``dyadic``), not the ladder (``ladder``), or a level
        coarser than ``size``.

    Examples
    --------
    >>> check_levels([1, 8, 15]).tolist()
    [1.0, 8.0, 15.0]
    >>> check_levels((1, 2, 4), ladder=True, size=(32, 32)).tolist()
    [1.0, 2.0, 4.0]
    >>> check_levels([1024], dyadic=True, size=(32, 32))
    Traceback (most recent call last):
    ...
    ValueError: levels: level 1024 is coarser than the 32×32 image (at most 32); got [1024]
    """
    hint = ("be consecutive powers of two starting at 1, e.g. (1, 2, 4, 8)" if ladder else
            "each be a power of two ≥ 1 (1, 2, 4, 8, …)" if dyadic else "each be a block size ≥ 1 (in pixels)")
    if isinstance(levels, (str, bytes)):
        raise ValueError(f"{name} must {hint}; got the string {levels!r}")
    if hasattr(levels, "tolist") and not isinstance(levels, np.ndarray):  # torch tensors
        levels = levels.tolist()
    items = list(np.atleast_1d(np.asarray(levels, dtype=object)).ravel()) if not isinstance(levels, (list, tuple)) \
        else list(levels)
    if not items:
        raise ValueError(f"{name} must {hint}; got an empty list")
    shown = [m if not isinstance(m, np.generic) else m.item() for m in items]
    for m in items:
        if isinstance(m, (bool, np.bool_)) or not isinstance(m, numbers.Real):
            raise ValueError(f"{name} must {hint}; got {shown!r}, which contains {m!r}")
        if (dyadic or ladder) and not isinstance(m, numbers.Integral):
            raise ValueError(f"{name} must {hint}; got {shown!r}, which contains the non-integer {m!r}")
        if not (math.isfinite(m) and m >= 1):
            raise ValueError(f"{name} must {hint}; got {shown!r}, which contains {m!r}")
        if (dyadic or ladder) and not is_power_of_two(m):
            raise ValueError(f"{name} must {hint}; got {shown!r}, which contains {m!r}")
    out = np.array([float(m) for m in items], dtype=np.float64)
    if ladder:
        expected = tuple(2**i for i in range(len(out)))
        if tuple(int(m) for m in out) != expected:
            raise ValueError(f"{name} must {hint}; got {tuple(shown)!r} (expected {expected!r} for {len(out)} levels)")
    if size is not None:
        h, w = (int(s) for s in size)
        too_coarse = out[out > min(h, w)]
        if len(too_coarse):
            raise ValueError(f"{name}: level {too_coarse[0]:g} is coarser than the {h}×{w} image "
                             f"(at most {min(h, w)}); got {shown!r}")
    return out


def level_offset(levels) -> np.ndarray:
    """2·ln m: what m×m pooling adds to the log-SNR, shape (L,).

    Examples
    --------
    >>> level_offset([1, 2, 4]).round(4).tolist()
    [0.0, 1.3863, 2.7726]
    """
    return 2 * np.log(check_levels(levels))


def birth_log_snr(levels) -> np.ndarray:
    """λ at which level m is born (m²·SNR = 1, half of its signal formed): −2·ln m, shape (L,).

    Examples
    --------
    >>> birth_log_snr([1, 4]).round(4).tolist()
    [-0.0, -2.7726]
    """
    return -level_offset(levels)


def is_born(log_snr, levels) -> np.ndarray:
    """Whether level m has been born at log-SNR λ: λ ≥ −2·ln m − :data:`BIRTH_TOLERANCE`.

    Parameters
    ----------
    log_snr : array_like, shape (S,)
        λ of the network input at each step (±∞ allowed).
    levels : real number or sequence, length L

    Returns
    -------
    ndarray of bool, shape (S, L)

    Examples
    --------
    >>> is_born([-3.0, -2.0, 0.0], [4, 1]).tolist()
    [[False, False], [True, False], [True, True]]
    """
    lam = np.atleast_1d(np.asarray(log_snr, dtype=np.float64))[:, None]
    return lam >= birth_log_snr(levels)[None, :] - BIRTH_TOLERANCE


def first_born_step(log_snr, level: float, start: int = 0) -> int | None:
    """The first step i ≥ ``start`` of a run at which level m is born (:func:`is_born`).

    Parameters
    ----------
    log_snr : array_like, shape (S,)
        λ of the network input at each step, noisiest first (a :class:`~chromaviz.noise.plan.StepPlan`'s
        ``log_snr``).
    level : real
        Block size m ≥ 1.
    start : int
        Steps before this one are not considered.

    Returns
    -------
    int or None
        None if no step from ``start`` on reaches the birth.

    Examples
    --------
    >>> first_born_step([-4.0, -2.77, -1.0], 4)
    1
    >>> first_born_step([-4.0, -3.0], 4) is None
    True
    """
    born = is_born(log_snr, [level])[start:, 0]
    return int(start + np.argmax(born)) if born.any() else None


BORN_FRACTION = float(expit(-BIRTH_TOLERANCE))
"""The signal fraction at which a level counts as born: ½ less the birth tolerance, σ(−:data:`BIRTH_TOLERANCE`)."""


def born_steps(fractions) -> list[int | None]:
    """The first step at which each level is born, read from its signal fraction per step.

    The birth rule applied to a fraction (measured G, a spectrum-aware theory or the m² law): the
    first step whose fraction reaches :data:`BORN_FRACTION`. For the m² law's fractions
    sigmoid(λ_i + 2·ln m) this is :func:`first_born_step` of the run's λ.

    Parameters
    ----------
    fractions : array_like, shape (S, L)
        Signal fractions per step (noisiest first) and level.

    Returns
    -------
    list of int or None, length L
        None for a level whose fraction never reaches it.

    Raises
    ------
    ValueError
        If ``fractions`` is not two-dimensional.

    Examples
    --------
    >>> born_steps([[0.1, 0.5], [0.4, 0.9], [0.6, 1.0]])
    [2, 0]
    >>> born_steps([[0.2], [0.3]])
    [None]
    """
    reached = np.asarray(fractions, dtype=np.float64) >= BORN_FRACTION
    if reached.ndim != 2:
        raise ValueError(f"fractions must have shape (steps, levels), got {reached.shape}")
    return [int(np.argmax(col)) if col.any() else None for col in reached.T]
