"""The text form of a prompt schedule: AUTOMATIC1111's prompt-editing language.

:meth:`chromaviz.prompts.PromptSchedule.parse` reads AUTOMATIC1111's prompt language (webui ≥ 1.6); the full
grammar, with every difference from the webui, is in ``docs/prompts.md``::

    "a photo of a [cat:dog:0.6] on grass"     # cat, then dog after 60 % of the steps
    "a photo of a [cat:dog:12] on grass"      # cat for steps 0…12, dog from step 13
    "a castle[ at night:t=500]"               # add " at night" once t ≤ 500
    "[a blurry photo of ::m=8]a house"        # remove "a blurry photo of " at the birth of level 8
    "a [red:[blue:green:4]:2] car"            # groups nest, to any depth
    "a [cat|dog] on grass"                    # alternation: cat, cat, dog, cat, dog, … (the webui's numbering)
    "a (red:1.3) car, [blurry]"               # emphasis: kept in the text, read by the model
    "a cat AND a dog:0.5"                     # composable prompts, summed inside guidance

Group forms: ``[from:to:when]`` switches, ``[to:when]`` adds ``to`` after ``when``,
``[from::when]`` removes ``from`` after ``when``, ``[a|b|…]`` cycles one option per step, and a
group without ``:`` or ``|`` (``[word]``, de-emphasis) is kept as text. Text is kept exactly as
written, whitespace and escapes included (``a castle[ at night::0.5]`` gives ``"a castle at
night"``). The ``when`` part (whitespace around it ignored) is one of

- a plain number with a decimal point, ``0.6`` / ``.6`` / ``1.0``: a **fraction** of the steps,
  which must lie in [0, 1];
- a plain integer, ``0``, ``12``: a **step**;
- ``t=745`` or ``timestep=745``: a **timestep**;
- ``logsnr=-1.5``, ``log_snr=-1.5``, ``λ=-1.5`` or ``lambda=-1.5``: a **log SNR**;
- ``m=4`` or ``level=4``: the birth of resolution **level** ``m`` (a power of two).

A backslash makes the next character literal (``\\[``, ``\\]``, ``\\(``, ``\\)``, ``\\:``, ``\\|``,
``\\\\``); the escape stays in the step's text, as in the webui, and the model's emphasis parser
(:func:`chromaviz.prompts.emphasis.parse_emphasis`) turns it into the character. Parentheses
``(…)`` and ``(…:w)`` protect their ``:`` and ``|``. ``AND`` (a whole word) splits the prompt into
terms, each with its own schedule and an optional weight ``:w`` at its end (:func:`split_and`).
A :class:`ValueError` names the text for unbalanced brackets or parentheses, ``:`` and ``|`` mixed
in one group, too many ``:``, or an invalid ``when``.

This module reads and writes text only: :func:`split_and` and :func:`join_and` for the ``AND``
terms, :func:`parse_term` for the groups of one term (a list of nodes: text as written,
:class:`Switch` or :class:`Cycle`), which :meth:`chromaviz.prompts.PromptSchedule.parse` turns into
a schedule.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .boundary import Boundary, _abbreviated

__all__ = ["Cycle", "Switch", "join_and", "parse_term", "split_and"]


# ---------------------------------------------------------------------- AND (composable prompts)
_AND = re.compile(r"\bAND\b")
_NUMBER = re.compile(r"[-+]?(?:\d+\.?|\d*\.\d+)")


def _weighted(piece: str) -> tuple[str, str | None]:
    r"""The webui's ``re_weight`` (``^((?:\s|.)*?)(?:\s*:\s*(number))?\s*$``) without its quadratic
    backtracking: the text before a final ``:number`` (whitespace trimmed) and the number, or the
    text with trailing whitespace trimmed and None."""
    k = piece.rfind(":")
    if k >= 0 and _NUMBER.fullmatch(piece[k + 1 :].strip()):
        return piece[:k].rstrip(), piece[k + 1 :].strip()
    return piece.rstrip(), None


def split_and(text: str) -> list[tuple[str, float]]:
    """The ``AND`` terms of a prompt and their weights, by the webui's rule.

    The text is split at every whole word ``AND``; a term ending in ``:w`` (a plain decimal
    number) has weight ``w``, any other weight 1. Trailing whitespace of a term is dropped.
    Source: ``get_multicond_prompt_list`` in AUTOMATIC1111's ``modules/prompt_parser.py``
    (``re_AND``, ``re_weight``); Liu et al. (2022), *Compositional Visual Generation with
    Composable Diffusion Models*, eq. 12.

    Parameters
    ----------
    text : str

    Returns
    -------
    list of (str, float)
        At least one term. A text without ``AND`` and without a weight is returned unchanged
        with weight 1.

    Raises
    ------
    TypeError
        If ``text`` is not a str.

    Examples
    --------
    >>> split_and("a cat AND a dog:0.5")
    [('a cat', 1.0), (' a dog', 0.5)]
    >>> split_and("a [cat:dog:0.5]")
    [('a [cat:dog:0.5]', 1.0)]
    """
    if not isinstance(text, str):
        raise TypeError(f"a prompt must be a str, got {type(text).__name__}")
    pieces = _AND.split(text)
    if len(pieces) == 1 and _weighted(text)[1] is None:
        return [(text, 1.0)]
    # A weight inside an open group ("a [cat:dog:0.5") is left to the parser, which names the
    # unbalanced bracket; the webui would read it as a weight of an unbalanced text.
    terms = []
    for piece in pieces:
        body, weight = _weighted(piece)
        if weight is not None and not _closed(body):  # the ':w' is inside an open group: not a weight
            body, weight = piece, None
        if weight is not None and not math.isfinite(float(weight)):
            raise ValueError(f"the AND weight {_abbreviated(weight)} is not a finite "
                             "number; use a weight such as 0.5")
        terms.append((body, 1.0 if weight is None else float(weight)))
    return terms


def _closed(text: str) -> bool:
    """Whether every '[' and '(' of ``text`` (escapes skipped) is closed by its end."""
    depth = {"[": 0, "(": 0}
    closing = {"]": "[", ")": "("}
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c in depth:
            depth[c] += 1
        elif c in closing:
            depth[closing[c]] -= 1
        i += 1
    return not any(depth.values())


def _fmt_weight(w: float) -> str:
    return np.format_float_positional(float(w), trim="-")


def join_and(terms: Sequence[tuple[str | None, float]]) -> str | None:
    """The prompt text that :func:`split_and` reads back as ``terms`` (inverse up to whitespace).

    A single term of weight 1 is returned as it is (``None`` stays ``None``); otherwise terms are
    joined with ``" AND "`` and a weight ``:w`` is written where it is not 1 (or where the text
    itself ends like a weight). ``None`` terms count as the empty prompt.

    Raises
    ------
    ValueError
        If a term's text contains the word ``AND`` (it would split differently).
    """
    terms = list(terms)
    if not terms:
        raise ValueError("join_and needs at least one term")
    if len(terms) == 1 and terms[0][1] == 1.0:
        text = terms[0][0]
        if text is None or _weighted(text)[1] is None and not _AND.search(text):
            return text
    out = []
    for k, (text, w) in enumerate(terms):
        text = text or ""
        piece = text + (f":{_fmt_weight(w)}" if w != 1.0 or _weighted(text)[1] is not None else "")
        if k:
            piece = " AND" + (" " if re.match(r"\w", piece) else "") + piece  # a space only where AND needs one
        out.append(piece)
    joined = "".join(out)
    if len(_AND.split(joined)) != len(terms):
        raise ValueError(
            f"the prompt terms {[t for t, _ in terms]!r} contain the word AND, which separates terms; "
            f"the joined text {joined!r} would not read back as {len(terms)} term(s)"
        )
    return joined


# ---------------------------------------------------------------------- prompt-editing groups
@dataclass(frozen=True)
class Switch:
    """A ``[from:to:when]`` group: the nodes before and after its boundary."""

    before: tuple
    after: tuple
    when: Boundary


@dataclass(frozen=True)
class Cycle:
    """An ``[a|b|…]`` group: one option per step, in turn."""

    options: tuple


class _Parser:
    """Recursive descent over one ``AND`` term: groups ``[…]`` nest, parentheses protect ``:``/``|``."""

    MAX_DEPTH = 100
    """Groups and parentheses nested deeper than this are refused (a ValueError, not a RecursionError)."""

    def __init__(self, text: str) -> None:
        self.text, self.i, self.depth = text, 0, 0

    def _enter(self, start: int) -> None:
        self.depth += 1
        if self.depth > self.MAX_DEPTH:
            raise self._error("brackets nested too deeply", f"more than {self.MAX_DEPTH} levels at position {start}")

    def parse(self) -> list:
        nodes, stop = self._sequence(group=None, paren=None)
        assert stop is None
        return nodes

    def _error(self, what: str, detail: str) -> ValueError:
        text = self.text if len(self.text) <= 120 else f"{self.text[:117]}…"  # a pasted wall of text stays one line
        return ValueError(f"{what} in prompt {text!r}: {detail}")

    def _sequence(self, group: int | None, paren: int | None) -> tuple[list, str | None]:
        """Nodes up to the end of this level; returns them and the character that ended it
        (``":"``, ``"|"`` or ``"]"`` in a group, ``")"`` in parentheses, None at the end)."""
        text, nodes, buf = self.text, [], []
        while self.i < len(text):
            c = text[self.i]
            if c == "\\":
                buf.append(text[self.i : self.i + 2])
                self.i += 2
                continue
            if c == "[":
                if buf:
                    nodes.append("".join(buf))
                    buf = []
                nodes.extend(self._group())
                continue
            if c == "(":
                start = self.i
                self.i += 1
                self._enter(start)
                inner, _ = self._sequence(group=None, paren=start)
                self.depth -= 1
                buf.append("(")
                if buf:
                    nodes.append("".join(buf))
                    buf = []
                nodes.extend(inner)
                buf.append(")")
                continue
            if c == ")":
                if paren is None:
                    raise self._error("unbalanced parentheses", f"')' at position {self.i} has no matching '('; write \\) for a literal one")
                self.i += 1
                if buf:
                    nodes.append("".join(buf))
                return nodes, ")"
            if c == "]":
                if paren is not None:
                    raise self._error("unbalanced parentheses", f"'(' at position {paren} is not closed before ']' at position {self.i}")
                if group is None:
                    raise self._error("unbalanced brackets", f"']' at position {self.i} has no matching '['; write \\] for a literal bracket")
                if buf:
                    nodes.append("".join(buf))
                return nodes, "]"
            if c in ":|" and group is not None and paren is None:
                if buf:
                    nodes.append("".join(buf))
                return nodes, c
            buf.append(c)
            self.i += 1
        if paren is not None:
            raise self._error("unbalanced parentheses", f"'(' at position {paren} is never closed; write \\( for a literal one")
        if group is not None:
            raise self._error("unbalanced brackets", f"'[' at position {group} is never closed; write \\[ for a literal bracket")
        if buf:
            nodes.append("".join(buf))
        return nodes, None

    def _group(self) -> list:
        """The group opening at ``text[i] == '['``: nodes of a switch, a cycle, or kept text."""
        start = self.i
        self.i += 1
        self._enter(start)
        fields, seps = [], []
        while True:
            nodes, stop = self._sequence(group=start, paren=None)
            fields.append(nodes)
            self.i += 1  # past the separator or ']'
            if stop == "]":
                break
            seps.append(stop)
        self.depth -= 1
        raw = self.text[start : self.i]
        if not seps:  # [word]: de-emphasis, kept as written (its inner groups still scheduled)
            return ["[", *fields[0], "]"]
        if len(set(seps)) > 1:
            raise self._error(f"':' and '|' mixed in the group {raw!r}", "write [a|b] to alternate or [from:to:when] to switch (\\: and \\| are literal)")
        if seps[0] == "|":
            return [Cycle(tuple(tuple(f) for f in fields))]
        if len(fields) > 3:
            raise self._error(
                f"too many ':' in the group {raw!r}",
                "allowed forms are [from:to:when], [to:when] and [from::when] (write \\: for a literal colon)",
            )
        when_nodes = fields[-1]
        if any(not isinstance(x, str) for x in when_nodes):
            raise self._error(f"invalid 'when' in the group {raw!r}", "the 'when' part cannot hold a group")
        try:
            when = Boundary.parse("".join(when_nodes))
        except ValueError as e:
            raise self._error(f"in the group {raw!r}", str(e)) from None
        before = () if len(fields) == 2 else tuple(fields[0])
        return [Switch(before, tuple(fields[-2]), when)]


def parse_term(text: str) -> list:
    """The prompt-editing groups of one ``AND`` term, parsed.

    Parameters
    ----------
    text : str
        One term of a prompt (:func:`split_and` has taken its weight off).

    Returns
    -------
    list of str, Switch or Cycle
        The term in order: text as written (escapes kept), and a :class:`Switch` or :class:`Cycle`
        for each group; nested groups are nodes inside them.

    Raises
    ------
    ValueError
        Naming the text, for unbalanced brackets or parentheses, ``:`` and ``|`` mixed in one group,
        too many ``:``, an invalid ``when`` or groups nested deeper than ``_Parser.MAX_DEPTH``.

    Examples
    --------
    >>> parse_term("a [cat:dog:0.5]")
    ['a ', Switch(before=('cat',), after=('dog',), when=Boundary(value=0.5, unit='fraction'))]
    """
    return _Parser(text).parse()
