"""The step plan of a run: which noise levels a diffusers scheduler visits, computed once.

A run's plan is its scheduler after ``set_timesteps`` and, for every model evaluation, the noise
level (t, α, σ, λ) of the network input. Theory in step coordinates, prompt boundaries, composing's
``plan``, schedule design's ``step_timings``, the sampler and the explorer all read this one object.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._checks import positive_int
from .schedules import Schedule
from .schedulers import SCHEDULERS, dynamic_shift_mu, is_flow_scheduler, make_scheduler, scheduler_name, set_timesteps

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
    mu : float or None
        The image-size shift ``set_timesteps`` was given (dynamic-shifting flow schedulers), else None.

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
    mu: float | None = None

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


def plan_steps(schedule: Schedule, num_inference_steps: int, scheduler: Any = "default", *, mu: float | None = None,
               image_seq_len: int | None = None) -> StepPlan:
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
    image_seq_len : int, optional
        The run's image sequence length (tokens: the model's sample grid over its patch size,
        :func:`~chromaviz.noise.schedulers.image_seq_len`): a dynamic-shifting scheduler given no ``mu``
        gets ``dynamic_shift_mu(config, image_seq_len)``, as diffusers' Flux and SD3 pipelines compute it.
        Ignored by other schedulers.

    Returns
    -------
    StepPlan

    Raises
    ------
    ValueError
        For an unknown scheduler, one that cannot sample this schedule, a scheduler instance whose own
        noise levels are not the schedule's (:func:`check_noise_levels`), or a step list diffusers
        cannot index (repeated timesteps).

    Examples
    --------
    >>> from chromaviz.noise import Schedule, plan_steps
    >>> plan = plan_steps(Schedule.preset("scaled_linear"), 10, "ddim")
    >>> plan.num_inference_steps, plan.num_evaluations, float(plan.timesteps[0])
    (10, 10, 900.0)
    """
    if not isinstance(schedule, Schedule):
        raise TypeError(f"plan_steps needs a chromaviz Schedule (a model's .schedule), got {type(schedule).__name__}")
    num_inference_steps = positive_int("num_inference_steps", num_inference_steps)
    sched = make_scheduler(scheduler, schedule)
    if mu is None and image_seq_len is not None and sched.config.get("use_dynamic_shifting"):
        mu = dynamic_shift_mu(sched.config, image_seq_len)
    set_timesteps(sched, num_inference_steps, mu=mu)
    if not isinstance(scheduler, str):  # an instance brings noise levels of its own: they must be the model's
        check_noise_levels(sched, schedule)
    return StepPlan(sched, scheduler_name(scheduler, schedule), tuple(noise_levels(sched, schedule)), num_inference_steps,
                    mu if sched.config.get("use_dynamic_shifting") else None)


NOISE_LEVEL_TOLERANCE = 1e-3
"""Nats of λ by which a scheduler's own noise level may differ from the schedule's at a timestep
(float32 rounding of its ``alphas_cumprod`` and ``sigmas``)."""


def _own_log_snr(scheduler) -> np.ndarray | None:
    """λ of each visited step as the scheduler itself steps it: from its ``sigmas`` where it keeps them,
    else its ``alphas_cumprod`` at the timestep; None if it has neither."""
    timesteps = [float(t) for t in scheduler.timesteps]
    sigmas = getattr(scheduler, "sigmas", None)
    with np.errstate(divide="ignore", invalid="ignore"):
        if sigmas is not None and len(sigmas) == len(timesteps) + 1:
            sig = np.array([float(v) for v in sigmas[: len(timesteps)]], dtype=np.float64)
            return 2 * (np.log1p(-sig) - np.log(sig)) if is_flow_scheduler(scheduler) else -2 * np.log(sig)
        abar = getattr(scheduler, "alphas_cumprod", None)
        if abar is None or not hasattr(abar, "__len__"):
            return None
        abar = np.asarray(abar, dtype=np.float64)
        idx = np.rint(timesteps).astype(np.int64)
        if np.any(idx < 0) or np.any(idx >= len(abar)):
            return np.full(len(timesteps), np.nan)
        return np.log(abar[idx]) - np.log1p(-abar[idx])


