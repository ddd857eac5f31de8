"""Prompt composing by resolution: one prompt for the coarse levels, another for the fine ones.

Coarse levels are generated early and fine levels late (``docs/chromatography.md``), so a prompt
that is active only while some levels are being generated decides those levels. This module says
it the way a user means it, "``A`` for the levels coarser than ``m``, ``B`` for the finer ones",
and turns it into a :class:`~chromaviz.prompts.PromptSchedule` whose switch is the *birth of
level m*, a boundary in level units that :func:`chromaviz.sampling.sample` resolves against the
model's own schedule and scheduler at run time.

What "coarser than m" means
---------------------------
``by_resolution(coarse=A, fine=B, level=m)`` switches at :meth:`Boundary.level(m)
<chromaviz.prompts.Boundary.level>`: the first step whose log-SNR reaches ``λ = −2·ln m``
(``m²·SNR = 1``). At that moment, by the m² law ``s_m = sigmoid(λ + 2·ln m)``, level ``m`` is
half formed (s = 1/2), level ``2m`` has 4/5 of its signal and ``4m`` 16/17, while ``m/2`` has
1/5 and ``m/4`` 1/17. So ``A`` decides the levels coarser than ``m``, ``B`` the finer ones, and
level ``m`` itself is shared: **m is the requested crossover level.**

Measuring it
------------
:func:`band_provenance` compares the final samples of the composed run with an ``A``-only and a
``B``-only run from the same seed, band by band (box pyramid: the band of level ``m`` is what
pooling by ``m`` keeps and pooling by ``2m`` does not). :func:`crossover_level` finds the level
where ``B`` overtakes ``A``, interpolated in ``log2 m``; :func:`measure_switch` runs the three
samples and measures them in one call.

Which models compose
--------------------
A switch can only hand B what is still undecided, and B keeps what A decided only if B's data
allows it. For Gaussian data whose prompts share one covariance and differ in their means, each
Fourier mode of the composed sample is exactly, on the probability-flow path,
``x0_A + (1 − √r)/(1 − √r_T)·(x0_B − x0_A)`` with ``r`` the mode's signal fraction at the switch and
``r_T`` at the first step: :class:`~chromaviz.models.LayoutTexture` (``docs/composing.md``). A model
that memorises (:class:`~chromaviz.models.ExemplarMixture`) or commits to its discrete attributes in
its first steps (the bundled shapes network) does not compose: B replaces the whole image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .. import spectral
from ..noise.levels import birth_log_snr, check_levels
from ..noise.plan import StepPlan, plan_steps
from ..noise.schedules import Schedule
from ..prompts import Boundary, PromptSchedule, Segment
from ..sampling.trajectory import Trajectory

__all__ = [
    "Switch", "Provenance", "by_resolution", "by_fraction", "naive_fractions", "plan",
    "equivalent_fraction", "band_provenance", "band_weights", "crossover_level", "measure_switch", "switch_law",
]

_UNSET: Any = object()


def _check_levels(levels: Sequence[int], count: int) -> tuple[int, ...]:
    """Levels as ints: powers of two ≥ 1 (:func:`~chromaviz.noise.levels.check_levels`), strictly
    decreasing (coarse to fine), ``count`` of them."""
    if isinstance(levels, (str, bytes)) or not isinstance(levels, Sequence):
        raise ValueError(f"levels must be a sequence of powers of two, got {levels!r}")
    if len(levels) != count:
        raise ValueError(
            f"{count + 1} prompts need {count} level(s) between them (one per switch), got {len(levels)}: {list(levels)!r}"
        )
    out = tuple(int(m) for m in check_levels(levels, dyadic=True))
    if any(b >= a for a, b in zip(out, out[1:])):
        raise ValueError(
            f"levels must be strictly decreasing, coarse to fine (e.g. [8, 2]): the prompts are listed from "
            f"the coarsest levels to the finest, got {out!r}"
        )
    return out


def _check_prompts(prompts: Sequence[str | None]) -> tuple[str | None, ...]:
    if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence):
        raise ValueError(f"prompts must be a list of prompts (coarsest levels first), got {prompts!r}")
    if len(prompts) < 2:
        raise ValueError(f"composing needs at least two prompts, got {len(prompts)}")
    for p in prompts:
        if p is not None and not isinstance(p, str):
            raise ValueError(f"every prompt must be a str or None (unconditional), got {p!r}")
    return tuple(prompts)


def by_resolution(
    prompts: Sequence[str | None] | None = None,
    levels: Sequence[int] | None = None,
    *,
    coarse: str | None = _UNSET,
    fine: str | None = _UNSET,
    level: int | None = None,
) -> PromptSchedule:
    """A prompt schedule that gives each prompt a range of resolution levels.

    Two forms::

        by_resolution(coarse="cat", fine="moon", level=4)   # cat coarser than 4, moon finer
        by_resolution(["A", "B", "C"], levels=[8, 2])       # A coarser than 8, B between, C finer than 2

    Parameters
    ----------
    prompts : sequence of str or None, length n ≥ 2
        The prompts from the coarsest levels to the finest (None: unconditional).
    levels : sequence of int, length n − 1
        The crossover levels between consecutive prompts, in pixels of block size (powers of two),
        strictly decreasing. Prompt ``k`` is active until the birth of ``levels[k]``.
    coarse, fine : str or None
        The two-prompt form: ``coarse`` for the levels coarser than ``level``, ``fine`` for the
        finer ones.
    level : int
        The crossover level of the two-prompt form.

    Returns
    -------
    PromptSchedule
        Sequential; its boundaries are ``Boundary.level(m)``, so each switch resolves from the
        model's own schedule and scheduler at run time (the first step with ``λ_i ≥ −2·ln m``).

    Raises
    ------
    ValueError
        Both or neither form given; fewer than two prompts; the wrong number of levels; a level
        that is not a power of two ≥ 1; levels not strictly decreasing.

    Notes
    -----
    At the birth of level ``m`` its signal fraction is 1/2 (``m²·SNR = 1``), that of ``2m`` is
    4/5 and that of ``m/2`` is 1/5: the prompt before the switch decides the levels coarser than
    ``m``, the one after it the finer ones, and level ``m`` is where they cross over.

    Examples
    --------
    >>> print(by_resolution(coarse="cat", fine="moon", level=4))
    "cat" until birth of level 4 (λ ≥ −2.77), then "moon"
    >>> [b.value for b in by_resolution(["a", "b", "c"], levels=[8, 2]).boundaries]
    [8, 2]
    """
    two = coarse is not _UNSET or fine is not _UNSET or level is not None
    if two and (prompts is not None or levels is not None):
        raise ValueError("give either prompts and levels, or coarse, fine and level, not both")
    if two:
        if coarse is _UNSET or fine is _UNSET or level is None:
            raise ValueError("the two-prompt form needs coarse=, fine= and level= (e.g. coarse='cat', fine='moon', level=4)")
        prompts, levels = [coarse, fine], [level]
    if prompts is None or levels is None:
        raise ValueError("by_resolution needs prompts and levels (e.g. ['A', 'B'], [4]) or coarse=, fine=, level=")
    ps = _check_prompts(prompts)
    ms = _check_levels(levels, len(ps) - 1)
    segments = [Segment(p, Boundary.level(m)) for p, m in zip(ps, ms)]
    return PromptSchedule((*segments, Segment(ps[-1], None)))


def by_fraction(prompts: Sequence[str | None], fractions: Sequence[float]) -> PromptSchedule:
    """The same prompts switched at fixed fractions of the steps, the way existing tools do.

    Parameters
    ----------
    prompts : sequence of str or None, length n ≥ 2
        First to last.
    fractions : sequence of float, length n − 1
        Non-decreasing fractions in [0, 1], with AUTOMATIC1111's rule: ``[A:B:f]`` uses ``A`` for
        steps ``0 … int(f·N)`` (see :class:`~chromaviz.prompts.Boundary`).

    Returns
    -------
    PromptSchedule
        Sequential, with ``"fraction"`` boundaries (for two prompts, what ``"[A:B:f]"`` parses to).

    Raises
    ------
    ValueError
        Wrong count, a fraction outside [0, 1], or fractions that decrease.
    """
    ps = _check_prompts(prompts)
    fs = [float(f) for f in fractions]
    if len(fs) != len(ps) - 1:
        raise ValueError(f"{len(ps)} prompts need {len(ps) - 1} fraction(s), got {len(fs)}: {fs!r}")
    if any(b < a for a, b in zip(fs, fs[1:])):
        raise ValueError(f"fractions must be non-decreasing, got {fs!r}")
    segments = [Segment(p, Boundary.fraction(f)) for p, f in zip(ps, fs)]
    return PromptSchedule((*segments, Segment(ps[-1], None)))


def naive_fractions(n: int) -> list[float]:
    """The switch fractions one picks without the theory: ``n`` prompts get equal shares of the steps.

    Returns
    -------
    list of float, length n − 1
        ``[1/n, 2/n, …]``; ``[0.5]`` for two prompts (``"[A:B:0.5]"``).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"n must be an integer ≥ 2 (the number of prompts), got {n!r}")
    return [k / n for k in range(1, n)]


