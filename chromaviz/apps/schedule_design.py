"""Noise-schedule design: build a schedule from targets, compare schedules by step, measure inheritance.

Three questions a schedule designer asks, answered in step coordinates (what a sampler does):

- **Build.** :func:`from_births` makes a variance-preserving schedule in which level m is born
  (m²·SNR = 1, λ = −2·ln m) at a chosen fraction of the run, and ends at a chosen terminal SNR
  (zero by default). :func:`shift_for_birth` finds the SD3-style resolution shift that moves one
  level's birth to a chosen fraction of an existing schedule's run (variance preserving or flow
  matching alike); :func:`resolution_shift` is SD3's shift for a change of image size.
- **Compare.** :func:`step_timings` and :func:`compare_schedules` list, per level, the step at
  which a run first sees it half formed, the levels the run inherits from its initial noise, and
  how many steps each level is the dominant one; :func:`comparison_table` lays that out.
- **Measure.** :func:`measured_inheritance` samples a model and reports how much of each band of
  the final samples x̂0 already holds at the first step, next to the theory.

Run fractions
-------------
A run of N steps has fraction u = i/N at its step i (step 0 is the noisiest, u = 1 the finished
sample). :func:`from_births` places fractions on the training timesteps through
``t = T − 1 − u·T`` (T = ``num_train_timesteps``), which is exactly where diffusers' ``"trailing"``
timestep spacing puts step i, ``t_i = round(T − i·T/N) − 1``, for every N. Built schedules
therefore ask for ``"trailing"`` spacing in their ``scheduler_config``, and a level born at
fraction f is first seen half formed at step ⌈f·N⌉ of any N-step run (within one step where the
rounding of t_i or of f·N falls on the other side).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from .. import theory
from ..analysis import compare
from ..noise.levels import BIRTH_TOLERANCE, birth_log_snr, check_levels, first_born_step, sigmoid
from ..noise.plan import StepPlan, plan_steps
from ..noise.schedules import Schedule
from ..sampling import sample

__all__ = [
    "BIRTH_TOLERANCE", "LEVELS", "Inheritance", "StepTimings", "compare_schedules", "comparison_table",
    "from_births", "measured_inheritance", "resolution_shift", "shift_for_birth", "step_timings",
]

LEVELS = (1, 2, 4, 8, 16, 32, 64)
"""Default block sizes m for comparisons."""


# ---------------------------------------------------------------------- building
def from_births(
    births: Mapping[float, float],
    *,
    base: Schedule | str = "scaled_linear",
    terminal_log_snr: float = -np.inf,
    final_log_snr: float | None = None,
    name: str | None = None,
) -> Schedule:
    """A variance-preserving schedule in which level m is born at fraction f of the run.

    Parameters
    ----------
    births : mapping of level m → run fraction f
        Level m (block size in pixels, ≥ 1) reaches m²·SNR = 1 (λ = −2·ln m) at fraction f of the
        run, 0 < f < 1 (0 = the first, noisiest step; see the module notes for how fractions map
        to steps). Coarser levels must be born earlier: f must grow as m shrinks.
    base : Schedule or str
        Variance-preserving schedule that supplies the number of training timesteps T and the
        default ``final_log_snr`` (Stable Diffusion's ``scaled_linear`` by default).
    terminal_log_snr : float
        λ at the noisiest training timestep t = T − 1. −∞ (default) is zero terminal SNR: the run
        starts from pure noise and inherits nothing. Must lie below the coarsest target.
    final_log_snr : float, optional
        λ at the least noisy timestep t = 0 (default: the base schedule's, 7.07 for SD). Must lie
        above the finest target.
    name : str, optional
        Label (default lists the targets).

    Returns
    -------
    Schedule
        ᾱ on the integer timesteps t = 0 … T − 1. Its ``scheduler_config`` has the β, no clipping,
        ``timestep_spacing="trailing"``, and ``rescale_betas_zero_snr=True`` when the terminal SNR
        is zero (a no-op on β that already end at ᾱ = 0; it makes Euler and DPM-Solver keep a
        finite σ at the last timestep, as diffusers does for rescaled schedules).

    Notes
    -----
    With u = (T − 1 − t)/T, λ(u) passes through the anchors (0, ``terminal_log_snr``),
    (f, −2·ln m) for each target, and ((T − 1)/T, ``final_log_snr``). Between two finite anchors λ
    is linear in u, so within a segment every octave of the dominant level m* = e^(−λ/2) gets the
    same number of steps. From a terminal λ = −∞ to the first target, √ᾱ is linear in u instead,
    from 0 (pure noise, the end point of Lin et al.'s rescale) to its value at that target.

    Raises
    ------
    ValueError
        For no targets, levels < 1, fractions outside (0, 1) or too close to 1 for T timesteps,
        two targets at one fraction, a finer level born before a coarser one, or end points that
        do not bracket the targets.

    Examples
    --------
    >>> s = from_births({8: 0.2, 1: 0.8})
    >>> [round(float(s.log_snr(999 - 1000 * f)), 3) for f in (0.2, 0.8)]
    [-4.159, 0.0]
    """
    base = Schedule.coerce(base)
    if base.kind != "vp":
        raise ValueError("from_births builds a variance-preserving schedule; pass a variance-preserving base (e.g. 'scaled_linear')")
    if not births:
        raise ValueError("from_births needs at least one target {level: fraction}")
    T = base.num_train_timesteps
    check_levels(list(births), name="births (its levels)")
    targets = sorted((float(f), float(m)) for m, f in births.items())
    for f, m in targets:
        if not 0 < f < (T - 1) / T:
            raise ValueError(
                f"level {m:g}: birth fraction {f:g} must lie strictly inside (0, 1) "
                f"(below {(T - 1) / T:g} for {T} training timesteps)"
            )
    for (f0, m0), (f1, m1) in zip(targets, targets[1:]):
        if f1 == f0:
            raise ValueError(f"levels {m0:g} and {m1:g} are both born at fraction {f0:g}; give each its own fraction")
        if m1 >= m0:
            raise ValueError(
                f"level {m1:g} (born at {f1:g}) must be finer than level {m0:g} (born at {f0:g}): "
                "coarser levels (larger m) are born earlier"
            )
    lam_final = base.log_snr_range[1] if final_log_snr is None else float(final_log_snr)
    lam_targets = birth_log_snr([m for _, m in targets])
    lam_first, lam_last = lam_targets[0], lam_targets[-1]
    if not terminal_log_snr < lam_first:
        raise ValueError(
            f"terminal_log_snr = {terminal_log_snr:g} must be below the coarsest target's λ = {lam_first:.4g} "
            f"(level {targets[0][1]:g}); use -inf for zero terminal SNR"
        )
    if not (np.isfinite(lam_final) and lam_final > lam_last):
        raise ValueError(f"final_log_snr = {lam_final:g} must be finite and above the finest target's λ = {lam_last:.4g}")

    u_anchor = np.array([0.0, *(f for f, _ in targets), (T - 1) / T])
    lam_anchor = np.array([terminal_log_snr, *lam_targets, lam_final])
    u = (T - 1 - np.arange(T)) / T  # run fraction of each training timestep
    if np.isfinite(terminal_log_snr):
        abar = sigmoid(np.interp(u, u_anchor, lam_anchor))
    else:
        abar = sigmoid(np.interp(u, u_anchor[1:], lam_anchor[1:]))
        first = u < u_anchor[1]
        abar[first] = (u[first] / u_anchor[1] * np.sqrt(sigmoid(lam_anchor[1]))) ** 2
    prev = np.concatenate([[1.0], abar[:-1]])
    config = {
        "num_train_timesteps": T,
        "trained_betas": (1 - abar / prev).tolist(),
        "clip_sample": False,
        "timestep_spacing": "trailing",
    }
    if abar[-1] == 0:
        config["rescale_betas_zero_snr"] = True
    if name is None:
        name = "births(" + ", ".join(f"{m:g}@{f:g}" for f, m in targets) + ")"
    return Schedule.from_alphas_cumprod(abar, name=name, config=config)


def resolution_shift(base_size: int | tuple[int, int], size: int | tuple[int, int]) -> float:
    """SD3's resolution-dependent shift √(H·W / (h·w)) for sampling at ``size`` a model made for ``base_size``.

    Parameters
    ----------
    base_size, size : int or (int, int)
        Image sizes in pixels (an int is a square).

    Returns
    -------
    float
        The shift s for :meth:`Schedule.shifted` or :meth:`Schedule.flow_matching`: λ' = λ − 2·ln s,
        so every level of the larger image is born when the level s times finer was born before.
    """
    def area(s: int | tuple[int, int]) -> int:
        h, w = (s, s) if isinstance(s, (int, np.integer)) else s
        if h < 1 or w < 1:
            raise ValueError(f"image sizes must be positive, got {s}")
        return int(h) * int(w)

    return float(np.sqrt(area(size) / area(base_size)))


def shift_for_birth(
    schedule: Schedule, level: float, fraction: float, *, num_inference_steps: int | None = None,
    scheduler: str = "default", plan: StepPlan | None = None,
) -> float:
    """The resolution shift s after which ``level`` is born at ``fraction`` of an N-step run.

    A shift lowers the λ of every step by 2·ln s (variance preserving: same timesteps, new ᾱ;
    flow matching: the sampler's shifted sigmas), so s = m·exp(λ_f / 2), where λ_f is the
    schedule's visited λ at fractional step f·S, interpolated linearly between steps. This is
    exact for variance-preserving schedules. Flow matching in diffusers also moves the clean end
    of its sigma grid with the shift, so there the steps' λ agree to about 0.02 in the first half
    of the run (where coarse levels are born) and the birth lands within a step.

    Parameters
    ----------
    schedule : Schedule
        Variance preserving or flow matching.
    level : float
        Block size m ≥ 1.
    fraction : float
        Run fraction in (0, 1).
    num_inference_steps : int
        N of the run the fraction refers to (default 50).
    scheduler : str
        Scheduler whose visited steps count (see :func:`~chromaviz.noise.plan.plan_steps`).
    plan : StepPlan, optional
        The run's step plan for ``schedule``; overrides ``num_inference_steps`` and ``scheduler``.

    Returns
    -------
    float
        s for ``schedule.shifted(s)``; below 1 where the level is born later than asked already.

    Raises
    ------
    ValueError
        For a level below 1, a fraction outside (0, 1) or one that falls outside the visited steps.

    Examples
    --------
    >>> sd = Schedule.preset("scaled_linear")
    >>> s = shift_for_birth(sd, 16, 0.2, num_inference_steps=30)
    >>> round(s, 3), step_timings(sd.shifted(s), [16], 30).birth_steps
    (3.755, (6,))
    """
    n = num_inference_steps
    (level,) = check_levels(level, name="level")
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must lie strictly inside (0, 1), got {fraction}")
    lam = (plan if plan is not None else plan_steps(schedule, 50 if n is None else n, scheduler)).log_snr
    position = fraction * len(lam)
    finite = np.isfinite(lam)
    if position > len(lam) - 1 or position < np.argmax(finite):
        raise ValueError(f"fraction {fraction:g} falls outside the visited steps with a finite λ")
    lam_f = np.interp(position, np.arange(len(lam))[finite], lam[finite])
    return float(level * np.exp(lam_f / 2))


# ---------------------------------------------------------------------- comparing
@dataclass(frozen=True)
class StepTimings:
    """When a run of one schedule generates each level, in sampling steps.

    Attributes
    ----------
    name : str
        Label of the schedule.
    levels : tuple of int, length L
        Block sizes m.
    log_snr : ndarray, shape (S,)
        λ of the network input at each step, noisiest first.
    birth_steps : tuple of int or None, length L
        First step i with λ_i ≥ −2·ln m (the level at least half formed; ½ of the m² law), to
        within :data:`BIRTH_TOLERANCE`; None if the run never gets there.
    steps_per_level : tuple of int, length L
        Number of steps whose dominant level m* = 1/√SNR lies in (m', m], m' the next finer level
        ((m/2, m] for powers of two); the finest level also counts every less noisy step and the
        coarsest every noisier one, so they sum to S.
    """

    name: str
    levels: tuple[int, ...]
    log_snr: np.ndarray
    birth_steps: tuple[int | None, ...]
    steps_per_level: tuple[int, ...]

    @property
    def num_evaluations(self) -> int:
        """S, the number of model evaluations of the run (one λ each)."""
        return len(self.log_snr)

    @property
    def num_steps(self) -> int:
        """S, as :attr:`num_evaluations` (the name it had first)."""
        return self.num_evaluations

    @property
    def birth_fractions(self) -> tuple[float | None, ...]:
        """Birth step / S, per level (None where never born)."""
        return tuple(None if i is None else i / self.num_evaluations for i in self.birth_steps)

    @property
    def inherited(self) -> tuple[int, ...]:
        """Levels already half formed at step 0: the run inherits them from its initial noise."""
        return tuple(m for m, i in zip(self.levels, self.birth_steps) if i == 0)

    @property
    def signal_at_start(self) -> np.ndarray:
        """s_m(λ_0), shape (L,): the m² law's fraction of each level present at step 0."""
        return theory.signal_fraction(self.log_snr[:1], self.levels)[0]


def step_timings(
    schedule: Schedule, levels: Sequence[int] = LEVELS, num_inference_steps: int | None = None,
    scheduler: str = "default", name: str | None = None, *, plan: StepPlan | None = None,
) -> StepTimings:
    """Births, inherited levels and steps per level of an N-step run of ``schedule``.

    Parameters
    ----------
    schedule : Schedule
    levels : sequence of int
        Block sizes m, any order (reported as given).
    num_inference_steps : int
        N (default 50; PNDM and other multi-evaluation schedulers visit S ≠ N steps).
    scheduler : str
        As for :func:`~chromaviz.noise.plan.plan_steps`; ``"default"`` is the schedule's own
        sampler (DDIM for variance-preserving schedules, with the spacing their config asks for).
    name : str, optional
        Label (default the schedule's name).
    plan : StepPlan, optional
        The run's step plan; overrides ``num_inference_steps`` and ``scheduler``.

    Returns
    -------
    StepTimings
        Birth steps by :func:`~chromaviz.noise.levels.first_born_step`, the rule the sampler's
        level switches and :func:`chromaviz.apps.composing.plan` use.

    Examples
    --------
    >>> st = step_timings(from_births({8: 0.2, 1: 0.8}), [8, 1], 10, "ddim")
    >>> st.birth_steps, st.inherited
    ((2, 8), ())
    """
    if not isinstance(schedule, Schedule):
        raise TypeError(f"step_timings needs a Schedule (a model's .schedule), got {type(schedule).__name__}")
    n = num_inference_steps
    levels = tuple(int(m) for m in check_levels(levels))
    lam = (plan if plan is not None else plan_steps(schedule, 50 if n is None else n, scheduler)).log_snr
    births = tuple(first_born_step(lam, m) for m in levels)
    # dominant level of each step, as the index of the level whose octave (m/2, m] holds it
    order = np.argsort(levels)
    sorted_births = birth_log_snr(np.array(levels)[order])  # decreasing λ: finest first
    octave = np.searchsorted(-sorted_births, -lam, side="left")  # 0: λ ≥ birth of the finest
    octave = np.clip(octave, 0, len(levels) - 1)
    counts = np.bincount(octave, minlength=len(levels))
    per_level = np.empty(len(levels), dtype=int)
    per_level[order] = counts
    return StepTimings(name or schedule.name, levels, lam, births, tuple(int(c) for c in per_level))


def compare_schedules(
    schedules: Mapping[str, Schedule], levels: Sequence[int] = LEVELS, num_inference_steps: int | None = None,
    scheduler: str = "default",
) -> dict[str, StepTimings]:
    """:func:`step_timings` of each schedule, keyed and labelled as given (N =
    ``num_inference_steps``, default 50).

    Examples
    --------
    >>> sd = Schedule.preset("scaled_linear")
    >>> timings = compare_schedules({"sd": sd, "zero": sd.zero_terminal_snr()}, (4, 16), 20)
    >>> {label: st.birth_steps for label, st in timings.items()}
    {'sd': (5, 0), 'zero': (7, 3)}
    """
    n = num_inference_steps
    if not isinstance(schedules, Mapping):
        raise TypeError(f"compare_schedules needs a mapping of labels to Schedules, got {type(schedules).__name__}")
    return {label: step_timings(s, levels, n, scheduler, name=label) for label, s in schedules.items()}


def comparison_table(timings: Mapping[str, StepTimings]) -> tuple[list[str], list[list[str]]]:
    """Header and rows, one row per schedule, for :func:`chromaviz.notebook.report.markdown_table`.

    Each level's cell is ``"inherited"`` or ``"i/S (steps)"``: its birth step over the run's
    length and, in brackets, the number of steps it is the dominant level.
    """
    first = next(iter(timings.values()))
    header = ["schedule", "λ at step 0", *[f"m = {m}" for m in first.levels]]
    rows = []
    for label, st in timings.items():
        cells = [
            "inherited" if i == 0 else ("never" if i is None else f"{i}/{st.num_evaluations} ({k})")
            for i, k in zip(st.birth_steps, st.steps_per_level)
        ]
        rows.append([label, f"{st.log_snr[0]:.2f}", *cells])
    return header, rows


# ---------------------------------------------------------------------- measuring
@dataclass(frozen=True)
class Inheritance:
    """How much of each band of the final samples the first step's prediction already holds.

    Attributes
    ----------
    levels : tuple of int, length L
    log_snr : float
        λ of the network input at step 0.
    measured : ndarray, shape (L,)
        G_b at step 0: Σ‖B_b x̂0(step 0) − ref‖² / Σ‖B_b x0_final − ref‖² over the batch.
    spectrum_aware : ndarray, shape (L,)
        s_b(λ_0) from the model's data spectrum (NaN without one).
    m2_law : ndarray, shape (L,)
        s_m(λ_0) = sigmoid(λ_0 + 2·ln m).
    """

    levels: tuple[int, ...]
    log_snr: float
    measured: np.ndarray
    spectrum_aware: np.ndarray
    m2_law: np.ndarray


def measured_inheritance(
    model,
    *,
    num_inference_steps: int | None = None,
    scheduler: str = "default",
    seed: int = 0,
    batch_size: int = 8,
    size: int | None = None,
    levels: Sequence[int] | None = None,
    method: str = "rings",
    device: str = "cpu",
) -> Inheritance:
    """Sample ``model`` once and measure what its first step already holds of each band.

    Row 0 of a measured chromatogram: G_b(0), the fraction of the final band's variance that x̂0
    at the first step explains. For an exact model it equals s_b(λ_0), what the run inherits from
    its initial noise (see ``docs/schedule_design.md``).

    Parameters
    ----------
    model : Denoiser
        Any chromaviz model; its schedule is the one measured.
    num_inference_steps, scheduler, seed, batch_size, device
        As for :func:`chromaviz.sampling.sample` (N default 30; ``batch_size`` ≥ 2 so the batch mean
        is the reference).
    size : int, optional
        Square sample size in pixels (default: the model's).
    levels : sequence of int, optional
        Default :func:`chromaviz.spectral.levels_for` of the sample size.
    method : {"rings", "pyramid"}
        Band decomposition.
    """

    n = num_inference_steps
    traj = sample(model, num_inference_steps=30 if n is None else n, scheduler=scheduler, seed=seed, batch_size=batch_size,
                  height=size, width=size, device=device, record=("x0",))
    c = compare(traj, model, method=method, levels=levels)
    # G_b is a fraction of the final sample's band (Comparison.normalised); the theories stay as they are
    measured = c.normalised().measured[0]
    return Inheritance(c.levels, float(c.log_snr[0]), measured, c.spectrum_aware[0], c.m2_law[0])
