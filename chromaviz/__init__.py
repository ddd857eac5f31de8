"""chromaviz: resolution chromatography of diffusion models.

See which resolution a diffusion model generates at each step (theory), measure it on real runs
(spectral analysis of recorded trajectories), and steer it: prompt schedules and composing by
resolution, upscaling with upsample guidance, schedules designed from level births.

``import chromaviz`` imports nothing else: each public name (``chromaviz.sample``, ...) and each
subpackage (``chromaviz.theory``, ...) is imported on first use, so that the command line starts
at once and torch, diffusers and transformers load only when a run needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"
"""The package's version; pyproject.toml reads it from here."""

_PUBLIC = {
    "Comparison": "analysis", "compare": "analysis",
    "UpsampleGuided": "apps", "by_resolution": "apps", "from_births": "apps", "upscale": "apps",
    "Denoiser": "models", "ExemplarMixture": "models", "GaussianPowerLaw": "models", "load_shapes": "models",
    "Schedule": "noise",
    "Boundary": "prompts", "PromptSchedule": "prompts",
    "SamplingError": "sampling", "StepRecord": "sampling",
    "Trajectory": "sampling", "sample": "sampling", "use_free_cores": "sampling",
}
"""Public name → the subpackage it is imported from on first use."""

__all__ = [*sorted(_PUBLIC), "__version__"]

if TYPE_CHECKING:  # what type checkers and editors see; at run time __getattr__ imports these on first use
    from .analysis import Comparison, compare
    from .apps import UpsampleGuided, by_resolution, from_births, upscale
    from .models import Denoiser, ExemplarMixture, GaussianPowerLaw, load_shapes
    from .noise import Schedule
    from .prompts import Boundary, PromptSchedule
    from .sampling import SamplingError, StepRecord, Trajectory, sample, use_free_cores


def __getattr__(name: str):
    """A public name or a subpackage, imported on first use (PEP 562) and kept."""
    if name in _PUBLIC:
        value = getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    elif name.isidentifier() and not name.startswith("_"):
        try:  # chromaviz.theory, chromaviz.sweep, ... without importing them first
            value = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{name}":
                raise  # the subpackage exists but needs something that is missing
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
