"""Interactive Jupyter views over chromaviz (ipywidgets + bokeh).

Nothing scientific is computed here: every number shown comes from :mod:`chromaviz`.
"""
