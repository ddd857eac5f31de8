"""Moved to :mod:`chromaviz.notebook.report`; this old import path stays for one release."""

import sys
import warnings

from .notebook import report as _moved

warnings.warn("chromaviz.report moved to chromaviz.notebook.report", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