def equivalent_fraction(switch_step: int, num_steps: int) -> float:
    """The AUTOMATIC1111 fraction ``f`` whose ``[A:B:f]`` switches at step ``switch_step``.

    Parameters
    ----------
    switch_step : int
        The first 0-based step with the second prompt (``≥ num_steps``: never).
    num_steps : int
        ``N``.

    Returns
    -------
    float
        ``0`` for step 0, ``(k − 1)/N`` for step ``k ≥ 2`` (A1111 keeps the first prompt for steps
        ``0 … int(f·N)``), ``1`` for never. Step 1 cannot be written as a fraction (``f < 1/N``
        switches at step 0, ``f = 1/N`` at step 2); ``1/N`` is returned, one step late.
    """
    n = int(num_steps)
    if n < 1:
        raise ValueError(f"num_steps must be ≥ 1, got {num_steps!r}")
    k = int(switch_step)
    if k < 0:
        raise ValueError(f"switch_step must be ≥ 0, got {switch_step!r}")
    if k == 0:
        return 0.0
    if k >= n:
        return 1.0
    f = max(k - 1, 1) / n
    if Boundary.fraction(f).switch_index(n) != max(k, 2):  # float rounding in int(f·N)
        f = (max(k - 1, 1) + 0.5) / n
    return f


