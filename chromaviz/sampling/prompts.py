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
:meth:`PromptSchedule.parse` reads AUTOMATIC1111-style prompt editing::

    "a photo of a [cat:dog:0.6] on grass"     # cat, then dog after 60 % of the steps
    "a photo of a [cat:dog:12] on grass"      # cat for steps 0…12, dog from step 13
    "a castle[, at night:t=500]"              # add ", at night" once t ≤ 500
    "[a blurry photo of ::m=8]a house"        # remove "a blurry photo of " at the birth of level 8
    "a [red:blue:logsnr=-1.5] car"            # switch once λ ≥ −1.5 (also ``λ=-1.5``)

Three group forms: ``[from:to:when]`` switches, ``[to:when]`` adds ``to`` after ``when``,
``[from::when]`` removes ``from`` after ``when``. Whitespace around each part of a group is
stripped (so ``[ in foreground::0.6]`` contributes ``"in foreground"``, without the leading
space AUTOMATIC1111 would keep). The ``when`` part is one of

- a plain number with a decimal point, ``0.6`` / ``.6`` / ``1.0``: a **fraction** of the steps,
  which must lie in [0, 1];
- a plain integer, ``0``, ``12``: a **step**;
- ``t=745`` or ``timestep=745``: a **timestep**;
- ``logsnr=-1.5``, ``log_snr=-1.5``, ``λ=-1.5`` or ``lambda=-1.5``: a **log SNR**;
- ``m=4`` or ``level=4``: the birth of resolution **level** ``m`` (a power of two).

