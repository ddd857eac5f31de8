"""The one bokeh document that shows a run's frames: the live explorer and the exported page.

Layout: Play, the step scrubber and the x-axis choice on top; beneath, per run, x_t, x̂0, the caption
and the band images of x̂0, beside the chromatography plot with its cursor; the RAPSD below. Every
frame is a row of a ``ColumnDataSource`` (images as data URIs); scrubbing, Play and the x-axis
choice are ``CustomJS`` callbacks over the rows already in the browser, as in bokeh's gapminder
example, so they need no kernel. The live explorer streams new rows in as steps are recorded; the
export writes the same document to a standalone file.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from bokeh.layouts import column, row
from bokeh.models import ColumnDataSource, CustomJS, CustomJSTickFormatter, Div, RadioButtonGroup, Slider, Toggle

from chromaviz.analysis import Comparison
from chromaviz.views.frames import COORDINATES, Frame, encode_image

from .plots import COORDINATE_LABELS, ChromatographyPlot, RapsdPlot, finite

IMAGE_PX = 192
"""Display height of x_t and x̂0 in CSS pixels (images are sent at their own size and enlarged)."""
BAND_PX = 80
"""Display height of one band image."""

QUALITY = {"x_t": 50, "x0": 80, "bands": 60}
"""Lossy encoding quality (0–100) per image: x_t is mostly noise early on, and the bands are
stretched to their own range, so they take a lower quality than x̂0 for the same look."""

FRAME_COLUMNS = ("step", "timestep", "log_snr", "caption", "x_t", "x0", "bands", "px", "band_px", "f", "rapsd_x0", "rapsd_xt",
                 "floor")

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
const EMPTY = 'data:,';
const show = (img, uri, height) => {
  img.parentNode.style.display = uri === '' ? 'none' : '';
  if (img.__uri !== uri) { img.__uri = uri; img.src = uri === '' ? EMPTY : uri; }
  if (img.height !== height) img.height = height;
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
    panel.root.style.display = n === 0 ? 'none' : '';
    if (n === 0) continue;
    for (const [key, img] of panel.imgs) show(img, d[key][k], key === 'bands' ? d.band_px[k] : d.px[k]);
    if (panel.caption.textContent !== d.caption[k]) panel.caption.textContent = d.caption[k];
  }
  if (shown === null && n > 0) shown = [d, k];
}
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
const coord = coordinates[radio.active];
for (const src of sources) src.data = {...src.data, x: src.data[coord]};
axis.axis_label = labels[radio.active];
update.execute(radio);  // the cursor, in the new coordinate
"""

_PLAY_JS = """
if (toggle.active) {
  toggle.label = "❚❚ Pause";
  toggle.__timer = setInterval(() => {
    slider.value = slider.value >= slider.end || slider.disabled ? slider.start : slider.value + 1;
  }, interval);
} else {
  toggle.label = "▶ Play";
  clearInterval(toggle.__timer);
}
"""


def _figure(key: str, label: str) -> str:
    return (f'<figure style="margin:0 6px 0 0"><img data-key="{key}" alt="" decoding="sync" '
            f'style="image-rendering:pixelated;display:block"><figcaption style="font-size:13px">{label}</figcaption></figure>')


PANEL_HTML = (
    '<div class="chromaviz-frame" style="display:none">'
    f'<div style="display:flex;align-items:flex-start">{_figure("x_t", "x<sub>t</sub> (network input)")}'
    f'{_figure("x0", "x̂<sub>0</sub> (prediction)")}</div>'
    '<p class="chromaviz-caption" style="margin:2px 0 4px 0;font-size:14px"></p>'
    f'{_figure("bands", "bands of x̂<sub>0</sub>, finest → coarsest (top: box pyramid, when the size allows it; bottom: FFT rings)")}</div>'
)
"""A run's image panel, written once: the browser sets its images and caption at every scrub."""


