"""The sampling layer: the sampler (diffusers' schedulers driving any model, with classifier-free
guidance, a prompt schedule of :mod:`chromaviz.prompts` and a recorder) and the trajectories it records."""

from .sampler import PromptSource, SamplingError, SamplingInterrupted, check_sample, default_device, sample
from .threads import free_cores, use_free_cores
from .trajectory import RECORDABLE, StepRecord, Trajectory

__all__ = [
    "RECORDABLE", "PromptSource", "SamplingError", "SamplingInterrupted", "StepRecord", "Trajectory", "check_sample",
    "default_device", "free_cores", "sample", "use_free_cores",
]
