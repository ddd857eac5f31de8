"""Sweeps: grids of the report's runs as Dask tasks, with one table and a gallery.

``from chromaviz.sweep import sweep; sweep({"scheduler": ["ddim", "euler"], "steps": [20, 50]}, "out")`` (or ``chromaviz sweep
-p scheduler ddim euler -p steps 20 50 -o out``) runs the report's computation (sample + compare) for
every cell of the grid on a local Dask cluster, or on an existing one (``scheduler="tcp://HOST:8786"``),
and writes ``out/sweep.csv`` and ``out/gallery.html``.

- :mod:`.grid`: the report's parameters, value lists, the cells and the gallery's axes.
- :mod:`.cell`: one cell, as a worker runs it.
- :mod:`.results`: the cell folders, the table and the gallery.
- :mod:`.engine`: the Dask client, the local cluster and :func:`sweep`.

Dask (``pip install "chromaviz[sweep]"``) is imported only when a sweep runs; without it,
:func:`sweep` raises an ImportError that names the extra.
"""

from .engine import connect, sweep
from .grid import Cell, SweepError, grid_from_pairs, make_grid
from .results import read_table

__all__ = ["Cell", "SweepError", "connect", "grid_from_pairs", "make_grid", "read_table", "sweep"]
