"""Prompt schedules as data: which prompt is active at each sampling step.

A :class:`PromptSchedule` says which prompt is active at each step; its switch points are
:class:`~chromaviz.prompts.boundary.Boundary` objects, and its text form is AUTOMATIC1111's
prompt-editing language (:mod:`chromaviz.prompts.syntax`, :meth:`PromptSchedule.parse`).

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
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

from .boundary import PHYSICAL_UNITS, Boundary
from .syntax import Cycle, Switch, join_and, parse_term, split_and

__all__ = ["PromptSchedule", "PromptSwitchWarning", "Segment"]


class PromptSwitchWarning(UserWarning):
    """A prompt switch that makes no difference in this run: it never happens, or it has happened
    before the first step (:meth:`PromptSchedule.prompts_for_steps`); or one that changes only part of
    the prompt's conditioning (a pipeline whose step callback cannot reach its pooled embedding)."""


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


# ---------------------------------------------------------------------- schedules
def cycle_option(step_index: int, options: int) -> int:
    """The option of an alternation ``[a|b|…]`` that the 0-based step ``step_index`` uses.

    AUTOMATIC1111's numbering (``prompt_parser.py``): its schedule lists sampling steps 1…N, and
    sampling step i uses the first entry that ends at or after i, so entry 1 serves steps 0 and 1,
    as ``[b:3]`` covers steps 0–3. Option ``(max(i, 1) − 1) mod n``: a, a, b, a, b, … for ``[a|b]``.

    Examples
    --------
    >>> [cycle_option(i, 2) for i in range(6)]
    [0, 0, 1, 0, 1, 0]
    """
    return (max(step_index, 1) - 1) % options


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
        *Cycling* (alternation ``[a|b|…]``): step ``i`` uses option :func:`cycle_option` ``(i, n)``,
        AUTOMATIC1111's numbering: a, a, b, a, b, … for ``[a|b]``.
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
    >>> PromptSchedule.parse("[cat|dog|cow]").prompts_for_steps(range(5, 0, -1))
    ['cat', 'cat', 'dog', 'cow', 'cat']
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
            return _schedule(parse_term(text))
        return cls(terms=tuple(_schedule(parse_term(t)) for t, _ in terms), weights=tuple(w for _, w in terms))

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
        PromptSwitchWarning
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
                    PromptSwitchWarning,
                    stacklevel=2,
                )
            elif n and b.unit in PHYSICAL_UNITS and b.crossed(0, n, ts[0], lams[0]):
                warnings.warn(
                    f"the switch at {b.describe()} ({b.token()!r}) has happened before the first step of this "
                    f"{n}-step run (timestep {ts[0]:g}): the prompt before it is never used",
                    PromptSwitchWarning,
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
            return [columns[cycle_option(i, len(columns))][i] for i in range(n)]
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
            (per part, concatenated, for a composite schedule; option :func:`cycle_option` of a cycle).
        """
        args = (step_index, num_steps, timestep, log_snr)
        if self.parts:
            return _join(p.prompt_at(*args) for p in self.parts)
        if self.cycle:
            return self.cycle[cycle_option(step_index, len(self.cycle))].prompt_at(*args)
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
    if len(dynamic) == 1 and isinstance(items[dynamic[0]], Switch):
        k = dynamic[0]
        prefix, suffix = "".join(items[:k]), "".join(items[k + 1 :])
        node = items[k]
        before, after = _merge(node.before), _merge(node.after)
        simple = all(isinstance(x, str) for x in before + after)
        if simple and not set(":|") & set(prefix + suffix):  # full texts that read back as one group
            return PromptSchedule.switch(prefix + "".join(before) + suffix, prefix + "".join(after) + suffix, node.when)
    return PromptSchedule(parts=tuple(PromptSchedule.constant(x) if isinstance(x, str) else _node_schedule(x) for x in items))


def _node_schedule(node: Switch | Cycle) -> PromptSchedule:
    if isinstance(node, Cycle):
        return PromptSchedule(cycle=tuple(_schedule(o) for o in node.options))
    before, after = _schedule(node.before), _schedule(node.after)
    return PromptSchedule((Segment(_unwrap(before), node.when), Segment(_unwrap(after))))


def _unwrap(s: PromptSchedule) -> str | PromptSchedule:
    """A constant schedule's text, any other schedule as it is (a nested segment prompt)."""
    if len(s.segments) == 1 and not isinstance(s.segments[0].prompt, PromptSchedule):
        return s.segments[0].prompt
    return s