def check_noise_levels(scheduler, schedule: Schedule) -> None:
    """Refuse a scheduler whose own noise levels are not ``schedule``'s at the timesteps it visits.

    A scheduler steps with its own ``alphas_cumprod`` or ``sigmas``; the model denoises at the noise
    level its schedule gives the timestep. Where they differ the run is wrong (a ``DDIMScheduler()``
    with its default linear β on Stable Diffusion's schedule is off by up to 4.6 nats and ends at 3.6×
    the data's standard deviation), so it is refused before sampling. At a timestep between two training
    timesteps the scheduler's λ must lie between the schedule's at those two (schedulers interpolate
    in their own ways, e.g. in log σ).

    Parameters
    ----------
    scheduler : diffusers scheduler
        After ``set_timesteps``.
    schedule : Schedule
        The model's noise schedule.

    Raises
    ------
    ValueError
        Naming the first step that differs and how to build a scheduler that matches the schedule; or
        for a scheduler that keeps neither ``sigmas`` nor ``alphas_cumprod`` (IPNDM), whose noise
        levels cannot be read.

    Examples
    --------
    >>> from diffusers import DDIMScheduler
    >>> from chromaviz.noise import Schedule
    >>> sd = Schedule.preset("scaled_linear")
    >>> plan_steps(sd, 10, DDIMScheduler.from_config(sd.scheduler_config)).num_evaluations
    10
    >>> plan_steps(sd, 10, DDIMScheduler(clip_sample=False))
    Traceback (most recent call last):
    ...
    ValueError: DDIMScheduler steps with noise levels of its own, not the model's schedule: at timestep 900 its λ = -8.2, the schedule's -4.2 (the largest difference over the run's 10 steps is 4 nats); the model would denoise at other noise levels than the scheduler steps with. Build a scheduler from the model's schedule: chromaviz.noise.make_scheduler('ddim', model.schedule) with a chromaviz name, or DDIMScheduler.from_config(model.schedule.scheduler_config, ...) with the options you want
    """
    own = _own_log_snr(scheduler)
    if own is None:
        name = type(scheduler).__name__
        raise ValueError(f"{name} keeps neither sigmas nor alphas_cumprod: chromaviz cannot read the noise levels it "
                         "steps with, nor check them against the model's schedule; sample with a scheduler that keeps "
                         "them (one of chromaviz.noise.SCHEDULERS, or e.g. DDIMScheduler.from_config("
                         "model.schedule.scheduler_config))")
    timesteps = np.array([float(t) for t in scheduler.timesteps], dtype=np.float64)
    inside = (timesteps >= schedule.t_min - 1e-6) & (timesteps <= schedule.t_max + 1e-6)
    t = np.clip(timesteps, schedule.t_min, schedule.t_max)
    lo, hi = schedule.log_snr(np.floor(t)), schedule.log_snr(np.minimum(np.ceil(t), schedule.t_max))
    low, high = np.minimum(lo, hi), np.maximum(lo, hi)
    with np.errstate(invalid="ignore"):
        below = np.where(own == low, 0.0, low - own)  # equal infinities are no difference
        above = np.where(own == high, 0.0, own - high)
        off = np.maximum(np.nan_to_num(np.maximum(below, above), nan=np.inf, posinf=np.inf, neginf=np.inf), 0.0)
    off = np.where(inside, off, np.inf)
    if not (off > NOISE_LEVEL_TOLERANCE).any():
        return
    i = int(np.argmax(off > NOISE_LEVEL_TOLERANCE))
    name = type(scheduler).__name__
    ours = f"{float(schedule.log_snr(t[i])):.2g}" if inside[i] else f"no noise level (its timesteps span [{schedule.t_min:g}, {schedule.t_max:g}])"
    known = [k for k, (cls, _) in SCHEDULERS.items() if cls == name]
    worst = float(np.max(off))
    raise ValueError(
        f"{name} steps with noise levels of its own, not the model's schedule: at timestep {timesteps[i]:g} its "
        f"λ = {own[i]:.2g}, the schedule's {ours} (the largest difference over the run's {len(off)} steps is "
        f"{worst:.2g} nats); the model would denoise at other noise levels than the scheduler steps with. Build a "
        f"scheduler from the model's schedule: chromaviz.noise.make_scheduler({(known[0] if known else 'name')!r}, "
        f"model.schedule) with a chromaviz name, or {name}.from_config(model.schedule.scheduler_config, ...) with the "
        "options you want")
