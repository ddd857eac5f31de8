"""A recorded sampling run: every step's x_t, x̂0 and ε, with its noise level and prompt.

Saved as one ``.safetensors`` file: the tensors, plus a JSON document (per-step prompts and the
run's metadata) in the file's string metadata. No pickle anywhere, so a trajectory from someone
else is safe to open.

The JSON document is strict RFC 8259 JSON (``JSON.parse`` reads it): a non-finite number, such as
a scheduler config's ``lambda_min_clipped = -inf``, is written as the one-key object
``{"$float": "-Infinity"}`` (or ``"Infinity"``, ``"NaN"``) and read back as the float.
:meth:`Trajectory.load` checks the document and the tensors against each other before building
anything and refuses a file that does not fit with one ``ValueError`` naming the path: every
metadata field the code later reads has its type checked (:data:`METADATA_FIELDS`), and the tensors
are checked against each other (one batch, one sample shape, floating point, finite noise levels).
The document holds a CRC-32 of every tensor's bytes, and a CRC-32 of the document itself is stored
beside it (``chromaviz.crc32``), so a file damaged after it was written (a flipped bit on a disk
or in a copy, in a tensor or in the header) is refused rather than read as a run full of wrong
numbers; files written without checksums (before they existed) load as before.
"""

from __future__ import annotations

import contextlib
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

DOCUMENT_CHECKSUM = "chromaviz.crc32"
"""Key of the document's own CRC-32 (decimal text) in the file's string metadata."""


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
        :func:`chromaviz.spectral.signal_fractions`). ``reference="auto"`` is
        :func:`chromaviz.spectral.batch_reference`: the batch mean from two samples on, else zero.
        """

        x0 = self.x0
        b, c, h, w = x0.shape[1:]
        levels = tuple(levels) if levels is not None else spectral.levels_for(h, w)
        if reference == "auto":
            reference = spectral.batch_reference(b)
        return spectral.signal_fractions(x0, self.sample, levels, method=method, reference=reference)

    # ------------------------------------------------------------------ files
    def save(self, path: str | Path) -> Path:
        """Write the trajectory to ``path`` (``.safetensors``); returns the path.

        The recorded steps are written one by one (no stacked copy of the recording is made, so a
        run that fitted in memory can always be saved), to ``path`` + ``".partial"`` first, which
        replaces ``path`` only once it is complete.

        Raises
        ------
        ValueError
            If ``path`` is empty or an existing folder, or the steps' recordings differ in shape.
        OSError
            If the file cannot be written (a read-only folder, a full disk, a name too long), with
            the path and the reason; no partial file is left behind.
        """
        why = "empty" if str(path) == "" else "a folder" if _is_folder(path) else None
        if why:
            raise ValueError(f"cannot save a trajectory to {str(path)!r}: that is {why}; "
                             "give a file path such as 'run.safetensors'")
        path = Path(path)
        per_step = {
            "timesteps": [torch.tensor(self.timesteps)],
            "log_snr": [torch.tensor(self.log_snr)],
            "alpha": [torch.tensor([s.alpha for s in self.steps], dtype=torch.float64)],
            "sigma": [torch.tensor([s.sigma for s in self.steps], dtype=torch.float64)],
        }
        for name in RECORDABLE:
            if self.steps and getattr(self.steps[0], name) is not None:
                per_step[name] = [getattr(s, name) for s in self.steps]
        if self.final is not None:
            per_step["final"] = [self.final]
        entries = {name: _Entry.of(name, parts, stacked=name in RECORDABLE) for name, parts in per_step.items()}
        doc = {"metadata": self.metadata, "prompts": self.prompts, "num_steps": [s.num_steps for s in self.steps],
               "crc32": {name: entry.crc32 for name, entry in entries.items()}}
        text = dumps(doc)
        _write_safetensors(path, entries, {"chromaviz": text, DOCUMENT_CHECKSUM: str(_text_crc32(text))})
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
                damaged = _document_damage(meta)
                if damaged:
                    raise ValueError(f"cannot load a trajectory from {path}: {damaged}")
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


_SAFETENSORS_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64",
    torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL",
}


@dataclass
class _Entry:
    """One tensor of a file, as the parts written one after another (the steps of a recording)."""

    parts: list[torch.Tensor]
    dtype: torch.dtype
    shape: tuple[int, ...]
    crc32: int

    @classmethod
    def of(cls, name: str, parts: list[torch.Tensor], stacked: bool) -> _Entry:
        parts = [p.detach().cpu().contiguous() for p in parts]
        first = parts[0]
        odd = [i for i, p in enumerate(parts) if p.shape != first.shape or p.dtype != first.dtype]
        if odd:
            raise ValueError(f"cannot save the trajectory: step {odd[0]} recorded {name} of shape "
                             f"{tuple(parts[odd[0]].shape)} ({parts[odd[0]].dtype}), step 0 {tuple(first.shape)} ({first.dtype})")
        crc = 0
        for part in parts:
            crc = zlib.crc32(_bytes(part), crc)
        shape = (len(parts), *first.shape) if stacked else tuple(first.shape)
        return cls(parts, first.dtype, shape, crc)

    @property
    def nbytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.parts)


def _is_folder(path: str | Path) -> bool:
    try:
        return Path(path).is_dir()
    except OSError:  # a name too long: not a folder, and the write says why
        return False


def _bytes(t: torch.Tensor) -> memoryview:
    """The bytes of a contiguous CPU tensor, without a copy."""
    return memoryview(t.reshape(-1).view(torch.uint8).numpy()) if t.numel() else memoryview(b"")


def _write_safetensors(path: Path, entries: Mapping[str, _Entry], metadata: Mapping[str, str]) -> None:
    """Write ``entries`` as a safetensors file (an 8-byte header length, the JSON header, the data),
    part by part; the file appears at ``path`` only when complete."""
    header: dict[str, Any] = {"__metadata__": dict(metadata)}
    offset = 0
    for name, entry in entries.items():
        header[name] = {"dtype": _SAFETENSORS_DTYPES[entry.dtype], "shape": list(entry.shape),
                        "data_offsets": [offset, offset + entry.nbytes]}
        offset += entry.nbytes
    text = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    partial = path.with_name(path.name + ".partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(partial, "wb") as f:
            f.write(len(text).to_bytes(8, "little"))
            f.write(text)
            for entry in entries.values():
                for part in entry.parts:
                    f.write(_bytes(part))
        partial.replace(path)
    except OSError as err:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        raise OSError(err.errno, f"cannot save the trajectory to {path}: {err.strerror or err}") from None


def _text_crc32(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


def _document_damage(meta: Mapping[str, str]) -> str:
    """Why the file's document does not match the checksum written beside it, or "" if it does.

    A file with tensor checksums was written with a document checksum too: losing it is damage.
    """
    written = meta.get(DOCUMENT_CHECKSUM)
    if written is None:
        return "its document checksum is missing although its tensors have checksums" if '"crc32"' in meta["chromaviz"] else ""
    if written != str(_text_crc32(meta["chromaviz"])):
        return ("its chromaviz document does not match the checksum written with it: the file was damaged or "
                "edited after it was saved")
    return ""


def _crc32(t: torch.Tensor) -> int:
    """CRC-32 of a tensor's bytes as stored (C order)."""
    flat = t.contiguous().reshape(-1)
    return zlib.crc32(flat.view(torch.uint8).numpy()) if flat.numel() else 0


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _optional(check):
    return lambda v: v is None or check(v)


