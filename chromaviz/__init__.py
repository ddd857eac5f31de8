"""chromaviz: resolution chromatography of diffusion models.

See which resolution a diffusion model generates at each step (theory), measure it on real runs
(spectral analysis of recorded trajectories), and steer it: prompt schedules and composing by
resolution, upscaling with upsample guidance, schedules designed from level births.
"""

__version__ = "0.1.0"

from .analysis import Comparison, compare
from .composing import by_resolution
from .models import Denoiser, ExemplarMixture, GaussianPowerLaw, load_shapes
from .prompts import Boundary, PromptSchedule
from .sampling import SamplingError, sample
from .schedule_design import from_births
from .schedules import Schedule
from .trajectory import StepRecord, Trajectory
from .upscaling import UpsampleGuided, upscale

__all__ = [
    "Boundary", "Comparison", "Denoiser", "ExemplarMixture", "GaussianPowerLaw", "PromptSchedule",
    "SamplingError", "Schedule", "StepRecord", "Trajectory", "UpsampleGuided", "by_resolution", "compare",
    "from_births", "load_shapes", "sample", "upscale", "__version__",
]