@dataclass(frozen=True)
class Switch:
    """Where one level boundary of a schedule falls in a run.

    Attributes
    ----------
    level : int
        The crossover level m (block size in pixels of the model's sample grid).
    log_snr : float
        Its birth, ``λ = −2·ln m``.
    timestep : float
        The theory's birth timestep on the model's continuous schedule (``t(λ)``; NaN if the
        schedule never reaches that λ).
    step : int
        The first 0-based step whose λ reaches it: the first step of the next prompt
        (``num_steps`` if never).
    step_timestep : float
        The timestep of that step (NaN if never).
    fraction : float
        :func:`equivalent_fraction` of ``step``: the A1111 fraction that switches at the same step
        for this model, scheduler and step count.
    num_steps : int
        Steps of the run.
    """

    level: int
    log_snr: float
    timestep: float
    step: int
    step_timestep: float
    fraction: float
    num_steps: int

    @property
    def inherited(self) -> bool:
        """Whether level m is inherited from the initial noise: the schedule starts past its birth
        (``m²·SNR(t_max) ≥ 1``), so it has no birth time (``timestep`` is NaN)."""
        return math.isnan(self.timestep)

    def time(self, unit: str) -> float:
        """The switch as the value of a :class:`Boundary` in ``unit``: ``"level"``: m;
        ``"log_snr"``: its birth λ; ``"timestep"``: its birth timestep; ``"fraction"``:
        :attr:`fraction`, the A1111 fraction that switches at the same step.

        Raises
        ------
        ValueError
            For another unit, or (in any unit but ``"level"``) a level inherited from the initial
            noise (:attr:`inherited`), which has no birth time.

        Examples
        --------
        >>> (sw,) = plan(by_resolution(coarse="cat", fine="moon", level=4), Schedule.preset("scaled_linear"), 30)
        >>> sw.time("level"), round(sw.time("log_snr"), 3), round(sw.time("timestep"), 1), round(sw.time("fraction"), 3)
        (4, -2.773, 744.2, 0.2)
        """
        times = {"level": self.level, "log_snr": self.log_snr, "timestep": self.timestep, "fraction": self.fraction}
        if unit not in times:
            raise ValueError(f"unit must be one of {sorted(times)}, got {unit!r}")
        if unit != "level" and self.inherited:
            raise ValueError(f"level {self.level} is inherited from the initial noise under this schedule: "
                             "it has no birth time")
        return times[unit]


