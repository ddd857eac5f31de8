"""A recorded sampling run: every step's x_t, x̂0 and ε, with its noise level and prompt.

Saved as one ``.safetensors`` file: the tensors, plus a JSON document (per-step prompts and the
run's metadata) in the file's string metadata. No pickle anywhere, so a trajectory from someone
else is safe to open.

The JSON document is strict RFC 8259 JSON (``JSON.parse`` reads it): a non-finite number, such as
a scheduler config's ``lambda_min_clipped = -inf``, is written as the one-key object
``{"$float": "-Infinity"}`` (or ``"Infinity"``, ``"NaN"``) and read back as the float.
:meth:`Trajectory.load` checks the document and the tensors against each other before building
anything and refuses a file that does not fit with one ``ValueError`` naming the path. The
document also holds a CRC-32 of every tensor's bytes, so a file damaged after it was written (a
flipped bit on a disk or in a copy) is refused rather than read as a run full of wrong numbers;
files written without these checksums load as before.
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from .. import spectral

RECORDABLE = ("x_t", "x0", "eps")
"""Per-step tensors a run can record: the network input, the clean-sample prediction, the noise prediction."""

STATUSES = ("running", "complete", "cancelled", "interrupted", "failed")


@dataclass(frozen=True)
class StepRecord:
    """One sampling step, as passed to step callbacks.

    Attributes
    ----------
    index : int
        Step number, 0 = noisiest.
    timestep : float
        Timestep passed to the network.
    log_snr : float
        λ of the network input (natural log).
    alpha, sigma : float
        x_t = α·x0 + σ·ε.
    x_t, x0, eps : Tensor or None, shape (B, C, H, W)
        Network input, clean-sample prediction x̂0, noise prediction ε̂ (None if not recorded).
    prompt : str or None
        The prompt active at this step.
    num_steps : int
        Steps in the whole run.
    """

    index: int
    timestep: float
    log_snr: float
    alpha: float
    sigma: float
    x_t: torch.Tensor | None
    x0: torch.Tensor | None
    eps: torch.Tensor | None
    prompt: str | None
    num_steps: int


@dataclass
class Trajectory:
    """A sampling run, possibly partial.

    Attributes
    ----------
    metadata : dict
        JSON-safe description: model, scheduler and its config, seed, steps, guidance, size, batch,
        prompt schedule, ``status`` (one of :data:`STATUSES`) and ``message``.
    steps : list of StepRecord
        Recorded steps, noisiest first.
    final : Tensor or None, shape (B, C, H, W)
        The scheduler's last output (the generated sample) once the run is complete.
    """

    metadata: dict[str, Any] = field(default_factory=dict)
    steps: list[StepRecord] = field(default_factory=list)
    final: torch.Tensor | None = None

    # ------------------------------------------------------------------ views
    def __len__(self) -> int:
        return len(self.steps)

    @property
    def status(self) -> str:
        return self.metadata.get("status", "running")

    @property
    def message(self) -> str:
        return self.metadata.get("message", "")

    @property
    def timesteps(self) -> np.ndarray:
        """Shape (S,)."""
        return np.array([s.timestep for s in self.steps], dtype=np.float64)

    @property
    def log_snr(self) -> np.ndarray:
        """λ per step, shape (S,)."""
        return np.array([s.log_snr for s in self.steps], dtype=np.float64)

    @property
    def prompts(self) -> list[str | None]:
        return [s.prompt for s in self.steps]

    def stacked(self, name: str) -> torch.Tensor:
        """One recorded quantity over all steps, shape (S, B, C, H, W)."""
        if name not in RECORDABLE:
            raise ValueError(f"unknown recording {name!r}; choose one of {RECORDABLE}")
        if not self.steps:
            raise ValueError("the trajectory has no steps")
        values = [getattr(s, name) for s in self.steps]
        if any(v is None for v in values):
            raise ValueError(f"{name!r} was not recorded in this run (see sample(record=...))")
        return torch.stack(values)

    @property
    def x0(self) -> torch.Tensor:
        """x̂0 per step, shape (S, B, C, H, W)."""
        return self.stacked("x0")

    @property
    def x_t(self) -> torch.Tensor:
        return self.stacked("x_t")

    @property
    def eps(self) -> torch.Tensor:
        return self.stacked("eps")

    @property
    def sample(self) -> torch.Tensor:
        """The generated sample: ``final`` if complete, else the last x̂0. Shape (B, C, H, W)."""
        if self.final is not None:
            return self.final
        if not self.steps or self.steps[-1].x0 is None:
            raise ValueError(
                "this trajectory has no sample: it has no final output and no recorded x0 "
                "(it stopped before its first step, or ran without record=('x0', …))"
            )
        return self.steps[-1].x0

    # ------------------------------------------------------------------ analysis
    def signal_fractions(self, levels: Sequence[int] | None = None, method: str = "rings", reference: Any = "auto") -> torch.Tensor:
        """Measured signal fraction G_b per step and level, shape (S, L).

        Each step's x̂0 against the final sample, band by band (see
        :func:`chromaviz.spectral.signal_fractions`). ``reference="auto"`` subtracts the batch
        mean when the batch has at least two samples, otherwise nothing.
        """

        x0 = self.x0
        b, c, h, w = x0.shape[1:]
        levels = tuple(levels) if levels is not None else spectral.levels_for(h, w)
        if reference == "auto":
            reference = "batch" if b >= 2 else None
        return spectral.signal_fractions(x0, self.sample, levels, method=method, reference=reference)

    # ------------------------------------------------------------------ files
    def save(self, path: str | Path) -> Path:
        """Write the trajectory to ``path`` (``.safetensors``); returns the path.

        Raises
        ------
        ValueError
            If ``path`` is empty or an existing folder.
        """
        from safetensors.torch import save_file

        why = "empty" if str(path) == "" else "a folder" if Path(path).is_dir() else None
        if why:
            raise ValueError(f"cannot save a trajectory to {str(path)!r}: that is {why}; "
                             "give a file path such as 'run.safetensors'")
        path = Path(path)
        tensors: dict[str, torch.Tensor] = {
            "timesteps": torch.tensor(self.timesteps),
            "log_snr": torch.tensor(self.log_snr),
            "alpha": torch.tensor([s.alpha for s in self.steps], dtype=torch.float64),
            "sigma": torch.tensor([s.sigma for s in self.steps], dtype=torch.float64),
        }
        for name in RECORDABLE:
            if self.steps and getattr(self.steps[0], name) is not None:
                tensors[name] = self.stacked(name)
        if self.final is not None:
            tensors["final"] = self.final
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        doc = {"metadata": self.metadata, "prompts": self.prompts, "num_steps": [s.num_steps for s in self.steps],
               "crc32": {k: _crc32(v) for k, v in tensors.items()}}
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(path), metadata={"chromaviz": dumps(doc)})
        return path

    @classmethod
    def load(cls, path: str | Path) -> Trajectory:
        """Read a trajectory written by :meth:`save`.

        Raises
        ------
        ValueError
            Naming ``path`` and what is wrong, for anything that is not a complete, self-consistent
            trajectory file: no such file, a folder, not safetensors, no chromaviz document, a
            document that does not match the schema (prompts and tensors of different lengths, a
            ``"complete"`` run with fewer steps than it planned, …), a tensor whose bytes do not
            match the checksum written with it. Nothing is half loaded.
        """
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.exists():
            raise ValueError(f"cannot load a trajectory from {path}: no such file")
        if not path.is_file():
            raise ValueError(f"cannot load a trajectory from {path}: it is a folder, not a .safetensors file")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                if "chromaviz" not in meta:
                    raise ValueError(f"{path} is a safetensors file but not a chromaviz trajectory (no 'chromaviz' metadata)")
                doc = loads(meta["chromaviz"])
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError) as exc:
            raise ValueError(f"cannot load a trajectory from {path}: not a safetensors file ({exc})") from None
        except (json.JSONDecodeError, RecursionError, UnicodeError) as exc:
            why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            raise ValueError(f"cannot load a trajectory from {path}: its chromaviz document is not valid JSON ({why})") from None
        problem = _schema_problem(doc, tensors)
        if problem:
            raise ValueError(f"cannot load a trajectory from {path}: {problem}")
        recorded = {name: tensors.get(name) for name in RECORDABLE}
        steps = [
            StepRecord(
                index=i,
                timestep=float(tensors["timesteps"][i]),
                log_snr=float(tensors["log_snr"][i]),
                alpha=float(tensors["alpha"][i]),
                sigma=float(tensors["sigma"][i]),
                **{name: None if v is None else v[i] for name, v in recorded.items()},
                prompt=doc["prompts"][i],
                num_steps=doc["num_steps"][i],
            )
            for i in range(len(doc["prompts"]))
        ]
        return cls(metadata=doc["metadata"], steps=steps, final=tensors.get("final"))

    def __repr__(self) -> str:
        m = self.metadata
        return (
            f"Trajectory({len(self)}/{m.get('num_steps', '?')} steps, status={self.status!r}, "
            f"model={m.get('model', {}).get('name', '?')!r}, scheduler={m.get('scheduler', '?')!r})"
        )


_FLOAT_TAG = "$float"
_NON_FINITE = {"Infinity": math.inf, "-Infinity": -math.inf, "NaN": math.nan}
_PER_STEP = ("timesteps", "log_snr", "alpha", "sigma")


def _jsonable(obj: Any) -> Any:
    """``obj`` with only JSON types left: non-finite floats tagged, numpy and torch values unwrapped."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.ndarray, torch.Tensor, np.generic)):
        return _jsonable(obj.tolist())
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        if math.isfinite(obj):
            return obj
        return {_FLOAT_TAG: "NaN" if math.isnan(obj) else ("Infinity" if obj > 0 else "-Infinity")}
    return str(obj)


