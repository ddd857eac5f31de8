"""The one bokeh document that shows a run's frames: the live explorer and the exported page.

Layout: Play with its speed, the step scrubber and the x-axis choice; beneath, per run, x_t, x̂0,
the caption and the band images of x̂0 (each band labelled with its m), and where a run has one its
provenance per level; beside one run (below two, which stand side by side) the title and a line on
what is drawn (above the runs when there are two), the chromatography plot with its key and a
sentence on how to read it, and the RAPSD.
Every frame is a row of a ``ColumnDataSource`` (images as data URIs); scrubbing, the keys, Play and
the x-axis choice are ``CustomJS`` callbacks over the rows already in the browser, as in bokeh's
gapminder example, so they need no kernel. The live explorer streams new rows in as steps are
recorded; the export writes the same document to a standalone file.

Sizes are for a projector: text of at least 16 CSS pixels, x_t and x̂0 at least 256 pixels wide and
wider on a wider window (:data:`IMAGE_CSS`), plots that stretch to the width they are given.
"""

from __future__ import annotations

import html
from typing import Sequence

import numpy as np
from bokeh.layouts import column, row
from bokeh.models import ColumnDataSource, CustomJS, Div, RadioButtonGroup, Select, Slider, Toggle

from chromaviz.analysis import BAND_SIGMAS, Comparison
from chromaviz.views.frames import COORDINATES, Frame, encode_image, frame_map

from .plots import COORDINATE_LABELS, FONT_PX, HOW_TO_READ, ChromatographyPlot, RapsdPlot, finite, level_colors

IMAGE_CSS = "clamp(256px, 17vw, 480px)"
"""CSS width of x_t and x̂0: 256 pixels up to 1500 wide, a sixth of the window beyond (images are sent
at their own size and enlarged, unsmoothed)."""

TILE_CSS = "calc(0.32 * var(--chromaviz-image))"
"""Most CSS width of one band tile (82 pixels beside 256-pixel images): the bands of a run with few
levels stay short enough that x_t, x̂0 and every band fit a 1280×800 screen under the controls."""

PLOTS_MIN_PX = 500
"""Least width of the plots beside the runs: narrower, they go below the runs (where the width is theirs)."""

SPEEDS = ("2 steps/s", "5 steps/s", "10 steps/s", "20 steps/s", "40 steps/s")
"""Play's speeds."""

QUALITY = {"x_t": 50, "x0": 80, "bands": 60}
"""Lossy encoding quality (0–100) per image: x_t is mostly noise early on, and the bands are
stretched to their own range, so they take a lower quality than x̂0 for the same look."""

FRAME_COLUMNS = ("step", "timestep", "log_snr", "caption", "x_t", "x0", "bands", "f", "rapsd_x0", "rapsd_xt", "floor")

