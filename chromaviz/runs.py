"""One run's settings, checked, loaded, sampled and compared once: :class:`RunSpec` → :class:`Run`.

The report's run (parameters → model → :func:`~chromaviz.sampling.sample` →
:func:`~chromaviz.analysis.compare`) is written here, once, and everything that runs one uses it:
``chromaviz run``, the report notebook and ``chromaviz report``'s pre-flight, each cell of
``chromaviz sweep``, and the explorer's runs (a spec holding the loaded model, sampled with a live prompt).

>>> from chromaviz.runs import RunSpec
>>> spec = RunSpec(steps=5, batch=2, size=16)
>>> run = spec.run()                      # checks, loads, plans once, samples with the plan
>>> run.trajectory.status, len(run.trajectory), run.comparison.levels   # compared once, on first use
('complete', 5, (1, 2, 4))

A setting that cannot work is a ``ValueError`` naming it and what is allowed, raised before any
work (:meth:`RunSpec.check`):

>>> RunSpec(steps=0).check()
Traceback (most recent call last):
...
ValueError: steps must be a positive integer, got 0

This module imports no UI, report or sweep package (no jupyter_client, papermill, bokeh or dask).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

if TYPE_CHECKING:
    import threading

    from .analysis import Comparison
    from .models.base import Denoiser
    from .noise.plan import StepPlan
    from .sampling.sampler import PromptSource
    from .sampling.trajectory import StepRecord, Trajectory

__all__ = ["SETTINGS", "Run", "RunSpec", "check_settings", "recording_too_large"]


@dataclass(frozen=True)
class RunSpec:
    """The settings of one run: the report's parameters (``chromaviz report --list``), as one value.

    Attributes
    ----------
    model : str or Denoiser
        A built-in model (``gaussian``, ``exemplars``, ``shapes``: :data:`chromaviz.models.registry.MODELS`),
        or a diffusers pipeline folder written by ``save_pretrained``, or a model id in the local
        Hugging Face cache; or a model already loaded (a :class:`~chromaviz.models.base.Denoiser`,
        as the explorer holds one), used as it is: it keeps its own schedule and dtype.
    prompt : str
        A prompt or a prompt schedule (``"[cat:moon:0.5]"``); ``""`` (or None) samples unconditionally.
    scheduler : str
        ``"default"`` or a name of :data:`chromaviz.noise.SCHEDULERS`.
    schedule : str
        Noise schedule preset of the exact built-in models, or ``"default"``: the model's own (the layout
        model's cosine schedule rescaled to zero terminal SNR, scaled_linear for the other exact ones).
        Trained models keep their own.
    steps : int
        N, the inference steps.
    seed : int
        In [0, 2**64 − 1].
    size : int
        Height and width in pixels.
    batch : int
        Samples in the run (≥ 2 measures about the batch mean).
    guidance : float
        Classifier-free guidance scale w ≥ 0 (1: none).
    method : {"rings", "pyramid"}
        Band decomposition of the measurement.
    device : str
        Torch device; ``""`` (or None): CUDA when available, else the CPU.
    dtype : str
        ``"float16"`` or ``"bfloat16"`` for a diffusers pipeline; ``""`` (or None): float32.

    Notes
    -----
    Making a spec checks nothing; :meth:`check` does, and :meth:`run` checks before it loads.
    """

    model: str | Denoiser = "gaussian"
    prompt: str = ""
    scheduler: str = "default"
    schedule: str = "default"
    steps: int = 50
    seed: int = 0
    size: int = 64
    batch: int = 8
    guidance: float = 1.0
    method: str = "rings"
    device: str = ""
    dtype: str = ""

    def __post_init__(self) -> None:
        for name in ("prompt", "device", "dtype"):  # None, as the command line and Python callers write "none"
            if getattr(self, name) is None:
                object.__setattr__(self, name, "")

    # ------------------------------------------------------------------ making one
    @classmethod
    def from_parameters(cls, values: Mapping[str, Any]) -> RunSpec:
        """The spec of the settings among ``values`` (a report's parameters, a sweep cell's values);
        other names (``output_dir``, ``save_trajectory``) are left out, missing ones take the defaults."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    @property
    def builtin(self) -> bool:
        """True if :attr:`model` names a built-in model (no weights to download)."""
        from .models.registry import is_builtin

        return isinstance(self.model, str) and is_builtin(self.model)

    @property
    def loaded(self) -> Denoiser | None:
        """:attr:`model` when it is a model already loaded (a Denoiser), else None."""
        return None if isinstance(self.model, str) else _loaded_model(self.model)

    def given(self) -> tuple[str, ...]:
        """The settings that differ from the defaults, in field order."""
        return tuple(f.name for f in dataclasses.fields(self) if getattr(self, f.name) != f.default)

    # ------------------------------------------------------------------ 1. check
    def check(self, model: Denoiser | None = None, *, given: Iterable[str] | None = None, option: str = "",
              local: bool = True, prompt: PromptSource = None, plan: StepPlan | None = None) -> StepPlan | None:
        """Refuse settings that cannot work, before any work: one ``ValueError`` naming the setting.

        Checks, in order: every setting on its own (:func:`check_settings`); settings the model
        would ignore, among those ``given`` (a schedule for a trained model, a diffusers pipeline or
        a loaded model, a dtype for a built-in or loaded model, guidance for an unconditional one);
        a size the box pyramid cannot split (``method="pyramid"``); then the run as
        :func:`chromaviz.sampling.check_sample` checks it (a size or prompt the model cannot take, more
        steps than the scheduler takes, a recording larger than the memory), which plans the run.

        Parameters
        ----------
        model : Denoiser, optional
            The loaded model (:meth:`load`). Without one: :attr:`model` if it is a loaded model; a
            built-in model is loaded here, once per (model, size, schedule) in this
            process; a diffusers pipeline is not loaded, and only its settings are checked.
        given : iterable of str, optional
            The settings the user set (``-p`` names): values a model would ignore are refused only
            among these. Default :meth:`given`, the settings that differ from the defaults; ``()``
            refuses none (a sweep's grid may pair guidance 3 with the unconditional model).
        option : str
            How messages spell a setting: ``""`` (``guidance 7.5``, Python), ``"--"`` (``--guidance
            7.5``, ``chromaviz run``) or ``"-p "`` (``-p guidance 7.5``, the report and sweeps).
        local : bool
            The run happens on this machine: its device must exist here (False for a sweep whose
            cells run elsewhere).
        prompt : str, PromptSchedule or callable, optional
            The prompt the run samples with instead of :attr:`prompt` (:meth:`run`'s ``prompt``),
            checked as :func:`~chromaviz.sampling.sample` checks it. A UI whose live prompt can give
            several prompt schedules checks each, passing the plan of the first check as ``plan``.
        plan : StepPlan, optional
            What an earlier check of this spec returned: the run is checked with it, not planned
            again (a plan of another schedule, N or scheduler is refused).

        Returns
        -------
        StepPlan or None
            The run's step plan (pass it to :meth:`run`), or None when the run could not be planned
            without loading a diffusers pipeline.

        Raises
        ------
        ValueError
            Naming the setting, what was given and what is allowed.
        TypeError
            A setting of the wrong type (a number for ``model``, say).
        """
        from .models.registry import MODELS, TRAINED

        check_settings({f.name: getattr(self, f.name) for f in dataclasses.fields(self)}, local=local)
        given = set(self.given() if given is None else given)
        spell = functools.partial(_spell, option=option)
        loaded = self.loaded
        if loaded is not None:
            for name in ("schedule", "dtype"):
                if name in given:
                    raise ValueError(f"model {loaded.name} is already loaded and keeps its own schedule and dtype; "
                                     f"{spell(name)} applies to a model the run loads by name")
        elif self.builtin:
            if self.model in TRAINED and "schedule" in given:
                raise ValueError(f"model {self.model} keeps the schedule it was trained with; {spell('schedule')} applies "
                                 f"to the exact built-in models ({', '.join(n for n in MODELS if n not in TRAINED)})")
            if "dtype" in given and self.dtype:
                raise ValueError(f"{spell('dtype')} applies to diffusers pipelines; the built-in model {self.model} runs "
                                 "in float32")
            if self.method == "pyramid":
                from .spectral import check_pyramid_size

                check_pyramid_size(self.size, self.size)  # built-in models are measured on the pixels
        elif "schedule" in given:
            raise ValueError(f"model {self.model} is a diffusers pipeline and keeps the schedule it was trained with; "
                             f"{spell('schedule')} applies to the exact built-in models "
                             f"({', '.join(n for n in MODELS if n not in TRAINED)})")
        if model is None:
            model = loaded
        if model is None:
            if not self.builtin:
                return None
            model = _preflight_model(self.model, self.size, self.schedule)
        if not model.conditional and self.prompt:
            raise ValueError(f"model {model.name} is unconditional and takes no prompt (got {spell('prompt')} "
                             f"{self.prompt!r}); leave prompt empty, or use a conditional model (exemplars, layout, shapes)")
        if not model.conditional and "guidance" in given and self.guidance != 1:
            raise ValueError(f"model {model.name} is unconditional: {spell('guidance')} {self.guidance:g} would change "
                             "nothing (guidance scales a prompt's effect); leave it at 1")
        plan = self._check_sample(model, option=option, local=local, prompt=prompt, plan=plan)
        if self.method == "pyramid" and not self.builtin:
            from .spectral import check_pyramid_size

            check_pyramid_size(*model.latent_size(self.size, self.size))  # measured on its latents
        return plan

    def _sample_options(self, model: Denoiser, *, local: bool = True) -> dict[str, Any]:
        """The keyword arguments of :func:`chromaviz.sampling.sample` for this run (an unconditional model
        runs unguided: a sweep's grid may pair it with guidance 3)."""
        guidance = self.guidance if model.conditional else 1.0
        return dict(num_inference_steps=self.steps, scheduler=self.scheduler, guidance=guidance, seed=self.seed,
                    batch_size=self.batch, height=self.size, width=self.size,
                    device=(self.device or None) if local else None)

    def _prompt(self, prompt: PromptSource) -> PromptSource:
        """The prompt the run samples with: ``prompt`` if given, else :attr:`prompt` (``""``: none)."""
        return prompt if prompt is not None else (self.prompt or None)

    def _check_sample(self, model: Denoiser, *, option: str, local: bool, prompt: PromptSource = None,
                      plan: StepPlan | None = None) -> StepPlan:
        from .sampling import check_sample
        from .sampling.recorder import RecordingTooLarge

        try:
            return check_sample(model, self._prompt(prompt), **self._sample_options(model, local=local), plan=plan)
        except RecordingTooLarge as err:
            raise ValueError(recording_too_large(err, self.size, self.batch, self.steps, option=option)) from None

    # ------------------------------------------------------------------ 2. load
    def load(self) -> Denoiser:
        """The run's model, through the model registry (:func:`chromaviz.models.registry.load_model`);
        :attr:`model` itself if it is a loaded model.

        Returns
        -------
        Denoiser

        Raises
        ------
        ValueError, TypeError
            A setting that cannot work (:func:`check_settings`, checked first), or a folder that is
            not a diffusers pipeline.
        """
        from .models.registry import load_model

        check_settings({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})
        if self.loaded is not None:
            return self.loaded
        return load_model(self.model, size=self.size, schedule=self.schedule, device=self.device or None,
                          dtype=self.dtype or None)

    # ------------------------------------------------------------------ 3. sample, 4. compare
    def run(self, model: Denoiser | None = None, *, plan: StepPlan | None = None, given: Iterable[str] | None = None,
            option: str = "", prompt: PromptSource = None, progress: bool = False,
            callback: Callable[[StepRecord], None] | None = None, stop: threading.Event | None = None,
            keep_partial: bool = False) -> Run:
        """Check, load, plan once, and sample with the plan; the run is compared once, when first asked.

        Parameters
        ----------
        model : Denoiser, optional
            The loaded model; default :meth:`load`.
        plan : StepPlan, optional
            What :meth:`check` returned for ``model``: the run is then not checked or planned again
            (``sample`` still refuses a plan of another schedule, N or scheduler). Default:
            :meth:`check` of ``model`` here, which plans the run (one ``set_timesteps``).
        given, option
            As :meth:`check`.
        prompt : str, PromptSchedule or callable, optional
            The prompt to sample with instead of :attr:`prompt`: a :class:`~chromaviz.prompts.PromptSchedule`,
            or a live function ``(i, noise)`` polled before every step (the explorer's prompt switch,
            flipped mid-run). Pass the ``plan`` :meth:`check` returned for it.
        progress : bool
            A tqdm progress bar over the steps.
        callback : callable, optional
            Called with each :class:`~chromaviz.sampling.trajectory.StepRecord` as it is recorded; its
            tensors are the trajectory's own storage (read them; ``.clone()`` before changing one).
        stop : threading.Event, optional
            Set it to cancel the run (status ``"cancelled"``).
        keep_partial : bool
            On a failure or an interrupt once sampling has started, return the :class:`Run` of the
            steps recorded, with :attr:`Run.error` set, instead of raising.

        Returns
        -------
        Run
            Its :attr:`Run.comparison` is :func:`chromaviz.analysis.compare` of the trajectory with
            the plan, computed once on first use.

        Raises
        ------
        ValueError, TypeError
            A setting that cannot work, before anything is loaded or sampled (see :meth:`check`).
        SamplingError
            Sampling failed at a step (unless ``keep_partial``); its ``trajectory`` keeps the earlier steps.
        SamplingInterrupted
            Ctrl-C or a notebook's interrupt during sampling (unless ``keep_partial``), with the
            partial ``trajectory``; a plain ``KeyboardInterrupt`` before sampling started.
        """
        from .sampling import SamplingError, SamplingInterrupted, sample

        if model is None:
            model = self.load()
        if plan is None:
            plan = self.check(model, given=given, option=option, prompt=prompt)
        start = time.perf_counter()
        error: BaseException | None = None
        try:
            traj = sample(model, self._prompt(prompt), **self._sample_options(model), progress=progress, callback=callback,
                          stop=stop, plan=plan)
        except (SamplingError, SamplingInterrupted) as err:
            if not keep_partial:
                raise
            traj, error = err.trajectory, err
        return Run(self, model, plan, traj, time.perf_counter() - start, error)


