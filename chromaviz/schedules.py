"""Moved to :mod:`chromaviz.noise.schedules`; this old import path stays for one release."""

import sys
import warnings

from .noise import schedules as _moved

warnings.warn("chromaviz.schedules moved to chromaviz.noise.schedules", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
