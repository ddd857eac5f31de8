"""Notebook tooling: recorded figures, report parameters and the report runner (``report.ipynb``
ships here as package data)."""
