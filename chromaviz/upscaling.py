"""Moved to :mod:`chromaviz.apps.upscaling`; this old import path stays for one release."""

import sys
import warnings

from .apps import upscaling as _moved

warnings.warn("chromaviz.upscaling moved to chromaviz.apps.upscaling", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
