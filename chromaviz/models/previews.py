"""Moved to :mod:`chromaviz.models.diffusers.previews`; this old import path stays for one release."""

import sys
import warnings

from .diffusers import previews as _moved

warnings.warn("chromaviz.models.previews moved to chromaviz.models.diffusers.previews", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