``\\[``, ``\\]``, ``\\:``, ``\\|`` and ``\\\\`` are literal ``[``, ``]``, ``:``, ``|`` and ``\\``;
any other backslash is kept as written (so AUTOMATIC1111's ``\\(`` reaches the text unchanged).
A bracket group without ``:`` (AUTOMATIC1111's de-emphasis ``[word]``) and parentheses such as
``(word:1.2)`` are not schedules and are kept verbatim. Not supported, with a
:class:`ValueError`: nested groups, alternation ``[a|b]``, unbalanced brackets.

Design: sequential and composite schedules
------------------------------------------
A prompt with one group is a *sequential* schedule: a tuple of :class:`Segment` objects, each
a full prompt text active until its boundary is crossed. A prompt with several groups whose
boundaries are in different units (``[cat:dog:0.5] on [grass:sand:t=300]``) cannot be put in
order without knowing the run, so it is a *composite* schedule: a tuple of ``parts`` (each a
sequential schedule; the literal text between groups is a constant one) whose per-step prompts
are concatenated. Every group is thus resolved by its own boundary at every step. This is exactly
how AUTOMATIC1111 resolves several groups too: its merged list of switch steps is equivalent to
evaluating each group independently at each step.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["UNITS", "Boundary", "Segment", "PromptSchedule"]

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

# Characters a backslash makes literal; any other backslash is kept as written.
_ESCAPABLE = "[]:|\\"


def _fmt_num(x: float) -> str:
    """A number as short text: ``745`` rather than ``745.0``, with a Unicode minus sign."""
    s = str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(float(x))
    return s.replace("-", "−")


def _fmt_signed(x: float) -> str:
    """Two decimals with a Unicode minus sign, e.g. ``−2.77``."""
    return f"{x:.2f}".replace("-", "−")


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
            if x < 1 or not x.is_integer() or (int(x) & (int(x) - 1)) != 0:
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
            return -2.0 * math.log(self.value)
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
        return f"birth of level {self.value} (λ ≥ {_fmt_signed(-2.0 * math.log(self.value))})"

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
    prompt : str or None
        The prompt text; ``None`` means unconditional (the empty/null conditioning).
    until : Boundary or None
        The boundary whose crossing ends this segment; ``None`` means "to the end of the run".
    """

    prompt: str | None
    until: Boundary | None = None

    def __post_init__(self) -> None:
        if self.prompt is not None and not isinstance(self.prompt, str):
            raise TypeError(f"segment prompt must be a str or None, got {self.prompt!r}")
        if self.until is not None and not isinstance(self.until, Boundary):
            raise TypeError(f"segment 'until' must be a Boundary or None, got {self.until!r}")


def _quote(prompt: str | None) -> str:
    return "<unconditional>" if prompt is None else json.dumps(prompt, ensure_ascii=False)


def _escape(text: str, group: bool) -> str:
    """Escape text so :meth:`PromptSchedule.parse` reads it back literally."""
    out = text.replace("\\", "\\\\").replace("[", "\\[").replace("]", "\\]")
    if group:
        out = out.replace(":", "\\:").replace("|", "\\|")
    return out


def _as_floats(values: Iterable[Any] | None, n: int, name: str) -> list[float | None]:
    if values is None:
        return [None] * n
    out = [float(v) for v in values]
    if len(out) != n:
        raise ValueError(f"{name} has {len(out)} entries but timesteps has {n}")
    return out


@dataclass(frozen=True)
class PromptSchedule:
    """Which prompt is active at each step of a sampling run.

    A schedule is either *sequential* (``segments`` given) or *composite* (``parts`` given).

    Parameters
    ----------
    segments : tuple of Segment
        Sequential form. Each step uses the prompt of the first segment whose boundary has not
        yet been crossed; every segment but the last has a boundary, the last has ``until=None``.
    parts : tuple of PromptSchedule
        Composite form (``segments`` empty): each step's prompt is the concatenation of every
        part's prompt at that step (a ``None`` part contributes nothing; the result is ``None``
        only if every part is ``None``). This is how a prompt with several ``[from:to:when]``
        groups is held, since groups in different units cannot be ordered without the run.

    Raises
    ------
    ValueError
        If both or neither of ``segments`` and ``parts`` are given, if a segment other than the
        last has ``until=None``, or if the last one has a boundary.

    Examples
    --------
    >>> s = PromptSchedule.parse("a photo of a [cat:dog:0.5] on grass")
    >>> s.prompts_for_steps(range(4, 0, -1), None)
    ['a photo of a cat on grass', 'a photo of a cat on grass', 'a photo of a cat on grass', 'a photo of a dog on grass']
    """

    segments: tuple[Segment, ...] = ()
    parts: tuple[PromptSchedule, ...] = ()

    def __post_init__(self) -> None:
        segments = tuple(self.segments)
        parts = tuple(self.parts)
        object.__setattr__(self, "segments", segments)
        object.__setattr__(self, "parts", parts)
        if segments and parts:
            raise ValueError("a PromptSchedule has either segments (sequential) or parts (composite), not both")
        if not segments and not parts:
            raise ValueError("a PromptSchedule needs at least one segment")
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
        for part in parts:
            if not isinstance(part, PromptSchedule):
                raise TypeError(f"parts must be PromptSchedule objects, got {part!r}")

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
        """Parse AUTOMATIC1111-style prompt editing (see the module docstring).

        Parameters
        ----------
        text : str
            A prompt, possibly with ``[from:to:when]``, ``[to:when]`` or ``[from::when]`` groups.

        Returns
        -------
        PromptSchedule
            Constant without groups; sequential (two full-text segments) with one group;
            composite (literal text and one switch per group, concatenated) with several.

        Raises
        ------
        ValueError
            For unbalanced brackets, nested groups, alternation ``[a|b]``, too many ``:``, an
            invalid or unknown ``when``, or a fraction above 1; the message quotes the text.
        """
        if not isinstance(text, str):
            raise TypeError(f"parse needs a str, got {type(text).__name__}")
        pieces = _tokenize(text)
        groups = [p for p in pieces if isinstance(p, _Group)]
        if not groups:
            return cls.constant("".join(p for p in pieces if isinstance(p, str)))
        if len(groups) == 1:
            k = next(i for i, p in enumerate(pieces) if isinstance(p, _Group))
            prefix = "".join(p for p in pieces[:k] if isinstance(p, str))
            suffix = "".join(p for p in pieces[k + 1 :] if isinstance(p, str))
            g = groups[0]
            return cls.switch(prefix + g.before + suffix, prefix + g.after + suffix, g.when)
        parts: list[PromptSchedule] = []
        literal: list[str] = []
        for p in pieces:
            if isinstance(p, str):
                literal.append(p)
                continue
            if literal:
                parts.append(cls.constant("".join(literal)))
                literal = []
            parts.append(cls.switch(p.before, p.after, p.when))
        if literal:
            parts.append(cls.constant("".join(literal)))
        return cls(parts=tuple(parts))

    # ------------------------------------------------------------------ inspection
    @property
    def is_composite(self) -> bool:
        """Whether this schedule concatenates ``parts`` rather than listing ``segments``."""
        return bool(self.parts)

    @property
    def is_constant(self) -> bool:
        """Whether the prompt can never change (a single segment, or only constant parts)."""
        if self.parts:
            return all(p.is_constant for p in self.parts)
        return len(self.segments) == 1

    @property
    def boundaries(self) -> tuple[Boundary, ...]:
        """Every boundary of the schedule, in segment order (parts in order)."""
        if self.parts:
            return tuple(b for p in self.parts for b in p.boundaries)
        return tuple(s.until for s in self.segments if s.until is not None)

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
        """
        ts = [float(t) for t in timesteps]
        n = len(ts)
        lams = _as_floats(log_snrs, n, "log_snrs")
        return self._resolve(ts, lams)

    def _resolve(self, ts: list[float], lams: list[float | None]) -> list[str | None]:
        n = len(ts)
        if self.parts:
            columns = [p._resolve(ts, lams) for p in self.parts]
            return [_join(col[i] for col in columns) for i in range(n)]
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
            out.append(self.segments[k].prompt)
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
            (per part, concatenated, for a composite schedule).
        """
        if self.parts:
            return _join(p.prompt_at(step_index, num_steps, timestep, log_snr) for p in self.parts)
        for seg in self.segments:
            if seg.until is None or not seg.until.crossed(step_index, num_steps, timestep, log_snr):
                return seg.prompt
        raise AssertionError("unreachable: the last segment has until=None")  # pragma: no cover

    # ------------------------------------------------------------------ data
    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form: ``{"segments": [{"prompt", "until"}, …]}`` or ``{"parts": […]}``."""
        if self.parts:
            return {"parts": [p.to_dict() for p in self.parts]}
        return {
            "segments": [
                {"prompt": s.prompt, "until": None if s.until is None else s.until.to_dict()}
                for s in self.segments
            ]
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PromptSchedule:
        """Inverse of :meth:`to_dict`."""
        if not isinstance(data, Mapping) or len(data) != 1 or not ({"segments", "parts"} & set(data)):
            raise ValueError(f"a prompt schedule dict needs exactly one key, 'segments' or 'parts', got {data!r}")
        if "parts" in data:
            return cls(parts=tuple(cls.from_dict(p) for p in data["parts"]))
        segments = []
        for s in data["segments"]:
            if not isinstance(s, Mapping) or set(s) - {"prompt", "until"} or "prompt" not in s:
                raise ValueError(f"a segment dict needs the key 'prompt' (and optionally 'until'), got {s!r}")
            until = s.get("until")
            segments.append(Segment(s["prompt"], None if until is None else Boundary.from_dict(until)))
        return cls(tuple(segments))

    def __str__(self) -> str:
        if self.parts:
            return "".join(_part_text(p) for p in self.parts)
        pieces = [f"{_quote(s.prompt)} until {s.until.describe()}" for s in self.segments[:-1] if s.until]
        pieces.append(_quote(self.segments[-1].prompt))
        return ", then ".join(pieces)


def _join(prompts: Iterable[str | None]) -> str | None:
    items = list(prompts)
    if all(p is None for p in items):
        return None
    return "".join(p for p in items if p is not None)


def _part_text(part: PromptSchedule) -> str:
    """One part of a composite schedule in prompt-editing syntax (parenthesised str otherwise)."""
    segs = part.segments
    if len(segs) == 1 and segs[0].prompt is not None:
        return _escape(segs[0].prompt, group=False)
    if len(segs) == 2 and segs[0].prompt is not None and segs[1].prompt is not None and segs[0].until:
        a, b = _escape(segs[0].prompt, group=True), _escape(segs[1].prompt, group=True)
        return f"[{a}:{b}:{segs[0].until.token()}]"
    return f"({part})"


# ---------------------------------------------------------------------- tokenizer
@dataclass(frozen=True)
class _Group:
    before: str
    after: str
    when: Boundary


def _tokenize(text: str) -> list[str | _Group]:
    """Split a prompt into literal text and schedule groups, resolving escapes."""
    pieces: list[str | _Group] = []
    literal: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\\" and i + 1 < n:
            nxt = text[i + 1]
            literal.append(nxt if nxt in _ESCAPABLE else c + nxt)
            i += 2
            continue
        if c == "]":
            raise ValueError(
                f"unbalanced brackets in prompt {text!r}: ']' at position {i} has no matching '['; "
                f"write \\] for a literal bracket"
            )
        if c != "[":
            literal.append(c)
            i += 1
            continue
        end, group = _read_group(text, i)
        if isinstance(group, str):  # a bracket group without ':' is kept as text (A1111 de-emphasis)
            literal.append(group)
        else:
            if literal:
                pieces.append("".join(literal))
                literal = []
            pieces.append(group)
        i = end
    if literal:
        pieces.append("".join(literal))
    return pieces


def _read_group(text: str, start: int) -> tuple[int, _Group | str]:
    """Read the group opening at ``text[start] == '['``.

    Returns the index just after its ``]`` and either the schedule group or, for a group without
    ``:``, its text (brackets included, escapes resolved) to keep as literal prompt text.
    """
    fields: list[list[str]] = [[]]
    depth = 0  # parentheses, whose ':' (A1111 attention weights) does not split the group
    i, n = start + 1, len(text)
    while i < n:
        c = text[i]
        if c == "\\" and i + 1 < n:
            nxt = text[i + 1]
            fields[-1].append(nxt if nxt in _ESCAPABLE else c + nxt)
            i += 2
            continue
        if c == "[":
            raise ValueError(
                f"nested groups are not supported in prompt {text!r}: '[' at position {i} is inside "
                f"the group opened at position {start}; write \\[ for a literal bracket"
            )
        if c == "]":
            break
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        if depth == 0 and c == "|":
            raise ValueError(
                f"alternation [a|b] is not supported, in {text[start:i + 1]!r}… of prompt {text!r}; "
                f"use [from:to:when] to switch prompts, or \\| for a literal '|'"
            )
        if depth == 0 and c == ":":
            fields.append([])
        else:
            fields[-1].append(c)
        i += 1
    else:
        raise ValueError(
            f"unbalanced brackets in prompt {text!r}: '[' at position {start} is never closed; "
            f"write \\[ for a literal bracket"
        )
    end = i + 1
    raw = text[start:end]
    if depth != 0:
        raise ValueError(f"unbalanced parentheses inside the group {raw!r} of prompt {text!r}")
    parts = ["".join(f) for f in fields]
    if len(parts) == 1:
        return end, "[" + parts[0] + "]"
    if len(parts) > 3:
        raise ValueError(
            f"too many ':' in the group {raw!r} of prompt {text!r}; allowed forms are [from:to:when], "
            f"[to:when] and [from::when] (write \\: for a literal colon)"
        )
    try:
        when = Boundary.parse(parts[-1])
    except ValueError as e:
        raise ValueError(f"in the group {raw!r} of prompt {text!r}: {e}") from None
    if len(parts) == 2:
        return end, _Group("", parts[0].strip(), when)
    return end, _Group(parts[0].strip(), parts[1].strip(), when)