SETTINGS = tuple(f.name for f in dataclasses.fields(RunSpec))
"""The names of a run's settings (the fields of :class:`RunSpec`; the report's parameters of the same names)."""


@dataclass(frozen=True, eq=False)
class Run:
    """A sampled run: its spec, model, step plan and trajectory; compared once, on first use.

    Attributes
    ----------
    spec : RunSpec
    model : Denoiser
    plan : StepPlan
        The plan it was sampled with (S model evaluations).
    trajectory : Trajectory
        Every recorded step: ``x_t``, ``x0``, ``eps`` of shape (S, B, C, H, W) for a complete run
        (H, W the model's grid: pixels, or latents); fewer steps when it stopped.
    seconds : float
        Wall time of the sampling.
    error : SamplingError or SamplingInterrupted or None
        Why it stopped early (only with ``RunSpec.run(keep_partial=True)``).
    """

    spec: RunSpec
    model: Denoiser
    plan: StepPlan
    trajectory: Trajectory
    seconds: float
    error: BaseException | None = None

    @functools.cached_property
    def comparison(self) -> Comparison | None:
        """:func:`chromaviz.analysis.compare` of the run on its bands (``spec.method``), with its plan;
        computed once, on first use. None for a run that recorded no step. A run stopped by Ctrl-C or
        SIGTERM is compared without the model's ideal process, which can cost as much as the run.

        Returns
        -------
        Comparison or None
            Measured and predicted fractions of shape (S, L), L levels.
        """
        if len(self.trajectory) == 0:
            return None
        from . import analysis

        stopped = isinstance(self.error, KeyboardInterrupt)
        return analysis.compare(self.trajectory, self.model, method=self.spec.method, plan=self.plan,
                                ideal=not stopped)

    @property
    def status(self) -> str:
        """The trajectory's status: ``"complete"``, ``"failed"``, ``"interrupted"`` or ``"cancelled"``."""
        return self.trajectory.status