_FRAME_JS = """
// Draw the frame at the scrubber into each run's panel: set the sources of the panel's own <img>
// elements and its caption, move the cursor and swap the spectra. Nothing here asks bokeh for a new
// layout, and the cursor and spectra sit on the plots' overlay layer, so the rest stays painted.
const i = slider.value;
const coord = coordinates[radio.active];
const elements = (div) => {
  // The panels' DOM (in bokeh's shadow roots, possibly shown more than once), found once and kept.
  let found = div.__chromaviz_panels;
  if (found === undefined || found.length === 0 || !found.every((p) => p.root.isConnected)) {
    found = [];
    for (const view of (window.Bokeh?.index?.find(div) ?? [])) {
      const root = view.shadow_el?.querySelector('.chromaviz-frame');
      if (root != null)
        found.push({root, caption: root.querySelector('.chromaviz-caption'), imgs: ['x_t', 'x0', 'bands'].map(
          (key) => [key, root.querySelector(`img[data-key=${key}]`)])});
    }
    div.__chromaviz_panels = found;
  }
  return found;
};
// The scrubber's keys, the same in JupyterLab and in a page: Home and End, the arrows, PageUp and
// PageDown (a tenth of the run). Taken before the slider's own handler and before the notebook's
// shortcuts see them (JupyterLab's End moved the slider to step 2).
for (const view of (window.Bokeh?.index?.find(slider) ?? [])) {
  if (view.el.__chromaviz_keys) continue;
  view.el.__chromaviz_keys = true;
  view.el.addEventListener('keydown', (event) => {
    const m = view.model;
    const page = Math.max(1, Math.round((m.end - m.start) / 10));
    const to = {Home: m.start, End: m.end, ArrowLeft: m.value - 1, ArrowDown: m.value - 1, ArrowRight: m.value + 1,
                ArrowUp: m.value + 1, PageDown: m.value - page, PageUp: m.value + page}[event.key];
    if (to === undefined || m.disabled) return;
    event.preventDefault(); event.stopImmediatePropagation();
    const value = Math.min(m.end, Math.max(m.start, to));
    if (value !== m.value) m.value = value;
  }, true);
}
const EMPTY = 'data:,';
const show = (img, uri) => {
  img.parentNode.style.display = uri === '' ? 'none' : '';
  if (img.__uri !== uri) { img.__uri = uri; img.src = uri === '' ? EMPTY : uri; }
};
const load_all = (src) => {
  // Load every frame's images once they are here, and keep them: a scrub then shows images the page
  // holds loaded and decoded, instead of loading one between the key press and the paint.
  const d = src.data, n = d.caption.length;
  const kept = src.__chromaviz_loaded ??= [];
  kept.length = Math.min(kept.length, n);
  for (let k = 0; k < n; k++) {
    if (kept[k] !== undefined && kept[k].uri === d.x0[k]) continue;
    kept[k] = {uri: d.x0[k], images: ['x_t', 'x0', 'bands'].filter((key) => d[key][k] !== '').map((key) => {
      const img = new Image();
      img.src = d[key][k];
      img.decode().catch(() => null);
      return img;
    })};
  }
};
let shown = null;
for (const [src, div] of panels) {
  load_all(src);
  const d = src.data, n = d.caption.length, k = Math.min(i, n - 1);
  for (const panel of elements(div)) {
    panel.root.style.visibility = n === 0 ? 'hidden' : '';  // hidden, not removed: the layout keeps its width
    if (n === 0) continue;
    for (const [key, img] of panel.imgs) show(img, d[key][k]);
    if (panel.caption.textContent !== d.caption[k]) panel.caption.textContent = d.caption[k];
  }
  if (shown === null && n > 0) shown = [d, k];
}
// The scrubber's label says the step the caption says, set here with it (one numbering, never behind).
const count = Math.max(0, ...panels.map(([src]) => src.data.caption.length));
const label = count === 0 ? 'step' : `step ${Math.min(i, count - 1) + 1} of ${count}`;
if (slider.title !== label) slider.title = label;
if (shown !== null) {
  const [d, k] = shown;
  const x = d[coord][k];
  cursor.location = Number.isFinite(x) ? x : null;
  const f = d.f[k], fl = d.floor[k], n = d.caption.length;
  spectra.data = {f, x0: d.rapsd_x0[k], xt: d.rapsd_xt[k], final: final.data.p.length ? final.data.p : d.rapsd_x0[n - 1]};
  floor.data = {f: [f[0], f[f.length - 1]], p: [fl, fl]};
}
"""

_FOLLOW_JS = """
// Frames streamed in or replaced: fit the scrubber, and follow the newest frame if it sat on the last
// one. The browser decides, as only it knows where the user has put the scrubber just now.
const n = Math.max(...panels.map(([src]) => src.data.caption.length));
const following = slider.disabled || slider.value >= slider.end;  // disabled: fewer than two frames so far
const changes = {end: Math.max(n - 1, 1), disabled: n < 2};  // set together: one message to a kernel
if (following) changes.value = Math.max(n - 1, 0);
const moves = changes.value !== undefined && changes.value !== slider.value;
slider.setv(changes);
if (!moves) update.execute(slider);
"""

