"""pytest's view of the source tree: the library's docstring examples run as doctests
(``--doctest-modules``, see pyproject.toml), except in the deprecated alias modules at the old
import paths: they warn when imported, most replace themselves with the moved module, and they
hold no examples of their own."""

from __future__ import annotations

from pathlib import Path

ALIAS_MARK = " moved to chromaviz."
"""What the deprecation warning of every alias module says (``"chromaviz.x moved to chromaviz.y.x"``)."""


def pytest_ignore_collect(collection_path: Path, config) -> bool | None:
    if collection_path.suffix == ".py" and collection_path.name != "conftest.py" and "tests" not in collection_path.parts:
        if ALIAS_MARK in collection_path.read_text(encoding="utf-8"):
            return True
    return None
