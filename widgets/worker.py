"""Sampling in a background thread, so the notebook's controls stay responsive."""

from __future__ import annotations

import threading
import time
import traceback
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from chromaviz.models import Denoiser
from chromaviz.sampling.prompts import Boundary
from chromaviz.sampling import SamplingError, sample
from chromaviz.noise import NoiseLevel
from chromaviz.sampling.trajectory import StepRecord, Trajectory


@dataclass
class PromptSwitch:
    """A prompt switch the UI can flip while a run is going: read before every step.

    The run uses ``first`` until ``boundary`` is crossed, then ``second`` — but only while
    ``enabled``; flipping ``enabled`` mid-run takes effect from the next step.
    """

    first: str | None
    second: str | None = None
    boundary: Boundary = field(default_factory=lambda: Boundary.fraction(0.5))
    enabled: bool = False

    def prompt(self, step: int, num_steps: int, level: NoiseLevel) -> str | None:
        if self.enabled and self.boundary.crossed(step, num_steps, level.timestep, level.log_snr):
            return self.second
        return self.first


@dataclass(frozen=True)
class RunSettings:
    """Everything a run needs besides the model."""

    num_steps: int = 50
    scheduler: str = "default"
    guidance: float = 1.0
    seed: int = 0
    size: int = 64
    batch_size: int = 1
    device: str | None = None

    def but(self, **changes: Any) -> RunSettings:
        return replace(self, **changes)


class SamplingJob:
    """One or more runs in a worker thread, with stop and per-step notifications.

    Parameters
    ----------
    model : Denoiser
    runs : list of (name, RunSettings, PromptSwitch)
        Sampled one after another (same seed → side-by-side comparisons).
    on_step : callable (name, StepRecord, elapsed_seconds) → None
        Called from the worker thread after every step.
    on_done : callable (name, Trajectory, error message or None) → None
        Called from the worker thread when each run ends, whatever the reason.
    """

    def __init__(self, model: Denoiser, runs, on_step: Callable, on_done: Callable) -> None:
        self.model = model
        self.runs = list(runs)
        self.on_step = on_step
        self.on_done = on_done
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._work, name="chromaviz-sampling", daemon=True)

    def start(self) -> SamplingJob:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()

    @property
    def running(self) -> bool:
        return self.thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        self.thread.join(timeout)

    def _work(self) -> None:
        for name, settings, switch in self.runs:
            if self.stop_event.is_set():
                break
            start = time.perf_counter()
            error = None
            traj = Trajectory(metadata={"status": "failed"})
            num_steps: list[int] = []

            def prompt(i: int, level: NoiseLevel, switch=switch) -> str | None:
                return switch.prompt(i, num_steps[0] if num_steps else settings.num_steps, level)

            def callback(rec: StepRecord, name=name) -> None:
                if not num_steps:
                    num_steps.append(rec.num_steps)
                self.on_step(name, rec, time.perf_counter() - start)

            try:
                traj = sample(
                    self.model, prompt, num_steps=settings.num_steps, scheduler=settings.scheduler,
                    guidance=settings.guidance, seed=settings.seed, batch_size=settings.batch_size,
                    height=settings.size, width=settings.size, device=settings.device, callback=callback,
                    stop=self.stop_event,
                )
            except SamplingError as err:
                traj, error = err.trajectory, str(err)
            except Exception as err:  # bad settings or anything unforeseen: report it in the UI
                error = f"{type(err).__name__}: {err}"
                traj.metadata["message"] = error
                traj.metadata["traceback"] = traceback.format_exc()
            self.on_done(name, traj, error)