METADATA_FIELDS: dict[str, tuple[str, Any]] = {
    "chromaviz_version": ("a string", lambda v: isinstance(v, str)),
    "model": ("an object with a string 'name'", lambda v: isinstance(v, dict) and isinstance(v.get("name"), str)),
    "scheduler": ("a string", lambda v: isinstance(v, str)),
    "scheduler_class": ("a string", lambda v: isinstance(v, str) and v.isidentifier()),
    "scheduler_config": ("an object", lambda v: isinstance(v, dict)),
    "num_steps": ("a positive integer", lambda v: _is_int(v) and v > 0),
    "num_evaluations": ("a positive integer", lambda v: _is_int(v) and v > 0),
    "num_inference_steps": ("a positive integer", lambda v: _is_int(v) and v > 0),
    "seed": ("an integer in [0, 2**64 − 1]", lambda v: _is_int(v) and 0 <= v < 2**64),
    "guidance": ("a finite number", _is_number),
    "guidance_rescale": ("a finite number", _is_number),
    "eta": ("a finite number", _is_number),
    "record_scale": ("a positive integer", lambda v: _is_int(v) and v > 0),
    "negative_prompt": ("a string or null", _optional(lambda v: isinstance(v, str))),
    "batch_size": ("a positive integer", lambda v: _is_int(v) and v > 0),
    "height": ("a positive integer or null", _optional(lambda v: _is_int(v) and v > 0)),
    "width": ("a positive integer or null", _optional(lambda v: _is_int(v) and v > 0)),
    "device": ("a string", lambda v: isinstance(v, str)),
    "status": (f"one of {list(STATUSES)}", lambda v: v in STATUSES),
    "message": ("a string", lambda v: isinstance(v, str)),
    "traceback": ("a string", lambda v: isinstance(v, str)),
    "elapsed_seconds": ("a finite number ≥ 0", lambda v: _is_number(v) and v >= 0),
    "space": ("a string", lambda v: isinstance(v, str)),
    "generator_device": ("a string", lambda v: isinstance(v, str)),
    "mu": ("a finite number or null", _optional(_is_number)),
}
"""The metadata fields that chromaviz reads back, with what each must be when present."""


