"""The grid of a sweep: the report's parameters, a value list for each swept name, and its cells.

A sweep takes the same parameters as ``chromaviz report`` (the ``parameters`` cell of the report
notebook), with the same names, types and checks
(:func:`chromaviz.notebook.report.parse_parameters`); each swept name gets a list of values, and the
cells are their Cartesian product.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..notebook.report import (
    RESERVED, REPORT_NOTEBOOK, Parameter, ReportError, check_values, notebook_defaults, notebook_parameters,
    parse_parameters,
)


class SweepError(ValueError):
    """A sweep could not start: a wrong grid, axis or cluster option, or an unreachable scheduler."""


@dataclass(frozen=True)
class Cell:
    """One run of a sweep.

    Attributes
    ----------
    name : str
        Its folder under ``DIR/cells/``: the swept parameters as text, e.g. ``scheduler-ddim_steps-20``
        (with a short hash when a value had to be shortened or had characters a folder name cannot carry).
    swept : dict
        The parameters given to the sweep (name → value), in the order they were given.
    values : dict
        Every parameter of the report (its defaults, then ``swept``), except those the sweep sets itself
        (``output_dir``).
    """

    name: str
    swept: dict[str, Any] = field(hash=False)
    values: dict[str, Any] = field(hash=False)

    def pairs(self) -> list[tuple[str, str]]:
        """``(name, text)`` pairs of the swept parameters, as ``chromaviz report -p NAME VALUE`` takes them."""
        return [(k, v if isinstance(v, str) else str(v)) for k, v in self.swept.items()]


def report_parameters(notebook: str | Path | None = None) -> dict[str, Parameter]:
    """The report's parameters (:func:`chromaviz.notebook.report.notebook_parameters`), by name."""
    return notebook_parameters(notebook if notebook is not None else REPORT_NOTEBOOK)


def grid_from_pairs(groups: Sequence[Sequence[str]]) -> dict[str, list[str]]:
    """The grid of ``-p NAME V1 V2 …`` groups as given on the command line: name → value texts.

    Raises
    ------
    SweepError
        For a name given twice (a name without values is refused by :func:`make_grid`).

    Examples
    --------
    >>> grid_from_pairs([["scheduler", "ddim", "euler"], ["steps", "20", "50"]])
    {'scheduler': ['ddim', 'euler'], 'steps': ['20', '50']}
    """
    grid: dict[str, list[str]] = {}
    for group in groups:
        name, *values = group
        if name in grid:
            raise SweepError(f"parameter {name!r} is given twice; give all its values after one -p {name}")
        grid[name] = values
    return grid


def _typed(parameter: Parameter, value: Any, parameters: Mapping[str, Parameter]) -> Any:
    """``value`` as the parameter's type, with the checks of ``chromaviz report -p NAME VALUE``."""
    if not isinstance(value, str):
        if parameter.type == "str":
            raise TypeError(f"parameter {parameter.name!r} takes text (str), got {value!r} ({type(value).__name__})")
        value = str(value)  # numbers and booleans go through the same text conversion as the command line
    return parse_parameters([(parameter.name, value)], parameters, reserved=RESERVED)[parameter.name]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+=-]", "-", text)


def cell_name(swept: Mapping[str, Any], *, hashed: bool = False) -> str:
    """A folder name for the cell with these swept values, the same on every run of the sweep.

    Examples
    --------
    >>> cell_name({"scheduler": "dpmsolver++", "steps": 20})
    'scheduler-dpmsolver++_steps-20'
    >>> cell_name({"prompt": "a cat/dog"})
    'prompt-a-cat-dog-f8f4e108'
    """
    if not swept:
        return "defaults"
    text = "_".join(f"{k}-{v}" for k, v in swept.items())
    slug = _slug(text)
    if slug == text and len(slug) <= 80 and not hashed:
        return slug
    digest = hashlib.sha1(json.dumps(list(swept.items()), default=str).encode()).hexdigest()[:8]
    return f"{slug[:60].rstrip('-_')}-{digest}"


def make_grid(grid: Mapping[str, Sequence[Any]], *, notebook: str | Path | None = None) -> list[Cell]:
    """The cells of a sweep, in grid order (the last name varies fastest).

    Parameters
    ----------
    grid : mapping of str to list
        Report parameter → the values to sweep. Values are the parameter's type, or text as on the
        command line (``"20"`` for an int). A name with one value sets it for every cell.
    notebook : path, optional
        The report notebook whose parameters are swept (default: the package's report).

    Returns
    -------
    list of Cell
        ∏ len(values) cells.

    Raises
    ------
    SweepError
        An unknown parameter (the message lists the report's parameters), one the sweep sets itself
        (``output_dir``), an empty value list, a value given twice, or a value of the wrong type.
    TypeError
        A value list that is not a list or tuple, or a non-text value for a text parameter.
    """
    if not isinstance(grid, Mapping):
        raise TypeError(f"grid must be a mapping of parameter name to a list of values, got {type(grid).__name__}")
    parameters = report_parameters(notebook)
    typed: dict[str, list[Any]] = {}
    for name, values in grid.items():
        if not isinstance(values, (list, tuple)):
            raise TypeError(f"grid[{name!r}] must be a list of values, got {values!r} ({type(values).__name__})")
        if name not in parameters or name in RESERVED:
            parse_parameters([(name, "")], parameters, reserved=RESERVED)  # raises, listing the parameters
        if not values:
            raise SweepError(f"parameter {name!r} has an empty value list; give at least one value")
        converted = [_typed(parameters[name], v, parameters) for v in values]
        repeated = [v for i, v in enumerate(converted) if v in converted[:i]]
        if repeated:
            raise SweepError(f"parameter {name!r} repeats the value {repeated[0]!r}; give each value once")
        typed[name] = converted
    base = notebook_defaults(parameters)
    cells = []
    for combination in itertools.product(*typed.values()):
        swept = dict(zip(typed, combination))
        try:  # the report's own pre-flight (RunSpec.check), but the device (the cells may run on another
            # machine) and values a model ignores (the product may pair guidance 3 with the unconditional model)
            check_values(swept, base, refuse_ignored=False, local=False)
        except ReportError as err:
            raise SweepError(f"{err} (in the cell {cell_name(swept)})") from None
        cells.append(Cell(cell_name(swept), swept, {**base, **swept}))
    if len({c.name for c in cells}) < len(cells):  # two value lists that read the same as text
        cells = [Cell(cell_name(c.swept, hashed=True), c.swept, c.values) for c in cells]
    return cells


def axes(grid: Mapping[str, Sequence[Any]], x: str | None, y: str | None) -> tuple[str | None, str | None]:
    """The gallery's column (``x``) and row (``y``) parameters.

    By default the first and second swept names with more than one value.

    Raises
    ------
    SweepError
        If ``x`` or ``y`` is not a name of the grid, or both are the same.
    """
    names = list(grid)
    for label, value in (("x", x), ("y", y)):
        if value is not None and value not in names:
            raise SweepError(f"{label}={value!r} is not a parameter of this sweep; choose one of {names}")
    if x is not None and x == y:
        raise SweepError(f"x and y are both {x!r}; choose two different parameters")
    free = [n for n in names if len(grid[n]) > 1 and n not in (x, y)]
    if x is None and free:
        x = free.pop(0)
    if y is None and free:
        y = free.pop(0)
    return x, y
