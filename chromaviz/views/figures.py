"""Static pictures of a run: an image strip over the steps and a chromatogram, as PNG files.

Figures are built as bare matplotlib ``Figure`` objects (no pyplot, no backend switch), so this
works in scripts, on servers and inside a live notebook kernel alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .. import theory
from ..analysis import Comparison
from ..sampling.trajectory import Trajectory


def pick_steps(num_steps: int, count: int) -> list[int]:
    """``count`` step indices spread evenly from the first to the last step."""
    return sorted(set(np.linspace(0, num_steps - 1, min(count, num_steps)).round().astype(int).tolist()))


def strip_image(traj: Trajectory, to_rgb, *, count: int = 10, sample: int = 0, rows: Sequence[str] = ("x_t", "x0")) -> np.ndarray:
    """Image strip: one column per chosen step, one row per recorded quantity.

    Parameters
    ----------
    traj : Trajectory
    to_rgb : callable
        Model samples (B, C, H, W) → RGB in [0, 1] (a model's ``to_rgb``).
    count : int
        Number of columns.
    sample : int
        Which batch element to show.
    rows : sequence of {"x_t", "x0", "eps"}
        Quantities to show, top to bottom (those not recorded are skipped).

    Returns
    -------
    ndarray, uint8, shape (rows·H + gaps, columns·W + gaps, 3)
    """
    steps = pick_steps(len(traj), count)
    tiles = []
    for name in rows:
        if getattr(traj.steps[0], name) is None:
            continue
        imgs = torch.stack([getattr(traj.steps[i], name)[sample] for i in steps])
        tiles.append(to_rgb(imgs).permute(0, 2, 3, 1).cpu().numpy())
    if not tiles:
        raise ValueError(f"none of {list(rows)} was recorded in this run")
    n_rows, n_cols = len(tiles), len(steps)
    h, w = tiles[0].shape[1:3]
    gap = max(1, h // 16)
    canvas = np.ones((n_rows * h + (n_rows - 1) * gap, n_cols * w + (n_cols - 1) * gap, 3))
    for r, row in enumerate(tiles):
        for c, img in enumerate(row):
            canvas[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = img
    return (canvas * 255).round().astype(np.uint8)


def save_strip(traj: Trajectory, to_rgb, path: str | Path, *, count: int = 10, scale: int = 2, **kwargs) -> Path:
    """Write :func:`strip_image` to a PNG, each pixel enlarged ``scale`` times."""
    from PIL import Image

    img = strip_image(traj, to_rgb, count=count, **kwargs)
    img = img.repeat(scale, axis=0).repeat(scale, axis=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)
    return path


def save_chromatogram(comparison: Comparison, path: str | Path, *, title: str = "") -> Path:
    """Two panels over sampling steps: signal fraction per level, and signal generated per step.

    Lines are the spectrum-aware theory, dashed lines the m² law, dots the measurement.
    """
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    c = comparison
    steps = np.arange(len(c.timesteps))
    colors = colormaps["viridis"](np.linspace(0.05, 0.9, len(c.levels)))
    # A bare Figure (no pyplot): nothing global changes, so this is safe inside a live kernel.
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    for j, m in enumerate(c.levels):
        ax1.plot(steps, c.spectrum_aware[:, j], color=colors[j], lw=2, label=f"m={m}")
        ax1.plot(steps, c.m2_law[:, j], color=colors[j], lw=1, ls="--")
        ax1.plot(steps, c.measured[:, j], "o", color=colors[j], ms=3)
        theory_rate = np.diff(c.spectrum_aware[:, j], prepend=0.0)
        measured_rate = np.diff(c.measured[:, j], prepend=0.0)
        ax2.plot(steps[1:], theory_rate[1:], color=colors[j], lw=2)
        ax2.plot(steps[1:], measured_rate[1:], "o", color=colors[j], ms=3)
    ax1.set(xlabel="sampling step", ylabel="signal fraction of level m", ylim=(-0.02, 1.05),
            title="signal fraction (line: spectrum-aware, dashed: m² law, dots: measured)")
    ax2.set(xlabel="sampling step", ylabel="signal generated in the step", title="chromatogram (per step)")
    ax1.legend(loc="upper left", fontsize=8)
    if title:
        fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def schedule_chromatograms(timings, *, ncols: int | None = None):
    """Chromatograms of several schedules side by side, per sampling step.

    Parameters
    ----------
    timings : mapping of label → :class:`chromaviz.apps.schedule_design.StepTimings`
        One panel each (e.g. from :func:`chromaviz.apps.schedule_design.compare_schedules`).
    ncols : int, optional
        Panels per row (default: all in one row).

    Returns
    -------
    matplotlib.figure.Figure
        A bare Figure (no pyplot). x is the run fraction i/S, y the m² law's signal generated at
        step i, s_m(λ_i) − s_m(λ_{i−1}); squares at x = 0 mark row 0, what the run inherits from
        its initial noise, and a dotted line each level's birth step.
    """
    from matplotlib import colormaps
    from matplotlib.figure import Figure


    items = list(timings.items())
    if not items:
        raise ValueError("no schedules to draw")
    ncols = len(items) if ncols is None else max(1, min(ncols, len(items)))
    nrows = -(-len(items) // ncols)
    levels = items[0][1].levels
    colors = colormaps["viridis"](np.linspace(0.05, 0.9, len(levels)))
    fig = Figure(figsize=(3.4 * ncols + 0.6, 3.2 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, sharey=True, squeeze=False)).ravel()
    for ax, (label, st) in zip(axes, items):
        rate = theory.rate_per_step(st.log_snr, st.levels)
        x = np.arange(st.num_steps) / st.num_steps
        for j, m in enumerate(st.levels):
            ax.plot(x[1:], rate[1:, j], color=colors[j], lw=1.5, label=f"m={m}")
            ax.plot([0], [rate[0, j]], "s", color=colors[j], ms=6, mfc="none")
            if st.birth_steps[j]:
                ax.axvline(x[st.birth_steps[j]], color=colors[j], lw=0.8, ls=":")
        inherited = ", ".join(map(str, st.inherited)) or "nothing"
        ax.set(xlabel="run fraction i/S", title=f"{label}\ninherits m = {inherited}" if st.inherited else f"{label}\ninherits nothing")
        ax.title.set_fontsize(9)
    for ax in axes[len(items):]:
        ax.set_visible(False)
    axes[0].set(ylabel="signal generated in the step (m² law)")
    axes[len(items) - 1].legend(fontsize=7, loc="upper right")
    return fig
