"""Moved to :mod:`chromaviz.apps.schedule_design`; this old import path stays for one release."""

import sys
import warnings

from .apps import schedule_design as _moved

warnings.warn("chromaviz.schedule_design moved to chromaviz.apps.schedule_design", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