_COORDINATE_JS = """
// Another x axis: every curve's x column, the axis label, and the range fitted to the new x (noisy
// end on the left: timesteps fall as a run goes, so that axis is reversed).
const coord = coordinates[radio.active];
let low = Infinity, high = -Infinity;
for (const src of sources) {
  src.data = {...src.data, x: src.data[coord]};
  for (const v of src.data[coord]) if (Number.isFinite(v)) { low = Math.min(low, v); high = Math.max(high, v); }
}
if (low <= high) {
  const pad = 0.02 * (high - low) || 0.5;
  xrange.setv(coord === 'timestep' ? {start: high + pad, end: low - pad} : {start: low - pad, end: high + pad});
}
axis.axis_label = labels[radio.active];
update.execute(radio);  // the cursor, in the new coordinate
"""

_PLAY_JS = """
// Play moves the scrubber, at the speed chosen (read at every step, so it can change while playing).
const rate = () => parseFloat(speed.value) || 10;
clearTimeout(toggle.__timer);
if (toggle.active) {
  toggle.label = "❚❚ Pause";
  const tick = () => {
    if (!toggle.active) return;
    slider.value = slider.value >= slider.end || slider.disabled ? slider.start : slider.value + 1;
    toggle.__timer = setTimeout(tick, 1000 / rate());
  };
  tick();
} else {
  toggle.label = "▶ Play";
}
"""


def _figure(key: str, label: str, style: str) -> str:
    return (f'<figure style="margin:0"><img data-key="{key}" alt="{html.escape(key)}" decoding="sync" '
            f'style="image-rendering:pixelated;display:block;{style}"><figcaption>{label}</figcaption></figure>')


def panel_html(levels: Sequence[int]) -> str:
    """A run's image panel, written once: the browser sets its images and caption at every scrub.
    The band images carry their m (in the level's colour, as in the plot) above each tile."""
    labels = "".join(f'<span style="flex:1;text-align:center;white-space:nowrap"><b style="color:{c}">■</b> m = {m}</span>'
                     for m, c in zip(levels, level_colors(len(levels))))
    return (
        f'<div class="chromaviz-frame" style="visibility:hidden;--chromaviz-image:{IMAGE_CSS};font-size:{FONT_PX}px;'
        'line-height:1.3">'
        '<div style="display:flex;gap:8px;align-items:flex-start">'
        f'{_figure("x_t", "x<sub>t</sub> (network input)", "width:var(--chromaviz-image);height:auto;aspect-ratio:auto 1")}'
        f'{_figure("x0", "x̂<sub>0</sub> (prediction)", "width:var(--chromaviz-image);height:auto;aspect-ratio:auto 1")}</div>'
        '<p class="chromaviz-caption" style="margin:4px 0 6px 0;max-width:calc(2 * var(--chromaviz-image) + 8px)"></p>'
        '<figure class="chromaviz-bands" style="margin:0;width:min(calc(2 * var(--chromaviz-image) + 8px), '
        f'calc({len(levels)} * {TILE_CSS}))">'
        f'<div class="chromaviz-band-labels" style="display:flex;font-size:{FONT_PX}px">{labels}</div>'
        '<img data-key="bands" alt="bands" decoding="sync" style="image-rendering:pixelated;display:block;width:100%;'
        'height:auto"><figcaption>bands of x̂<sub>0</sub> by block size m, finest → coarsest (top row: box pyramid, '
        'when the size allows it; bottom row: FFT rings)</figcaption></figure></div>'
    )


