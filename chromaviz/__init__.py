"""chromaviz: resolution chromatography of diffusion models.

See which resolution a diffusion model generates at each step (theory), measure it on real runs
(spectral analysis of recorded trajectories), and steer it (prompt schedules).
"""

__version__ = "0.1.0"

from .analysis import Comparison, compare
from .models import Denoiser, ExemplarMixture, GaussianPowerLaw
from .prompts import Boundary, PromptSchedule
from .sampling import SamplingError, sample
from .schedules import Schedule
from .trajectory import StepRecord, Trajectory

__all__ = [
    "Boundary", "Comparison", "Denoiser", "ExemplarMixture", "GaussianPowerLaw", "PromptSchedule",
    "SamplingError", "Schedule", "StepRecord", "Trajectory", "compare", "sample", "__version__",
]