# ---------------------------------------------------------------------- the settings one by one
def check_settings(values: Mapping[str, Any], *, local: bool = True) -> None:
    """Check run settings by name, each on its own (no model loaded): the rules :meth:`RunSpec.check`
    starts with. Names that are not :class:`RunSpec` fields are not checked.

    Parameters
    ----------
    values : mapping of str to value
        Settings, e.g. the report's ``-p`` values.
    local : bool
        Check that ``device`` exists on this machine.

    Raises
    ------
    ValueError, TypeError
        Naming the setting, what was given and what is allowed.

    Examples
    --------
    >>> check_settings({"steps": 20, "method": "rings"})
    >>> check_settings({"batch": 0})
    Traceback (most recent call last):
    ...
    ValueError: batch must be a positive integer, got 0
    """
    from . import _checks

    for name, value in values.items():
        rule = _RULES.get(name)
        if rule is None:
            continue
        if name == "device" and not local:
            continue
        if name == "model" and not isinstance(value, str):
            _loaded_model(value)  # a loaded model, used as it is
            continue
        if name in _TEXT and not isinstance(value, str):
            raise TypeError(f"{name} must be text (str), got {value!r} ({type(value).__name__})")
        rule(_checks, value)
        if name == "model" and local:
            _local_folder(value)


