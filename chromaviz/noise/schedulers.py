"""diffusers schedulers by name, and the exact noise level of each step they take.

All stepping is done by diffusers' own schedulers. This module only builds them from a
:class:`~chromaviz.noise.schedules.Schedule` and reads, for every step, the (α, σ) of the network input
``scale_model_input(x, t)``: from the scheduler's own ``sigmas`` where it keeps them (Euler,
DPM-Solver, flow matching; so Karras or shifted sigmas are honoured exactly), otherwise from
``alphas_cumprod`` at the integer timestep (DDIM, DDPM, PNDM).
"""

from __future__ import annotations

import copy
import inspect
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .schedules import Schedule


SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "ddim": ("DDIMScheduler", {}),
    "ddpm": ("DDPMScheduler", {}),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_ancestral": ("EulerAncestralDiscreteScheduler", {}),
    "dpmsolver++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "dpmsolver++_karras": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True}),
    "flow_euler": ("FlowMatchEulerDiscreteScheduler", {}),
}
"""Scheduler names accepted everywhere in chromaviz, with the diffusers class and overrides."""

FLOW_SCHEDULERS = frozenset({"flow_euler"})

DEFAULT_IS_OWN_CLASS = "_chromaviz_default_is_own_class"
"""Key of a schedule's ``scheduler_config``: when true, ``"default"`` means its ``_class_name``
(the scheduler the model came with) rather than DDIM."""


def is_flow_scheduler(scheduler) -> bool:
    """True for flow-matching schedulers (velocity prediction, α = 1 − σ)."""
    return type(scheduler).__name__.startswith("FlowMatch") or bool(scheduler.config.get("use_flow_sigmas"))


def _own_class(schedule: Schedule) -> str | None:
    cfg = schedule.scheduler_config
    return cfg.get("_class_name") if cfg.get(DEFAULT_IS_OWN_CLASS) else None


def scheduler_name(scheduler, schedule: Schedule) -> str:
    """The scheduler a request means: a :data:`SCHEDULERS` name, or a diffusers class name for a
    scheduler instance or for a model whose own scheduler is its ``"default"``."""
    if not isinstance(scheduler, str):
        return type(scheduler).__name__
    name = scheduler.lower()
    if name != "default":
        return name
    return _own_class(schedule) or ("flow_euler" if schedule.kind == "flow" else "ddim")


def make_scheduler(scheduler, schedule: Schedule):
    """A fresh diffusers scheduler realising ``schedule``.

    Parameters
    ----------
    scheduler : str or diffusers scheduler
        A name from :data:`SCHEDULERS`, ``"default"`` (DDIM for variance-preserving schedules,
        flow Euler for flow matching; the schedule's own scheduler class where its config sets
        :data:`DEFAULT_IS_OWN_CLASS`), or a scheduler instance (copied, never mutated).
    schedule : Schedule
        The noise schedule; its ``scheduler_config`` configures the scheduler.
    """
    if not isinstance(scheduler, str):
        if is_flow_scheduler(scheduler) != (schedule.kind == "flow"):
            raise ValueError(
                f"{type(scheduler).__name__} does not match the model's {schedule.kind!r} schedule"
            )
        return copy.deepcopy(scheduler)
    name = scheduler_name(scheduler, schedule)
    if name == _own_class(schedule):  # a model whose own scheduler is its default (diffusers pipelines)
        import diffusers

        cls = getattr(diffusers, name)
        accepted = set(inspect.signature(cls.__init__).parameters)
        return cls(**{k: v for k, v in schedule.scheduler_config.items() if k in accepted and not k.startswith("_")})
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {scheduler!r}; choose one of {sorted(SCHEDULERS)}")
    if (name in FLOW_SCHEDULERS) != (schedule.kind == "flow"):
        allowed = sorted(n for n in SCHEDULERS if (n in FLOW_SCHEDULERS) == (schedule.kind == "flow"))
        raise ValueError(f"scheduler {name!r} cannot sample a {schedule.kind!r} schedule; choose one of {allowed}")
    import diffusers

    class_name, overrides = SCHEDULERS[name]
    config = {k: v for k, v in schedule.scheduler_config.items() if not k.startswith("_")}
    config.update(overrides)
    cls = getattr(diffusers, class_name)
    accepted = set(inspect.signature(cls.__init__).parameters)
    if config.get("rescale_betas_zero_snr") and "rescale_betas_zero_snr" not in accepted:
        able = sorted(n for n, (c, _) in SCHEDULERS.items()
                      if "rescale_betas_zero_snr" in inspect.signature(getattr(diffusers, c).__init__).parameters)
        raise ValueError(f"scheduler {name!r} ({class_name}) cannot step a zero-terminal-SNR schedule: it has no "
                         f"rescale_betas_zero_snr and would silently use the unrescaled betas; choose one of {able}")
    return cls(**{k: v for k, v in config.items() if k in accepted})


def set_timesteps(scheduler, num_steps: int) -> None:
    """``scheduler.set_timesteps(num_steps)``, refusing step lists diffusers cannot index.

    Karras sigmas on a schedule whose σ_max is huge (zero terminal SNR, the cosine schedule) crowd
    many steps onto the same integer timestep; diffusers' schedulers find their place by timestep
    and step past the end of their sigmas. That is refused here, before any step is taken.
    """
    scheduler.set_timesteps(num_steps)
    if scheduler.config.get("use_karras_sigmas"):
        timesteps = [float(t) for t in scheduler.timesteps]
        if len(set(timesteps)) < len(timesteps):
            sigma_max = float(scheduler.sigmas[0])
            raise ValueError(
                f"Karras sigmas give {len(timesteps) - len(set(timesteps))} repeated timesteps in {num_steps} steps "
                f"for this schedule (σ_max = {sigma_max:.4g}), which {type(scheduler).__name__} cannot step "
                "through; use 'dpmsolver++' or 'euler' for schedules with (near) zero terminal SNR")
