"""Prompt schedules as data: which prompt is active at each sampling step.

A diffusion sampler runs ``N`` steps from pure noise (step index ``i = 0``) to a clean image
(``i = N − 1``). At step ``i`` it knows three coordinates of where it is:

- the step index ``i`` itself (and ``N``),
- the model timestep ``t_i`` (decreasing along the run, e.g. 999 → 0; ``t = 0`` is least noisy),
- the log signal-to-noise ratio ``λ_i = log SNR`` (increasing along the run).

A :class:`PromptSchedule` says which prompt is active at each step. Its switch points are
:class:`Boundary` objects, expressed in any of five units:

``"fraction"``, ``"step"``
    AUTOMATIC1111's ``[from:to:when]`` convention, reproduced exactly (see :class:`Boundary`).
``"timestep"``
    Switch once ``t_i ≤ t_s``.
``"log_snr"``
    Switch once ``λ_i ≥ λ_s``.
``"level"``
    Switch at the *birth* of resolution level ``m`` (``m = 1, 2, 4, …``): the level is born when
    ``m²·SNR = 1``, i.e. at ``λ = −2·ln m``; coarse levels (large ``m``) are born first.

Text syntax
-----------
:meth:`PromptSchedule.parse` reads AUTOMATIC1111's prompt language (webui ≥ 1.6); the full
grammar, with every difference from the webui, is in ``docs/prompts.md``::

    "a photo of a [cat:dog:0.6] on grass"     # cat, then dog after 60 % of the steps
    "a photo of a [cat:dog:12] on grass"      # cat for steps 0…12, dog from step 13
    "a castle[ at night:t=500]"               # add " at night" once t ≤ 500
    "[a blurry photo of ::m=8]a house"        # remove "a blurry photo of " at the birth of level 8
    "a [red:[blue:green:4]:2] car"            # groups nest, to any depth
    "a [cat|dog] on grass"                    # alternation: cat, dog, cat, … one step each
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
(:func:`chromaviz.models.emphasis.parse_emphasis`) turns it into the character. Parentheses
``(…)`` and ``(…:w)`` protect their ``:`` and ``|``. ``AND`` (a whole word) splits the prompt into
terms, each with its own schedule and an optional weight ``:w`` at its end (:func:`split_and`).
A :class:`ValueError` names the text for unbalanced brackets or parentheses, ``:`` and ``|`` mixed
in one group, too many ``:``, or an invalid ``when``.

Design: sequential, composite, cycling and conjunctive schedules
----------------------------------------------------------------
A prompt with one group is a *sequential* schedule: a tuple of :class:`Segment` objects, each
a full prompt text (or a nested schedule) active until its boundary is crossed. A prompt with
several groups is a *composite* schedule: a tuple of ``parts`` whose per-step prompts are
concatenated, so each group is resolved by its own boundary at every step. This is exactly how
AUTOMATIC1111 resolves several groups too: its merged list of switch steps is equivalent to
evaluating each group independently at each step. A nested group is a segment whose prompt is
itself a schedule; an alternation is a *cycle* of schedules; ``AND`` makes *terms* with weights.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

import numpy as np

from ..noise.levels import birth_log_snr, is_born, is_power_of_two

__all__ = ["UNITS", "Boundary", "Segment", "PromptSchedule", "split_and", "join_and"]

UNITS: tuple[str, ...] = ("fraction", "step", "timestep", "log_snr", "level")
"""The units a :class:`Boundary` may be expressed in."""

# `key=value` spellings accepted in the `when` part of a group, mapped to units.
_WHEN_KEYS: dict[str, str] = {
    "t": "timestep",
    "timestep": "timestep",
    "logsnr": "log_snr",
    "log_snr": "log_snr",
    "λ": "log_snr",
    "lambda": "log_snr",
    "m": "level",
    "level": "level",
    "step": "step",
    "fraction": "fraction",
}

_WHEN_HELP = (
    "a fraction of the steps with a decimal point (e.g. 0.6, in [0, 1]), an integer step (e.g. 12), "
    "t=<timestep>, logsnr=<log SNR> (also λ=…), or m=<level> (a power of two, e.g. m=4)"
)


def _fmt_num(x: float) -> str:
    """A number as short text: ``745`` rather than ``745.0``, with a Unicode minus sign."""
    s = str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(float(x))
    return s.replace("-", "−")


def _fmt_signed(x: float) -> str:
    """Two decimals with a Unicode minus sign, e.g. ``−2.77``."""
    return f"{x:.2f}".replace("-", "−")


PHYSICAL_UNITS = ("timestep", "log_snr", "level")
"""Boundary units read on the noise level rather than counted in steps: one of them can lie before
a run's first step (a level coarser than the image, a timestep past the schedule's)."""


@dataclass(frozen=True)
class Boundary:
    """Where a prompt switch happens, in one of five units.

    Parameters
    ----------
    value : float
        The threshold. Stored as ``int`` for the ``"step"`` and ``"level"`` units, as ``float``
        otherwise.
    unit : {"fraction", "step", "timestep", "log_snr", "level"}
        How ``value`` is read.

    Raises
    ------
    ValueError
        For an unknown unit, a non-finite value, a fraction outside [0, 1], a step that is not a
        non-negative integer, a negative timestep, or a level that is not a power of two ≥ 1.
    TypeError
        If ``value`` is not a real number.

    Notes
    -----
    :meth:`crossed` tells whether the switch has happened at step ``i`` (0-based) of ``N``:

    ``"fraction"`` f and ``"step"`` s — AUTOMATIC1111's rule, exactly
        Let ``W = min(N, int(f·N))`` for a fraction and ``W = min(N, s)`` for a step. The switch
        has happened iff ``W < 1`` or ``i > W``: the first prompt is used for steps
        ``0, 1, …, W`` (``W + 1`` steps) and the second from step ``W + 1`` on; ``W = 0``
        means the second prompt from the very first step, ``W ≥ N − 1`` means never.
        Source: ``modules/prompt_parser.py`` of AUTOMATIC1111/stable-diffusion-webui,
        ``get_learned_conditioning_prompt_schedules`` — a ``when`` containing ``"."`` is
        multiplied by the step count, then ``min(steps, int(v))``; a value ``< 1`` is not added
        to the list of switch steps, so such a group shows its second part throughout — together
        with ``reconstruct_cond_batch``, which at 0-based sampler step ``current_step`` (the
        ``CFGDenoiser.step`` counter, starting at 0) picks the first schedule entry with
        ``current_step <= end_at_step``. (A1111's counter counts denoiser calls, so for
        two-evaluation samplers such as Heun the step there means half a step; here ``i`` is the
        index of the sampler step.)
    ``"timestep"`` t_s
        Crossed iff ``t_i ≤ t_s``.
    ``"log_snr"`` λ_s
        Crossed iff ``λ_i ≥ λ_s``.
    ``"level"`` m
        Crossed iff ``λ_i ≥ −2·ln m``, the birth of resolution level ``m``.

    Examples
    --------
    >>> Boundary(0.5, "fraction").crossed(10, 20, 500.0, 0.0), Boundary(0.5, "fraction").crossed(11, 20, 450.0, 0.1)
    (False, True)
    >>> Boundary(4, "level").describe()
    'birth of level 4 (λ ≥ −2.77)'
    """

    value: float
    unit: str

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise ValueError(f"unknown boundary unit {self.unit!r}; allowed units: {', '.join(UNITS)}")
        v = self.value
        if isinstance(v, (str, bytes, bool)):
            raise TypeError(f"boundary value must be a real number, got {v!r}")
        try:
            x = float(v)
        except (TypeError, ValueError):
            raise TypeError(f"boundary value must be a real number, got {v!r}") from None
        if not math.isfinite(x):
            raise ValueError(f"boundary value must be finite, got {x!r} ({self.unit})")
        if self.unit == "fraction":
            if not 0.0 <= x <= 1.0:
                raise ValueError(
                    f"a fraction boundary must lie in [0, 1], got {x!r}; "
                    f"for an absolute step use the 'step' unit (an integer)"
                )
            stored: float = x
        elif self.unit == "step":
            if x < 0 or not x.is_integer():
                raise ValueError(f"a step boundary must be a non-negative integer, got {v!r}")
            stored = int(x)
        elif self.unit == "timestep":
            if x < 0:
                raise ValueError(f"a timestep boundary must be ≥ 0, got {v!r}")
            stored = x
        elif self.unit == "level":
            if not (x.is_integer() and is_power_of_two(int(x))):
                raise ValueError(f"a level boundary must be a power of two ≥ 1 (1, 2, 4, 8, …), got {v!r}")
            stored = int(x)
        else:  # log_snr
            stored = x
        object.__setattr__(self, "value", stored)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def fraction(cls, f: float) -> Boundary:
        """A fraction of the steps, AUTOMATIC1111's ``[a:b:0.6]``."""
        return cls(f, "fraction")

    @classmethod
    def step(cls, s: int) -> Boundary:
        """An absolute step, AUTOMATIC1111's ``[a:b:12]``."""
        return cls(s, "step")

    @classmethod
    def timestep(cls, t: float) -> Boundary:
        """Switch once the model timestep ``t_i ≤ t``."""
        return cls(t, "timestep")

    @classmethod
    def log_snr(cls, lam: float) -> Boundary:
        """Switch once ``λ_i ≥ lam``."""
        return cls(lam, "log_snr")

    @classmethod
    def level(cls, m: int) -> Boundary:
        """Switch at the birth of resolution level ``m`` (``λ ≥ −2·ln m``)."""
        return cls(m, "level")

    @classmethod
    def parse(cls, text: str) -> Boundary:
        """Read the ``when`` part of a prompt-editing group.

        Parameters
        ----------
        text : str
            ``"0.6"`` (fraction: has a decimal point), ``"12"`` (step: an integer),
            ``"t=745"``, ``"logsnr=-1.5"`` / ``"λ=-1.5"``, ``"m=4"`` / ``"level=4"``; the
            spellings ``timestep=``, ``log_snr=``, ``lambda=``, ``step=`` and ``fraction=``
            are accepted too. Surrounding whitespace is ignored.

        Returns
        -------
        Boundary

        Raises
        ------
        ValueError
            Quoting ``text`` and listing what is allowed.
        """
        s = text.strip()
        if not s:
            raise ValueError(f"empty 'when' in prompt schedule; expected {_WHEN_HELP}")
        if "=" in s:
            key, _, raw = s.partition("=")
            k = key.strip().lower()
            if k not in _WHEN_KEYS:
                raise ValueError(
                    f"unknown unit {key.strip()!r} in 'when' {text!r}; allowed: {_WHEN_HELP} "
                    f"(keys: {', '.join(_WHEN_KEYS)})"
                )
            unit = _WHEN_KEYS[k]
            try:
                x = float(raw.strip())
            except ValueError:
                raise ValueError(f"not a number after '{key.strip()}=' in 'when' {text!r}; expected {_WHEN_HELP}") from None
            try:
                return cls(x, unit)
            except ValueError as e:
                raise ValueError(f"invalid 'when' {text!r}: {e}") from None
        body = s[1:] if s[:1] in "+-" else s
        digits = body.replace(".", "", 1)
        if not digits.isdigit() or not digits.isascii():
            raise ValueError(f"invalid 'when' {text!r}; expected {_WHEN_HELP}")
        x = float(s)
        if "." in s:
            if not 0.0 <= x <= 1.0:
                hint = f"; write an integer (e.g. {int(x)}) for an absolute step" if x > 1 else ""
                raise ValueError(
                    f"invalid 'when' {text!r}: a number with a decimal point is a fraction of the "
                    f"steps and must lie in [0, 1]{hint}"
                )
            return cls(x, "fraction")
        if x < 0:
            raise ValueError(f"invalid 'when' {text!r}: a step must be a non-negative integer")
        return cls(int(body), "step")

    # ------------------------------------------------------------------ semantics
    def switch_index(self, num_steps: int) -> int:
        """The first 0-based step index at which a fraction/step boundary is crossed.

        ``0`` when the second prompt is used throughout, ``≥ num_steps`` when never.

        Raises
        ------
        ValueError
            For a boundary in another unit (those need the run's timesteps or λ) or
            ``num_steps < 1``.
        """
        if self.unit not in ("fraction", "step"):
            raise ValueError(f"switch_index needs a 'fraction' or 'step' boundary, not {self.unit!r}")
        n = int(num_steps)
        if n < 1:
            raise ValueError(f"num_steps must be ≥ 1, got {num_steps!r}")
        if self.unit == "fraction":
            w = min(n, int(self.value * n))
        else:
            w = min(n, int(self.value))
        return 0 if w < 1 else w + 1

    @property
    def log_snr_threshold(self) -> float | None:
        """``λ_s`` for a log-SNR boundary, ``−2·ln m`` for a level, ``None`` otherwise."""
        if self.unit == "log_snr":
            return float(self.value)
        if self.unit == "level":
            return float(birth_log_snr(self.value)[0])
        return None

    def crossed(
        self,
        step_index: int,
        num_steps: int,
        timestep: float | None = None,
        log_snr: float | None = None,
    ) -> bool:
        """Whether the switch has happened at this step.

        Parameters
        ----------
        step_index : int
            0-based index ``i`` of the sampler step (0 = noisiest).
        num_steps : int
            ``N``, the number of steps of the run.
        timestep : float, optional
            The model timestep ``t_i``; needed by ``"timestep"`` boundaries.
        log_snr : float, optional
            ``λ_i``; needed by ``"log_snr"`` and ``"level"`` boundaries.

        Returns
        -------
        bool
            See the class notes: fraction/step use AUTOMATIC1111's ``i > min(N, int(f·N))``
            (or immediately when that is < 1); timestep ``t_i ≤ t_s``; log_snr ``λ_i ≥ λ_s``;
            level ``λ_i ≥ −2·ln m``.

        Raises
        ------
        ValueError
            If a coordinate the unit needs is missing, or ``step_index < 0``.
        """
        if self.unit in ("fraction", "step"):
            if step_index < 0:
                raise ValueError(f"step_index must be ≥ 0, got {step_index!r}")
            return step_index >= self.switch_index(num_steps)
        if self.unit == "timestep":
            if timestep is None:
                raise ValueError(f"a timestep boundary ({self.describe()}) needs the step's timestep")
            return float(timestep) <= self.value
        if log_snr is None:
            raise ValueError(f"a {self.unit} boundary ({self.describe()}) needs the step's log SNR")
        if self.unit == "level":  # the one birth rule, with its tolerance
            return bool(is_born(float(log_snr), self.value)[0, 0])
        threshold = self.log_snr_threshold
        assert threshold is not None
        return float(log_snr) >= threshold

    # ------------------------------------------------------------------ text and data
    def describe(self) -> str:
        """Short human text, e.g. ``"birth of level 4 (λ ≥ −2.77)"``."""
        if self.unit == "fraction":
            return f"{self.value * 100:.4g}% of steps (i > ⌊{self.value:g}·N⌋)"
        if self.unit == "step":
            return f"step {self.value} (i > {self.value})"
        if self.unit == "timestep":
            return f"t ≤ {_fmt_num(self.value)}"
        if self.unit == "log_snr":
            return f"λ ≥ {_fmt_signed(self.value)}"
        return f"birth of level {self.value} (λ ≥ {_fmt_signed(self.log_snr_threshold)})"

    def token(self) -> str:
        """The ``when`` text that :meth:`parse` reads back into this boundary."""
        if self.unit == "fraction":
            x = float(self.value)
            text = repr(x)
            if "e" in text or "E" in text:  # tiny values: shortest positional form that reads back exactly
                digits = 1
                while float(text := f"{x:.{digits}f}") != x:
                    digits += 1
            return text
        if self.unit == "step":
            return str(self.value)
        key = {"timestep": "t", "log_snr": "logsnr", "level": "m"}[self.unit]
        v = self.value
        text = str(int(v)) if isinstance(v, int) or float(v).is_integer() else repr(float(v))
        return f"{key}={text}"

    def to_dict(self) -> dict[str, Any]:
        """``{"value": …, "unit": …}``, JSON-safe."""
        return {"value": self.value, "unit": self.unit}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Boundary:
        """Inverse of :meth:`to_dict`."""
        if not isinstance(data, Mapping) or set(data) != {"value", "unit"}:
            raise ValueError(f"a boundary dict needs exactly the keys 'value' and 'unit', got {data!r}")
        return cls(data["value"], data["unit"])



