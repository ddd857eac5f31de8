"""The recorder of a sampling run: what is kept of every step, and what is kept when a run stops.

The sampler's loop computes; the :class:`Recorder` keeps. It copies the recorded tensors of each
step to the host (average-pooled by ``record_scale``), checks that the step produced finite values
and blames the part that did not, hands the record to the step callback and the progress bar, and
turns any stop (cancel, interrupt, error) into a partial :class:`~chromaviz.sampling.trajectory.Trajectory`
marked with why and where it stopped. On CUDA a step's record is handed out one step late, after
the next step has been queued, so that copying it to the host never stalls the GPU.
"""

from __future__ import annotations

import resource
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import psutil
import torch

from .trajectory import RECORDABLE, StepRecord, Trajectory

if TYPE_CHECKING:
    from ..noise.plan import NoiseLevel, StepPlan

DEFER_ON = ("cuda",)
"""Device types on which a step's record is handed out one step late (after the next step is
queued), so that copying it to the host never waits for the GPU."""

MEMORY_MARGIN = 1 << 30
"""Bytes of available host memory a recording leaves free (at most a quarter of what is available)."""


class RecordingTooLarge(ValueError):
    """A run's recording cannot fit in the host's available memory (:func:`check_host_memory`).

    Attributes
    ----------
    needed, budget : int
        Bytes the recording needs, and bytes it may take.
    """

    def __init__(self, message: str, needed: int, budget: int) -> None:
        super().__init__(message)
        self.needed, self.budget = needed, budget


class SamplingError(RuntimeError):
    """Sampling stopped at a step; ``trajectory`` holds everything recorded before it.

    Its status is ``"failed"`` and its message names the step and the part that failed (the
    prompt, the prompt encoder, the model, the guidance combination, the scheduler step, the step
    callback).
    """

    def __init__(self, message: str, trajectory: Trajectory) -> None:
        super().__init__(message)
        self.trajectory = trajectory


class SamplingInterrupted(KeyboardInterrupt):
    """A run interrupted (Ctrl-C, a notebook's interrupt button) with its partial ``trajectory``.

    Still a :class:`KeyboardInterrupt`, so that an interrupt keeps stopping whatever called the
    sampler; the trajectory's status is ``"interrupted"`` and its message names the step.
    """

    def __init__(self, message: str, trajectory: Trajectory) -> None:
        super().__init__(message)
        self.trajectory = trajectory


