"""Runs as one standalone HTML page whose scrubber works without a kernel.

The page is the explorer's own document (:class:`chromaviz.widgets.document.RunDocument`): every recorded
step is a frame (x_t, x̂0 and the band images as lossy WebP data URIs at the sample's own size, the
centred RAPSD as numbers), the chromatography plot's numbers come from
:func:`chromaviz.analysis.compare`, and BokehJS is inlined, so the page needs no kernel and no
network. Two runs (A and B) share one scrubber.
"""

from __future__ import annotations

import base64
import gzip
import html
from contextlib import contextmanager
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from bokeh.document import Document
from bokeh.embed import file_html
from bokeh.embed.bundle import bundle_for_objs_and_resources
from bokeh.resources import INLINE

from chromaviz import analysis
from chromaviz.models import Denoiser
from chromaviz.sampling.trajectory import Trajectory
from chromaviz.views.frames import build_frames, rapsd

from .document import RunDocument

Runs = Trajectory | Mapping[str, Trajectory]


@contextmanager
def one_thread():
    """torch with one intra-op thread inside (restored after): frames are single small images, and
    idle OpenMP threads spin-waiting on a busy machine made them 8–20× slower with two."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _as_runs(runs: Runs) -> dict[str, Trajectory]:
    if isinstance(runs, Trajectory):
        runs = {"A": runs}
    if not isinstance(runs, Mapping) or not runs or not all(isinstance(t, Trajectory) for t in runs.values()):
        raise TypeError(f"runs must be a Trajectory or a mapping of run names to Trajectory objects, got {type(runs).__name__}")
    for name, traj in runs.items():
        if not traj.steps or traj.steps[0].x0 is None:
            raise ValueError(f"run {name} has no recorded x0: export needs a run that recorded x0 (and x_t to show it)")
    return dict(runs)


def describe(traj: Trajectory, comparison: analysis.Comparison) -> str:
    """One line about a run: scheduler, steps, seed, status, where the theory comes from, and whether it
    lies in its expected band (:attr:`~chromaviz.analysis.Comparison.agreement`)."""
    m = traj.metadata
    return html.escape(
        f"{m.get('scheduler_class', m.get('scheduler', ''))} · {len(traj)} of {m.get('num_steps', len(traj))} steps · "
        f"seed {m.get('seed', '?')} · {traj.status} · theory from the {comparison.power_source} spectrum · "
        f"{comparison.agreement.verdict}")


Comparisons = analysis.Comparison | Mapping[str, analysis.Comparison]


def _as_comparisons(comparison: Comparisons | None, runs: Mapping[str, Trajectory], method: str) -> dict[str, analysis.Comparison]:
    """The comparisons given for ``runs``, by run name (a single one is the first run's), checked to be theirs."""
    if comparison is None:
        return {}
    if isinstance(comparison, analysis.Comparison):
        comparison = {next(iter(runs)): comparison}
    if not isinstance(comparison, Mapping):
        raise TypeError(f"comparison must be a Comparison (of the first run) or a mapping of run names to Comparison "
                        f"objects, got {type(comparison).__name__}")
    given = dict(comparison)
    for name, found in given.items():
        if name not in runs:
            raise ValueError(f"comparison given for run {name!r}, but the runs are {list(runs)}")
        if not isinstance(found, analysis.Comparison):
            raise TypeError(f"comparison of run {name} must be a Comparison (chromaviz.compare), got {type(found).__name__}")
        if found.method != method:
            raise ValueError(f"comparison of run {name} was measured with {found.method} bands, but method={method!r}")
        if len(found.timesteps) != len(runs[name]):
            raise ValueError(f"comparison of run {name} has {len(found.timesteps)} steps, but the run has "
                             f"{len(runs[name])}: it is another run's")
    return given


def run_document(runs: Runs, model: Denoiser, *, method: str = "rings", sample: int = 0,
                 comparison: Comparisons | None = None) -> RunDocument:
    """The :class:`RunDocument` of recorded runs, every number from :func:`chromaviz.analysis.compare`.

    Parameters
    ----------
    runs : Trajectory or mapping of str to Trajectory
        One run, or runs by name (``{"A": a, "B": b}``), shown on one scrubber.
    model : Denoiser
        Supplies ``to_rgb`` and, where it has one, the exact spectrum for the theory.
    method : {"rings", "pyramid"}
        Band decomposition of the measured signal fractions.
    sample : int
        Which batch element's images to show.
    comparison : Comparison or mapping of str to Comparison, optional
        :func:`chromaviz.analysis.compare` of the runs, already computed (``method`` the same): of
        the first run, or by run name. The runs without one are compared here, once each, on the
        first run's levels.

    Raises
    ------
    TypeError, ValueError
        For anything but trajectories, a run without recorded x̂0, or a comparison that is not its
        run's (another method, another number of steps, or a name that is not a run's).
    """
    runs = _as_runs(runs)
    given = _as_comparisons(comparison, runs, method)
    first_name, first = next(iter(runs.items()))
    if first_name not in given:
        given[first_name] = analysis.compare(first, model, method=method)
    levels = given[first_name].levels
    doc = RunDocument(levels, runs=tuple(runs))
    doc.arrange(tuple(runs))
    for k, (name, traj) in enumerate(runs.items()):
        comparison = given[name] if name in given else analysis.compare(traj, model, method=method, levels=levels)
        if tuple(comparison.levels) != tuple(levels):
            raise ValueError(f"comparison of run {name} has levels {tuple(comparison.levels)}, the first run's are "
                             f"{tuple(levels)}; compare it with levels={tuple(levels)}")
        if k == 0 or differs(comparison, given[first_name]):  # a run with its own steps gets its own theory
            doc.set_theory(comparison.timesteps, comparison.log_snr, comparison.spectrum_aware, comparison.m2_law,
                           expected=comparison.expected, expected_std=comparison.expected_std, run=name)
        if k == 0:
            doc.set_final_rapsd(rapsd(traj.sample)[1])
        with one_thread():
            frames = build_frames(traj.steps, model.to_rgb, levels, sample=sample)
        doc.set_frames(name, frames)
        doc.set_comparison(name, comparison)
        doc.titles[name].text = f"<b>run {html.escape(name)}</b>: {describe(traj, comparison)}"
    title = str(first.metadata.get("model", {}).get("name", model.name))
    doc.set_header(f"chromaviz run: {title}", method, tuple(runs))
    return doc


def differs(a: analysis.Comparison, b: analysis.Comparison) -> bool:
    """Whether two runs' comparisons sit at other noise levels (another scheduler or number of
    steps), so that the second's theory is not the first's."""
    return len(a.timesteps) != len(b.timesteps) or not np.allclose(np.asarray(a.log_snr, dtype=float),
                                                                   np.asarray(b.log_snr, dtype=float), equal_nan=True)


_LOADER_JS = """
(async () => {
  const ready = new Promise((done) => document.readyState === "loading"
    ? document.addEventListener("DOMContentLoaded", done, {once: true}) : done());
  const run = (code) => { const s = document.createElement("script"); s.textContent = code; document.head.appendChild(s); };
  if (typeof DecompressionStream === "undefined") {
    await ready;
    document.body.prepend("This page needs a browser that can decompress its BokehJS (DecompressionStream: Chrome 80, Firefox 113, Safari 16.4 or later).");
    return;
  }
  await ready;
  const packed = Uint8Array.from(atob(document.getElementById("chromaviz-bokehjs").textContent.trim()), (c) => c.charCodeAt(0));
  run(await new Response(new Blob([packed]).stream().pipeThrough(new DecompressionStream("gzip"))).text());
  for (const s of document.querySelectorAll('script[type="text/x-chromaviz-after-bokehjs"]')) run(s.textContent);
})();
"""

PAGE_TEMPLATE = """
{% block js_resources %}
<script type="application/gzip;base64" id="chromaviz-bokehjs">{{ bokehjs_gzip }}</script>
<script>{{ loader }}</script>
{% endblock %}
{% block inner_body %}
{{ super() | replace('<script>', '<script type="text/x-chromaviz-after-bokehjs">') }}
{% endblock %}
"""
"""bokeh's standalone page with BokehJS gzip-compressed (about 0.45 MB instead of 1.65 MB): a small
loader decompresses it in the browser, then runs bokeh's own embedding code."""


def page(doc: RunDocument, title: str = "chromaviz run") -> str:
    """A complete standalone HTML document of ``doc``'s layout: BokehJS inside, gzip-compressed
    (:data:`PAGE_TEMPLATE`), so the page needs no network and no server."""
    if doc.layout.document is None:
        Document().add_root(doc.layout)
    if doc.update not in doc.layout.document.callbacks.js_event_callbacks.get("document_ready", []):
        doc.layout.document.js_on_event("document_ready", doc.update)  # the first frame: the same code as every other
    bokehjs = "\n;\n".join(bundle_for_objs_and_resources([doc.layout.document], INLINE).js_raw)
    packed = base64.b64encode(gzip.compress(bokehjs.encode("utf-8"), compresslevel=9, mtime=0)).decode("ascii")
    return file_html(doc.layout, resources=INLINE, title=title, template=PAGE_TEMPLATE,
                     template_variables={"bokehjs_gzip": packed, "loader": _LOADER_JS})


def run_page(runs: Runs, model: Denoiser, *, method: str = "rings", sample: int = 0,
             comparison: Comparisons | None = None) -> str:
    """A standalone HTML page of recorded runs, as a string (for embedding, e.g. in a report).

    Parameters and errors as :func:`run_document` (pass ``comparison=`` when the runs are already
    compared: the report does, so that its run is compared once); returns a complete HTML document
    whose scrubber, Play button and x-axis choice work without a kernel or network.
    """
    return page(run_document(runs, model, method=method, sample=sample, comparison=comparison),
                title=f"chromaviz: {model.name}")


def export_html(traj: Runs, model: Denoiser, path: str | Path, *, method: str = "rings", sample: int = 0,
                comparison: Comparisons | None = None) -> Path:
    """Write :func:`run_page` of ``traj`` (a Trajectory, or runs by name) to ``path``; returns the path.

    ``comparison``: as :func:`run_document`, the runs' comparisons where already computed."""
    text = run_page(traj, model, method=method, sample=sample, comparison=comparison)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
