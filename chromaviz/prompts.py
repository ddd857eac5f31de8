"""Moved to :mod:`chromaviz.sampling.prompts`; this old import path stays for one release."""

import sys
import warnings

from .sampling import prompts as _moved

warnings.warn("chromaviz.prompts moved to chromaviz.sampling.prompts", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