@dataclass(frozen=True)
class Segment:
    """One prompt and how long it stays active.

    Parameters
    ----------
    prompt : str, PromptSchedule or None
        The prompt text; ``None`` means unconditional (the empty/null conditioning); a schedule
        (a nested group, ``[a:[b:c:4]:2]``) is resolved at each step by its own boundaries.
    until : Boundary or None
        The boundary whose crossing ends this segment; ``None`` means "to the end of the run".
    """

    prompt: Union[str, None, "PromptSchedule"]
    until: Boundary | None = None

    def __post_init__(self) -> None:
        if self.prompt is not None and not isinstance(self.prompt, (str, PromptSchedule)):
            raise TypeError(f"segment prompt must be a str, a PromptSchedule or None, got {self.prompt!r}")
        if self.until is not None and not isinstance(self.until, Boundary):
            raise TypeError(f"segment 'until' must be a Boundary or None, got {self.until!r}")


def _quote(prompt: str | None | PromptSchedule) -> str:
    if isinstance(prompt, PromptSchedule):
        return f"({prompt})"
    return "<unconditional>" if prompt is None else json.dumps(prompt, ensure_ascii=False)


def _as_floats(values: Iterable[Any] | None, n: int, name: str) -> list[float | None]:
    if values is None:
        return [None] * n
    out = [float(v) for v in values]
    if len(out) != n:
        raise ValueError(f"{name} has {len(out)} entries but timesteps has {n}")
    return out


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


