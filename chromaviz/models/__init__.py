"""chromaviz models: exact built-in denoisers (no weights, no downloads), the denoiser contract, and the
registry that loads a run's model by name (:mod:`chromaviz.models.registry`)."""

from .base import PARAMETERIZATIONS, Capabilities, DataSource, Denoiser, Wrapper, join_prediction, split_prediction
from .exemplars import ExemplarMixture
from .gaussian import GaussianPowerLaw, power_law_grid
from .photos import PHOTOS, vocabulary
from .registry import BUILTIN, MODELS, TRAINED, is_builtin, load_builtin, load_model
from .shapes import load_shapes

__all__ = [
    "BUILTIN", "PARAMETERIZATIONS", "TRAINED", "PHOTOS", "Capabilities", "DataSource", "Denoiser", "ExemplarMixture", "GaussianPowerLaw", "Wrapper",
    "MODELS", "is_builtin", "join_prediction", "load_builtin", "load_model", "load_shapes", "power_law_grid", "split_prediction", "vocabulary",
]
