"""Where a prompt switch happens: :class:`Boundary`, in one of five units.

A diffusion sampler runs ``N`` steps from pure noise (step index ``i = 0``) to a clean image
(``i = N − 1``). At step ``i`` it knows three coordinates of where it is:

- the step index ``i`` itself (and ``N``),
- the model timestep ``t_i`` (decreasing along the run, e.g. 999 → 0; ``t = 0`` is least noisy),
- the log signal-to-noise ratio ``λ_i = log SNR`` (increasing along the run).

A :class:`~chromaviz.prompts.PromptSchedule` says which prompt is active at each step. Its switch
points are :class:`Boundary` objects, expressed in any of five units:

``"fraction"``, ``"step"``
    AUTOMATIC1111's ``[from:to:when]`` convention, reproduced exactly (see :class:`Boundary`).
``"timestep"``
    Switch once ``t_i ≤ t_s``.
``"log_snr"``
    Switch once ``λ_i ≥ λ_s``.
``"level"``
    Switch at the *birth* of resolution level ``m`` (``m = 1, 2, 4, …``): the level is born when
    ``m²·SNR = 1``, i.e. at ``λ = −2·ln m``; coarse levels (large ``m``) are born first.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..noise.levels import birth_log_snr, is_born, is_power_of_two

__all__ = ["PHYSICAL_UNITS", "UNITS", "Boundary"]

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


MAX_STEP_DIGITS = 18
"""Digits a step boundary may have in the prompt language (a run has far fewer steps)."""


def _abbreviated(value: object, limit: int = 40) -> str:
    """``repr(value)``, or its start and its length when it is longer than ``limit`` characters."""
    if isinstance(value, int) and value.bit_length() > 4 * limit:  # str() refuses beyond 4300 digits
        return f"(an integer of about {round(value.bit_length() * math.log10(2))} digits)"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


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
        except OverflowError:
            raise ValueError(f"boundary value {_abbreviated(v)} is too large for a {self.unit} boundary") from None
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
            raise ValueError(f"invalid 'when' {_abbreviated(text)}; expected {_WHEN_HELP}")
        if len(body.partition(".")[0].lstrip("0")) > MAX_STEP_DIGITS:
            raise ValueError(f"invalid 'when' {_abbreviated(text)}: a step of {len(body.partition('.')[0].lstrip('0'))} "
                             f"digits is too large (a step has at most {MAX_STEP_DIGITS} digits)")
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
