"""chromaviz models: exact built-in denoisers (no weights, no downloads) and the denoiser contract."""

from .base import PARAMETERIZATIONS, Capabilities, Denoiser, Wrapper, join_prediction, split_prediction
from .exemplars import ExemplarMixture
from .gaussian import GaussianPowerLaw, power_law_grid
from .photos import PHOTOS, vocabulary
from .shapes import load_shapes

BUILTIN = {"gaussian": GaussianPowerLaw, "exemplars": ExemplarMixture, "shapes": load_shapes}
"""Built-in model names → their constructors: the two exact models and the bundled trained network."""

TRAINED = frozenset({"shapes"})
"""Built-in models that are trained networks: they keep the schedule they were trained with."""


def load_builtin(name: str, **kwargs) -> Denoiser:
    """A built-in model by name (``"gaussian"``, ``"exemplars"`` or ``"shapes"``)."""
    if name not in BUILTIN:
        raise ValueError(f"unknown built-in model {name!r}; choose one of {sorted(BUILTIN)}")
    return BUILTIN[name](**kwargs)


__all__ = [
    "BUILTIN", "PARAMETERIZATIONS", "TRAINED", "PHOTOS", "Capabilities", "Denoiser", "ExemplarMixture", "GaussianPowerLaw", "Wrapper",
    "join_prediction", "load_builtin", "load_shapes", "power_law_grid", "split_prediction", "vocabulary",
]
