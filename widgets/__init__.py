"""Interactive Jupyter views over chromaviz (ipywidgets + bokeh, for JupyterLab 4).

Nothing scientific is computed here: every number shown comes from :mod:`chromaviz`.

- :class:`Explorer`: live sampling in a worker thread, timestep scrubbing, band images, the
  chromatography plot against theory, the RAPSD, prompt switches, two runs side by side.
- :func:`export_html` and :func:`run_page`: recorded runs as one standalone HTML page (a file, or
  the document as a string) whose scrubber works without a kernel: the explorer's own view.
"""

from .explorer import Explorer
from .export import export_html, run_page

__all__ = ["Explorer", "export_html", "run_page"]
