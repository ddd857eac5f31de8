"""Moved to :mod:`chromaviz.models.shapes.checker`; this old import path stays for one release."""

import sys
import warnings

from .models.shapes import checker as _moved

warnings.warn("chromaviz.shapes_checker moved to chromaviz.models.shapes.checker", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
