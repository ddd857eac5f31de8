"""The sampling layer: prompt schedules, the sampler (diffusers' schedulers driving any model) and
the trajectories it records."""

from .prompts import UNITS, Boundary, PromptSchedule, Segment
from .sampler import PromptSource, SamplingError, SamplingInterrupted, check_sample, default_device, sample
from .trajectory import RECORDABLE, StepRecord, Trajectory

__all__ = [
    "RECORDABLE", "UNITS", "Boundary", "PromptSchedule", "PromptSource", "SamplingError", "SamplingInterrupted", "Segment", "StepRecord",
    "Trajectory", "check_sample", "default_device", "sample",
]
