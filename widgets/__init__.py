"""Interactive Jupyter views over chromaviz (ipywidgets + bokeh, for JupyterLab 4).

Nothing scientific is computed here: every number shown comes from :mod:`chromaviz`.

- :class:`Explorer`: live sampling in a worker thread, timestep scrubbing, band images, the
  chromatography plot against theory, the RAPSD, prompt switches, two runs side by side.
- :func:`export_html`: a finished run as a standalone HTML page whose scrubber works without a kernel.
"""

from .explorer import Explorer
from .export import export_html

__all__ = ["Explorer", "export_html"]
