"""A finished run as one standalone HTML file whose scrubber works without a kernel.

The page embeds BokehJS inline (no network needed), every recorded step's images as PNG data URIs,
and the chromatography plot; a bokeh ``Slider`` with a ``CustomJS`` callback swaps the images and
moves the plot's cursor, and a Play toggle steps through the run.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
from bokeh.document import Document
from bokeh.embed import file_html
from bokeh.layouts import column, row
from bokeh.models import CustomJS, Div, Slider, Toggle
from bokeh.resources import INLINE

from chromaviz import analysis, spectral
from chromaviz.models import Denoiser
from chromaviz.sampling.trajectory import Trajectory

from .imaging import band_grid, band_grid_width, data_uri, display_scale, png_bytes, sample_rgb
from .plots import ChromatographyPlot

_FRAME_JS = """
const i = slider.value;
const img = (src, w) => `<img src="${src}" width="${w}" style="image-rendering:pixelated;margin:2px">`;
view.text = `<div style="display:flex;gap:8px;align-items:flex-start">
  <figure style="margin:0">${img(xt[i], size)}<figcaption>x<sub>t</sub></figcaption></figure>
  <figure style="margin:0">${img(x0[i], size)}<figcaption>x̂<sub>0</sub></figcaption></figure>
  <figure style="margin:0">${img(bands[i], band_width)}<figcaption>bands of x̂<sub>0</sub>, finest → coarsest (top: box pyramid, bottom: FFT rings)</figcaption></figure>
</div><p class="chromaviz-caption">${captions[i]}</p>`;
cursor.location = xs[i];
"""

_PLAY_JS = """
if (toggle.active) {
  toggle.label = "❚❚ Pause";
  window._chromaviz_timer = setInterval(() => {
    slider.value = slider.value >= slider.end ? 0 : slider.value + 1;
  }, 150);
} else {
  toggle.label = "▶ Play";
  clearInterval(window._chromaviz_timer);
}
"""


def export_html(traj: Trajectory, model: Denoiser, path: str | Path, *, method: str = "rings", sample: int = 0) -> Path:
    """Write ``traj`` as a standalone, kernel-free HTML page.

    Parameters
    ----------
    traj : Trajectory
        A run that recorded x_t and x̂0 (complete, cancelled or failed).
    model : Denoiser
        Supplies ``to_rgb`` and, where it has one, the exact spectrum for the theory.
    path : str or Path
        Output ``.html`` file.
    method : {"rings", "pyramid"}
        Band decomposition of the measured signal fractions.
    sample : int
        Which batch element's images to show.
    """
    if not traj.steps or traj.steps[0].x_t is None or traj.steps[0].x0 is None:
        raise ValueError("export needs a run that recorded x_t and x0")
    comparison = analysis.compare(traj, model, method=method)
    h, w = traj.steps[0].x0.shape[-2:]
    levels = comparison.levels

    plot = ChromatographyPlot(levels, runs=("run",), width=560, height=340)
    plot.set_theory(comparison.timesteps, comparison.log_snr, comparison.spectrum_aware, comparison.m2_law)
    plot.set_measured("run", comparison.timesteps, comparison.log_snr, comparison.measured)
    plot.cursor_at(0)

    xt = [data_uri(png_bytes(sample_rgb(s.x_t[sample], model.to_rgb))) for s in traj.steps]
    x0 = [data_uri(png_bytes(sample_rgb(s.x0[sample], model.to_rgb))) for s in traj.steps]
    grids = [band_grid(s.x0[sample], levels) for s in traj.steps]
    bands = [data_uri(png_bytes(g)) for g in grids]
    band_width = band_grid_width(grids[0], h)
    captions = [
        html.escape(f"step {s.index + 1}/{s.num_steps} · t = {s.timestep:.1f} · λ = {s.log_snr:+.2f} · "
                    f"prompt {'unconditional' if s.prompt is None else repr(s.prompt)}")
        for s in traj.steps
    ]
    steps = np.arange(len(traj.steps), dtype=float)

    slider = Slider(start=0, end=max(len(traj) - 1, 1), value=0, step=1, title="step", width=480,
                    disabled=len(traj) < 2, name="scrubber")
    view = Div(text="", width=900, name="frame")
    cursor_x = [float(v) for v in steps]
    args = dict(slider=slider, view=view, cursor=plot.cursor, xt=xt, x0=x0, bands=bands, captions=captions,
                xs=cursor_x, size=display_scale(h) * w, band_width=band_width)
    update = CustomJS(args=args, code=_FRAME_JS)
    slider.js_on_change("value", update)
    play = Toggle(label="▶ Play", active=False, width=100, name="play")
    play.js_on_change("active", CustomJS(args=dict(toggle=play, slider=slider), code=_PLAY_JS))

    m = traj.metadata
    title = Div(text=(
        f"<h2>chromaviz run: {html.escape(str(m.get('model', {}).get('name', model.name)))}</h2>"
        f"<p>{html.escape(str(m.get('scheduler_class', '')))} · {len(traj)} of {m.get('num_steps', len(traj))} steps · "
        f"seed {m.get('seed', '?')} · status {html.escape(traj.status)} · measured with {method} bands; theory from the "
        f"{comparison.power_source} spectrum (lines), m² law (dashed), measured (markers)</p>"
    ), width=900)
    doc = Document()
    doc.add_root(column(title, row(play, slider), view, plot.fig))
    doc.js_on_event("document_ready", update)  # the first frame is drawn by the same code as every other
    page = file_html(doc, resources=INLINE, title=f"chromaviz: {model.name}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path