# ---------------------------------------------------------------------- schedules
@dataclass(frozen=True)
class PromptSchedule:
    """Which prompt is active at each step of a sampling run.

    A schedule has exactly one of four forms.

    Parameters
    ----------
    segments : tuple of Segment
        *Sequential*: each step uses the prompt of the first segment whose boundary has not
        yet been crossed; every segment but the last has a boundary, the last has ``until=None``.
    parts : tuple of PromptSchedule
        *Composite*: each step's prompt is the concatenation of every part's prompt at that step
        (a ``None`` part contributes nothing; the result is ``None`` only if every part is
        ``None``). This is how a prompt with several groups is held.
    cycle : tuple of PromptSchedule
        *Cycling* (alternation ``[a|b|…]``): step ``i`` uses option ``i mod n``.
    terms : tuple of PromptSchedule
        *Conjunctive* (``AND``): each step's prompt is the terms' prompts joined by
        :func:`join_and` with ``weights``; guidance sums the terms' predictions.
    weights : tuple of float
        One per term (conjunctive form only).

    Raises
    ------
    ValueError
        If not exactly one form is given, if a segment other than the last has ``until=None``,
        if the last one has a boundary, if a cycle has fewer than two options, or if the weights
        do not match the terms.

    Examples
    --------
    >>> s = PromptSchedule.parse("a photo of a [cat:dog:0.5] on grass")
    >>> s.prompts_for_steps(range(4, 0, -1), None)
    ['a photo of a cat on grass', 'a photo of a cat on grass', 'a photo of a cat on grass', 'a photo of a dog on grass']
    >>> PromptSchedule.parse("[cat|dog|cow]").prompts_for_steps(range(4, 0, -1))
    ['cat', 'dog', 'cow', 'cat']
    """

    segments: tuple[Segment, ...] = ()
    parts: tuple[PromptSchedule, ...] = ()
    cycle: tuple[PromptSchedule, ...] = ()
    terms: tuple[PromptSchedule, ...] = ()
    weights: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        for name in ("segments", "parts", "cycle", "terms", "weights"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        forms = [name for name in ("segments", "parts", "cycle", "terms") if getattr(self, name)]
        if len(forms) > 1:
            raise ValueError(f"a PromptSchedule has one form, segments, parts, cycle or terms, not {' and '.join(forms)} (not both)")
        if not forms:
            raise ValueError("a PromptSchedule needs at least one segment")
        segments = self.segments
        for seg in segments:
            if not isinstance(seg, Segment):
                raise TypeError(f"segments must be Segment objects, got {seg!r}")
        for k, seg in enumerate(segments):
            last = k == len(segments) - 1
            if last and seg.until is not None:
                raise ValueError(
                    f"the last segment ({_quote(seg.prompt)}) must have until=None (it runs to the end), "
                    f"got {seg.until!r}"
                )
            if not last and seg.until is None:
                raise ValueError(
                    f"only the last segment may have until=None; segment {k} ({_quote(seg.prompt)}) has none"
                )
        for name in ("parts", "cycle", "terms"):
            for part in getattr(self, name):
                if not isinstance(part, PromptSchedule):
                    raise TypeError(f"{name} must be PromptSchedule objects, got {part!r}")
        if self.cycle and len(self.cycle) < 2:
            raise ValueError(f"a cycle needs at least two options, got {len(self.cycle)}")
        if self.terms or self.weights:
            if len(self.weights) != len(self.terms):
                raise ValueError(f"{len(self.terms)} terms need as many weights, got {len(self.weights)}")
            for w in self.weights:
                if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
                    raise ValueError(f"term weights must be finite real numbers, got {w!r}")
            object.__setattr__(self, "weights", tuple(float(w) for w in self.weights))

    # ------------------------------------------------------------------ constructors
    @classmethod
    def constant(cls, prompt: str | None) -> PromptSchedule:
        """The same prompt (``None``: unconditional) at every step."""
        return cls((Segment(prompt, None),))

    @classmethod
    def switch(cls, first: str | None, second: str | None, at: Boundary | str) -> PromptSchedule:
        """``first`` until ``at`` is crossed, then ``second``.

        ``at`` may be a :class:`Boundary` or its ``when`` text (``"0.6"``, ``"t=745"``, ``"m=4"``…).
        """
        boundary = at if isinstance(at, Boundary) else Boundary.parse(at)
        return cls((Segment(first, boundary), Segment(second, None)))

    @classmethod
    def concat(cls, *parts: PromptSchedule | str | None) -> PromptSchedule:
        """A composite schedule; strings and ``None`` become constant parts.

        A single part is returned as is.
        """
        if not parts:
            raise ValueError("concat needs at least one part")
        converted = tuple(p if isinstance(p, PromptSchedule) else cls.constant(p) for p in parts)
        if len(converted) == 1:
            return converted[0]
        return cls(parts=converted)

    @classmethod
    def coerce(cls, obj: PromptSchedule | str | Mapping[str, Any] | None) -> PromptSchedule:
        """A schedule from a schedule (returned as is), a str (:meth:`parse`), ``None``
        (unconditional throughout) or a dict (:meth:`from_dict`)."""
        if isinstance(obj, PromptSchedule):
            return obj
        if obj is None:
            return cls.constant(None)
        if isinstance(obj, str):
            return cls.parse(obj)
        if isinstance(obj, Mapping):
            return cls.from_dict(obj)
        raise TypeError(f"cannot make a PromptSchedule from {type(obj).__name__} {obj!r}")

    @classmethod
    def parse(cls, text: str) -> PromptSchedule:
        """Parse AUTOMATIC1111's prompt language (see the module docstring and ``docs/prompts.md``).

        Parameters
        ----------
        text : str
            A prompt, possibly with ``[from:to:when]``, ``[to:when]``, ``[from::when]`` and
            ``[a|b]`` groups (nested to any depth), emphasis, escapes and ``AND``.

        Returns
        -------
        PromptSchedule
            Constant without groups; sequential (full-text segments) with one group; composite
            (literal text and one schedule per group, concatenated) with several; conjunctive
            with ``AND`` or a term weight.

        Raises
        ------
        ValueError
            For unbalanced brackets or parentheses, ``:`` and ``|`` in one group, too many ``:``,
            an invalid or unknown ``when``, or a fraction above 1; the message quotes the text.
        TypeError
            If ``text`` is not a str.
        """
        if not isinstance(text, str):
            raise TypeError(f"parse needs a str, got {type(text).__name__}")
        terms = split_and(text)
        if len(terms) == 1 and terms[0] == (text, 1.0):
            return _schedule(_Parser(text).parse())
        return cls(terms=tuple(_schedule(_Parser(t).parse()) for t, _ in terms), weights=tuple(w for _, w in terms))

    # ------------------------------------------------------------------ inspection
    @property
    def is_composite(self) -> bool:
        """Whether this schedule is not a list of ``segments`` (it has parts, a cycle or AND terms)."""
        return not self.segments

    @property
    def is_constant(self) -> bool:
        """Whether the prompt can never change."""
        if self.segments:
            p = self.segments[0].prompt
            return len(self.segments) == 1 and (not isinstance(p, PromptSchedule) or p.is_constant)
        if self.cycle:
            return len(set(self.cycle)) == 1 and self.cycle[0].is_constant
        return all(p.is_constant for p in self.parts + self.terms)

    @property
    def boundaries(self) -> tuple[Boundary, ...]:
        """Every boundary of the schedule, nested ones included (segment by segment, parts in order)."""
        out: list[Boundary] = []
        for seg in self.segments:
            if isinstance(seg.prompt, PromptSchedule):
                out.extend(seg.prompt.boundaries)
            if seg.until is not None:
                out.append(seg.until)
        for p in self.parts + self.cycle + self.terms:
            out.extend(p.boundaries)
        return tuple(out)

    # ------------------------------------------------------------------ evaluation
    def prompts_for_steps(
        self,
        timesteps: Sequence[float],
        log_snrs: Sequence[float] | None = None,
    ) -> list[str | None]:
        """The active prompt at every step of a run.

        Parameters
        ----------
        timesteps : sequence of float, length N
            ``t_i`` for each step, noisiest first; ``N = len(timesteps)``. Arrays and tensors work.
        log_snrs : sequence of float, length N, optional
            ``λ_i`` for each step; required only by ``"log_snr"`` and ``"level"`` boundaries.

        Returns
        -------
        list of str or None
            One prompt per step. Segments are consumed in order: once a boundary has been crossed
            the schedule never returns to an earlier segment, even if the run's coordinates are
            not monotone (for monotone runs this equals :meth:`prompt_at` at every step).

        Warns
        -----
        UserWarning
            For each boundary that is never crossed in this run (``[cat:moon:50]`` in 10 steps):
            its group keeps its first prompt throughout; and for each timestep, log-SNR or level
            boundary already crossed at the first step (``[cat:moon:m=128]`` for a 64-pixel image):
            the prompt before it is never used.
        """
        ts = [float(t) for t in timesteps]
        n = len(ts)
        lams = _as_floats(log_snrs, n, "log_snrs")
        out = self._resolve(ts, lams)
        for b in dict.fromkeys(self.boundaries):
            if n and not any(b.crossed(i, n, ts[i], lams[i]) for i in range(n)):
                warnings.warn(
                    f"the switch at {b.describe()} ({b.token()!r}) never happens in this {n}-step run: "
                    f"its group keeps its first prompt throughout",
                    UserWarning,
                    stacklevel=2,
                )
            elif n and b.unit in PHYSICAL_UNITS and b.crossed(0, n, ts[0], lams[0]):
                warnings.warn(
                    f"the switch at {b.describe()} ({b.token()!r}) has happened before the first step of this "
                    f"{n}-step run (timestep {ts[0]:g}): the prompt before it is never used",
                    UserWarning,
                    stacklevel=2,
                )
        return out

    def _resolve(self, ts: list[float], lams: list[float | None]) -> list[str | None]:
        n = len(ts)
        if self.parts:
            columns = [p._resolve(ts, lams) for p in self.parts]
            return [_join(col[i] for col in columns) for i in range(n)]
        if self.cycle:
            columns = [p._resolve(ts, lams) for p in self.cycle]
            return [columns[i % len(columns)][i] for i in range(n)]
        if self.terms:
            columns = [p._resolve(ts, lams) for p in self.terms]
            return [join_and([(col[i], w) for col, w in zip(columns, self.weights)]) for i in range(n)]
        nested = {k: s.prompt._resolve(ts, lams) for k, s in enumerate(self.segments) if isinstance(s.prompt, PromptSchedule)}
        out: list[str | None] = []
        k = 0
        last = len(self.segments) - 1
        for i in range(n):
            while k < last:
                until = self.segments[k].until
                assert until is not None
                if not until.crossed(i, n, ts[i], lams[i]):
                    break
                k += 1
            out.append(nested[k][i] if k in nested else self.segments[k].prompt)
        return out

    def prompt_at(
        self,
        step_index: int,
        num_steps: int,
        timestep: float | None = None,
        log_snr: float | None = None,
    ) -> str | None:
        """The prompt of one step, for a sampler that decides as it goes.

        Parameters
        ----------
        step_index : int
            0-based step index ``i``.
        num_steps : int
            ``N``.
        timestep : float, optional
            ``t_i``; needed by timestep boundaries.
        log_snr : float, optional
            ``λ_i``; needed by log-SNR and level boundaries.

        Returns
        -------
        str or None
            The prompt of the first segment whose boundary is not crossed at this step
            (per part, concatenated, for a composite schedule; option ``i mod n`` of a cycle).
        """
        args = (step_index, num_steps, timestep, log_snr)
        if self.parts:
            return _join(p.prompt_at(*args) for p in self.parts)
        if self.cycle:
            return self.cycle[step_index % len(self.cycle)].prompt_at(*args)
        if self.terms:
            return join_and([(p.prompt_at(*args), w) for p, w in zip(self.terms, self.weights)])
        for seg in self.segments:
            if seg.until is None or not seg.until.crossed(*args):
                return seg.prompt.prompt_at(*args) if isinstance(seg.prompt, PromptSchedule) else seg.prompt
        raise AssertionError("unreachable: the last segment has until=None")  # pragma: no cover

    # ------------------------------------------------------------------ data
    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form: ``{"segments": [{"prompt", "until"}, …]}``, ``{"parts": […]}``,
        ``{"cycle": […]}`` or ``{"terms": […], "weights": […]}``; a nested segment prompt is a dict."""
        if self.parts or self.cycle:
            key = "parts" if self.parts else "cycle"
            return {key: [p.to_dict() for p in getattr(self, key)]}
        if self.terms:
            return {"terms": [p.to_dict() for p in self.terms], "weights": list(self.weights)}
        return {
            "segments": [
                {
                    "prompt": s.prompt.to_dict() if isinstance(s.prompt, PromptSchedule) else s.prompt,
                    "until": None if s.until is None else s.until.to_dict(),
                }
                for s in self.segments
            ]
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PromptSchedule:
        """Inverse of :meth:`to_dict`."""
        keys = set(data) if isinstance(data, Mapping) else set()
        if keys not in ({"segments"}, {"parts"}, {"cycle"}, {"terms", "weights"}):
            raise ValueError(
                f"a prompt schedule dict needs exactly one key, 'segments', 'parts' or 'cycle' "
                f"(or 'terms' with 'weights'), got {data!r}"
            )
        if "parts" in data or "cycle" in data:
            key = "parts" if "parts" in data else "cycle"
            return cls(**{key: tuple(cls.from_dict(p) for p in data[key])})
        if "terms" in data:
            return cls(terms=tuple(cls.from_dict(p) for p in data["terms"]), weights=tuple(data["weights"]))
        segments = []
        for s in data["segments"]:
            if not isinstance(s, Mapping) or set(s) - {"prompt", "until"} or "prompt" not in s:
                raise ValueError(f"a segment dict needs the key 'prompt' (and optionally 'until'), got {s!r}")
            until, prompt = s.get("until"), s["prompt"]
            prompt = cls.from_dict(prompt) if isinstance(prompt, Mapping) else prompt
            segments.append(Segment(prompt, None if until is None else Boundary.from_dict(until)))
        return cls(tuple(segments))

    def to_text(self) -> str:
        """The schedule in prompt syntax: :meth:`parse` of it gives back an equal schedule
        (for every schedule :meth:`parse` makes).

        Raises
        ------
        ValueError
            If a segment is unconditional (``None``), which the syntax cannot write.
        """
        if self.parts:
            return "".join(p.to_text() for p in self.parts)
        if self.cycle:
            return "[" + "|".join(p.to_text() for p in self.cycle) + "]"
        if len(self.terms) == 1 and self.weights[0] == 1.0:  # "a cat:1": the weight written keeps the form
            return f"{self.terms[0].to_text()}:1"
        if self.terms:
            return join_and([(p.to_text(), w) for p, w in zip(self.terms, self.weights)])
        return _segments_text(self.segments)

    def __str__(self) -> str:
        if not self.segments:
            try:
                return self.to_text()
            except ValueError:
                inner = self.parts or self.cycle or self.terms
                return " + ".join(f"({p})" for p in inner)
        pieces = [f"{_quote(s.prompt)} until {s.until.describe()}" for s in self.segments[:-1] if s.until]
        pieces.append(_quote(self.segments[-1].prompt))
        return ", then ".join(pieces)


def _join(prompts: Iterable[str | None]) -> str | None:
    items = list(prompts)
    if all(p is None for p in items):
        return None
    return "".join(p for p in items if p is not None)


def _segments_text(segments: Sequence[Segment]) -> str:
    """Sequential segments as nested groups: ``(A, w1), (B, w2), (C)`` → ``[A:[B:C:w2]:w1]``."""
    first = segments[0]
    if first.prompt is None:
        raise ValueError("an unconditional (None) segment has no prompt syntax")
    text = first.prompt.to_text() if isinstance(first.prompt, PromptSchedule) else first.prompt
    if len(segments) == 1:
        return text
    return f"[{text}:{_segments_text(segments[1:])}:{first.until.token()}]"


# ---------------------------------------------------------------------- parser
# A parsed prompt is a list of nodes: str (text as written), _Switch or _Cycle.
@dataclass(frozen=True)
class _Switch:
    before: tuple
    after: tuple
    when: Boundary


@dataclass(frozen=True)
class _Cycle:
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
            return [_Cycle(tuple(tuple(f) for f in fields))]
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
        return [_Switch(before, tuple(fields[-2]), when)]


def _merge(nodes: Iterable) -> list:
    """Adjacent text nodes joined."""
    out: list = []
    for x in nodes:
        if isinstance(x, str) and out and isinstance(out[-1], str):
            out[-1] += x
        elif not (isinstance(x, str) and not x):
            out.append(x)
    return out


def _schedule(nodes: Iterable) -> PromptSchedule:
    items = _merge(nodes)
    dynamic = [k for k, x in enumerate(items) if not isinstance(x, str)]
    if not dynamic:
        return PromptSchedule.constant("".join(items))
    if len(items) == 1:
        return _node_schedule(items[0])
    if len(dynamic) == 1 and isinstance(items[dynamic[0]], _Switch):
        k = dynamic[0]
        prefix, suffix = "".join(items[:k]), "".join(items[k + 1 :])
        node = items[k]
        before, after = _merge(node.before), _merge(node.after)
        simple = all(isinstance(x, str) for x in before + after)
        if simple and not set(":|") & set(prefix + suffix):  # full texts that read back as one group
            return PromptSchedule.switch(prefix + "".join(before) + suffix, prefix + "".join(after) + suffix, node.when)
    return PromptSchedule(parts=tuple(PromptSchedule.constant(x) if isinstance(x, str) else _node_schedule(x) for x in items))


def _node_schedule(node: _Switch | _Cycle) -> PromptSchedule:
    if isinstance(node, _Cycle):
        return PromptSchedule(cycle=tuple(_schedule(o) for o in node.options))
    before, after = _schedule(node.before), _schedule(node.after)
    return PromptSchedule((Segment(_unwrap(before), node.when), Segment(_unwrap(after))))


def _unwrap(s: PromptSchedule) -> str | PromptSchedule:
    """A constant schedule's text, any other schedule as it is (a nested segment prompt)."""
    if len(s.segments) == 1 and not isinstance(s.segments[0].prompt, PromptSchedule):
        return s.segments[0].prompt
    return s
