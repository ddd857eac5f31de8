"""The noise layer: schedules as log-SNR curves λ(t), diffusers schedulers by name, and the one
step plan of a run (which noise levels the scheduler visits)."""

from .plan import NoiseLevel, StepPlan, noise_levels, plan_steps
from .schedulers import FLOW_SCHEDULERS, SCHEDULERS, make_scheduler, scheduler_name, set_timesteps
from .schedules import PRESETS, Schedule

__all__ = [
    "FLOW_SCHEDULERS", "NoiseLevel", "PRESETS", "SCHEDULERS", "Schedule", "StepPlan", "make_scheduler",
    "noise_levels", "plan_steps", "scheduler_name", "set_timesteps",
]
