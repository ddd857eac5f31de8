"""The step plan of a run: which noise levels a diffusers scheduler visits, computed once.

A run's plan is its scheduler after ``set_timesteps`` and, for every model evaluation, the noise
level (t, α, σ, λ) of the network input. Theory in step coordinates, prompt boundaries, composing's
``plan``, schedule design's ``step_timings``, the sampler and the explorer all read this one object.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .schedulers import is_flow_scheduler, make_scheduler, scheduler_name, set_timesteps

if TYPE_CHECKING:
    from .schedules import Schedule


@dataclass(frozen=True)
class NoiseLevel:
    """Noise level of the network input at one step: x_t = α·x0 + σ·ε.

    Attributes
    ----------
    timestep : float
        The timestep passed to the network (diffusers convention, 0 = least noisy).
    alpha, sigma : float
        Signal and noise scales of the network input.

    Examples
    --------
    >>> round(NoiseLevel(500.0, 0.6, 0.8).log_snr, 4)  # 2·ln(0.6/0.8)
    -0.5754
    """

    timestep: float
    alpha: float
    sigma: float

    @property
    def log_snr(self) -> float:
        """λ = log(α²/σ²); +∞ at σ = 0, −∞ at α = 0."""
        if self.sigma == 0:
            return math.inf
        if self.alpha == 0:
            return -math.inf
        return 2 * (math.log(self.alpha) - math.log(self.sigma))


def noise_levels(scheduler, schedule: Schedule) -> list[NoiseLevel]:
    """Noise level of the network input at each of ``scheduler.timesteps``.

    Call after ``set_timesteps``. One entry per model evaluation, noisiest first.

    Examples
    --------
    >>> from chromaviz.noise import Schedule, make_scheduler, set_timesteps
    >>> schedule = Schedule.preset('scaled_linear')
    >>> scheduler = make_scheduler('euler', schedule)
    >>> set_timesteps(scheduler, 4)
    >>> [round(lv.timestep) for lv in noise_levels(scheduler, schedule)]
    [999, 666, 333, 0]
    """
    timesteps = [float(t) for t in scheduler.timesteps]
    sigmas = getattr(scheduler, "sigmas", None)
    if sigmas is not None and len(sigmas) == len(timesteps) + 1:
        sig = [float(s) for s in sigmas[: len(timesteps)]]
        if is_flow_scheduler(scheduler):
            return [NoiseLevel(t, 1.0 - s, s) for t, s in zip(timesteps, sig)]
        # Karras-style σ (variance exploding): the scaled model input has α = 1/√(1+σ²).
        return [NoiseLevel(t, 1 / math.sqrt(1 + s * s), s / math.sqrt(1 + s * s)) for t, s in zip(timesteps, sig)]
    levels = []
    for t in timesteps:
        alpha, sigma = schedule.alpha_sigma(t)
        levels.append(NoiseLevel(t, float(alpha), float(sigma)))
    return levels


@dataclass(frozen=True, eq=False)
class StepPlan:
    """The visited steps of one run: its scheduler and the noise level of every model evaluation.

    Attributes
    ----------
    scheduler : diffusers scheduler
        A fresh scheduler after ``set_timesteps(num_inference_steps)``; never stepped (the sampler
        steps a copy, :meth:`new_scheduler`).
    scheduler_name : str
        The name the run was asked for (a :data:`~chromaviz.noise.schedulers.SCHEDULERS` name or a
        diffusers class name).
    noise : tuple of NoiseLevel, length S
        The noise level of the network input at each model evaluation, noisiest first.
    num_inference_steps : int
        N, the steps handed to ``set_timesteps``. The number of model evaluations S
        (:attr:`num_evaluations`) differs for PNDM, Heun and KDPM2.

    Examples
    --------
    >>> from chromaviz.noise import Schedule
    >>> plan = plan_steps(Schedule.preset("scaled_linear"), 10, "pndm")
    >>> plan.num_inference_steps, plan.num_evaluations, len(plan.log_snr), plan.is_flow
    (10, 11, 11, False)
    >>> type(plan.new_scheduler()).__name__
    'PNDMScheduler'
    """

    scheduler: Any
    scheduler_name: str
    noise: tuple[NoiseLevel, ...]
    num_inference_steps: int

    @property
    def num_evaluations(self) -> int:
        """S, the number of model evaluations (one record per evaluation)."""
        return len(self.noise)

    def __len__(self) -> int:
        return len(self.noise)

    @property
    def timesteps(self) -> np.ndarray:
        """Timestep of each evaluation, shape (S,), noisiest first."""
        return np.array([lv.timestep for lv in self.noise], dtype=np.float64)

    @property
    def log_snr(self) -> np.ndarray:
        """λ of the network input at each evaluation, shape (S,), noisiest first."""
        return np.array([lv.log_snr for lv in self.noise], dtype=np.float64)

    @property
    def is_flow(self) -> bool:
        """True for flow-matching schedulers (velocity targets, α = 1 − σ)."""
        return is_flow_scheduler(self.scheduler)

    def new_scheduler(self):
        """A copy of the planned scheduler, ready to be stepped from the first step."""
        return copy.deepcopy(self.scheduler)

    def check_for(self, schedule: Schedule, num_inference_steps: int, scheduler: Any = "default") -> StepPlan:
        """This plan, if it is the plan of a run of ``schedule`` with N = ``num_inference_steps`` and
        ``scheduler`` (what :func:`plan_steps` would compute for them); no ``set_timesteps`` is called.

        Parameters
        ----------
        schedule : Schedule
            The noise schedule of the run's model.
        num_inference_steps : int
            N of the run.
        scheduler : str or diffusers scheduler
            As for :func:`plan_steps`.

        Returns
        -------
        StepPlan
            ``self``.

        Raises
        ------
        ValueError
            If the plan was made for another N, another scheduler, or another noise schedule (its
            scheduler's configuration differs from the one ``scheduler`` gets for ``schedule``),
            saying which and what the run asks for.

        Examples
        --------
        >>> from chromaviz.noise import Schedule
        >>> plan = plan_steps(Schedule.preset("scaled_linear"), 10, "ddim")
        >>> plan.check_for(Schedule.preset("scaled_linear"), 10, "default") is plan
        True
        >>> plan.check_for(Schedule.preset("scaled_linear"), 20, "ddim")
        Traceback (most recent call last):
        ...
        ValueError: plan= is the plan of a run of num_inference_steps=10, but this run has num_inference_steps=20; pass the plan check_sample() returns for this run, or leave plan out
        """
        fix = "pass the plan check_sample() returns for this run, or leave plan out"
        if num_inference_steps != self.num_inference_steps:
            raise ValueError(f"plan= is the plan of a run of num_inference_steps={self.num_inference_steps}, but this run "
                             f"has num_inference_steps={num_inference_steps}; {fix}")
        name = scheduler_name(scheduler, schedule)
        expected = make_scheduler(scheduler, schedule)  # no set_timesteps: the class and its configuration
        if name != self.scheduler_name or type(expected) is not type(self.scheduler):
            raise ValueError(f"plan= is the plan of scheduler {self.scheduler_name!r} ({type(self.scheduler).__name__}), "
                             f"but this run asks for {name!r} ({type(expected).__name__}); {fix}")
        ours, theirs = dict(self.scheduler.config), dict(expected.config)
        differ = sorted(k for k in set(ours) | set(theirs) if not k.startswith("_") and not _same(ours.get(k), theirs.get(k)))
        if differ:
            shown = ", ".join(f"{k} {_short(ours.get(k))}" for k in differ[:3])
            wanted = ", ".join(f"{k} {_short(theirs.get(k))}" for k in differ[:3])
            raise ValueError(f"plan= is the plan of another noise schedule: its {type(self.scheduler).__name__} has {shown}, "
                             f"where this run's model has {wanted}; {fix}")
        return self


def _same(a: Any, b: Any) -> bool:
    """Equal configuration values (numbers, strings, lists or arrays)."""
    try:
        return bool(a == b)
    except (ValueError, TypeError):  # arrays
        return bool(np.array_equal(np.asarray(a), np.asarray(b)))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def plan_steps(schedule: Schedule, num_inference_steps: int, scheduler: Any = "default", *, mu: float | None = None) -> StepPlan:
    """The step plan of a run: ``scheduler`` built for ``schedule`` and set to N steps.

    Parameters
    ----------
    schedule : Schedule
        The model's noise schedule (its ``scheduler_config`` configures the scheduler).
    num_inference_steps : int
        N, passed to diffusers' ``set_timesteps``.
    scheduler : str or diffusers scheduler
        See :func:`~chromaviz.noise.schedulers.make_scheduler`.
    mu : float, optional
        Image-size shift of dynamic-shifting flow schedulers (see
        :func:`~chromaviz.noise.schedulers.set_timesteps`).

    Returns
    -------
    StepPlan

    Raises
    ------
    ValueError
        For an unknown scheduler, one that cannot sample this schedule, or a step list diffusers
        cannot index (repeated timesteps).

    Examples
    --------
    >>> from chromaviz.noise import Schedule, plan_steps
    >>> plan = plan_steps(Schedule.preset("scaled_linear"), 10, "ddim")
    >>> plan.num_inference_steps, plan.num_evaluations, float(plan.timesteps[0])
    (10, 10, 900.0)
    """
    sched = make_scheduler(scheduler, schedule)
    set_timesteps(sched, num_inference_steps, mu=mu)
    return StepPlan(sched, scheduler_name(scheduler, schedule), tuple(noise_levels(sched, schedule)), num_inference_steps)
