"""Pictures of a run at print quality: image strips, chromatograms and theory, as PNG and SVG.

Figures are built as bare matplotlib ``Figure`` objects (no pyplot, no backend switch), so this
works in scripts, on servers and inside a live notebook kernel alike. Levels are drawn in
:func:`level_colours` everywhere (matplotlib here, bokeh in the explorer), so a level has one
colour in every picture of chromaviz.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .. import theory
from ..analysis import BAND_SIGMAS, Comparison
from ..sampling.trajectory import Trajectory

LEVEL_COLORMAP = "plasma"
"""Colormap of the levels: perceptually uniform and readable by colour-blind readers (it was designed
with viridis for that), taken only as far as every colour keeps :data:`MIN_CONTRAST` on white."""

LEVEL_ENTRIES = (0, 150)
"""The stretch of the colormap's 256-entry table the levels are spread over, finest to coarsest.
Beyond entry 164 plasma's colours fall below 3:1 on white (viridis' beyond 153: its light yellow
end, the colour a coarsest level had, is 1.5:1 and vanished on a projector)."""

MIN_CONTRAST = 3.0
"""Least contrast ratio (WCAG 2) of every level colour on a white background: the ratio WCAG asks of
graphics a reader has to tell apart."""

FIGURE_FORMATS = ("png", "svg")
"""Formats every saved figure is written in: PNG for screens, SVG (vector) for print."""


def contrast_ratio(colour: str, background: str = "#ffffff") -> float:
    """WCAG 2 contrast ratio of two colours, from 1 (the same) to 21 (black on white).

    Parameters
    ----------
    colour, background : str
        Colours as matplotlib reads them (``"#rrggbb"``, a name).

    Returns
    -------
    float

    Examples
    --------
    >>> round(contrast_ratio("#000000"), 1)
    21.0
    """
    from matplotlib.colors import to_rgb

    def luminance(c: str) -> float:
        rgb = np.asarray(to_rgb(c))
        rgb = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
        return float(rgb @ [0.2126, 0.7152, 0.0722])

    hi, lo = sorted((luminance(colour), luminance(background)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def level_colours(n: int) -> list[str]:
    """Colours of ``n`` levels, finest (darkest) to coarsest, as ``"#rrggbb"`` strings.

    The one palette of levels for matplotlib and bokeh alike (pass the strings to either): entries
    :data:`LEVEL_ENTRIES` of matplotlib's 256-entry :data:`LEVEL_COLORMAP` table, spread evenly
    (bokeh's ``Plasma256`` is the same table). Every colour has at least :data:`MIN_CONTRAST` on
    white, so a level stays visible when projected, and the order of levels reads as a run from
    dark blue to orange-red, also for colour-blind readers.

    Parameters
    ----------
    n : int
        Number of levels, ≥ 1.

    Returns
    -------
    list of str, length n

    Raises
    ------
    ValueError
        If ``n`` is not a positive integer.

    Examples
    --------
    >>> level_colours(3)
    ['#0d0887', '#8e0ca4', '#de6164']
    >>> min(contrast_ratio(c) for c in level_colours(7)) >= MIN_CONTRAST
    True
    """
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    from .._checks import positive_int

    n = positive_int("n", n)
    table = colormaps[LEVEL_COLORMAP].colors
    return [to_hex(table[int(i)]) for i in np.linspace(*LEVEL_ENTRIES, n)]


def save_figure(fig, path: str | Path, *, dpi: int = 110, formats: Sequence[str] = FIGURE_FORMATS) -> Path:
    """Write a matplotlib figure as ``path`` (PNG) and beside it in the other ``formats`` (same stem).

    Parameters
    ----------
    fig : matplotlib.figure.Figure
    path : str or Path
        The PNG file; folders are created. ``formats`` other than ``"png"`` go to ``path`` with
        their own suffix (``chromatogram.png`` → ``chromatogram.svg``).
    dpi : int
        Resolution of the PNG (dots per inch; the vector formats do not need one).
    formats : sequence of {"png", "svg", "pdf"}

    Returns
    -------
    Path
        The PNG file.
    """
    from matplotlib import rc_context

    from .._checks import subset

    formats = subset("formats", formats, ("png", "svg", "pdf"))
    path = Path(path).with_suffix(".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    with rc_context({"svg.hashsalt": "chromaviz"}):  # the same ids in every SVG of the same figure
        for fmt in formats:
            metadata = {"Date": None} if fmt in ("svg", "pdf") else {}  # no creation date: the same bytes
            fig.savefig(path.with_suffix(f".{fmt}"), dpi=dpi, bbox_inches="tight", metadata=metadata)
    return path


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
    return _strip_canvas(_strip_rows(traj, to_rgb, count, sample, rows)[2])


def _strip_canvas(tiles: Sequence[np.ndarray]) -> np.ndarray:
    """Rows of images (each (N, H, W, 3) in [0, 1]) stacked on white, gaps of H/16 pixels; uint8."""
    gap = max(1, tiles[0].shape[1] // 16)
    rows = [_tiles(t, gap) for t in tiles]
    spacer = np.ones((gap, rows[0].shape[1], 3))
    canvas = np.concatenate([part for row in rows for part in (spacer, row)][1:], axis=0)
    return (canvas * 255).round().astype(np.uint8)


def _strip_rows(traj: Trajectory, to_rgb, count: int, sample: int, rows: Sequence[str]):
    """The chosen steps, the recorded row names, and one (N, H, W, 3) image array per row."""
    steps = pick_steps(len(traj), count)
    names = [name for name in rows if getattr(traj.steps[0], name) is not None]
    if not names:
        raise ValueError(f"none of {list(rows)} was recorded in this run")
    tiles = [to_rgb(torch.stack([getattr(traj.steps[i], name)[sample] for i in steps])).permute(0, 2, 3, 1).float().cpu().numpy()
             for name in names]
    return steps, names, tiles


ROW_LABELS = {"x_t": "x$_t$ (input)", "x0": "x̂$_0$ (prediction)", "eps": "ε̂ (noise prediction)"}


def _tiles(images: np.ndarray, gap: int) -> np.ndarray:
    """Images (N, H, W, 3) side by side on white, ``gap`` pixels apart."""
    n, h, w = images.shape[:3]
    canvas = np.ones((h, n * (w + gap) - gap, 3))
    for i, img in enumerate(images):
        canvas[:, i * (w + gap) : i * (w + gap) + w] = img
    return canvas


def strip_figure(traj: Trajectory, to_rgb, *, count: int = 10, sample: int = 0, rows: Sequence[str] = ("x_t", "x0")):
    """:func:`strip_image` as a labelled figure: each column names its step and log-SNR λ.

    Parameters are those of :func:`strip_image`. Pixels are drawn unsmoothed (nearest), so the
    SVG holds the images at their own resolution.

    Returns
    -------
    matplotlib.figure.Figure
        A bare Figure (no pyplot); save it with :func:`save_figure`.
    """
    from matplotlib.figure import Figure

    steps, shown, tiles = _strip_rows(traj, to_rgb, count, sample, rows)
    img = _strip_canvas(tiles)
    h, w = tiles[0].shape[1:3]
    gap = max(1, h // 16)
    fig = Figure(figsize=(1.0 * len(steps) + 1.2, 1.0 * len(shown) + 0.9), layout="constrained")
    ax = fig.subplots()
    ax.imshow(img, interpolation="nearest")
    ax.set_xticks([c * (w + gap) + w / 2 for c in range(len(steps))],
                  [f"{i}\nλ={traj.log_snr[i]:+.1f}" for i in steps], fontsize=7)
    ax.set_yticks([r * (h + gap) + h / 2 for r in range(len(shown))], [ROW_LABELS.get(r, r) for r in shown], fontsize=8)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_xlabel(f"sampling step (0 = noisiest, of {len(traj)}) and log-SNR λ of x$_t$", fontsize=8)
    return fig


def samples_figure(rgb: np.ndarray, *, title: str = ""):
    """The final samples of a run side by side, unsmoothed.

    Parameters
    ----------
    rgb : ndarray, shape (B, H, W, 3)
        Images in [0, 1].
    title : str

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    rgb = np.clip(np.asarray(rgb, dtype=np.float32), 0, 1)
    n, h, w = rgb.shape[:3]
    fig = Figure(figsize=(1.3 * n + 0.3, 1.3 * h / w + 0.5), layout="constrained")
    ax = fig.subplots()
    ax.imshow(_tiles(rgb, max(1, h // 16)), interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title or f"final samples: {n} × {h} × {w} pixels", fontsize=9)
    return fig


def theory_figure(schedule, levels: Sequence[int]):
    """The schedule's own chromatography: generation rate per timestep and signal fraction per log-SNR.

    Left: c_m(t) = −ds_m/dt of the m² law s_m = sigmoid(λ + 2 ln m) (THEORY.md, eq. for the
    chromatogram), sampling running from right to left; right: s_m against λ, where every level
    has the same curve shifted by 2 ln m.

    Parameters
    ----------
    schedule : chromaviz.noise.schedules.Schedule
    levels : sequence of int
        Block sizes m.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    by_t = theory.chromatogram(schedule, levels, "timestep")
    by_lam = theory.chromatogram(schedule, levels, "log_snr")
    fig = Figure(figsize=(11, 3.8), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    for j, c in enumerate(level_colours(len(levels))):
        ax1.plot(by_t.x, by_t.rate[:, j], color=c, label=f"m={levels[j]}")
        ax2.plot(by_lam.x, by_lam.signal[:, j], color=c)
    ax1.set(xlabel="timestep t (training steps)", ylabel="c$_m$(t) = −ds$_m$/dt (per timestep)", yscale="log",
            ylim=(1e-5, None), title="chromatogram per timestep (sampling runs right to left)")
    ax1.invert_xaxis()
    ax2.set(xlabel="log-SNR λ = ln(α²/σ²)", ylabel="signal fraction s$_m$ (of the level's power)",
            title="signal fraction per log-SNR (m² law)")
    ax1.legend(fontsize=8, title="level (block size)", title_fontsize=8)
    return fig


def save_strip(traj: Trajectory, to_rgb, path: str | Path, *, count: int = 10, scale: int = 2, **kwargs) -> Path:
    """Write :func:`strip_image` to a PNG, each pixel enlarged ``scale`` times."""
    from PIL import Image

    img = strip_image(traj, to_rgb, count=count, **kwargs)
    img = img.repeat(scale, axis=0).repeat(scale, axis=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)
    return path


Y_LIMIT = 2.5
"""The highest signal fraction a plot's y range grows to: a fraction above 1 (an overshoot) stays in view,
while the first steps' outliers (x̂0 still a blur, fractions of 5 or more) do not squeeze the rest."""

COMPARISON_CURVES = (
    ("predicted", "the run replayed from its noise (consistency check)", {"lw": 1.5, "ls": ":"}),
    ("ideal", "the model's ideal process", {"lw": 4, "alpha": 0.35}),
    ("spectrum_aware", "the latest each band can form for this spectrum", {"lw": 2}),
    ("m2_law", "m² law", {"lw": 1, "ls": "--"}),
)
"""Theory curves of a :class:`~chromaviz.analysis.Comparison` drawn as lines: (attribute, label, style).

A curve whose attribute a comparison lacks (or holds None) is skipped, so a new prediction is drawn
everywhere by adding one entry here. The styles are the explorer's and the run page's (dotted replay,
wide and pale ideal process)."""

EXPECTED_STYLE = {"lw": 1.5, "ls": "-."}
"""The expected chromatography's line (its ±2σ band is shaded in the level's colour)."""

FITTED = ("predicted", "spectrum_aware")
"""Curves that are fitted to the run where no data power is known (``Comparison.fitted``): their
legend says so."""


def chromatogram_figure(comparison: Comparison, *, title: str = ""):
    """Two panels over sampling steps: signal fraction per level, and signal generated per step.

    The expected chromatography E[G] (dash-dotted) with its ±2σ band (shaded in the level's colour,
    ``Comparison.expected`` / ``expected_std``) is the prediction the run is judged by; the panel's
    title gives the verdict (:attr:`~chromaviz.analysis.Comparison.agreement`). Lines are the curves of
    :data:`COMPARISON_CURVES` that the comparison has (dotted: the run replayed from its own noise, a
    consistency check; wide and pale: the model's ideal process, where its data can be drawn;
    solid: the spectrum-aware curve, the latest each band can form for this spectrum; dashed: the m²
    law; see docs/chromatography.md), dots the measurement G. The right panel differentiates the first of them.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    c = comparison
    steps = np.arange(len(c.timesteps))
    colours = level_colours(len(c.levels))
    fitted = bool(getattr(c, "fitted", False))  # no data power known: the curves are fitted to this run
    curves = [(getattr(c, name, None), label + (" (fitted to this run)" if fitted and name in FITTED else ""), style)
              for name, label, style in COMPARISON_CURVES]
    curves = [(np.asarray(v), label, style) for v, label, style in curves if v is not None]
    # A bare Figure (no pyplot): nothing global changes, so this is safe inside a live kernel.
    fig = Figure(figsize=(11.5, 5.0), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    band = getattr(c, "expected", None)
    spread = getattr(c, "expected_std", None)
    for j, m in enumerate(c.levels):
        if band is not None and spread is not None:  # the prediction the run can fail: E ± 2σ, shaded
            low, high = band[:, j] - BAND_SIGMAS * spread[:, j], band[:, j] + BAND_SIGMAS * spread[:, j]
            ax1.fill_between(steps, low, high, color=colours[j], alpha=0.18, lw=0)
            ax1.plot(steps, band[:, j], color=colours[j], **EXPECTED_STYLE)
        for values, _, style in curves:
            ax1.plot(steps, values[:, j], color=colours[j], **style)
        ax1.plot(steps, c.measured[:, j], "o", color=colours[j], ms=3)
        if curves:
            ax2.plot(steps[1:], np.diff(curves[0][0][:, j]), color=colours[j], lw=2)
        ax2.plot(steps[1:], np.diff(c.measured[:, j]), "o", color=colours[j], ms=3)
    kinds = [Line2D([], [], color="0.3", **style, label=label) for _, label, style in curves]
    if band is not None and spread is not None:
        from matplotlib.patches import Patch

        kinds[:0] = [Line2D([], [], color="0.3", **EXPECTED_STYLE, label="expected E[G] (this batch)"),
                     Patch(color="0.3", alpha=0.18, lw=0, label=f"E ± {BAND_SIGMAS:g}σ")]
    kinds.append(Line2D([], [], color="0.3", ls="none", marker="o", ms=3, label="measured G"))
    levels = [Line2D([], [], color=colours[j], lw=2, label=f"m={m}") for j, m in enumerate(c.levels)]
    fig.legend(handles=levels, loc="outside right upper", fontsize=8, title="level", title_fontsize=8)
    fig.legend(handles=kinds, loc="outside lower center", fontsize=8, ncols=min(4, len(kinds)))  # off the curves
    of = getattr(c, "normalisation", "")  # what a fraction is a fraction of, where the comparison says
    shown = [c.measured] + [values for values, _, _ in curves] + ([band] if band is not None else [])
    top = float(np.nanmax([np.nanmax(v) for v in shown if np.isfinite(v).any()] + [1.0]))
    ax1.set(xlabel=f"sampling step (0 = noisiest, of {len(steps)})",
            ylabel="signal fraction of level m" + (f" (of the {of})" if of else ""),
            ylim=(-0.02, max(1.0, min(Y_LIMIT, top)) + 0.05), title="signal fraction per level")
    agreement = getattr(c, "agreement", None)
    if agreement is not None and agreement.inside is not None:
        import textwrap

        ax1.set_title("signal fraction per level\n" + textwrap.fill(f"the run is {agreement.verdict}", 64), fontsize=8)
    ax2.set(xlabel="sampling step", ylabel="signal fraction generated in the step")
    ax2.set_title("chromatogram per step" + (f"\nlines: {curves[0][1]}" if curves else ""), fontsize=9)
    if title:
        fig.suptitle(title)
    return fig


def save_chromatogram(comparison: Comparison, path: str | Path, *, title: str = "",
                      formats: Sequence[str] = FIGURE_FORMATS) -> Path:
    """Write :func:`chromatogram_figure` as ``path`` (PNG) and beside it as SVG; returns the PNG path."""
    return save_figure(chromatogram_figure(comparison, title=title), path, formats=formats)


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
    from matplotlib.figure import Figure

    items = list(timings.items())
    if not items:
        raise ValueError("no schedules to draw")
    ncols = len(items) if ncols is None else max(1, min(ncols, len(items)))
    nrows = -(-len(items) // ncols)
    levels = items[0][1].levels
    colors = level_colours(len(levels))
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
