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
    "step": "sampling step (1 = noisiest)",
    "timestep": "timestep t (noisy → clean)",
    "log_snr": "log-SNR λ (noisy → clean)",
}
"""x-axis labels. Every axis runs from noisy (left) to clean (right), as sampling does: the timestep
axis is drawn reversed (t falls as a run goes), so its label is true."""

FONT_PX = 16
"""Type size of ticks, axis labels and keys in CSS pixels: legible on a projector at 1280×800."""

HOW_TO_READ = (
    "How to read: each colour is one level m (block size in pixels, dark = finest, light = coarsest); a marker is "
    "how much of that level's final content x̂<sub>0</sub> already holds at that step (1 = formed), the shaded band "
    "is where the theory expects it (±{sigmas:g}σ), and coarse levels are expected to form first."
)
"""The one-sentence key under the chromatography plot (HTML)."""


def level_colors(n: int) -> list[str]:
    """``n`` colours from dark (finest level) to light (coarsest): the one palette of chromaviz,
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
    fig.title.text_font_size = f"{FONT_PX + 2}px"
    for axis in (*fig.xaxis, *fig.yaxis):
        axis.axis_label_text_font_size = f"{FONT_PX}px"
        axis.major_label_text_font_size = f"{FONT_PX}px"


def x_extent(coordinate: str, values) -> tuple[float, float] | None:
    """The x range (start, end) of finite ``values`` on axis ``coordinate`` with a 2% margin, noisy end
    first (reversed for timesteps, which fall as a run goes); None if there is no finite value."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not v.size:
        return None
    low, high = float(v.min()), float(v.max())
    pad = 0.02 * (high - low) or 0.5
    low, high = low - pad, high + pad
    return (high, low) if coordinate == "timestep" else (low, high)


