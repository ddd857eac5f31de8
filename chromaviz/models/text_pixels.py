"""Moved to :mod:`chromaviz.models.diffusers.text_pixels`; this old import path stays for one release."""

import sys
import warnings

from .diffusers import text_pixels as _moved

warnings.warn("chromaviz.models.text_pixels moved to chromaviz.models.diffusers.text_pixels", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
