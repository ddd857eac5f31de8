"""One cell of a sweep, run where Dask puts it: the report's run (:class:`chromaviz.runs.RunSpec`:
load, sample, compare) in this process.

:func:`run_cell` is what a Dask worker executes. It imports chromaviz on the worker (workers get
chromaviz by the same ``pip install`` as the client), never raises for a failing run (the error is
the cell's result), and returns plain data: a row of the sweep's table and the chromatogram as PNG.
"""

from __future__ import annotations

import dataclasses
import io
import os
import socket
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

THUMBNAIL_WIDTH = 560
"""Pixels across a chromatogram in the gallery (the cell's page has the full picture)."""

TRAJECTORY = "trajectory.safetensors"
"""A cell's recorded run in its folder, written when the cell sets ``save_trajectory``."""

def prediction(comparison) -> tuple[np.ndarray, str]:
    """The curve the run is measured against, shape (S, L) (:attr:`Comparison.reference`), and its
    name for the table: ``"predicted (<kind>)"``, or ``"spectrum_aware"`` where there is no prediction."""
    if comparison.predicted is None:
        return comparison.reference, "spectrum_aware"
    return comparison.reference, f"predicted ({comparison.prediction_kind})"


def _per_level(prefix: str, levels: Sequence[int], values: Sequence[Any]) -> dict[str, Any]:
    return {f"{prefix}_m{m}": (v.item() if hasattr(v, "item") else v) for m, v in zip(levels, values)}


def _inheritance(comparison, levels: Sequence[int]) -> dict[str, Any]:
    """Per-level inheritance columns, ``inheritance_<field>_m<m>``: every per-level array of
    :attr:`Comparison.inheritance <chromaviz.analysis.Comparison.inheritance>`."""
    found = comparison.inheritance
    out: dict[str, Any] = {}
    for field in dataclasses.fields(found):
        values = getattr(found, field.name)
        if field.name != "levels" and np.shape(values) == (len(levels),):
            out.update(_per_level(f"inheritance_{field.name}", levels, np.asarray(values, dtype=float)))
    return out


def figures(traj, comparison, model) -> dict[str, Any]:
    """The row figures of one run: its expected band's z_max (max |G − expected|/expected_std), coverage
    (share of cells within ±2σ) and in_band (the verdict: True, False, or None without a band), birth steps
    per level (measured, predicted, m² law), inheritance, and the replay's max deviation.

    A level's birth step is the first step at which its signal fraction reaches ½
    (:func:`chromaviz.noise.levels.born_steps`, as in the report's timing table); None if it
    never does.
    """
    from .. import theory
    from ..noise.levels import born_steps

    levels = list(comparison.levels)
    predicted, source = prediction(comparison)
    timings = theory.level_timings(model.schedule, levels)
    agreement = comparison.agreement  # the headline: the run against its expected band
    return {
        "steps_recorded": len(traj),
        "levels": levels,
        "z_max": agreement.max_z,
        "coverage": agreement.coverage,
        "in_band": agreement.inside,
        "max_deviation": comparison.max_deviation,
        "prediction": source,
        **_per_level("birth_step_measured", levels, born_steps(comparison.measured)),
        **_per_level("birth_step_predicted", levels, born_steps(predicted)),
        **_per_level("birth_step_m2law", levels, born_steps(comparison.m2_law)),
        **_per_level("inherited", levels, [lt.inherited for lt in timings]),
        **_inheritance(comparison, levels),
    }


def thumbnail(png: bytes, width: int = THUMBNAIL_WIDTH) -> bytes:
    """A PNG at most ``width`` pixels wide (aspect kept) of a PNG, for the gallery."""
    from PIL import Image  # matplotlib's own image library

    image = Image.open(io.BytesIO(png))
    image.thumbnail((width, width * 4))
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


SAMPLES_SHOWN = 4
"""Final samples of a cell shown beside its chromatogram."""