class ChromatographyPlot:
    """Signal fraction per level: the expected chromatography of each run with its ±2σ band (dash-dotted
    line, shaded; ``Comparison.expected``, or before the run :func:`chromaviz.analysis.planned_theory`),
    the latest each band can form (spectrum-aware, lines), m² law (dashed), measured runs (markers)
    and, where :func:`chromaviz.compare` has one, each run replayed from its own noise (dotted: a
    consistency check). A second run's theory, where it differs (another scheduler or step count), is
    drawn in the same styles, paler.

    Parameters
    ----------
    levels : sequence of int
        Block sizes m, finest first.
    runs : sequence of str
        Names of the measured series (e.g. ``("A", "B")``); the first uses circles, the next squares.
    width, height : int
        Smallest width and the height in CSS pixels (the plot stretches to the width it is given).
    """

    MARKERS = ("circle", "square", "triangle")
    MARKER_NAMES = ("circles", "squares", "triangles")
    THEORY_KEYS = ("sa", "m2", "e", "lo", "hi")

    def __init__(self, levels: Sequence[int], runs: Sequence[str] = ("A",), *, width: int = 520, height: int = 330) -> None:
        self.levels = tuple(levels)
        self.runs = tuple(runs)
        self.fig = figure(min_width=width, height=height, sizing_mode="stretch_width", y_range=Range1d(-0.03, 1.05),
                          x_range=Range1d(0, 1), tools="pan,wheel_zoom,reset,save",
                          title="chromatography: signal fraction per level", toolbar_location="above",
                          css_classes=["chromaviz-chromatography"])
        self.fig.yaxis.axis_label = "signal fraction"
        self.fig.xaxis.axis_label = COORDINATE_LABELS["step"]
        self.coordinate = "step"
        """The x coordinate the kernel last drew in (the browser may have chosen another since)."""
        empty = {"x": [], "step": [], "timestep": [], "log_snr": []}
        # syncable=False: the browser changes these itself (the x column, when the x axis changes),
        # and the kernel needs none of it back; it sets every column whenever it draws
        self.theories = {name: ColumnDataSource({**empty, **{f"{key}{j}": [] for key in self.THEORY_KEYS
                                                             for j in range(len(levels))}},
                                                name="theory" if k == 0 else f"theory-{name}", syncable=False)
                         for k, name in enumerate(self.runs)}
        self.theory = self.theories[self.runs[0]]
        """The first run's theory (the others' are in :attr:`theories`)."""
        self.measured = {name: ColumnDataSource({**empty, **{f"{key}{j}": [] for key in ("g", "p", "i")
                                                             for j in range(len(levels))}}, name=f"measured-{name}",
                                                syncable=False)
                         for name in runs}
        colors = level_colors(len(levels))
        for j, color in enumerate(colors):
            for k, src in enumerate(self.theories.values()):
                alpha = 1.0 if k == 0 else 0.45  # a second run's theory: the same styles, paler
                if k == 0:  # the expected chromatography and its ±2σ band: the prediction a run can fail
                    self.fig.varea("x", f"lo{j}", f"hi{j}", source=src, fill_color=color, fill_alpha=0.15)
                self.fig.line("x", f"e{j}", source=src, color=color, line_width=2, line_dash="dashdot", line_alpha=alpha)
                self.fig.line("x", f"sa{j}", source=src, color=color, line_width=2.5, line_alpha=alpha)
                self.fig.line("x", f"m2{j}", source=src, color=color, line_width=1.5, line_dash="dashed", line_alpha=alpha)
            for k, (name, src) in enumerate(self.measured.items()):
                # With the theory on the primary layer, painted again only when the points change; the
                # cursor alone is on the overlay, which a scrub repaints: with the points there too, a
                # scrub at 200 steps took 20 ms to paint (p95, JupyterLab), with them here 11 ms.
                self.fig.scatter("x", f"g{j}", source=src, color=color, size=8, marker=self.MARKERS[k % 3], alpha=0.9,
                                 line_color="white" if k == 0 else color, fill_alpha=0.9 if k == 0 else 0.25)
                self.fig.line("x", f"p{j}", source=src, color=color, line_width=2, line_dash="dotted")
                self.fig.line("x", f"i{j}", source=src, color=color, line_width=6, line_alpha=0.3)
        # the key below the plot, off the curves and leaving the plot the width: levels, then styles
        self.fig.add_layout(Legend(items=self.key_items(colors), location="top_left", label_text_font_size=f"{FONT_PX}px",
                                   glyph_width=34, spacing=1, padding=4, margin=4, ncols=2, label_height=18,
                                   border_line_alpha=0), "below")
        _legible(self.fig)
        self.cursor = Span(location=0, dimension="height", line_color="#222222", line_width=2, line_alpha=0.8,
                           level="overlay", syncable=False)  # moved in the browser at every scrub: only the overlay repaints
        self.fig.add_layout(self.cursor)

    def key_items(self, colors: Sequence[str]) -> list[LegendItem]:
        """The plot's key: one entry per level (its colour), per line style, per band and per marker
        (grey stand-ins, drawn from no data)."""
        key = ColumnDataSource({"x": [np.nan], "y": [np.nan]})
        items = [LegendItem(label=f"m = {m}", renderers=[self.fig.line("x", "y", source=key, color=c, line_width=8)])
                 for m, c in zip(self.levels, colors)]
        grey = "#555555"
        styles = [
            (f"expected ± {BAND_SIGMAS:g}σ", [self.fig.varea("x", "y", "y", source=key, fill_color=grey, fill_alpha=0.25),
                                               self.fig.line("x", "y", source=key, color=grey, line_width=2,
                                                             line_dash="dashdot")]),
            ("latest each band can form", [self.fig.line("x", "y", source=key, color=grey, line_width=2.5)]),
            ("m² law", [self.fig.line("x", "y", source=key, color=grey, line_width=1.5, line_dash="dashed")]),
            ("replay (consistency check)", [self.fig.line("x", "y", source=key, color=grey, line_width=2,
                                                          line_dash="dotted")]),
            ("ideal process", [self.fig.line("x", "y", source=key, color=grey, line_width=6, line_alpha=0.3)]),
        ]
        for k, name in enumerate(self.runs):
            styles.append((f"measured, run {name}", [self.fig.scatter("x", "y", source=key, color=grey, size=8,
                                                                      marker=self.MARKERS[k % 3],
                                                                      fill_alpha=0.9 if k == 0 else 0.25)]))
        if len(self.runs) > 1:
            styles.append(("theory of run " + "/".join(self.runs[1:]) + " (paler)",
                           [self.fig.line("x", "y", source=key, color=grey, line_width=2.5, line_alpha=0.45)]))
        return items + [LegendItem(label=label, renderers=renderers) for label, renderers in styles]

    @staticmethod
    def _columns(timesteps, log_snr, coordinate: str, steps=None) -> dict[str, np.ndarray]:
        """x columns: the step number (1 = the first, noisiest step: as the scrubber and the captions
        count), timestep and log-SNR; ``x`` is ``coordinate``'s."""
        if coordinate not in COORDINATE_LABELS:
            raise ValueError(f"coordinate must be one of {list(COORDINATE_LABELS)}, got {coordinate!r}")
        steps = np.arange(len(timesteps)) if steps is None else np.asarray(steps)
        cols = {"step": np.asarray(steps, dtype=np.float64) + 1, "timestep": np.asarray(timesteps, dtype=np.float64),
                "log_snr": finite(log_snr)}
        cols["x"] = cols[coordinate]
        return cols

    def set_theory(self, timesteps, log_snr, spectrum_aware: np.ndarray, m2_law: np.ndarray, *, coordinate: str = "step",
                   expected: np.ndarray | None = None, expected_std: np.ndarray | None = None, run: str | None = None) -> None:
        """Theory of run ``run`` (default: the first) at every planned step (shapes (S,) and (S, L)),
        drawn against ``coordinate``; with ``expected`` and ``expected_std`` (S, L), the expected
        chromatography as a dash-dotted line in a shaded ±2σ band (None: none drawn)."""
        cols = self._columns(timesteps, log_snr, coordinate)
        cols.update({f"sa{j}": finite(spectrum_aware[:, j]) for j in range(len(self.levels))})
        cols.update({f"m2{j}": finite(m2_law[:, j]) for j in range(len(self.levels))})
        if expected is None or expected_std is None:
            expected = expected_std = np.full(np.shape(m2_law), np.nan)
        for j in range(len(self.levels)):
            cols[f"e{j}"] = finite(expected[:, j])
            cols[f"lo{j}"] = finite(expected[:, j] - BAND_SIGMAS * expected_std[:, j])
            cols[f"hi{j}"] = finite(expected[:, j] + BAND_SIGMAS * expected_std[:, j])
        self.theories[self.runs[0] if run is None else run].data = as_lists(cols)
        self.fit(coordinate)

    def clear_theory(self, run: str) -> None:
        """No theory drawn for run ``run`` (its theory is the first run's)."""
        self.theories[run].data = {key: [] for key in self.theories[run].data}
        self.fit()

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
        self.fit(coordinate)

    def clear_measured(self, run: str) -> None:
        self.set_measured(run, [], [], np.zeros((0, len(self.levels))))

    def fit(self, coordinate: str | None = None) -> None:
        """Fit the ranges to what is drawn: x over every run's theory and measurements in ``coordinate``
        (noisy end left), y from 0 to 1 or to the largest value drawn up to :data:`Y_LIMIT` (a measured
        fraction above 1, an overshoot, stays in view). The browser fits x the same way when the axis
        changes."""
        sources = [*self.theories.values(), *self.measured.values()]
        self.coordinate = coordinate = coordinate or self.coordinate
        extent = x_extent(coordinate, [v for s in sources for v in s.data.get(coordinate, [])])
        if extent is not None and (self.fig.x_range.start, self.fig.x_range.end) != extent:
            self.fig.x_range.update(start=extent[0], end=extent[1])
        values = np.asarray([v for s in sources for key, col in s.data.items() if key.rstrip("0123456789") in FRACTION_KEYS
                             for v in col], dtype=np.float64)
        top, bottom = np.nanmax(values, initial=1.0), np.nanmin(values, initial=0.0)
        start = min(-0.03, max(float(bottom), -Y_LIMIT + 1) - 0.03)
        end = max(1.05, min(float(top), Y_LIMIT) + 0.05)
        if (self.fig.y_range.start, self.fig.y_range.end) != (start, end):
            self.fig.y_range.update(start=start, end=end)


