"""The noise layer: schedules as log-SNR curves λ(t), diffusers schedulers by name, the one
step plan of a run (which noise levels the scheduler visits), and the rules of resolution levels
(births, the sigmoid, level lists, the birth step)."""

from . import levels
from .levels import BIRTH_TOLERANCE, BORN_FRACTION, birth_log_snr, born_steps, check_levels, first_born_step, is_born, sigmoid
from .plan import NoiseLevel, StepPlan, noise_levels, plan_steps
from .schedulers import (
    FLOW_SCHEDULERS, SCHEDULERS, make_scheduler, scheduler_from_config, scheduler_name, schedulers_for, set_timesteps,
)
from .schedules import PRESETS, Schedule

__all__ = [
    "BIRTH_TOLERANCE", "BORN_FRACTION", "birth_log_snr", "born_steps", "check_levels", "first_born_step", "is_born", "levels",
    "sigmoid",
    "FLOW_SCHEDULERS", "NoiseLevel", "PRESETS", "SCHEDULERS", "Schedule", "StepPlan", "make_scheduler",
    "noise_levels", "plan_steps", "scheduler_from_config", "scheduler_name", "schedulers_for", "set_timesteps",
]