def plan(
    schedule: PromptSchedule,
    model: Any,
    num_inference_steps: int | None = None,
    scheduler: Any = "default",
    *,
    step_plan: StepPlan | None = None,
) -> list[Switch]:
    """Resolve the level boundaries of a schedule for one model, scheduler and step count.

    Parameters
    ----------
    schedule : PromptSchedule
        Sequential, with ``"level"`` boundaries (as :func:`by_resolution` makes).
    model : Denoiser or Schedule
        Whose noise schedule to use (a model's ``.schedule``).
    num_inference_steps : int
        N, as passed to :func:`~chromaviz.sampling.sample` (not needed with ``step_plan``).
    scheduler : str or diffusers scheduler
        As in :func:`~chromaviz.sampling.sample`.
    step_plan : StepPlan, optional
        The run's step plan (:func:`~chromaviz.noise.plan.plan_steps`); overrides
        ``num_inference_steps`` and ``scheduler``.

    Returns
    -------
    list of Switch
        One per boundary, in order. ``step`` is exactly where :func:`~chromaviz.sampling.sample`
        switches: both read the visited steps from one :class:`~chromaviz.noise.plan.StepPlan`
        and apply one birth rule (:func:`~chromaviz.noise.levels.is_born`). ``num_steps`` of a
        switch is S, the model evaluations of the run.

    Raises
    ------
    ValueError
        For a composite schedule, one with other than level boundaries, or neither
        ``num_inference_steps`` nor ``step_plan``.

    Examples
    --------
    >>> (sw,) = plan(by_resolution(coarse="cat", fine="moon", level=4), Schedule.preset("scaled_linear"), 30)
    >>> sw.step, round(sw.log_snr, 3)
    (7, -2.773)
    """
    if not isinstance(schedule, PromptSchedule):
        raise TypeError(f"plan needs a PromptSchedule with level boundaries (see by_resolution), got {type(schedule).__name__}")
    if schedule.is_composite or any(s.until is not None and s.until.unit != "level" for s in schedule.segments):
        raise ValueError(f"plan needs a sequential schedule with level boundaries (see by_resolution), got {schedule}")
    noise = model if isinstance(model, Schedule) else getattr(model, "schedule", None)
    if not isinstance(noise, Schedule):
        raise TypeError(f"plan needs a model or its Schedule, got {type(model).__name__}")
    n = num_inference_steps
    if step_plan is None:
        if n is None:
            raise ValueError("plan needs num_inference_steps (N) or a step_plan")
        step_plan = plan_steps(noise, n, scheduler)
    timesteps, log_snr = step_plan.timesteps, step_plan.log_snr
    n = len(timesteps)
    out, start = [], 0
    for seg in schedule.segments[:-1]:
        until = seg.until
        assert until is not None
        # as PromptSchedule.prompts_for_steps: segments are consumed in order, from the last switch on
        step = next((i for i in range(start, n) if until.crossed(i, n, timesteps[i], log_snr[i])), n)
        start = step
        m = int(until.value)
        lam = float(birth_log_snr(m)[0])
        t_birth = float(noise.t_of_log_snr(np.array([lam]))[0])
        out.append(Switch(m, lam, t_birth, step, float(timesteps[step]) if step < n else math.nan,
                          equivalent_fraction(step, n), n))
    return out


# ---------------------------------------------------------------------- measurement
@dataclass(frozen=True)
class Provenance:
    """Where each resolution level of a composed sample came from.

    Attributes
    ----------
    levels : tuple of int, length L
        Box-pyramid levels, finest first (pixels of block size).
    corr_a, corr_b : ndarray, shape (L,)
        Pearson correlation of each band of the composed samples with the same band of the
        ``A``-only and ``B``-only samples (pooled over batch, channels and pixels; each band
        centred per sample and channel).
    weight_a, weight_b : ndarray, shape (L,)
        Least-squares weights of the band fit ``composed ≈ a·A + b·B``. A-only and B-only runs
        from one seed share whatever the noise decides, so their bands correlate with each other;
        the joint fit separates the two: ``(a, b) = (1, 0)`` is pure ``A``, ``(0, 1)`` pure ``B``,
        ``(0, 0)`` neither.
    """

    levels: tuple[int, ...]
    corr_a: np.ndarray
    corr_b: np.ndarray
    weight_a: np.ndarray
    weight_b: np.ndarray

    def crossover(self) -> float:
        """:func:`crossover_level` of this provenance."""
        return crossover_level(self)

    def rows(self) -> list[list[float | int]]:
        """One row per level, coarsest first: ``[m, corr_a, corr_b, weight_a, weight_b]``."""
        return [[m, float(ca), float(cb), float(wa), float(wb)]
                for m, ca, cb, wa, wb in zip(self.levels, self.corr_a, self.corr_b, self.weight_a, self.weight_b)][::-1]


