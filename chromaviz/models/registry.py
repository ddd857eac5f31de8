"""The model registry: a model's name (or a diffusers pipeline's folder or id) → the loaded denoiser.

One place that turns the ``model`` setting of a run (``chromaviz run --model``, ``chromaviz report
-p model``, a sweep's cells, :class:`chromaviz.runs.RunSpec`) into a
:class:`~chromaviz.models.base.Denoiser`:

- the built-in models by name: ``gaussian``, ``exemplars`` and ``layout`` (exact, no weights; they
  take a noise schedule preset) and ``shapes`` (the bundled trained network, which keeps the schedule it was
  trained with);
- anything else is a diffusers pipeline: a folder written by ``save_pretrained`` or a model id in
  the local Hugging Face cache (:func:`chromaviz.models.diffusers.adapter.load_pipeline`).

Importing this module imports no model: each loader imports its model when it is called.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:
    from .base import Denoiser


def _gaussian(**options: Any) -> Denoiser:
    from .gaussian import GaussianPowerLaw

    return GaussianPowerLaw(**options)


def _exemplars(**options: Any) -> Denoiser:
    from .exemplars import ExemplarMixture

    return ExemplarMixture(**options)


def _layout(**options: Any) -> Denoiser:
    from .layout import LayoutTexture

    return LayoutTexture(**options)


def _shapes(**options: Any) -> Denoiser:
    from .shapes import load_shapes

    return load_shapes(**options)


@dataclass(frozen=True)
class BuiltinModel:
    """One built-in model of the registry.

    Attributes
    ----------
    name : str
        Its name (``RunSpec.model``, ``--model``, ``-p model``).
    loader : callable
        ``loader(size=int, schedule=Schedule)`` → :class:`~chromaviz.models.base.Denoiser`
        (``schedule`` is not passed to a trained model).
    trained : bool
        A trained network: it keeps the schedule it was trained with and takes no ``schedule``.
    summary : str
        One line about it.
    """

    name: str
    loader: Callable[..., Denoiser]
    trained: bool
    summary: str


MODELS: Mapping[str, BuiltinModel] = MappingProxyType({
    "gaussian": BuiltinModel("gaussian", _gaussian, False, "exact power-law Gaussian with its Wiener denoiser; unconditional"),
    "exemplars": BuiltinModel("exemplars", _exemplars, False, "exact mixture of scikit-image's photographs; takes prompts"),
    "layout": BuiltinModel("layout", _layout, False, "exact Gaussian layouts with named textures; takes prompts, "
                           "composes by resolution"),
    "shapes": BuiltinModel("shapes", _shapes, True, "the bundled trained text-to-image network (32×32 shapes)"),
})
"""The built-in models by name."""

BUILTIN: Mapping[str, Callable[..., Denoiser]] = MappingProxyType({name: m.loader for name, m in MODELS.items()})
"""Built-in model names → their loaders (``loader(size=..., schedule=...)``)."""

TRAINED = frozenset(name for name, m in MODELS.items() if m.trained)
"""Built-in models that are trained networks: they keep the schedule they were trained with."""

EXPLORER_MODEL = "layout"
"""The built-in model the explorer opens with (``load_builtin(EXPLORER_MODEL)``, its own default schedule):
the one on which a prompt switch at the birth of a level composes (``docs/composing.md``)."""


def is_builtin(model: Any) -> bool:
    """True if ``model`` names a built-in model (``"gaussian"``, ``"exemplars"``, ``"layout"``, ``"shapes"``)."""
    return isinstance(model, str) and model in MODELS


def load_builtin(name: str, **options: Any) -> Denoiser:
    """A built-in model by name, its constructor given ``options`` (``size``, ``schedule``, …).

    Raises
    ------
    ValueError
        For a name that is not a built-in model, naming them.
    """
    if not is_builtin(name):
        raise ValueError(f"unknown built-in model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name].loader(**options)


def load_model(model: str, *, size: int | None = None, schedule: Any = "default", device: str | None = None,
               dtype: str | None = None) -> Denoiser:
    """A run's model: a built-in one by name, or a diffusers pipeline folder or cached model id.

    A trained network (the shapes model, a diffusers pipeline) keeps the schedule it was trained
    with; the exact built-in models take ``schedule``.

    Parameters
    ----------
    model : str
        ``gaussian``, ``exemplars``, ``layout``, ``shapes`` (:data:`MODELS`), or a folder written by
        ``save_pretrained`` (or a model id already in the local Hugging Face cache).
    size : int, optional
        Height and width in pixels of the built-in models' grid (default: the model's own).
    schedule : str or Schedule
        Noise schedule (a preset name such as ``"scaled_linear"``) of the exact built-in models, or
        ``"default"``: the model's own; not used by trained ones.
    device : str, optional
        Torch device of a diffusers pipeline (default: where it loads). Built-in models are moved
        by the sampler.
    dtype : str, optional
        ``"float16"`` or ``"bfloat16"`` for a diffusers pipeline (default float32); built-in models
        run in float32.

    Returns
    -------
    Denoiser

    Raises
    ------
    ValueError
        An unknown schedule preset, or a folder or id that is not a diffusers pipeline.
    TypeError
        ``model`` not a str.
    """
    if not isinstance(model, str):
        raise TypeError(f"model must be a built-in model's name ({', '.join(MODELS)}) or a diffusers pipeline folder "
                        f"or model id, got {type(model).__name__}")
    if is_builtin(model):
        options: dict[str, Any] = {} if size is None else {"size": size}
        if not MODELS[model].trained and not (isinstance(schedule, str) and schedule == "default"):
            from ..noise.schedules import Schedule

            options["schedule"] = Schedule.coerce(schedule)
        return load_builtin(model, **options)
    from .diffusers.adapter import load_pipeline

    return load_pipeline(model, torch_dtype=dtype or None, device=device or None)


__all__ = ["BUILTIN", "EXPLORER_MODEL", "MODELS", "TRAINED", "BuiltinModel", "is_builtin", "load_builtin", "load_model"]