def display_heights(frame: Frame) -> tuple[int, int]:
    """CSS heights of a frame's x̂0 and of its band grid: small images enlarged by a whole factor
    to about :data:`IMAGE_PX`, large ones shrunk to it; each band about :data:`BAND_PX` tall."""
    h = frame.x0.shape[0]
    px = h * (IMAGE_PX // h) if h <= IMAGE_PX else IMAGE_PX
    return px, int(round(frame.bands.shape[0] * BAND_PX / h))


def frame_rows(frames: Sequence[Frame], *, image_format: str = "webp", arrays: bool = True) -> dict[str, list]:
    """The ``ColumnDataSource`` columns of ``frames`` (one row per frame; images as data URIs, ""
    for an x_t the run did not record). Spectra are float32 arrays (compact in a page) or, with
    ``arrays=False``, lists of 7 significant digits (inline in one message, for streaming)."""
    def uri(rgb, key):
        return "" if rgb is None else encode_image(rgb, image_format, QUALITY[key])

    def spectrum(values):
        values = finite(values).astype(np.float32)
        return values if arrays else [float(f"{v:.7g}") for v in values.tolist()]

    heights = [display_heights(f) for f in frames]
    return {
        "px": [h[0] for h in heights],
        "band_px": [h[1] for h in heights],
        "step": [float(f.index) for f in frames],
        "timestep": [f.position("timestep") for f in frames],
        "log_snr": [f.position("log_snr") for f in frames],
        "caption": [f.caption for f in frames],
        "x_t": [uri(f.x_t, "x_t") for f in frames],
        "x0": [uri(f.x0, "x0") for f in frames],
        "bands": [uri(f.bands, "bands") for f in frames],
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
        Milliseconds between frames when playing.
    """

    def __init__(self, levels: Sequence[int], runs: Sequence[str] = ("A",), *,
                 image_format: str = "webp", interval: int = 150, plot_width: int = 540, plot_height: int = 400) -> None:
        self.levels = tuple(levels)
        self.runs = tuple(runs)
        self.image_format = image_format
        self.browser = None
        """The object that syncs this document with a live browser view (the explorer's
        ``jupyter_bokeh.BokehModel``): changes the browser makes itself are set with it as the
        setter, which it does not send back. None: every change is sent."""
        self.frames = {name: ColumnDataSource({c: [] for c in FRAME_COLUMNS}, name=f"frames-{name}") for name in self.runs}
        self.final = ColumnDataSource({"p": []}, name="final-rapsd")
        self.header = Div(text="", name="header", styles={"font-size": "14px"})
        self.titles = {name: Div(text=f"<b>run {name}</b>", name=f"title-{name}", styles={"font-size": "15px"}, width=500)
                       for name in self.runs}
        self.panels = {name: Div(text=PANEL_HTML, name=f"frame-{name}", width=500) for name in self.runs}
        self.chroma = ChromatographyPlot(self.levels, runs=self.runs, width=plot_width, height=plot_height)
        self.rapsd = RapsdPlot(width=plot_width, height=300)
        self.slider = Slider(start=0, end=1, value=0, step=1, title="step", width=520, disabled=True, name="scrubber",
                             css_classes=["chromaviz-scrubber"], format=CustomJSTickFormatter(code="return `${tick + 1}`"))
        self.play = Toggle(label="▶ Play", active=False, width=90, name="play")
        self.coordinate = RadioButtonGroup(labels=["step", "timestep t", "log-SNR λ"], active=0, name="coordinate")
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
            radio=self.coordinate, coordinates=list(COORDINATES), sources=[self.chroma.theory, *self.chroma.measured.values()],
            axis=self.chroma.fig.xaxis[0], labels=[COORDINATE_LABELS[c] for c in COORDINATES], slider=self.slider,
            update=self.update), code=_COORDINATE_JS))
        self.play.js_on_change("active", CustomJS(args=dict(toggle=self.play, slider=self.slider, interval=interval),
                                                  code=_PLAY_JS))
        images = column(*[column(self.titles[n], self.panels[n]) for n in self.runs])
        self.layout = column(
            self.header,
            row(self.play, self.slider, self.coordinate),
            row(images, column(self.chroma.fig, self.rapsd.fig)),
            name="chromaviz-run", css_classes=["chromaviz-run"],
        )

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
        self.final.data = {"p": []}
        self.rapsd.clear()
        # sent to the browser too: a new run starts at its first frame and follows the newest
        self.slider.update(value=0, end=1, disabled=True)

    def _fit_spectra(self, frames: Sequence[Frame]) -> None:
        self.rapsd.fit([f.freqs for f in frames], [p for f in frames for p in (f.rapsd_x0, f.rapsd_xt, f.noise_floor)])

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
                   expected: np.ndarray | None = None, expected_std: np.ndarray | None = None) -> None:
        """The theory curves over the planned steps (shapes (S,) and (S, L)), and the expected
        chromatography with its ±2σ band where given (shapes (S, L))."""
        self.chroma.set_theory(timesteps, log_snr, spectrum_aware, m2_law, coordinate=self.coordinate_name,
                               expected=expected, expected_std=expected_std)

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
