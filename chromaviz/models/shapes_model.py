"""Moved to :mod:`chromaviz.models.shapes.model`; this old import path stays for one release."""

import sys
import warnings

from .shapes import model as _moved

warnings.warn("chromaviz.models.shapes_model moved to chromaviz.models.shapes.model", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
