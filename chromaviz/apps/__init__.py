"""Applications built on the layers below (nothing below imports them): prompt composing by
resolution, upscaling with upsample guidance, and schedules designed from level births."""

from .composing import by_resolution
from .schedule_design import from_births
from .upscaling import UpsampleGuided, upscale

__all__ = ["UpsampleGuided", "by_resolution", "from_births", "upscale"]
