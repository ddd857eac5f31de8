"""Sampling in a background thread, so the notebook's controls stay responsive.

A run's settings are a :class:`chromaviz.runs.RunSpec` (holding the explorer's loaded model): it is
checked and planned once with :meth:`~chromaviz.runs.RunSpec.check`, and sampled here with
:meth:`~chromaviz.runs.RunSpec.run` and that plan. What only the explorer has is the live part
beside it: the prompt the UI may change mid-run (:class:`LivePrompt`), the per-step callback and the
stop event.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable

import torch

from chromaviz.analysis import StepwiseComparison
from chromaviz.models import Denoiser
from chromaviz.noise import NoiseLevel, StepPlan
from chromaviz.prompts import PromptSchedule
from chromaviz.runs import RunSpec
from chromaviz.sampling.threads import usable_cores
from chromaviz.sampling.trajectory import StepRecord, Trajectory

BATCH = 1
"""Samples in an explorer run (a :class:`~chromaviz.runs.RunSpec` defaults to 8): one image to watch,
at the speed of one."""


class LivePrompt:
    """The prompt of a run that the UI may change while it goes, read before every step.

    Parameters
    ----------
    schedule : PromptSchedule
        The prompt with the switch off (prompt A as typed: ``"[cat:moon:0.6]"`` is a schedule).
    switched : PromptSchedule or None
        The prompt with the switch on (``PromptSchedule.switch(A, B, boundary)``), if any.
    enabled : bool
        Whether the switch is on. Setting ``enabled`` or ``switched`` mid-run takes effect from
        the next step.
    num_evaluations : int
        S, the model evaluations of the run (fraction boundaries count in them, as in ``sample``).
    """

    def __init__(self, schedule: PromptSchedule, switched: PromptSchedule | None, enabled: bool, num_evaluations: int) -> None:
        self.schedule, self.switched, self.enabled, self.num_evaluations = schedule, switched, enabled, num_evaluations

    @property
    def active(self) -> PromptSchedule:
        """The schedule that applies now."""
        return self.switched if self.enabled and self.switched is not None else self.schedule

    def __call__(self, i: int, noise: NoiseLevel) -> str | None:
        return self.active.prompt_at(i, self.num_evaluations, noise.timestep, noise.log_snr)


@dataclass(eq=False)
class RunState:
    """One run of the explorer: what it was asked, its step plan, what it recorded, how it ended.

    Attributes
    ----------
    name : str
        "A" or "B".
    spec : RunSpec
        The run's settings, its model the explorer's (``spec.prompt`` is prompt A as typed).
    prompt : LivePrompt
        What the run samples with instead of ``spec.prompt``, read before every step.
    plan : StepPlan
        The run's step plan (what :meth:`RunSpec.check <chromaviz.runs.RunSpec.check>` returned for each
        prompt the run can give), made once, before it starts; ``RunSpec.run`` takes it.
    records : list of StepRecord
        Steps recorded so far (appended by the sampling thread).
    trajectory : Trajectory or None
        Set when the run has ended, whatever the reason.
    error : str or None
        Why it failed, if it did.
    comparison : StepwiseComparison
        The measured signal fractions of the steps drawn while the run goes (filled by the view).
    shown : int
        Records the view has taken in (the newest of them drawn; the scrubber has one frame per
        refresh while the run goes, every step once it has ended).
    elapsed : float
        Seconds since the run started, at its newest step.
    stamps : list of float
        When each recorded step ended (``time.perf_counter()`` seconds; appended by the sampling
        thread with the records): what the live view's refreshes cost the run is read from them.
    notes : list of str
        What planning the run warned of (a prompt switch that never happens, say): shown with the
        run's status.
    """

    name: str
    spec: RunSpec
    prompt: LivePrompt
    plan: StepPlan
    comparison: StepwiseComparison
    records: list[StepRecord] = field(default_factory=list)
    trajectory: Trajectory | None = None
    error: str | None = None
    shown: int = 0
    elapsed: float = 0.0
    notes: list[str] = field(default_factory=list)
    stamps: list[float] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.trajectory is not None

    @property
    def complete(self) -> bool:
        """Whether the run has ended with every planned step."""
        return self.trajectory is not None and self.trajectory.status == "complete"

    def partial(self) -> Trajectory | None:
        """The finished trajectory, or the steps recorded so far as one (None before the first)."""
        if self.trajectory is not None:
            return self.trajectory
        return Trajectory(metadata={}, steps=list(self.records)) if self.records else None


GNU_OPENMP = "libgomp.so.1"
"""GNU OpenMP, as torch's Linux wheels load it. Only its ``omp_pause_resource_all`` is called: it
frees the calling thread's team alone, while LLVM's pauses the whole runtime."""


def release_openmp_threads() -> bool:
    """Free the calling thread's OpenMP thread team (``omp_pause_resource_all(omp_pause_hard)``,
    OpenMP 5.0), if torch runs on GNU OpenMP (:data:`GNU_OPENMP`); returns whether it was freed.

    Every Python thread that runs a parallel torch operation gets its own OpenMP team, and a team's
    idle threads are kept. Once the teams together have more threads than the machine has cores,
    GNU OpenMP stops letting idle threads spin-wait for work and puts them to sleep instead, so every
    parallel operation of every team pays for waking them: a run sampled in a worker thread, after
    the notebook's own thread used torch, took 1.4× as long on 2 cores (and single operations up to
    4×). Freeing the calling thread's idle team before the worker starts keeps the count at the
    cores; the team is made again when that thread next runs a parallel operation.

    Only a runtime already loaded is touched; nothing is loaded. Elsewhere (another runtime, no
    ``RTLD_NOLOAD`` on this platform) it does nothing and returns False.
    """
    try:
        runtime = ctypes.CDLL(GNU_OPENMP, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
    except (OSError, AttributeError):  # not loaded, or no RTLD_NOLOAD on this platform
        return False
    pause = getattr(runtime, "omp_pause_resource_all", None)
    return pause is not None and pause(2) == 0  # omp_pause_hard


def sampling_threads() -> int:
    """Intra-op threads for a run sampled beside a live view: those of the calling thread, but at
    most one fewer than the cores this process may use (at least one).

    The view needs CPU time while the run goes (drawing frames, the notebook's messages, the
    browser). An OpenMP team that spans every core waits at each of its barriers for whichever
    thread the operating system paused to run the view, so on 2 cores a run with the live view
    attached took 3–4× as long as the same run alone; with one core left to the view it does not
    wait. On a machine with many cores this costs one thread of many; on a GPU it costs nothing.

    Also for models with heavy steps, where one thread fewer costs the most: on 2 cores, the shapes
    model at 50 steps, guidance 3, sampled in the worker alone took 1.33× the notebook thread's
    time on one thread and 1.01× on two, but with the live view in JupyterLab and Chromium
    1.53× on one and 2.31× on two (``benchmarks/explorer_latency.py --model shapes --size 32``).
    """
    return max(1, min(torch.get_num_threads(), usable_cores() - 1))


class SamplingJob:
    """Runs, one after another, in a worker thread, with stop and per-step notifications.

    Parameters
    ----------
    model : Denoiser
        The model each run samples (its spec's).
    runs : list of RunState
        Sampled in order (same seed → side-by-side comparisons), each with ``state.spec.run`` and
        the run's plan, live prompt, this job's callback and stop event.
    on_step : callable (RunState, StepRecord, elapsed_seconds) → None
        Called from the worker thread after every step.
    on_done : callable (RunState, Trajectory, error message or None) → None
        Called from the worker thread when each run ends, whatever the reason.

    Notes
    -----
    torch's OpenMP thread count is a per-thread setting: a fresh Python thread that calls into
    torch starts its own thread team at the library default. The worker takes the count of the
    thread that created the job, less one core left to the live view (:func:`sampling_threads`);
    :meth:`start` frees the starting thread's idle team first (:func:`release_openmp_threads`),
    so the two teams do not slow each other.
    """

    def __init__(self, model: Denoiser, runs: list[RunState], on_step: Callable, on_done: Callable) -> None:
        self.model = model
        self.runs = list(runs)
        self.on_step = on_step
        self.on_done = on_done
        self.stop_event = threading.Event()
        self.num_threads = sampling_threads()
        self.thread = threading.Thread(target=self._work, name="chromaviz-sampling", daemon=True)

    def start(self) -> SamplingJob:
        release_openmp_threads()
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
        torch.set_num_threads(self.num_threads)
        for state in self.runs:
            if self.stop_event.is_set():
                break
            start = time.perf_counter()
            error = None
            traj = Trajectory(metadata={"status": "failed"})

            def callback(rec: StepRecord, state=state) -> None:
                self.on_step(state, rec, time.perf_counter() - start)

            try:  # checked and planned before the job started: sampled with that plan
                run = state.spec.run(self.model, plan=state.plan, prompt=state.prompt, callback=callback,
                                     stop=self.stop_event, keep_partial=True)
                traj, error = run.trajectory, None if run.error is None else str(run.error)
            except Exception as err:  # bad settings or anything unforeseen: report it in the UI
                error = f"{type(err).__name__}: {err}"
                traj.metadata["message"] = error
                traj.metadata["traceback"] = traceback.format_exc()
            self.on_done(state, traj, error)
            if error is not None:
                break