def _final(x: torch.Tensor | Trajectory, name: str) -> torch.Tensor:
    if isinstance(x, Trajectory):
        x = x.sample
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(f"{name} must be samples of shape (B, C, H, W) or a Trajectory, got {getattr(x, 'shape', x)!r}")
    return x.detach().to("cpu", torch.float64)


def band_provenance(
    composed: torch.Tensor | Trajectory,
    only_a: torch.Tensor | Trajectory,
    only_b: torch.Tensor | Trajectory,
    levels: Sequence[int] | None = None,
) -> Provenance:
    """Compare a composed run's final samples, band by band, with A-only and B-only runs.

    Parameters
    ----------
    composed, only_a, only_b : Tensor, shape (B, C, H, W), or Trajectory
        Final samples (a trajectory's ``sample``) of the composed run and of one run per prompt,
        all from the same seed, so that sample ``i`` of each started from the same noise. Any space
        the model samples in (pixels, or a latent model's latents).
    levels : sequence of int, optional
        Box-pyramid levels ``(1, 2, …, M)``; default :func:`chromaviz.spectral.levels_for` (H, W).

    Returns
    -------
    Provenance
        Per level: the band of level ``m`` is ``U_m·D_m x − U_2m·D_2m x`` (what pooling by ``m``
        keeps and pooling by ``2m`` averages away); the coarsest level takes the residual
        ``U_M·D_M x``.

    Raises
    ------
    ValueError
        For samples of different shapes or bad levels.
    """
    corr, weights = _band_statistics(composed, [only_a, only_b], levels)
    lv = tuple(levels) if levels is not None else spectral.levels_for(*_final(composed, "composed").shape[-2:])
    return Provenance(lv, corr[:, 0], corr[:, 1], weights[:, 0], weights[:, 1])


def band_weights(
    composed: torch.Tensor | Trajectory,
    references: Sequence[torch.Tensor | Trajectory],
    levels: Sequence[int] | None = None,
) -> np.ndarray:
    """Least-squares weights of each band of a composed run on the same band of n reference runs.

    The n-prompt form of :attr:`Provenance.weight_a` / ``weight_b``: per level, the band of
    ``composed`` is fitted as ``Σ_j w_j · band(references[j])``.

    Parameters
    ----------
    composed : Tensor, shape (B, C, H, W), or Trajectory
        Final samples of the composed run.
    references : sequence of Tensor (B, C, H, W) or Trajectory, length n ≥ 1
        One single-prompt run per prompt, same seed.
    levels : sequence of int, optional
        Box-pyramid levels; default :func:`chromaviz.spectral.levels_for` (H, W).

    Returns
    -------
    ndarray, shape (L, n)
        Levels finest first; row ``l`` is the weights of the references in band ``l``.
    """
    return _band_statistics(composed, references, levels)[1]


def _band_statistics(composed, references, levels) -> tuple[np.ndarray, np.ndarray]:
    """Correlations (L, n) of the composed bands with each reference's, and the joint fit's weights (L, n)."""
    if len(references) < 1:
        raise ValueError("band statistics need at least one reference run")
    c = _final(composed, "composed")
    refs = [_final(r, f"reference {j}") for j, r in enumerate(references)]
    for j, r in enumerate(refs):
        if r.shape != c.shape:
            raise ValueError(f"reference {j} has shape {tuple(r.shape)}, the composed samples {tuple(c.shape)}; they must match")
    lv = tuple(levels) if levels is not None else spectral.levels_for(c.shape[-2], c.shape[-1])

    def bands(x: torch.Tensor) -> torch.Tensor:  # (L, B·C·H·W), centred per sample and channel
        z = spectral.box_pyramid(x, lv).flatten(3)
        return (z - z.mean(-1, keepdim=True)).flatten(1)

    bc = bands(c)
    br = torch.stack([bands(r) for r in refs], dim=1)  # (L, n, P)
    gram = torch.einsum("lip,ljp->lij", br, br).numpy()  # (L, n, n)
    proj = torch.einsum("lip,lp->li", br, bc).numpy()  # (L, n)
    norm_c = bc.square().sum(-1).numpy()  # (L,)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = proj / np.sqrt(norm_c[:, None] * np.diagonal(gram, axis1=1, axis2=2))
        weights = np.stack([np.linalg.lstsq(g, p, rcond=None)[0] for g, p in zip(gram, proj)])
    return corr, weights


