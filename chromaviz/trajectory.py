"""Moved to :mod:`chromaviz.sampling.trajectory`; this old import path stays for one release."""

import sys
import warnings

from .sampling import trajectory as _moved

warnings.warn("chromaviz.trajectory moved to chromaviz.sampling.trajectory", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
