"""A recorded sampling run: every step's x_t, x̂0 and ε, with its noise level and prompt.

Saved as one ``.safetensors`` file: the tensors, plus a JSON document (per-step prompts and the
run's metadata) in the file's string metadata. No pickle anywhere, so a trajectory from someone
else is safe to open.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .. import spectral

RECORDABLE = ("x_t", "x0", "eps")
"""Per-step tensors a run can record: the network input, the clean-sample prediction, the noise prediction."""

STATUSES = ("running", "complete", "cancelled", "failed")


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
        """Write the trajectory to ``path`` (``.safetensors``); returns the path."""
        from safetensors.torch import save_file

        path = Path(path)
        tensors: dict[str, torch.Tensor] = {
            "timesteps": torch.tensor(self.timesteps),
            "log_snr": torch.tensor(self.log_snr),
            "alpha": torch.tensor([s.alpha for s in self.steps], dtype=torch.float64),
            "sigma": torch.tensor([s.sigma for s in self.steps], dtype=torch.float64),
        }
        for name in RECORDABLE:
            if self.steps and getattr(self.steps[0], name) is not None:
                tensors[name] = self.stacked(name).contiguous()
        if self.final is not None:
            tensors["final"] = self.final.contiguous()
        doc = {"metadata": self.metadata, "prompts": self.prompts, "num_steps": [s.num_steps for s in self.steps]}
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu() for k, v in tensors.items()}, str(path), metadata={"chromaviz": json.dumps(doc, default=_json_default)})
        return path

    @classmethod
    def load(cls, path: str | Path) -> Trajectory:
        """Read a trajectory written by :meth:`save`."""
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if "chromaviz" not in meta:
                raise ValueError(f"{path} is a safetensors file but not a chromaviz trajectory")
            doc = json.loads(meta["chromaviz"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        n = len(doc["prompts"])
        steps = [
            StepRecord(
                index=i,
                timestep=float(tensors["timesteps"][i]),
                log_snr=float(tensors["log_snr"][i]),
                alpha=float(tensors["alpha"][i]),
                sigma=float(tensors["sigma"][i]),
                x_t=tensors["x_t"][i] if "x_t" in tensors else None,
                x0=tensors["x0"][i] if "x0" in tensors else None,
                eps=tensors["eps"][i] if "eps" in tensors else None,
                prompt=doc["prompts"][i],
                num_steps=doc["num_steps"][i],
            )
            for i in range(n)
        ]
        return cls(metadata=doc["metadata"], steps=steps, final=tensors.get("final"))

    def __repr__(self) -> str:
        m = self.metadata
        return (
            f"Trajectory({len(self)}/{m.get('num_steps', '?')} steps, status={self.status!r}, "
            f"model={m.get('model', {}).get('name', '?')!r}, scheduler={m.get('scheduler', '?')!r})"
        )


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        f = float(obj)
        return f if math.isfinite(f) else str(f)
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        return obj.tolist()
    return str(obj)