def crossover_level(provenance: Provenance, by: str = "weight") -> float:
    """The level at which ``B`` overtakes ``A``, interpolated in log2 m.

    Parameters
    ----------
    provenance : Provenance
    by : {"weight", "corr"}
        Compare ``weight_b − weight_a`` (default: the joint fit, robust to what the two reference
        runs share) or ``corr_b − corr_a``.

    Returns
    -------
    float
        Walking from the coarsest level to the finest, the first level where the difference
        ``d = B − A`` turns from negative (A) to non-negative (B), linearly interpolated in
        ``log2 m`` between the two levels around the sign change (block size in pixels, so
        ``2**x``). ``inf`` when ``B`` wins the coarsest level (the crossover lies coarser than the
        coarsest level measured; the weights tell "B at every level" from an inverted result, where
        ``A`` wins a finer level), ``0`` when ``A`` wins at every level (finer than the finest),
        NaN if a band has no variance.
    """
    if by not in ("weight", "corr"):
        raise ValueError(f"by must be 'weight' or 'corr', got {by!r}")
    a, b = (provenance.weight_a, provenance.weight_b) if by == "weight" else (provenance.corr_a, provenance.corr_b)
    d = (np.asarray(b, dtype=float) - np.asarray(a, dtype=float))[::-1]  # coarsest first
    x = np.log2(np.asarray(provenance.levels, dtype=float))[::-1]
    if not np.isfinite(d).all():
        return math.nan
    if d[0] >= 0:
        return math.inf
    for k in range(1, len(d)):
        if d[k] >= 0:
            u = d[k - 1] / (d[k - 1] - d[k])  # fraction of the way from level k−1 to k where d = 0
            return float(2.0 ** (x[k - 1] + u * (x[k] - x[k - 1])))
    return 0.0


def measure_switch(
    model: Any,
    coarse: str,
    fine: str,
    level: int,
    *,
    num_inference_steps: int = 50,
    guidance: float | None = None,
    seed: int = 0,
    batch_size: int = 4,
    scheduler: Any = "default",
    device: str | None = "cpu",
) -> tuple[Provenance, dict[str, Trajectory]]:
    """Sample ``coarse`` alone, ``fine`` alone and ``by_resolution(coarse=…, fine=…, level=…)`` from one
    seed, and measure where each band of the composed samples came from.

    Parameters
    ----------
    model : Denoiser
        A prompt-conditional chromaviz model.
    coarse, fine : str
        Prompt A (the levels coarser than ``level``) and prompt B (the finer ones).
    level : int
        The crossover level m (a power of two, pixels of block size of the model's sample grid).
    num_inference_steps : int
        N of every run.
    guidance : float, optional
        Classifier-free guidance scale of every run (default: the model's ``recommended_guidance``).
    seed, batch_size : int
        Shared by the three runs, so that sample ``i`` of each starts from the same noise.
    scheduler : str or diffusers scheduler
        As in :func:`~chromaviz.sampling.sample`.
    device : str, optional
        Torch device (default CPU).

    Returns
    -------
    (Provenance, dict)
        :func:`band_provenance` of the composed run against the two single-prompt runs, and the runs
        by name: ``"A"``, ``"B"``, ``"composed"`` (final samples only; nothing else recorded).

    Raises
    ------
    ValueError
        Before any sampling: an unconditional model, a prompt the model refuses, or a bad level
        (as :func:`by_resolution`).

    Examples
    --------
    >>> from chromaviz.models import LayoutTexture
    >>> model = LayoutTexture(size=16)
    >>> p, runs = measure_switch(model, *model.example_prompts, level=2, num_inference_steps=10, batch_size=2)
    >>> p.levels, sorted(runs)
    ((1, 2, 4), ['A', 'B', 'composed'])
    """
    from ..sampling import sample

    if not getattr(model, "conditional", False):
        raise ValueError(f"composing needs a prompt-conditional model; {getattr(model, 'name', model)!r} takes no prompt")
    schedule = by_resolution(coarse=coarse, fine=fine, level=level)
    for prompt in (coarse, fine):
        if not isinstance(prompt, str) or not prompt:
            raise ValueError(f"coarse and fine must be non-empty prompts, got {prompt!r}")
        model.check_prompt(prompt)
    options = {"num_inference_steps": num_inference_steps, "seed": seed, "batch_size": batch_size,
               "scheduler": scheduler, "device": device, "record": (),
               "guidance": model.recommended_guidance if guidance is None else guidance}
    runs = {"A": sample(model, coarse, **options), "B": sample(model, fine, **options)}
    runs["composed"] = sample(model, schedule, **options)
    return band_provenance(runs["composed"], runs["A"], runs["B"]), runs