Y_LIMIT = 2.5
"""The highest signal fraction the y range grows to: a fraction above 1 (an overshoot) stays in view,
while the first steps' outliers (x̂0 still a blur, fractions of 5 or more) do not squeeze the rest."""

FRACTION_KEYS = ("g", "p", "i", "sa", "e", "lo", "hi")
"""Columns of signal fractions the y range holds (the m² law lies in [0, 1])."""


class RapsdPlot:
    """Centred radial power spectra at the selected step against the noise floor 1/SNR (data units);
    the browser fills ``spectra`` and ``floor`` from the selected frame.

    The spectra and the floor are drawn on the overlay layer and the ranges are fixed
    (:meth:`fit`), so a scrub repaints four short lines, not the axes, grid and legend."""

    def __init__(self, *, width: int = 420, height: int = 330) -> None:
        self.fig = figure(min_width=width, height=height, sizing_mode="stretch_width", x_axis_type="log", y_axis_type="log",
                          x_range=Range1d(0.01, 1), y_range=Range1d(1e-3, 10),
                          tools="pan,wheel_zoom,reset,save", toolbar_location="above",
                          title="RAPSD at the selected step (centred; white noise = 1)")
        self.fig.xaxis.axis_label = "frequency (cycles/pixel)"
        self.fig.yaxis.axis_label = "power"
        # filled in the browser from the selected frame: nothing to send back to the kernel
        self.spectra = ColumnDataSource({"f": [], "x0": [], "xt": [], "final": []}, name="rapsd", syncable=False)
        self.floor = ColumnDataSource({"f": [], "p": []}, syncable=False)
        styles = {"final": dict(color="#777777", line_width=3), "xt": dict(color="#d55e00", line_width=2),
                  "x0": dict(color="#0072b2", line_width=3), "p": dict(color="#222222", line_dash="dashed", line_width=2)}
        labels = {"final": "final sample", "xt": "x_t / α", "x0": "x̂0", "p": "noise floor 1/SNR"}
        no_data = ColumnDataSource({"f": [np.nan], **{key: [np.nan] for key in styles}})
        for key, style in styles.items():
            line = self.fig.line("f", key, source=self.floor if key == "p" else self.spectra, **style)
            line.level = "overlay"
            # The legend is painted with the plot's primary layer, once: it shows these stand-ins,
            # which draw nothing in the plot and always have a row to draw the legend's line from.
            self.fig.line("f", key, source=no_data, legend_label=labels[key], **style)
        # the key under the plot, never over the curves' low-frequency end
        legend = self.fig.legend[0]
        self.fig.center.remove(legend)
        self.fig.add_layout(legend, "below")
        legend.update(location="top_left", ncols=2, border_line_alpha=0, padding=4, margin=4, spacing=1)
        legend.label_text_font_size = f"{FONT_PX}px"
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