def _loaded_model(value: Any) -> Denoiser:
    """``value`` if it is a loaded model (a Denoiser); a TypeError otherwise."""
    from .models.base import Denoiser

    if not isinstance(value, Denoiser):
        raise TypeError(f"model must be text (str), got {value!r} ({type(value).__name__}); or a loaded model "
                        "(a chromaviz Denoiser)")
    return value


def _model(_checks, value: str) -> None:
    from .models.registry import MODELS, is_builtin

    if value == "":
        raise ValueError(f"model is empty; give a built-in model ({', '.join(MODELS)}), a diffusers pipeline folder or "
                         "a model id such as 'org/name'")
    if not is_builtin(value) and "/" not in value and not Path(value).exists():
        raise ValueError(f"model {value!r} is neither a built-in model ({', '.join(MODELS)}) nor a diffusers pipeline "
                         f"folder (there is no {value!r} here) nor a model id such as 'org/name'")


def _local_folder(value: str) -> None:
    """A model written as a path (absolute, or starting with ``.`` or ``~``, or with more than one
    ``/``: a model id has one) must be a folder on this machine: refused before any work where the
    run is local (a sweep's cells may run where the path exists)."""
    from . import _checks
    from .models.registry import is_builtin

    path = Path(value).expanduser()
    if is_builtin(value) or not _checks.written_as_path(value) or path.is_dir():
        return
    why = "is a file, not a folder" if path.exists() else "does not exist"
    raise ValueError(f"model {value!r} {why}: give a diffusers pipeline folder (written by save_pretrained), a "
                     "model id such as 'org/name', or a built-in model")