def switch_law(
    only_a: torch.Tensor | Trajectory,
    only_b: torch.Tensor | Trajectory,
    power: np.ndarray,
    switch_log_snr: float,
    first_log_snr: float = -math.inf,
) -> torch.Tensor:
    """The composed samples the per-mode switch law predicts from the A-only and B-only runs.

    For data whose prompts are Gaussians with one shared stationary covariance (spectrum P) and
    different means, the probability-flow path of each Fourier mode k is linear in the initial
    noise and in the means, and a switch from A to B at log-SNR λ_s gives exactly

        x0(k) = x0_A(k) + (1 − √r_s(k)) / (1 − √r_T(k)) · (x0_B(k) − x0_A(k)),
        r(k) = SNR·P(k) / (1 + SNR·P(k)),

    with r_s at the switch and r_T at the first step (0 for a zero-terminal-SNR schedule): a mode
    keeps A's mean once its signal fraction passes 1/4 (√r = 1/2). It is derived from
    x0 − μ = (x_t − α_t·μ)·√(P/(α_t²·P + σ_t²)) (THEORY §4b, the deterministic path of a mode) and
    uses nothing of the composed run, so :func:`band_provenance` of its result against the same
    A and B runs is a prediction the composed run can fail.

    Parameters
    ----------
    only_a, only_b : Tensor, shape (B, C, H, W), or Trajectory
        Final samples of the single-prompt runs (same seed).
    power : ndarray, shape (H, W) or (C, H, W)
        The shared data spectrum per mode of the orthonormal FFT (white noise = 1), e.g.
        ``model.data_power(H, W)``.
    switch_log_snr : float
        λ of the first step with prompt B (``plan``'s switch step).
    first_log_snr : float
        λ of the first step of the run (−inf: nothing inherited from the initial noise).

    Returns
    -------
    Tensor, shape (B, C, H, W), float64
        The predicted composed samples.

    Raises
    ------
    ValueError
        For samples of different shapes, a spectrum of another size, or a switch before the first step.

    Examples
    --------
    >>> a, b = torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 4, 4)
    >>> x = switch_law(a, b, np.ones((4, 4)), switch_log_snr=0.0)  # r = 1/2 at every mode
    >>> round(float(x.mean()), 4)  # 1 − √½
    0.2929
    """
    a, b = _final(only_a, "only_a"), _final(only_b, "only_b")
    if a.shape != b.shape:
        raise ValueError(f"only_a has shape {tuple(a.shape)}, only_b {tuple(b.shape)}; they must match")
    p = np.asarray(power, dtype=np.float64)
    if p.shape[-2:] != tuple(a.shape[-2:]):
        raise ValueError(f"power has shape {p.shape}; the samples are {tuple(a.shape[-2:])}")
    if not switch_log_snr >= first_log_snr:
        raise ValueError(f"the switch (λ = {switch_log_snr:g}) lies before the first step (λ = {first_log_snr:g})")

    def root_r(lam: float) -> np.ndarray:
        snr_p = math.exp(lam) * p if lam > -math.inf else np.zeros_like(p)
        return np.sqrt(snr_p / (1 + snr_p))

    with np.errstate(divide="ignore", invalid="ignore"):
        share = (1 - root_r(switch_log_snr)) / (1 - root_r(first_log_snr))
    share = torch.from_numpy(np.nan_to_num(share, nan=0.0, posinf=0.0))  # a mode decided at the first step keeps A
    return torch.fft.ifft2(torch.fft.fft2(a) + share * torch.fft.fft2(b - a)).real
