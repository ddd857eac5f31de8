"""Interactive Jupyter views over chromaviz (ipywidgets + bokeh, for JupyterLab 4).

Nothing scientific is computed here: every number shown comes from :mod:`chromaviz`.

- :class:`Explorer`: live sampling in a worker thread, timestep scrubbing, band images, the
  chromatography plot against theory, the RAPSD, prompt switches, two runs side by side.
- :func:`export_html` and :func:`run_page`: recorded runs as one standalone HTML page (a file, or
  the document as a string) whose scrubber works without a kernel: the explorer's own view.
"""

from __future__ import annotations

import importlib

_PUBLIC = {"Explorer": "explorer", "export_html": "export", "run_page": "export"}
__all__ = list(_PUBLIC)


def __getattr__(name: str):
    # The views are imported on first use, so the sampling side (``chromaviz.widgets.worker``) imports
    # without ipywidgets and bokeh, on a machine that has only the library's requirements.
    if name in _PUBLIC:
        from chromaviz._checks import require_extra

        require_extra("explorer", f"chromaviz.widgets.{name}")  # an ImportError saying what to install
        return getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