def recording_bytes(num_evaluations: int, shape: Sequence[int], record: Sequence[str], record_scale: int,
                    dtype: torch.dtype) -> int:
    """Host memory a run's recording takes, in bytes.

    S × B × C × (H/r) × (W/r) × (recorded tensors) × (bytes per element), plus the final sample
    (B × C × H × W, never pooled).

    Parameters
    ----------
    num_evaluations : int
        S, the records of the run (one per model evaluation).
    shape : tuple of int
        (B, C, H, W) of the model's samples.
    record : sequence of str
        The recorded tensors (names from :data:`~chromaviz.sampling.trajectory.RECORDABLE`).
    record_scale : int
        r, the pooling factor of the records.
    dtype : torch.dtype
        The model's dtype (records keep it).

    Examples
    --------
    >>> recording_bytes(50, (1, 3, 64, 64), ("x_t", "x0", "eps"), 1, torch.float32) // 2**20
    7
    """
    b, c, h, w = shape
    itemsize = torch.empty((), dtype=dtype).element_size()
    per_record = b * c * (h // record_scale) * (w // record_scale) * itemsize
    return num_evaluations * len(set(record)) * per_record + b * c * h * w * itemsize


def _cgroup_room() -> int | None:
    """Bytes this process's cgroup (v2, or v1's memory controller) may still take, or None without a limit."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, group = line.split(":", 2)
        if controllers == "":
            limit, usage = Path("/sys/fs/cgroup", group.lstrip("/"), "memory.max"), "memory.current"
        elif "memory" in controllers.split(","):
            limit, usage = Path("/sys/fs/cgroup/memory", group.lstrip("/"), "memory.limit_in_bytes"), "memory.usage_in_bytes"
        else:
            continue
        try:
            text = limit.read_text().strip()
            if text == "max" or int(text) >= 1 << 60:
                return None
            return int(text) - int((limit.parent / usage).read_text())
        except (OSError, ValueError):
            return None
    return None


def available_memory() -> int:
    """Bytes of memory this process can still take: the least of the host's available memory
    (psutil), the room under its address-space limit (``ulimit -v``, ``RLIMIT_AS``) and the room
    under its cgroup's memory limit (a container's or a batch job's)."""
    room = [psutil.virtual_memory().available]
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        room.append(soft - psutil.Process().memory_info().vms)
    cgroup = _cgroup_room()
    if cgroup is not None:
        room.append(cgroup)
    return max(0, min(room))


def check_host_memory(nbytes: int, plan: StepPlan, shape: Sequence[int], record: Sequence[str],
                      record_scale: int) -> None:
    """Refuse a recording that cannot fit in the memory this process can take.

    The budget is :func:`available_memory` less :data:`MEMORY_MARGIN` (at most a quarter of it).

    Raises
    ------
    RecordingTooLarge
        (a ValueError) with the estimate and the ways to make the run fit.
    """
    available = available_memory()
    budget = available - min(MEMORY_MARGIN, available // 4)
    if nbytes <= budget:
        return
    b, c, h, w = shape
    raise RecordingTooLarge(
        f"the recording needs about {_gib(nbytes)} of host memory ({plan.num_evaluations} steps × batch {b} × "
        f"{c}×{h // record_scale}×{w // record_scale} × {len(set(record))} tensors {tuple(record)}), more than the "
        f"{_gib(budget)} available; record less with record=('x0',) or record_scale=2 or 4, or use fewer steps "
        f"(num_inference_steps) or a smaller batch_size", nbytes, budget)


def _all_finite(x: torch.Tensor) -> torch.Tensor:
    """Whether ``x`` has no NaN or ∞, as a 0-d bool tensor on its device (no synchronisation).

    From its minimum and maximum (NaN propagates through both): one pass without a full boolean
    copy, about 20 times faster than ``torch.isfinite(x).all()`` on the CPU.
    """
    return torch.isfinite(torch.stack(torch.aminmax(x))).all()


def _gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.3g} GiB"


@dataclass
class _Step:
    """A step whose host copies may still be in flight."""

    index: int
    noise: NoiseLevel
    prompt: str | None
    copies: dict[str, torch.Tensor | None]
    finite: torch.Tensor  # [guided output finite, next sample finite]
    outputs: list[torch.Tensor]  # the model's own outputs, to blame guidance or the model
    event: Any  # torch.cuda.Event or None


class Recorder:
    """Keeps the records of one run and ends it, whatever the way it ends.

    Use as a context manager around the sampling loop: an exception leaving the block becomes a
    :class:`SamplingError` (a :class:`SamplingInterrupted` for a ``KeyboardInterrupt``) carrying
    the partial trajectory, with the step and the part (see :meth:`at`, :meth:`part`) that failed.

    Parameters
    ----------
    trajectory : Trajectory
        The run's trajectory, its metadata filled in; steps are appended to it.
    plan : StepPlan
        The run's step plan (noise level of every step, S).
    shape : tuple of int
        (B, C, H, W) of the samples.
    dtype : torch.dtype
        The model's dtype.
    device : torch.device
        Where sampling runs (on a type in :data:`DEFER_ON`, records are handed out one step late).
    record : sequence of str
        What to keep per step, from :data:`~chromaviz.sampling.trajectory.RECORDABLE`.
    record_scale : int
        Average-pool the records by this factor before the copy to the host.
    callback : callable, optional
        Called with each :class:`~chromaviz.sampling.trajectory.StepRecord` once it is recorded.
    progress : bool
        Show a tqdm progress bar.

    Raises
    ------
    ValueError
        If the recording cannot fit in host memory (:func:`check_host_memory`).
    """

    def __init__(self, trajectory: Trajectory, plan: StepPlan, *, shape: Sequence[int], dtype: torch.dtype,
                 device: torch.device, record: Sequence[str] = RECORDABLE, record_scale: int = 1,
                 callback: Callable[[StepRecord], Any] | None = None, progress: bool = False) -> None:
        check_host_memory(recording_bytes(plan.num_evaluations, shape, record, record_scale, dtype),
                          plan, shape, record, record_scale)
        self.trajectory, self.plan = trajectory, plan
        self.record, self.scale = tuple(record), record_scale
        self.cuda = device.type == "cuda"
        self.defer = device.type in DEFER_ON
        self.callback, self.progress = callback, progress
        self._where: tuple[int, str] = (0, "the first step")
        self._pending: _Step | None = None
        self._bar = None
        self._started = 0.0

    # ------------------------------------------------------------------ where the run is
    def at(self, index: int, part: str) -> None:
        """The run is now at step ``index``, in ``part`` (named in the message if it fails there)."""
        self._where = (index, part)

    @contextmanager
    def part(self, part: str) -> Iterator[None]:
        """Within the block the current step is in ``part``; a failure inside leaves it named."""
        index, outer = self._where
        self._where = (index, part)
        yield
        self._where = (index, outer)

    def watch(self, model: Any) -> _Watched:
        """``model`` as guidance calls it: failures inside are blamed on the model, and its outputs
        are kept for one step, to tell a non-finite model output from a non-finite guidance."""
        return _Watched(model, self)

    # ------------------------------------------------------------------ records
    def add(self, index: int, noise: NoiseLevel, prompt: str | None, tensors: dict[str, torch.Tensor], *,
            output: torch.Tensor, outputs: list[torch.Tensor], next_sample: torch.Tensor) -> None:
        """Record step ``index``: ``tensors`` (x_t, x̂0, ε), the guided ``output``, the model's own
        ``outputs`` and the scheduler's ``next_sample`` (the last two only checked for finiteness).

        Raises
        ------
        SamplingError
            If the step (or, deferred, the step before it) produced NaN or ∞.
        """
        copies = {name: self._to_host(v) if name in self.record else None for name, v in tensors.items()}
        finite = torch.stack([_all_finite(output), _all_finite(next_sample)])
        event = None
        if self.cuda:
            finite = finite.to("cpu", non_blocking=True)  # before the event, so that the event covers it
            event = torch.cuda.Event()
            event.record()
        step = _Step(index, noise, prompt, copies, finite, list(outputs), event)
        if self.defer:
            step, self._pending = self._pending, step
        if step is not None:
            self._hand_out(step)

    def settle(self) -> None:
        """Hand out the record still in flight (deferred mode), if any."""
        if self._pending is not None:
            step, self._pending = self._pending, None
            self._hand_out(step)

    def _to_host(self, v: torch.Tensor) -> torch.Tensor:
        v = v.detach()
        if self.scale > 1:
            v = torch.nn.functional.avg_pool2d(v.float(), self.scale).to(v.dtype)
        if not self.cuda:
            return v.to("cpu", copy=True)
        host = torch.empty(v.shape, dtype=v.dtype, pin_memory=True)
        host.copy_(v, non_blocking=True)
        return host

    def _blame(self, step: _Step) -> str | None:
        """Why ``step`` is not finite (None if it is), once its copies are complete."""
        if step.event is not None:
            step.event.synchronize()
        output_ok, next_ok = (bool(v) for v in step.finite)
        if output_ok and next_ok:
            return None
        noise, meta = step.noise, self.trajectory.metadata
        where = f"at step {step.index} (t={noise.timestep:g}, λ={noise.log_snr:.3g})"
        if output_ok:
            return (f"the scheduler step ({meta.get('scheduler_class', 'scheduler')}.step) returned NaN or infinity "
                    f"{where} from a finite model output")
        if all(bool(torch.isfinite(out).all()) for out in step.outputs):
            return (f"classifier-free guidance (guidance={meta.get('guidance')}, guidance_rescale="
                    f"{meta.get('guidance_rescale')}) turned the model's finite outputs into NaN or infinity {where}")
        return f"the model returned NaN or infinity {where}"

    def _hand_out(self, step: _Step, notify: bool = True) -> None:
        blame = self._blame(step)
        if blame is not None:
            raise self._end_failed(f"{blame}; sampling stopped and the {len(self.trajectory.steps)} earlier steps are kept")
        rec = StepRecord(index=step.index, timestep=step.noise.timestep, log_snr=step.noise.log_snr,
                         alpha=step.noise.alpha, sigma=step.noise.sigma, **step.copies, prompt=step.prompt,
                         num_steps=self.plan.num_evaluations)
        self.trajectory.steps.append(rec)
        if notify and self.callback is not None:
            where, self._where = self._where, (step.index, "the step callback")
            self.callback(rec)
            self._where = where
        if self._bar is not None:
            self._bar.update(1)

    # ------------------------------------------------------------------ endings
    def complete(self, final: torch.Tensor) -> None:
        """The run reached its last step: ``final`` (B, C, H, W) is the generated sample."""
        self.settle()
        self.trajectory.final = final.detach().to("cpu", copy=True)
        self._end("complete", f"{self.plan.num_evaluations} steps")

    def cancel(self, index: int) -> None:
        """The stop signal was seen before step ``index``."""
        self.settle()
        self._end("cancelled", f"stopped before step {index} of {self.plan.num_evaluations}")

    def _end(self, status: str, message: str) -> None:
        self.trajectory.metadata.update(status=status, message=message)

    def _end_failed(self, message: str) -> SamplingError:
        self._end("failed", message)
        return SamplingError(message, self.trajectory)

    def _settle_quietly(self) -> None:
        """Keep the record in flight without calling the callback (the run is failing): dropped if
        it is not finite."""
        if self._pending is not None:
            step, self._pending = self._pending, None
            if self._blame(step) is None:
                self._hand_out(step, notify=False)

    def __enter__(self) -> Recorder:
        self._started = time.perf_counter()
        if self.progress:
            from tqdm.auto import tqdm

            name = self.trajectory.metadata.get("model", {}).get("name", "model")
            self._bar = tqdm(total=self.plan.num_evaluations, desc=f"sampling {name}", unit="step")
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if exc is None or not isinstance(exc, (Exception, KeyboardInterrupt)):
                return False
            if isinstance(exc, SamplingError) and exc.trajectory is self.trajectory:
                return False  # this run's own ending (a non-finite step), already recorded
            self._settle_quietly()
            index, part = self._where
            kept = f"the {len(self.trajectory.steps)} recorded steps are kept"
            if isinstance(exc, KeyboardInterrupt):
                message = f"interrupted at step {index} of {self.plan.num_evaluations} (in {part}); {kept}"
                self._end("interrupted", message)
                raise SamplingInterrupted(message, self.trajectory) from exc
            t = f" (t={self.plan.noise[index].timestep:g})" if index < len(self.plan.noise) else ""
            hint = ""
            if isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower():
                hint = (" (out of memory: try torch_dtype=torch.float16, a smaller batch or size, record=('x0',) "
                        "or record_scale=2)")
            raise self._end_failed(f"step {index}{t} failed in {part}: {type(exc).__name__}: {exc}{hint}; {kept}") from exc
        finally:
            self.trajectory.metadata["elapsed_seconds"] = time.perf_counter() - self._started
            if self._bar is not None:
                self._bar.close()


def _check_output(out: Any, x_t: torch.Tensor) -> None:
    """Raise unless the model's ``out`` is a floating-point tensor of ``x_t``'s shape (a scheduler
    would broadcast a wrong batch or round an integer prediction without a word)."""
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"the model returned {type(out).__name__}; it must return a tensor of shape {tuple(x_t.shape)}")
    if out.shape != x_t.shape:
        raise ValueError(f"the model returned a tensor of shape {tuple(out.shape)} for an input of shape "
                         f"{tuple(x_t.shape)}; it must return the input's shape (B, C, H, W)")
    if not out.is_floating_point():
        raise TypeError(f"the model returned a tensor of dtype {out.dtype}; it must return floating point")


class _Watched:
    """A model as guidance calls it: each call is run as the recorder's "the model" part, and its
    output is kept until the step is recorded."""

    def __init__(self, model: Any, recorder: Recorder) -> None:
        self.model, self.recorder = model, recorder
        self.outputs: list[torch.Tensor] = []

    def __call__(self, x_t: torch.Tensor, noise: NoiseLevel, cond: Any) -> torch.Tensor:
        with self.recorder.part("the model"):
            out = self.model(x_t, noise, cond)
            _check_output(out, x_t)
        self.outputs.append(out)
        return out

    def take_outputs(self) -> list[torch.Tensor]:
        """The outputs since the last call, and forget them."""
        outputs, self.outputs = self.outputs, []
        return outputs
