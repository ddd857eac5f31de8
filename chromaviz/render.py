"""Moved to :mod:`chromaviz.views.figures`; this old import path stays for one release."""

import sys
import warnings

from .views import figures as _moved

warnings.warn("chromaviz.render moved to chromaviz.views.figures", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
