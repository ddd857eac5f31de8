"""Moved to :mod:`chromaviz.models.shapes.train` (run it as ``python -m chromaviz.models.shapes.train``);
``python -m chromaviz.train`` and this old import path stay for one release."""

import sys
import warnings

from .models.shapes import train as _moved

if __name__ == "__main__":
    sys.exit(_moved.main())
warnings.warn("chromaviz.train moved to chromaviz.models.shapes.train", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
