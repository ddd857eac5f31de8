"""chromaviz: resolution chromatography of diffusion models.

See which resolution a diffusion model generates at each step (theory), measure it on real runs
(spectral analysis of recorded trajectories), and steer it: prompt schedules and composing by
resolution, upscaling with upsample guidance, schedules designed from level births.
"""

from ._version import __version__
from .analysis import Comparison, compare
from .apps import UpsampleGuided, by_resolution, from_births, upscale
from .models import Denoiser, ExemplarMixture, GaussianPowerLaw, load_shapes
from .noise import Schedule
from .sampling import Boundary, PromptSchedule, SamplingError, StepRecord, Trajectory, sample
from .sweep import sweep  # the function; its modules stay importable as chromaviz.sweep.grid, .cell, ...

__all__ = [
    "Boundary", "Comparison", "Denoiser", "ExemplarMixture", "GaussianPowerLaw", "PromptSchedule",
    "SamplingError", "Schedule", "StepRecord", "Trajectory", "UpsampleGuided", "by_resolution", "compare",
    "from_births", "load_shapes", "sample", "sweep", "upscale", "__version__",
]
