"""Argument checks shared by the public functions: one rule per kind of argument, one wording.

Every check raises before any work is done, names the argument, says what was given and what is
allowed. Integers may be Python, numpy or torch integers (never booleans); numbers may be any real
number type (never strings).
"""

from __future__ import annotations

import math
import numbers
import operator
from typing import Any, Iterable


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type. Also a ValueError, so that code catching ValueError for bad
    arguments (as chromaviz raised before types were told apart) still catches it."""


def integer(name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as a Python int, checked to lie in [minimum, maximum].

    Accepts Python, numpy and torch integers (anything with ``__index__``), never ``bool``.

    Raises
    ------
    ArgumentTypeError
        (a TypeError and a ValueError) for a non-integer: a float, a string, a bool, None.
    ValueError
        Outside the allowed range.

    Examples
    --------
    >>> import numpy as np
    >>> integer("num_inference_steps", np.int64(5), minimum=1)
    5
    >>> integer("seed", -1, minimum=0)
    Traceback (most recent call last):
    ...
    ValueError: seed must be an integer ≥ 0, got -1
    """
    if isinstance(value, bool) or not hasattr(type(value), "__index__"):
        raise ArgumentTypeError(f"{name} must be {_integer_text(minimum, maximum)}, got {_describe(value)} "
                                f"({type(value).__name__})")
    try:
        value = operator.index(value)
    except TypeError:  # a tensor with more than one element, say
        raise ArgumentTypeError(f"{name} must be a single integer, got {_describe(value)}") from None
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be {_integer_text(minimum, maximum)}, got {value}")
    return value


def _integer_text(minimum: int | None, maximum: int | None) -> str:
    return "a positive integer" if minimum == 1 and maximum is None else f"an integer{_range_text(minimum, maximum)}"


def positive_int(name: str, value: Any) -> int:
    """An integer ≥ 1 (Python, numpy or torch); see :func:`integer`.

    Examples
    --------
    >>> positive_int("batch_size", 3)
    3
    """
    return integer(name, value, minimum=1)


def image_size(name: str, value: Any) -> tuple[int, int]:
    """``value``, one integer or a (height, width) pair of integers, as (height, width) pixels ≥ 1.

    Raises
    ------
    ArgumentTypeError
        (a TypeError and a ValueError) for anything else: a string, a float, a bool, a pair of those.
    ValueError
        For a size < 1, or a sequence that is not a pair.

    Examples
    --------
    >>> image_size("size", 64)
    (64, 64)
    >>> image_size("size", (32, 48))
    (32, 48)
    >>> image_size("size", "64")
    Traceback (most recent call last):
    ...
    chromaviz._checks.ArgumentTypeError: size must be a positive integer or a (height, width) pair of them, got '64' (str)
    """
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be a positive integer or a (height, width) pair of them, got {_describe(value)}")
        return integer(f"{name} (height)", value[0], minimum=1), integer(f"{name} (width)", value[1], minimum=1)
    if isinstance(value, bool) or not hasattr(type(value), "__index__"):
        raise ArgumentTypeError(f"{name} must be a positive integer or a (height, width) pair of them, got {_describe(value)} "
                                f"({type(value).__name__})")
    size = integer(name, value, minimum=1)
    return size, size


def _range_text(minimum: float | None, maximum: float | None) -> str:
    """" ≥ 0", " ≤ 1", " in [0, 1]" or "" (with a leading space)."""
    if minimum is not None and maximum is not None:
        return f" in [{minimum}, {maximum}]"
    if minimum is not None:
        return f" ≥ {minimum}"
    if maximum is not None:
        return f" ≤ {maximum}"
    return ""


def real(name: str, value: Any, *, minimum: float | None = None, maximum: float | None = None,
         finite: bool = True) -> float:
    """``value`` as a float, checked to be finite (unless ``finite=False``) and in [minimum, maximum].

    Accepts Python, numpy and torch real numbers, never ``bool`` or strings.

    Raises
    ------
    ArgumentTypeError
        (a TypeError and a ValueError) for a non-number.
    ValueError
        For NaN, ±∞ (when ``finite``), or a value outside the range.

    Examples
    --------
    >>> real("guidance", 7.5, minimum=0)
    7.5
    >>> real("eta", float("nan"), minimum=0)
    Traceback (most recent call last):
    ...
    ValueError: eta must be ≥ 0, got nan (not a number)
    >>> real("guidance", float("inf"), minimum=0)
    Traceback (most recent call last):
    ...
    ValueError: guidance must be finite and ≥ 0, got inf
    """
    rng = _range_text(minimum, maximum).strip()
    if isinstance(value, bool) or not (isinstance(value, numbers.Real) or _is_real_scalar(value)):
        raise ArgumentTypeError(f"{name} must be a number{' ' + rng if rng else ''}, got {_describe(value)} "
                                f"({type(value).__name__})")
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"{name} must be {rng or 'a number'}, got nan (not a number)")
    if finite and not math.isfinite(value):
        raise ValueError(f"{name} must be finite{' and ' + rng if rng else ''}, got {value}")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be {rng}, got {value}")
    return value


def _is_real_scalar(value: Any) -> bool:
    """A one-element numpy or torch real number."""
    dtype = getattr(value, "dtype", None)
    if dtype is None or getattr(value, "ndim", None) != 0:
        return False
    return getattr(dtype, "is_complex", False) is False and (
        getattr(dtype, "is_floating_point", False) or getattr(dtype, "kind", "") in "fiu")


