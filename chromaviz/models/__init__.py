"""chromaviz models: exact built-in denoisers (no weights, no downloads) and the denoiser contract."""

from .base import PARAMETERIZATIONS, Denoiser, join_prediction, split_prediction
from .exemplars import ExemplarMixture
from .gaussian import GaussianPowerLaw, power_law_grid
from .photos import PHOTOS, vocabulary

BUILTIN = {"gaussian": GaussianPowerLaw, "exemplars": ExemplarMixture}
"""Built-in model names → classes."""


def load_builtin(name: str, **kwargs) -> Denoiser:
    """A built-in model by name (``"gaussian"`` or ``"exemplars"``)."""
    if name not in BUILTIN:
        raise ValueError(f"unknown built-in model {name!r}; choose one of {sorted(BUILTIN)}")
    return BUILTIN[name](**kwargs)


__all__ = [
    "BUILTIN", "PARAMETERIZATIONS", "PHOTOS", "Denoiser", "ExemplarMixture", "GaussianPowerLaw",
    "join_prediction", "load_builtin", "power_law_grid", "split_prediction", "vocabulary",
]