def _prompt(_checks, value: str) -> None:
    if value:
        from .prompts import PromptSchedule

        PromptSchedule.parse(value)


def _scheduler(_checks, value: str) -> None:
    from .noise.schedulers import check_scheduler_name

    check_scheduler_name(value)


def _schedule(_checks, value: str) -> None:
    from .noise.schedules import Schedule

    if value != "default":
        Schedule.coerce(value)


def _method(_checks, value: str) -> None:
    from .spectral import _check_method

    _check_method(value)


def _device(_checks, value: str) -> None:
    if value:  # empty: CUDA when available, else the CPU
        _checks.torch_device("device", value)


def _dtype(_checks, value: str) -> None:
    if value:  # empty: float32
        _checks.dtype_name("dtype", value)


_RULES: dict[str, Callable[[Any, Any], None]] = {
    "model": _model,
    "prompt": _prompt,
    "scheduler": _scheduler,
    "schedule": _schedule,
    "steps": lambda c, v: c.positive_int("steps", v),
    "seed": lambda c, v: c.integer("seed", v, minimum=0, maximum=2**64 - 1),
    "size": lambda c, v: c.positive_int("size", v),
    "batch": lambda c, v: c.positive_int("batch", v),
    "guidance": lambda c, v: c.real("guidance", v, minimum=0),
    "method": _method,
    "device": _device,
    "dtype": _dtype,
}
"""Each :class:`RunSpec` setting's own rule (the library's checks, with their messages)."""

_TEXT = frozenset({"model", "prompt", "scheduler", "schedule", "method", "device", "dtype"})


def _spell(name: str, *, option: str) -> str:
    """A setting as the caller's user writes it: ``guidance``, ``--guidance`` or ``-p guidance``."""
    return f"{option}{name}"


def recording_too_large(err, size: int, batch: int, steps: int, *, option: str = "") -> str:
    """A :class:`~chromaviz.sampling.recorder.RecordingTooLarge` in the caller's words, its settings
    spelt ``option + name`` (``"--"`` for ``chromaviz run``, ``"-p "`` for the report, ``""`` in Python).

    Returns
    -------
    str
        One line: the size, batch and steps, the memory needed and available, and what to make smaller.
    """
    size_, batch_, steps_ = (_spell(name, option=option) for name in ("size", "batch", "steps"))
    return (f"{size_} {size} with {batch_} {batch} and {steps_} {steps} needs about {err.needed / 2**30:.3g} GiB to "
            f"record x_t, x̂0 and ε of every step, more than the {err.budget / 2**30:.3g} GiB of memory available; "
            f"use a smaller {size_}, {batch_} or {steps_}")


@functools.lru_cache(maxsize=8)
def _preflight_model(model: str, size: int, schedule: str) -> Denoiser:
    """A built-in model for :meth:`RunSpec.check`, loaded once per (model, size, schedule) in this
    process (a sweep checks every cell) and quietly: a check prints one line or none."""
    from .models.registry import load_model

    return load_model(model, size=size, schedule=schedule)