def _metadata_problem(meta: Mapping[str, Any]) -> str:
    for name, (allowed, check) in METADATA_FIELDS.items():
        if name in meta and not check(meta[name]):
            return f"metadata field {name!r} is {json.dumps(meta[name], default=str)[:80]}; it must be {allowed}"
    counts = [meta[k] for k in ("num_steps", "num_evaluations") if k in meta]
    if len(set(counts)) > 1:
        return f"metadata says num_steps {meta['num_steps']} but num_evaluations {meta['num_evaluations']}"
    return ""


def _tensors_problem(tensors: Mapping[str, torch.Tensor]) -> str:
    """What is wrong between the tensors of a file (one batch, one sample shape, float data), or ""."""
    for name in _PER_STEP:
        t = tensors[name]
        if not t.is_floating_point() and name != "timesteps":
            return f"the tensor {name!r} has dtype {t.dtype}, not floating point"
        values = t.double()
        if name == "log_snr" and values.isnan().any():
            return "the tensor 'log_snr' holds NaN"
        if name != "log_snr" and not values.isfinite().all():
            return f"the tensor {name!r} holds NaN or infinite values"
    samples = {name: tensors[name] for name in (*RECORDABLE, "final") if name in tensors}
    for name, t in samples.items():
        if not t.is_floating_point():
            return f"the tensor {name!r} has dtype {t.dtype}, not floating point"
    shapes = {name: tuple(t.shape[1:]) for name, t in samples.items() if name != "final"}
    if len(set(shapes.values())) > 1:
        return "the recorded tensors disagree in shape: " + ", ".join(f"{k} {v}" for k, v in shapes.items())
    if "final" in samples and shapes:
        (b, c, h, w), (fb, fc, fh, fw) = next(iter(shapes.values())), tuple(samples["final"].shape)
        if (b, c) != (fb, fc) or fh % h or fw % w:
            return (f"the tensor 'final' has shape {(fb, fc, fh, fw)}, which does not fit the recorded steps' "
                    f"{(b, c, h, w)}")
    return ""


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
    problem = _metadata_problem(meta)
    if problem:
        return problem
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
    problem = _tensors_problem(tensors)
    if problem:
        return problem
    if status == "complete" and final is None:
        return "it says the run is complete but has no 'final' sample"
    return ""


class SuspectRunWarning(UserWarning):
    """A finished run that is not a sample of its model: it returned (nearly) its initial noise, or a
    band holds several times its data power (:func:`chromaviz.analysis.compare` records why in
    ``Comparison.suspect``)."""


NOISE_SIMILARITY = 0.9
"""Mean cosine similarity of a run's samples with their initial noise above which the run is suspect."""


def noise_similarity(final: torch.Tensor, initial: torch.Tensor) -> float:
    """Mean over the batch of the cosine similarity of each sample (B, …) with its initial noise."""
    a, b = final.detach().cpu().flatten(1).double(), initial.detach().cpu().flatten(1).double()
    return float(torch.nn.functional.cosine_similarity(a, b, dim=1).mean())


def noise_similarity_of_data(power) -> float:
    """The cosine similarity with its initial noise that an ideal sample of data with spectrum ``power``
    has: Σ√P/√(N·ΣP) over the N modes (each mode of the noise carried to √P of it, THEORY §4b); 1 for
    white data, ≈ 0.6 for a power law of exponent 2 at 64×64."""
    p = np.clip(np.asarray(power, dtype=np.float64), 0, None)
    total = p.sum()
    return float(np.sqrt(p).sum() / np.sqrt(p.size * total)) if total > 0 else 0.0