def dumps(doc: Any) -> str:
    """Strict RFC 8259 JSON of ``doc``; non-finite floats as ``{"$float": "-Infinity"}`` (see the module docstring)."""
    return json.dumps(_jsonable(doc), allow_nan=False, ensure_ascii=False)


def _untag(obj: dict) -> Any:
    if len(obj) == 1 and _FLOAT_TAG in obj and obj[_FLOAT_TAG] in _NON_FINITE:
        return _NON_FINITE[obj[_FLOAT_TAG]]
    return obj


def _refuse_constant(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not JSON", name, 0)


def loads(text: str) -> Any:
    """Inverse of :func:`dumps`; refuses the non-standard ``NaN``/``Infinity`` literals."""
    return json.loads(text, object_hook=_untag, parse_constant=_refuse_constant)


def _crc32(t: torch.Tensor) -> int:
    """CRC-32 of a tensor's bytes as stored (C order)."""
    flat = t.contiguous().reshape(-1)
    return zlib.crc32(flat.view(torch.uint8).numpy()) if flat.numel() else 0


def _schema_problem(doc: Any, tensors: Mapping[str, torch.Tensor]) -> str:
    """What is wrong with a trajectory file's document and tensors, or "" if nothing."""
    if not isinstance(doc, dict):
        return f"its chromaviz document is a JSON {type(doc).__name__}, not an object"
    missing = [k for k in ("metadata", "prompts", "num_steps") if k not in doc]
    if missing:
        return f"its chromaviz document lacks {missing}"
    meta, prompts, counts = doc["metadata"], doc["prompts"], doc["num_steps"]
    if not isinstance(meta, dict):
        return f"'metadata' is a {type(meta).__name__}, not an object"
    if not isinstance(prompts, list) or not all(p is None or isinstance(p, str) for p in prompts):
        return "'prompts' must be a list of strings or nulls"
    if not isinstance(counts, list) or not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in counts):
        return "'num_steps' must be a list of positive integers"
    n = len(prompts)
    if len(counts) != n:
        return f"{n} prompts but {len(counts)} step counts"
    status = meta.get("status", "running")
    if status not in STATUSES:
        return f"status {status!r} is not one of {list(STATUSES)}"
    planned = meta.get("num_steps")
    if status == "complete" and planned != n:
        return f"it says the run is complete with {planned!r} steps but holds {n}"
    if isinstance(planned, int) and n > planned:
        return f"it holds {n} steps of a run planned with {planned}"
    for name in (*_PER_STEP, *RECORDABLE):
        if name not in tensors:
            if name in _PER_STEP:
                return f"the tensor {name!r} is missing"
            continue
        t = tensors[name]
        expected = 1 if name in _PER_STEP else 5
        if t.dim() != expected or t.shape[0] != n:
            return (f"the tensor {name!r} has shape {tuple(t.shape)}; {n} prompts need "
                    f"{'(' + str(n) + ',)' if expected == 1 else '(' + str(n) + ', B, C, H, W)'}")
    checksums = doc.get("crc32", {})
    if not isinstance(checksums, dict):
        return "'crc32' must be an object of tensor names and checksums"
    for name, t in tensors.items():
        if name in checksums and checksums[name] != _crc32(t):
            return (f"the bytes of the tensor {name!r} do not match the checksum written with them: the file "
                    "was damaged after it was saved")
    final = tensors.get("final")
    if final is not None and final.dim() != 4:
        return f"the tensor 'final' has shape {tuple(final.shape)}, not (B, C, H, W)"
    if status == "complete" and final is None:
        return "it says the run is complete but has no 'final' sample"
    return ""
