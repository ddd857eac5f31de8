"""Moved to :mod:`chromaviz.models.shapes.dataset`; this old import path stays for one release."""

import sys
import warnings

from .models.shapes import dataset as _moved

warnings.warn("chromaviz.shapes moved to chromaviz.models.shapes.dataset", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