def samples_png(traj, model, count: int = SAMPLES_SHOWN, height: int = 96) -> bytes:
    """A PNG of the run's first ``count`` final samples side by side (decoded where the model has a
    decoder), each enlarged to about ``height`` pixels without smoothing."""
    import torch
    from PIL import Image

    from ..views.figures import _strip_canvas

    with torch.no_grad():
        rgb = getattr(model, "decode", model.to_rgb)(traj.sample[:count]).float().clamp(0, 1).cpu()
    scale = max(1, round(height / rgb.shape[-2]))
    row = _strip_canvas([rgb.permute(0, 2, 3, 1).numpy()])  # the strip's tiling: side by side on white
    image = Image.fromarray(row.repeat(scale, axis=0).repeat(scale, axis=1))
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def run_cell(values: Mapping[str, Any], *, torch_threads: int | None = None, report: str | None = None,
             pairs: Sequence[Sequence[str]] = (), trajectory: str | None = None) -> dict[str, Any]:
    """Run one cell: load the model, sample, compare, and draw the chromatogram.

    Parameters
    ----------
    values : mapping
        Every report parameter (see :class:`chromaviz.sweep.grid.Cell`).
    torch_threads : int, optional
        ``torch.set_num_threads`` for this process (one per worker process on a local cluster).
    report : str, optional
        Also write the full report (:func:`chromaviz.notebook.report.run_report`) into this folder,
        which must be reachable from the worker.
    pairs : sequence of (name, text)
        The report's ``-p NAME VALUE`` pairs for ``report``.
    trajectory : str, optional
        Save the recorded run (:meth:`~chromaviz.sampling.Trajectory.save`) to this path, which must be
        reachable from the worker; a run that stopped early is saved with the steps it recorded.

    Returns
    -------
    dict
        ``row``: status (``"complete"``, the run's own status if it stopped early, or ``"error"``),
        error (``"Type: message"``, empty if none), seconds, run_device, worker, and :func:`figures`;
        ``traceback``: the error's traceback text; ``chromatogram``, ``thumbnail`` and ``samples``
        (:func:`samples_png`): PNG bytes or None.
    """
    start = time.perf_counter()
    row: dict[str, Any] = {"status": "error", "error": "", "seconds": None, "run_device": "",
                           "worker": f"{socket.gethostname()}:{os.getpid()}"}
    out: dict[str, Any] = {"row": row, "traceback": "", "chromatogram": None}
    try:
        import torch

        from ..runs import RunSpec
        from ..views.figures import save_chromatogram

        if torch_threads:
            torch.set_num_threads(torch_threads)
        # the grid refused what cannot work; values a model ignores (guidance 3 for the unconditional model) run
        run = RunSpec.from_parameters(values).run(given=(), keep_partial=trajectory is not None)
        model, traj = run.model, run.trajectory
        if trajectory is not None:
            Path(trajectory).parent.mkdir(parents=True, exist_ok=True)
            traj.save(trajectory)
        if run.error is not None:
            raise run.error
        comparison = run.comparison
        row.update(status=traj.status, run_device=str(traj.metadata.get("device", "")), **figures(traj, comparison, model))
        with tempfile.TemporaryDirectory() as tmp:
            title = f"{model.name}, {traj.metadata['scheduler_class']}, {len(traj)} steps, {values['method']} bands"
            out["chromatogram"] = save_chromatogram(comparison, Path(tmp) / "chromatogram.png", title=title).read_bytes()
        out["thumbnail"] = thumbnail(out["chromatogram"])
        if traj.final is not None:
            out["samples"] = samples_png(traj, model)
        if report is not None:
            from ..notebook.report import run_report

            run_report(pairs, report, progress=False)
    except Exception as err:  # the cell's result: recorded in the table, the sweep goes on
        row.update(status="error", error=f"{type(err).__name__}: {err}")
        out["traceback"] = traceback.format_exc()
    row["seconds"] = round(time.perf_counter() - start, 3)
    return out
