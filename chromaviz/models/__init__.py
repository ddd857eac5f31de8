"""chromaviz models: exact built-in denoisers (no weights, no downloads), the denoiser contract, and the
registry that loads a run's model by name (:mod:`chromaviz.models.registry`)."""

from .base import PARAMETERIZATIONS, Capabilities, DataSource, Denoiser, Wrapper, join_prediction, split_prediction
from .exemplars import ExemplarMixture
from .gaussian import GaussianPowerLaw, power_law_grid
from .layout import LayoutTexture
from .photos import PHOTOS, vocabulary
from .registry import BUILTIN, EXPLORER_MODEL, MODELS, TRAINED, is_builtin, load_builtin, load_model
from .shapes import load_shapes

__all__ = [
    "BUILTIN", "EXPLORER_MODEL", "PARAMETERIZATIONS", "TRAINED", "PHOTOS", "Capabilities", "DataSource", "Denoiser", "ExemplarMixture",
    "GaussianPowerLaw", "LayoutTexture", "Wrapper",
    "MODELS", "is_builtin", "join_prediction", "load_builtin", "load_model", "load_shapes", "power_law_grid", "split_prediction", "vocabulary",
]