def provenance_html(levels: Sequence[int], weight_a, weight_b, *, crossover: float | None = None,
                    names: tuple[str, str] = ("A", "B")) -> str:
    """A small table of where each band of a composed run came from: per level (coarsest first), the
    least-squares weights of the band on the prompt-A-only and prompt-B-only runs
    (:func:`chromaviz.apps.composing.band_provenance`), each with a bar."""
    colours = level_colors(len(levels))

    def bar(w: float, colour: str) -> str:
        width = max(0.0, min(1.0, w)) * 60
        return (f'<td style="text-align:right;padding:0 4px">{w:+.2f}</td><td style="width:62px"><div style="height:10px;'
                f'width:{width:.0f}px;background:{colour}"></div></td>')

    rows = "".join(f'<tr><td style="padding:0 6px 0 0;white-space:nowrap"><b style="color:{colours[j]}">■</b> m = {levels[j]}</td>'
                   f'{bar(float(weight_a[j]), "#0072b2")}{bar(float(weight_b[j]), "#d55e00")}</tr>'
                   for j in reversed(range(len(levels))))
    note = "" if crossover is None or not np.isfinite(crossover) else f" · A and B cross over at m ≈ {crossover:.3g}"
    return (f'<div class="chromaviz-provenance" style="font-size:{FONT_PX}px;margin-top:6px">'
            f'<b>where each band came from</b> (weight of the band on the prompt-{names[0]}-only and '
            f'prompt-{names[1]}-only runs; 1 = all of it){html.escape(note)}'
            f'<table style="border-collapse:collapse;margin-top:2px"><tr><th style="text-align:left">level</th>'
            f'<th colspan="2" style="color:#0072b2">from {names[0]}</th><th colspan="2" style="color:#d55e00">'
            f'from {names[1]}</th></tr>{rows}</table></div>')


def header_html(title: str, method: str, first: str, runs: Sequence[str] = ("A",)) -> str:
    """The page's title and what is drawn (the same line in the explorer and its exported page)."""
    both = " and ".join(f"run {r}" for r in runs)
    return (f"<h2 style='margin:2px 0;font-size:22px'>{html.escape(title)}</h2>"
            f"{html.escape(both)}, measured with {html.escape(method)} bands (markers), against the expected "
            f"chromatography of run {html.escape(first)} with its ±{BAND_SIGMAS:g}σ band; the key under the "
            "plot names every colour, line and marker.")


def frame_rows(frames: Sequence[Frame], *, image_format: str = "webp", arrays: bool = True) -> dict[str, list]:
    """The ``ColumnDataSource`` columns of ``frames`` (one row per frame; images as data URIs, ""
    for an x_t the run did not record). Spectra are float32 arrays (compact in a page) or, with
    ``arrays=False``, lists of 7 significant digits (inline in one message, for streaming)."""
    def uri(rgb, key):
        return "" if rgb is None else encode_image(rgb, image_format, QUALITY[key])

    def spectrum(values):
        values = finite(values).astype(np.float32)
        return values if arrays else [float(f"{v:.7g}") for v in values.tolist()]

    images = frame_map(lambda f: [uri(f.x_t, "x_t"), uri(f.x0, "x0"), uri(f.bands, "bands")], list(frames))
    return {
        "step": [f.position("step") for f in frames],
        "timestep": [f.position("timestep") for f in frames],
        "log_snr": [f.position("log_snr") for f in frames],
        "caption": [f.caption for f in frames],
        "x_t": [row[0] for row in images],
        "x0": [row[1] for row in images],
        "bands": [row[2] for row in images],
        "f": [spectrum(f.freqs) for f in frames],
        "rapsd_x0": [spectrum(f.rapsd_x0) for f in frames],
        "rapsd_xt": [spectrum(f.rapsd_xt) for f in frames],
        "floor": [f.noise_floor for f in frames],
    }


