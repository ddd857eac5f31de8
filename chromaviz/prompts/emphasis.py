"""Emphasis weights in prompt text: AUTOMATIC1111's ``(word:1.2)``, ``((word))`` and ``[word]``.

:func:`parse_emphasis` splits a prompt into ``(text, weight)`` fragments by the webui's documented
rule (``parse_prompt_attention`` in ``modules/prompt_parser.py`` of AUTOMATIC1111/stable-diffusion-webui):

- ``(text)`` multiplies the weight of ``text`` by 1.1, ``[text]`` divides it by 1.1; they nest,
  so ``((text))`` is 1.21;
- ``(text:w)`` multiplies it by ``w`` (a plain decimal number, whitespace allowed around it);
- ``\\(``, ``\\)``, ``\\[``, ``\\]`` and ``\\\\`` are the literal characters; any other backslash is
  dropped (so the prompt-editing escapes ``\\:`` and ``\\|`` reach the tokenizer as ``:`` and ``|``);
- a bracket that is never closed applies to the end of the text, one never opened is text;
- neighbouring fragments of equal weight are merged.

The fragments' text, joined, is what a text encoder is given: it no longer holds the syntax.
Weights are applied to the embeddings with the webui's arithmetic (``models/diffusers/weighting.py``),
or compel's where a model asks for it.
"""

from __future__ import annotations

import math
import re

from .boundary import _abbreviated

__all__ = ["parse_emphasis", "plain_text", "has_weights"]

_ATTENTION = re.compile(
    r"""
    \\\(|\\\)|\\\[|\\]|\\\\|\\|   # escapes, and a lone backslash
    \(|\[|                        # openers
    :\s*([+-]?[.\d]+)\s*\)|       # the end of (text:w)
    \)|]|                         # closers
    [^\\()\[\]:]+|                # text
    :                             # a colon that ends nothing
    """,
    re.X,
)

UP, DOWN = 1.1, 1 / 1.1


def parse_emphasis(text: str) -> list[tuple[str, float]]:
    """Split ``text`` into fragments with their emphasis weights (the webui's rule).

    Parameters
    ----------
    text : str
        One prompt, as a step of a run gives it (prompt-editing groups already resolved).

    Returns
    -------
    list of (str, float)
        Fragments in order; weight 1.0 where no emphasis applies. At least one entry
        (``[("", 1.0)]`` for empty text).

    Raises
    ------
    TypeError
        If ``text`` is not a str.

    Examples
    --------
    >>> parse_emphasis("a (red:1.5) car")
    [('a ', 1.0), ('red', 1.5), (' car', 1.0)]
    >>> [(t, round(w, 4)) for t, w in parse_emphasis("((house)) [on] \\\\(x\\\\)")]
    [('house', 1.21), (' ', 1.0), ('on', 0.9091), (' (x)', 1.0)]
    """
    if not isinstance(text, str):
        raise TypeError(f"a prompt must be a str, got {type(text).__name__}")
    res: list[list] = []
    round_open: list[int] = []
    square_open: list[int] = []

    def multiply(start: int, factor: float) -> None:
        for p in range(start, len(res)):
            res[p][1] *= factor

    for m in _ATTENTION.finditer(text):
        token, weight = m.group(0), m.group(1)
        if token.startswith("\\"):
            res.append([token[1:], 1.0])
        elif token == "(":
            round_open.append(len(res))
        elif token == "[":
            square_open.append(len(res))
        elif weight is not None and round_open and _is_number(weight):
            if not math.isfinite(float(weight)):
                raise ValueError(f"the emphasis weight {_abbreviated(weight)} is not a finite number; "
                                 "use a weight such as 1.2")
            multiply(round_open.pop(), float(weight))
        elif token == ")" and round_open:
            multiply(round_open.pop(), UP)
        elif token == "]" and square_open:
            multiply(square_open.pop(), DOWN)
        else:
            res.append([token, 1.0])
    for pos in round_open:
        multiply(pos, UP)
    for pos in square_open:
        multiply(pos, DOWN)
    merged: list[tuple[str, float]] = []
    for t, w in res:
        if merged and merged[-1][1] == w:
            merged[-1] = (merged[-1][0] + t, w)
        elif t or not merged:
            merged.append((t, w))
    return merged or [("", 1.0)]


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def plain_text(text: str) -> str:
    """``text`` without emphasis syntax: the fragments of :func:`parse_emphasis`, joined."""
    return "".join(t for t, _ in parse_emphasis(text))


def has_weights(text: str) -> bool:
    """Whether any fragment of ``text`` has a weight other than 1."""
    return any(w != 1.0 for _, w in parse_emphasis(text))
