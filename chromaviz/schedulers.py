"""Moved to :mod:`chromaviz.noise.schedulers` (noise levels: :mod:`chromaviz.noise.plan`); this old
import path stays for one release."""

import warnings

from .noise.plan import NoiseLevel, noise_levels  # noqa: F401
from .noise.schedulers import *  # noqa: F401,F403
from .noise.schedulers import DEFAULT_IS_OWN_CLASS, FLOW_SCHEDULERS, SCHEDULERS  # noqa: F401

warnings.warn("chromaviz.schedulers moved to chromaviz.noise.schedulers", DeprecationWarning, stacklevel=2)