class RunDocument:
    """Frames of one or two runs on one scrubber, with the chromatography plot and the RAPSD.

    Parameters
    ----------
    levels : sequence of int
        Block sizes m, finest first (the plot's levels).
    runs : sequence of str
        Run names (``("A",)`` or ``("A", "B")``); each gets an image panel and a marker series.
    image_format : {"webp", "png", "jpeg"}
        How frames are encoded (lossy WebP by default: about 1–4 kB per 64×64 image).
    interval : int
        Milliseconds between frames when playing at first (Play's speed control changes it).
    plot_width, plot_height : int
        Smallest width and the height of the chromatography plot in CSS pixels (it stretches to
        the width it is given).
    """

    def __init__(self, levels: Sequence[int], runs: Sequence[str] = ("A",), *,
                 image_format: str = "webp", interval: int = 100, plot_width: int = 480, plot_height: int = 560) -> None:
        self.levels = tuple(levels)
        self.runs = tuple(runs)
        self.image_format = image_format
        self.browser = None
        """The object that syncs this document with a live browser view (the explorer's
        ``jupyter_bokeh.BokehModel``): changes the browser makes itself are set with it as the
        setter, which it does not send back. None: every change is sent."""
        text = {"font-size": f"{FONT_PX}px"}
        self.frames = {name: ColumnDataSource({c: [] for c in FRAME_COLUMNS}, name=f"frames-{name}") for name in self.runs}
        self.final = ColumnDataSource({"p": []}, name="final-rapsd")
        self.header = Div(text="", name="header", styles=text, sizing_mode="stretch_width", css_classes=["chromaviz-header"])
        panel_wide = {**text, "max-width": f"calc(2 * {IMAGE_CSS} + 8px)"}  # a long title wraps within its panel
        self.titles = {name: Div(text=f"<b>run {name}</b>", name=f"title-{name}", styles=panel_wide,
                                 css_classes=["chromaviz-title"]) for name in self.runs}
        self.panels = {name: Div(text=panel_html(self.levels), name=f"frame-{name}") for name in self.runs}
        self.provenance = {name: Div(text="", name=f"provenance-{name}", visible=False, styles=panel_wide)
                           for name in self.runs}
        self.chroma = ChromatographyPlot(self.levels, runs=self.runs, width=plot_width, height=plot_height)
        self.how_to_read = Div(text=HOW_TO_READ.format(sigmas=BAND_SIGMAS), name="how-to-read", sizing_mode="stretch_width",
                               styles={**text, "max-width": "900px"}, css_classes=["chromaviz-how-to-read"])
        self.rapsd = RapsdPlot(width=plot_width, height=400)
        self.slider = Slider(start=0, end=1, value=0, step=1, title="step", show_value=False,
                             min_width=300, sizing_mode="stretch_width", disabled=True, name="scrubber",
                             css_classes=["chromaviz-scrubber"], styles=text)
        self.play = Toggle(label="▶ Play", active=False, width=110, name="play", styles=text)
        self.speed = Select(options=list(SPEEDS), value=_nearest_speed(interval), width=140, name="speed",
                            title="", styles=text, css_classes=["chromaviz-speed"])
        self.coordinate = RadioButtonGroup(labels=["step", "timestep t", "log-SNR λ"], active=0, name="coordinate",
                                           styles=text)
        panels = [[self.frames[n], self.panels[n]] for n in self.runs]
        self.update = CustomJS(name="show-frame", args=dict(
            slider=self.slider, radio=self.coordinate, coordinates=list(COORDINATES), panels=panels,
            cursor=self.chroma.cursor, spectra=self.rapsd.spectra, floor=self.rapsd.floor, final=self.final,
        ), code=_FRAME_JS)
        self.slider.js_on_change("value", self.update)
        follow = CustomJS(args=dict(slider=self.slider, panels=panels, update=self.update), code=_FOLLOW_JS)
        for src in self.frames.values():
            src.js_on_change("data", follow)
            src.js_on_change("streaming", follow)
        self.coordinate.js_on_change("active", CustomJS(args=dict(
            radio=self.coordinate, coordinates=list(COORDINATES),
            sources=[*self.chroma.theories.values(), *self.chroma.measured.values()],
            axis=self.chroma.fig.xaxis[0], xrange=self.chroma.fig.x_range, labels=[COORDINATE_LABELS[c] for c in COORDINATES],
            update=self.update), code=_COORDINATE_JS))
        self.play.js_on_change("active", CustomJS(args=dict(toggle=self.play, slider=self.slider, speed=self.speed),
                                                  code=_PLAY_JS))
        self.run_columns = {n: column(self.titles[n], self.panels[n], self.provenance[n], name=f"run-{n}") for n in self.runs}
        self.plots = column(self.header, self.chroma.fig, self.how_to_read, self.rapsd.fig, sizing_mode="stretch_width",
                            name="plots", styles={"min-width": f"{PLOTS_MIN_PX}px", "flex": f"1 1 {PLOTS_MIN_PX}px"})
        # the plots stand beside the runs where the width allows, else below them (wrapped, as text is)
        self.main = row(sizing_mode="stretch_width", name="main", styles={"flex-wrap": "wrap", "gap": "12px 16px"})
        self._nothing_below = Div(text="", visible=False)  # a layout with no children is a bokeh warning
        self.below = row(self._nothing_below, sizing_mode="stretch_width", name="below")
        self.layout = column(
            row(self.play, self.speed, self.slider, self.coordinate, sizing_mode="stretch_width", styles={"gap": "10px"}),
            self.main, self.below,
            name="chromaviz-run", css_classes=["chromaviz-run"], sizing_mode="stretch_width",
            styles={"--bokeh-font-size": f"{FONT_PX}px"},
        )
        self.arrange(self.runs[:1])

    def arrange(self, shown: Sequence[str]) -> None:
        """Lay out the runs ``shown``: one run beside its plots, the header above the plot (the run's
        images and bands then start at the top, under the scrubber); two side by side, the plots
        below them (the plot then spans the page's width) and the header above everything."""
        shown = [n for n in self.runs if n in shown] or list(self.runs[:1])
        for name in self.runs:
            self.titles[name].visible = name in shown
        beside = [self.header] if len(shown) == 1 else []
        plots = [*beside, self.chroma.fig, self.how_to_read, self.rapsd.fig]
        if list(self.plots.children) != plots:
            self.plots.children = plots
        layout = [*([] if beside else [self.header]), *[c for c in self.layout.children if c is not self.header]]
        if list(self.layout.children) != layout:
            self.layout.children = layout
        columns = [self.run_columns[n] for n in shown]
        main, below = columns + [self.plots], [self._nothing_below]
        if list(self.main.children) != main:
            self.main.children = main
        if list(self.below.children) != below:
            self.below.children = below

    def set_header(self, title: str, method: str, runs: Sequence[str] | None = None) -> None:
        """The title and the line on what is drawn (:func:`header_html`), for ``runs`` (default: all)."""
        runs = list(self.runs if runs is None else runs)
        self.header.text = header_html(title, method, runs[0], runs)

    def set_provenance(self, run: str, provenance=None, names: tuple[str, str] = ("A", "B")) -> None:
        """Show where each band of run ``run`` came from: a :class:`chromaviz.apps.composing.Provenance`
        of its final sample against the prompt-A-only and prompt-B-only runs (None: hide it)."""
        div = self.provenance[run]
        if provenance is None:
            div.visible = False
            return
        if tuple(provenance.levels) != self.levels:
            raise ValueError(f"the provenance has levels {tuple(provenance.levels)}, the document {self.levels}")
        try:
            crossover = float(provenance.crossover())
        except (ValueError, ArithmeticError):
            crossover = None
        div.text = provenance_html(self.levels, provenance.weight_a, provenance.weight_b, crossover=crossover, names=names)
        div.visible = True

    # ------------------------------------------------------------------ state (kernel side)
    @property
    def coordinate_name(self) -> str:
        """The x axis chosen in the browser: "step", "timestep" or "log_snr"."""
        return COORDINATES[self.coordinate.active]

    def __len__(self) -> int:
        """Frames on the scrubber: the most of any run."""
        return max(map(self.count, self.runs), default=0)

    def count(self, run: str) -> int:
        """Frames of run ``run`` on the scrubber."""
        return len(self.frames[run].data["caption"])

    def set_frames(self, run: str, frames: Sequence[Frame], *, follow: bool = False, arrays: bool = True) -> None:
        """Replace run ``run``'s frames; the scrubber moves to the newest frame if ``follow``.
        ``arrays``: spectra as arrays (compact in a page) or lists (one message to a live view)."""
        self.frames[run].data = frame_rows(frames, image_format=self.image_format, arrays=arrays)
        self._fit_spectra(frames)
        self._fit_slider(follow)

    def append_frames(self, run: str, frames: Sequence[Frame], *, follow: bool | None = None) -> None:
        """Append frames to run ``run`` (streamed to the browser). The scrubber follows the newest
        frame if it sat on the last one (or if ``follow``)."""
        if not frames:
            return
        if follow is None:
            follow = self.slider.value >= len(self) - 1
        self._fit_spectra(frames)
        self.frames[run].stream(frame_rows(frames, image_format=self.image_format, arrays=False))
        self._fit_slider(follow)

    def clear(self) -> None:
        """Remove every run's frames and measured points (the theory stays)."""
        for name in self.runs:
            self.frames[name].data = {c: [] for c in FRAME_COLUMNS}
            self.chroma.clear_measured(name)
            self.provenance[name].visible = False
        self.final.data = {"p": []}
        self.rapsd.clear()
        # sent to the browser too: a new run starts at its first frame and follows the newest
        self.slider.update(value=0, end=1, disabled=True)

    def _fit_spectra(self, frames: Sequence[Frame]) -> None:
        """The RAPSD's ranges hold the spectra of x̂0 (the noise of x_t and its floor rise out of
        the top early in a run, rather than squeeze the curves of interest to the bottom)."""
        self.rapsd.fit([f.freqs for f in frames], [f.rapsd_x0 for f in frames])

    def _fit_slider(self, follow: bool) -> None:
        """Fit the scrubber to the frames. A live browser does the same by itself when frames
        arrive (``_FOLLOW_JS``), so it is not sent these changes (they could overtake what the user
        did there in the meantime)."""
        n = len(self)
        last = max(n - 1, 0)
        changes = {"end": max(n - 1, 1), "disabled": n < 2}  # bokeh sliders need end > start
        if follow or self.slider.value > last:
            changes["value"] = last
        for name, value in changes.items():
            if getattr(self.slider, name) != value:
                self.slider.lookup(name).__set__(self.slider, value, setter=self.browser)

    def show(self, step: int) -> None:
        """Move the scrubber to ``step`` (the browser draws the frame)."""
        self.slider.value = step

    def set_theory(self, timesteps, log_snr, spectrum_aware: np.ndarray, m2_law: np.ndarray, *,
                   expected: np.ndarray | None = None, expected_std: np.ndarray | None = None, run: str | None = None) -> None:
        """The theory curves of run ``run`` (default: the first) over its planned steps (shapes (S,) and
        (S, L)), and the expected chromatography with its ±2σ band where given (shapes (S, L))."""
        self.chroma.set_theory(timesteps, log_snr, spectrum_aware, m2_law, coordinate=self.coordinate_name,
                               expected=expected, expected_std=expected_std, run=run)

    def clear_theory(self, run: str) -> None:
        """Draw no theory of its own for run ``run`` (it is the first run's)."""
        self.chroma.clear_theory(run)

    def set_comparison(self, run: str, comparison: Comparison, steps: Sequence[int] | None = None) -> None:
        """Measured signal fractions of run ``run`` (markers) and its prediction as sampled (dotted), from
        its :class:`Comparison` of the run's steps (or of the steps ``steps``, by index)."""
        self.chroma.set_measured(run, comparison.timesteps, comparison.log_snr, comparison.measured,
                                 predicted=comparison.predicted, ideal=comparison.ideal,
                                 coordinate=self.coordinate_name, steps=steps)

    def set_final_rapsd(self, power: np.ndarray | None) -> None:
        """The spectrum of the run's sample, drawn in grey (None: the newest x̂0's)."""
        self.final.data = {"p": [] if power is None else finite(power).tolist()}
        if power is not None:
            self.rapsd.fit([], [power])


def _nearest_speed(interval: int) -> str:
    """The speed of :data:`SPEEDS` closest to one frame every ``interval`` milliseconds."""
    rate = 1000 / max(int(interval), 1)
    return min(SPEEDS, key=lambda s: abs(float(s.split()[0]) - rate))
