"""bokeh figures of the explorer: chromatography against theory, and the radial power spectrum.

Each figure is driven through its ``ColumnDataSource`` objects only (update the source, not the
figure); the numbers come from :mod:`chromaviz`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from bokeh.models import ColumnDataSource, Legend, LegendItem, Range1d, Span
from bokeh.plotting import figure

from chromaviz.analysis import BAND_SIGMAS
from chromaviz.views.figures import level_colours

COORDINATE_LABELS = {
    "step": "sampling step",
    "timestep": "timestep t (noisy → clean)",
    "log_snr": "log-SNR λ",
}


def level_colors(n: int) -> list[str]:
    """``n`` colours from dark (finest level) to light (coarsest): the report's palette,
    :func:`chromaviz.views.figures.level_colours`."""
    return level_colours(n)


def finite(a) -> np.ndarray:
    """±∞ (pure noise, or clean data) cannot be drawn: NaN leaves a gap instead."""
    a = np.asarray(a, dtype=np.float64)
    return np.where(np.isfinite(a), a, np.nan)


def as_lists(columns: dict[str, np.ndarray]) -> dict[str, list]:
    """Columns as plain lists: sent to the browser inside one message, where each array would be a
    binary buffer of its own (two more messages each, in a live notebook)."""
    return {key: np.asarray(values).tolist() for key, values in columns.items()}


def _legible(fig) -> None:
    """Type sizes that stay readable when projected."""
    fig.title.text_font_size = "15px"
    for axis in (*fig.xaxis, *fig.yaxis):
        axis.axis_label_text_font_size = "14px"
        axis.major_label_text_font_size = "13px"


class ChromatographyPlot:
    """Signal fraction per level: the expected chromatography of run A with its ±2σ band (dash-dotted
    line, shaded; ``Comparison.expected``, or before the run :func:`chromaviz.analysis.planned_theory`),
    the latest each band can form (spectrum-aware, lines), m² law (dashed), measured runs (markers)
    and, where :func:`chromaviz.compare` has one, each run replayed from its own noise (dotted: a
    consistency check).

    Parameters
    ----------
    levels : sequence of int
        Block sizes m, finest first.
    runs : sequence of str
        Names of the measured series (e.g. ``("A", "B")``); the first uses circles, the next squares.
    """

    MARKERS = ("circle", "square", "triangle")

    def __init__(self, levels: Sequence[int], runs: Sequence[str] = ("A",), *, width: int = 520, height: int = 330) -> None:
        self.levels = tuple(levels)
        self.fig = figure(width=width, height=height, y_range=(-0.03, 1.05), tools="pan,wheel_zoom,reset,save",
                          title="chromatography: signal fraction per level", toolbar_location="above",
                          css_classes=["chromaviz-chromatography"])
        self.fig.yaxis.axis_label = "signal fraction"
        self.fig.xaxis.axis_label = COORDINATE_LABELS["step"]
        empty = {"x": [], "step": [], "timestep": [], "log_snr": []}
        # syncable=False: the browser changes these itself (the x column, when the x axis changes),
        # and the kernel needs none of it back; it sets every column whenever it draws
        self.theory = ColumnDataSource({**empty, **{f"{key}{j}": [] for key in ("sa", "m2", "e", "lo", "hi")
                                                    for j in range(len(levels))}},
                                       name="theory", syncable=False)
        self.measured = {name: ColumnDataSource({**empty, **{f"{key}{j}": [] for key in ("g", "p", "i")
                                                             for j in range(len(levels))}}, name=f"measured-{name}",
                                                syncable=False)
                         for name in runs}
        colors = level_colors(len(levels))
        items = []
        for j, (m, color) in enumerate(zip(levels, colors)):
            # the expected chromatography of the run and its ±2σ band: the prediction a run can fail
            self.fig.varea("x", f"lo{j}", f"hi{j}", source=self.theory, fill_color=color, fill_alpha=0.18)
            self.fig.line("x", f"e{j}", source=self.theory, color=color, line_width=1.5, line_dash="dashdot")
            line = self.fig.line("x", f"sa{j}", source=self.theory, color=color, line_width=2)
            self.fig.line("x", f"m2{j}", source=self.theory, color=color, line_width=1, line_dash="dashed")
            for k, (name, src) in enumerate(self.measured.items()):
                # With the theory on the primary layer, painted again only when the points change; the
                # cursor alone is on the overlay, which a scrub repaints: with the points there too, a
                # scrub at 200 steps took 20 ms to paint (p95, JupyterLab), with them here 11 ms.
                self.fig.scatter("x", f"g{j}", source=src, color=color, size=5, marker=self.MARKERS[k % 3], alpha=0.85)
                self.fig.line("x", f"p{j}", source=src, color=color, line_width=1.5, line_dash="dotted")
                self.fig.line("x", f"i{j}", source=src, color=color, line_width=5, line_alpha=0.3)
            items.append(LegendItem(label=f"m={m}", renderers=[line]))
        # keys: what each style is (grey stand-ins, drawn from no data)
        key = ColumnDataSource({"x": [np.nan], "y": [np.nan]})
        band = [self.fig.varea("x", "y", "y", source=key, fill_color="grey", fill_alpha=0.25),
                self.fig.line("x", "y", source=key, color="grey", line_width=1.5, line_dash="dashdot")]
        for label, renderers in (
            (f"expected ± {BAND_SIGMAS:g}σ", band),
            ("latest each band can form", [self.fig.line("x", "y", source=key, color="grey", line_width=2)]),
            ("m² law", [self.fig.line("x", "y", source=key, color="grey", line_width=1, line_dash="dashed")]),
            ("replay (consistency check)", [self.fig.line("x", "y", source=key, color="grey", line_width=1.5,
                                                          line_dash="dotted")]),
            ("ideal process (model on its data)", [self.fig.line("x", "y", source=key, color="grey", line_width=5,
                                                                 line_alpha=0.3)]),
            ("measured G", [self.fig.scatter("x", "y", source=key, color="grey", size=5)]),
        ):
            items.append(LegendItem(label=label, renderers=renderers))
        self.fig.add_layout(Legend(items=items, location="top_left", label_text_font_size="12px"), "right")
        _legible(self.fig)
        self.cursor = Span(location=0, dimension="height", line_color="crimson", line_width=2, line_alpha=0.7,
                           level="overlay", syncable=False)  # moved in the browser at every scrub: only the overlay repaints
        self.fig.add_layout(self.cursor)

    @staticmethod
    def _columns(timesteps, log_snr, coordinate: str, steps=None) -> dict[str, np.ndarray]:
        if coordinate not in COORDINATE_LABELS:
            raise ValueError(f"coordinate must be one of {list(COORDINATE_LABELS)}, got {coordinate!r}")
        steps = np.arange(len(timesteps)) if steps is None else steps
        cols = {"step": np.asarray(steps, dtype=np.float64), "timestep": np.asarray(timesteps, dtype=np.float64),
                "log_snr": finite(log_snr)}
        cols["x"] = cols[coordinate]
        return cols

    def set_theory(self, timesteps, log_snr, spectrum_aware: np.ndarray, m2_law: np.ndarray, *, coordinate: str = "step",
                   expected: np.ndarray | None = None, expected_std: np.ndarray | None = None) -> None:
        """Theory at every planned step (shapes (S,) and (S, L)), drawn against ``coordinate``; with
        ``expected`` and ``expected_std`` (S, L), the expected chromatography as a dash-dotted line in
        a shaded ±2σ band (None: none drawn)."""
        cols = self._columns(timesteps, log_snr, coordinate)
        cols.update({f"sa{j}": finite(spectrum_aware[:, j]) for j in range(len(self.levels))})
        cols.update({f"m2{j}": finite(m2_law[:, j]) for j in range(len(self.levels))})
        if expected is None or expected_std is None:
            expected = expected_std = np.full(np.shape(m2_law), np.nan)
        for j in range(len(self.levels)):
            cols[f"e{j}"] = finite(expected[:, j])
            cols[f"lo{j}"] = finite(expected[:, j] - BAND_SIGMAS * expected_std[:, j])
            cols[f"hi{j}"] = finite(expected[:, j] + BAND_SIGMAS * expected_std[:, j])
        self.theory.data = as_lists(cols)

    def set_measured(self, run: str, timesteps, log_snr, fractions: np.ndarray, *, predicted: np.ndarray | None = None,
                     ideal: np.ndarray | None = None, coordinate: str = "step", steps=None) -> None:
        """Measured G_b of the recorded steps of ``run`` (shapes (S',) and (S', L)), its replay from its
        own noise and the model's ideal process on its data (``Comparison.ideal``; each of shape (S', L),
        None draws none); ``steps`` (shape (S',)) are the steps' indices when they are not 0, 1, 2, …"""
        cols = self._columns(timesteps, log_snr, coordinate, steps)
        none = np.full(np.shape(fractions), np.nan)
        for key, values in (("g", fractions), ("p", none if predicted is None else predicted), ("i", none if ideal is None else ideal)):
            cols.update({f"{key}{j}": finite(values[:, j]) for j in range(len(self.levels))})
        self.measured[run].data = as_lists(cols)

    def clear_measured(self, run: str) -> None:
        self.set_measured(run, [], [], np.zeros((0, len(self.levels))))


class RapsdPlot:
    """Centred radial power spectra at the selected step against the noise floor 1/SNR (data units);
    the browser fills ``spectra`` and ``floor`` from the selected frame.

    The spectra and the floor are drawn on the overlay layer and the ranges are fixed
    (:meth:`fit`), so a scrub repaints four short lines, not the axes, grid and legend."""

    def __init__(self, *, width: int = 420, height: int = 330) -> None:
        self.fig = figure(width=width, height=height, x_axis_type="log", y_axis_type="log",
                          x_range=Range1d(0.01, 1), y_range=Range1d(1e-3, 10),
                          tools="pan,wheel_zoom,reset,save", toolbar_location="above",
                          title="RAPSD at the selected step (centred; white noise = 1)")
        self.fig.xaxis.axis_label = "frequency (cycles/pixel)"
        self.fig.yaxis.axis_label = "power"
        # filled in the browser from the selected frame: nothing to send back to the kernel
        self.spectra = ColumnDataSource({"f": [], "x0": [], "xt": [], "final": []}, name="rapsd", syncable=False)
        self.floor = ColumnDataSource({"f": [], "p": []}, syncable=False)
        styles = {"final": dict(color="grey", line_width=2), "xt": dict(color="#d95f02", line_width=1.5),
                  "x0": dict(color="#1b9e77", line_width=2.5), "p": dict(color="crimson", line_dash="dashed", line_width=2)}
        labels = {"final": "final sample", "xt": "x_t / α", "x0": "x̂0", "p": "noise floor 1/SNR"}
        no_data = ColumnDataSource({"f": [np.nan], **{key: [np.nan] for key in styles}})
        for key, style in styles.items():
            line = self.fig.line("f", key, source=self.floor if key == "p" else self.spectra, **style)
            line.level = "overlay"
            # The legend is painted with the plot's primary layer, once: it shows these stand-ins,
            # which draw nothing in the plot and always have a row to draw the legend's line from.
            self.fig.line("f", key, source=no_data, legend_label=labels[key], **style)
        self.fig.legend.location = "bottom_left"
        self.fig.legend.label_text_font_size = "12px"
        _legible(self.fig)
        self._fitted: set[str] = set()
        """The axes whose range :meth:`fit` has set since :meth:`clear`."""

    def fit(self, freqs: Sequence[np.ndarray], powers: Sequence[np.ndarray]) -> None:
        """Widen the axes' ranges to hold every positive, finite value of ``freqs`` and ``powers``
        (arrays of any shape), with a margin; after :meth:`clear`, the first values set them."""
        for axis, rng, arrays, margin in (("x", self.fig.x_range, freqs, 1.1), ("y", self.fig.y_range, powers, 2.0)):
            values = np.concatenate([np.ravel(np.asarray(a, dtype=np.float64)) for a in arrays] or [np.zeros(0)])
            values = values[np.isfinite(values) & (values > 0)]
            if not values.size:
                continue
            low, high = values.min() / margin, values.max() * margin
            if axis in self._fitted:
                low, high = min(rng.start, low), max(rng.end, high)
            if (low, high) != (rng.start, rng.end):
                rng.start, rng.end = low, high
            self._fitted.add(axis)

    def clear(self) -> None:
        """No spectra; the next :meth:`fit` sets the ranges afresh."""
        self.spectra.data = {"f": [], "x0": [], "xt": [], "final": []}
        self.floor.data = {"f": [], "p": []}
        self._fitted.clear()
