"""Moved to :mod:`chromaviz.models.shapes.tokenizer`; this old import path stays for one release."""

import sys
import warnings

from .shapes import tokenizer as _moved

warnings.warn("chromaviz.models.tokenizer moved to chromaviz.models.shapes.tokenizer", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