def boolean(name: str, value: Any) -> bool:
    """A real ``bool`` (numpy bools too), never a number or a string that looks like one; else an
    :class:`ArgumentTypeError` (a TypeError and a ValueError).

    Examples
    --------
    >>> boolean("progress", True)
    True
    """
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return bool(value)
    raise ArgumentTypeError(f"{name} must be True or False, got {_describe(value)} ({type(value).__name__})")


def choice(name: str, value: Any, allowed: Iterable[str]) -> str:
    """One of ``allowed`` (strings), compared exactly.

    Examples
    --------
    >>> choice("method", "rings", ("rings", "pyramid"))
    'rings'
    """
    allowed = tuple(allowed)
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {_describe(value)}")
    return value


def subset(name: str, value: Any, allowed: Iterable[str]) -> tuple[str, ...]:
    """A list or tuple of names from ``allowed`` (a single string is refused: it is not read as letters).

    ``name`` is a verb-like argument name ("record"): the message reads "cannot record ['foo']".

    Examples
    --------
    >>> subset("record", ["x0"], ("x_t", "x0", "eps"))
    ('x0',)
    """
    allowed = tuple(allowed)
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ArgumentTypeError(f"{name} must be a list or tuple of names from {list(allowed)}, got {_describe(value)}")
    items = tuple(value)
    unknown = [v for v in items if not isinstance(v, str) or v not in allowed]
    if unknown:
        raise ValueError(f"cannot {name} {unknown}: {name} takes names from {list(allowed)}")
    return items


def dtype_name(name: str, value: str) -> Any:
    """The torch dtype a text such as ``"float16"`` names (raises ValueError for any other text).

    Examples
    --------
    >>> dtype_name("torch_dtype", "bfloat16")
    torch.bfloat16
    """
    import torch

    named = getattr(torch, value, None) if isinstance(value, str) and value.isidentifier() else None
    if not isinstance(named, torch.dtype):
        raise ValueError(f"{name} {value!r} is not a torch dtype; use float16, bfloat16 or float32")
    return named


def written_as_path(model: str) -> bool:
    """True if the text ``model`` can only mean a folder: absolute, starting with ``.`` or ``~``, or with
    more than one ``/`` (a hub id such as ``org/name`` has one).

    Examples
    --------
    >>> written_as_path("models/sd15/unet"), written_as_path("org/name"), written_as_path("./sd")
    (True, False, True)
    """
    from pathlib import Path

    return model.startswith((".", "~")) or Path(model).expanduser().is_absolute() or model.count("/") > 1


def torch_device(name: str, value: Any) -> Any:
    """The :class:`torch.device` ``value`` names, refused unless this machine has it.

    Raises
    ------
    TypeError
        For anything but a device name or a ``torch.device`` (a dtype among them: a model's dtype is
        chosen when it is loaded).
    ValueError
        For a name torch does not know, or a CUDA or MPS device this torch build or machine lacks.

    Examples
    --------
    >>> torch_device("device", "cpu")
    device(type='cpu')
    """
    import torch

    if not isinstance(value, (str, torch.device)):
        hint = (" (a model's dtype is chosen when it is loaded: load_pipeline(..., torch_dtype=...), RunSpec(dtype=...))"
                if isinstance(value, torch.dtype) else "")
        raise TypeError(f"{name} must be a device name such as 'cpu' or 'cuda', or a torch.device; got "
                        f"{_describe(value)} ({type(value).__name__}){hint}")
    try:
        device = torch.device(value)
    except RuntimeError:
        raise ValueError(f"{name} must be a device name such as 'cpu', 'cuda' or 'cuda:1', got {value!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{name}={value!r}, but CUDA is not available on this machine; use 'cpu'")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{name}={value!r}, but MPS is not available on this machine; use 'cpu'")
    return device


EXTRAS: dict[str, tuple[str, ...]] = {
    "explorer": ("bokeh", "jupyter_bokeh", "ipywidgets"),
    "report": ("papermill", "nbconvert", "ipykernel", "bokeh", "jupyter_bokeh", "ipywidgets"),
    "sweep": ("papermill", "nbconvert", "ipykernel", "bokeh", "jupyter_bokeh", "ipywidgets", "dask", "distributed"),
}
"""The modules chromaviz imports from each optional extra of ``pyproject.toml`` (each one a requirement
of that extra, as ``tests/test_packaging.py`` checks; the explorer's ``jupyterlab`` is the front end,
never imported)."""


class MissingExtra(ImportError):
    """A part of chromaviz whose optional extra is not installed: the message names the extra, the
    ``pip install`` that adds it and the modules that are missing."""

    def __init__(self, what: str, extra: str, missing: Iterable[str]) -> None:
        self.what, self.extra, self.missing = what, extra, tuple(missing)
        super().__init__(f'{what} needs the {extra} extra: pip install "chromaviz[{extra}]" '
                         f'(missing: {", ".join(self.missing)})', name=self.missing[0] if self.missing else None)


def require_extra(extra: str, what: str) -> None:
    """Raise :class:`MissingExtra` (an ImportError) unless every module of ``extra`` can be imported.

    Nothing is imported: each module is only looked up (:func:`importlib.util.find_spec`).
    ``what`` names the part that needs it, as the user called it (``"chromaviz report"``).

    Examples
    --------
    >>> require_extra("report", "chromaviz report")  # the extra is installed here: nothing happens
    """
    import importlib.util

    missing = []
    for module in EXTRAS[extra]:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a finder that refuses it, or a module half set up
            found = False
        if not found:
            missing.append(module)
    if missing:
        raise MissingExtra(what, extra, missing)
