"""Moved to :mod:`chromaviz.models.diffusers.adapter`; this old import path stays for one release."""

import sys
import warnings

from .diffusers import adapter as _moved

warnings.warn("chromaviz.models.diffusers_adapter moved to chromaviz.models.diffusers.adapter", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
