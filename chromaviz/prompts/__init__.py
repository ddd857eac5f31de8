"""The prompt language: prompt schedules as data and AUTOMATIC1111's text form of them.

Pure text and numbers (it imports numpy and :mod:`chromaviz.noise.levels`, never torch): which
prompt is active at each step (:class:`PromptSchedule`, its :class:`Segment` objects and the
:class:`Boundary` of each switch, in one of :data:`UNITS`), the prompt-editing syntax
(:mod:`~chromaviz.prompts.syntax`: ``[from:to:when]``, ``[a|b]``, ``AND``) and the emphasis syntax
a text encoder reads (:mod:`~chromaviz.prompts.emphasis`: ``(word:1.2)``). ``docs/prompts.md``
has the full grammar.
"""

from .boundary import PHYSICAL_UNITS, UNITS, Boundary
from .emphasis import has_weights, parse_emphasis, plain_text
from .schedule import PromptSchedule, PromptSwitchWarning, Segment
from .syntax import join_and, split_and

__all__ = [
    "PHYSICAL_UNITS", "UNITS", "Boundary", "PromptSchedule", "PromptSwitchWarning", "Segment", "has_weights", "join_and", "parse_emphasis",
    "plain_text", "split_and",
]
