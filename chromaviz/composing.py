"""Moved to :mod:`chromaviz.apps.composing`; this old import path stays for one release."""

import sys
import warnings

from .apps import composing as _moved

warnings.warn("chromaviz.composing moved to chromaviz.apps.composing", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
