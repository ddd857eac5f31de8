"""Step-by-step sampling with any denoiser and any diffusers scheduler, recording every step.

:func:`sample` reads like a diffusers pipeline's ``__call__``, in four phases:

1. **check**: every argument, before any work (:mod:`chromaviz._checks`);
2. **plan**: the run's one :class:`~chromaviz.noise.plan.StepPlan` (scheduler, noise level of every
   model evaluation, N and S);
3. **prepare**: the initial latents, the scheduler's step arguments, the prompt per step, the
   encoding cache, the trajectory and its :class:`~chromaviz.sampling.recorder.Recorder`;
4. **loop**: the loop every diffusers pipeline runs (``scale_model_input``, model, ``step``).

chromaviz adds only what makes the loop observable and steerable: the exact noise level of each
step, a per-step prompt, classifier-free guidance, and the recorder (records, callback, progress,
the non-finite check, and the partial trajectory on any stop).
"""

from __future__ import annotations

import inspect
import threading
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from .. import _checks
from .. import __version__
from ..models.base import Denoiser, join_prediction, split_prediction
from ..noise.plan import NoiseLevel, StepPlan, plan_steps
from ..noise.schedulers import image_seq_len, stepping_target
from ..prompts import PromptSchedule
from .guidance import Guidance, check_prompt
from .recorder import Recorder, SamplingError, SamplingInterrupted, check_host_memory, recording_bytes
from .trajectory import (
    NOISE_SIMILARITY, RECORDABLE, StepRecord, SuspectRunWarning, Trajectory, noise_similarity, noise_similarity_of_data,
)

__all__ = ["PromptSource", "SamplingError", "SamplingInterrupted", "SuspectRunWarning", "check_sample", "default_device",
           "sample"]

PromptSource = str | PromptSchedule | Callable[..., "str | None"] | None
"""A prompt, a prompt schedule, or a function ``(i, noise)`` or ``(i, noise, plan)`` → prompt,
polled every step."""

DEFAULT_STEPS = 50


def default_device() -> torch.device:
    """CUDA when available, otherwise the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sample(
    model: Denoiser,
    prompt: PromptSource = None,
    *,
    num_inference_steps: int | None = None,
    scheduler: Any = "default",
    guidance: float = 1.0,
    negative_prompt: str | None = None,
    seed: int = 0,
    batch_size: int = 1,
    height: int | None = None,
    width: int | None = None,
    device: str | torch.device | None = None,
    record: Sequence[str] = RECORDABLE,
    callback: Callable[[StepRecord], None] | None = None,
    stop: threading.Event | None = None,
    progress: bool = False,
    guidance_rescale: float = 0.0,
    eta: float = 0.0,
    generator_device: str | torch.device = "cpu",
    record_scale: int = 1,
    plan: StepPlan | None = None,
) -> Trajectory:
    """Sample from ``model`` and record every step.

    Parameters
    ----------
    model : Denoiser
        Any chromaviz model.
    prompt : str, PromptSchedule, callable or None
        A prompt (A1111-style ``[a:b:when]`` switches are parsed), a :class:`PromptSchedule`, or a
        function polled before every step (how a live UI flips prompts mid-run): ``f(i, noise)``
        with the step index i and its :class:`~chromaviz.noise.plan.NoiseLevel`, or
        ``f(i, noise, plan)`` (when it takes three arguments) to see the whole
        :class:`~chromaviz.noise.plan.StepPlan`, N and S included. It returns a prompt or None.
        None samples unconditionally.
    num_inference_steps : int, default 50
        N, the steps handed to the scheduler's ``set_timesteps`` (numpy and torch integers too).
        The run records S ≥ N model evaluations (S > N for PNDM, Heun, KDPM2).
    scheduler : str or diffusers scheduler
        A name from :data:`chromaviz.noise.SCHEDULERS`, a scheduler instance (copied), or
        ``"default"``: the model's own scheduler where its schedule says so (a diffusers
        pipeline's), else DDIM (flow Euler for flow-matching schedules).
    guidance : float
        Classifier-free guidance scale w ≥ 0, finite; 1 means none (a single model call per step).
    negative_prompt : str or None
        The prompt guidance pushes away from (None: unconditional).
    seed : int
        In [0, 2**64 − 1]. Seeds the initial noise and any stochastic scheduler, on a CPU
        generator (see ``generator_device``) so that a seed means the same noise on every device.
    batch_size, height, width : int
        Samples per run and their size in pixels (default: the model's ``default_size``). Latent
        models map pixels to their sample grid with ``model.latent_size(height, width)``. A flow
        scheduler with ``use_dynamic_shifting`` (Flux, SD3.5) gets its shift from that grid as
        diffusers' pipelines compute it: ``mu = calculate_shift(image_seq_len, ...)`` with
        ``image_seq_len`` the grid's tokens over the model's ``patch_size`` (1 where it has none;
        :func:`chromaviz.noise.schedulers.image_seq_len`); the run records it as ``mu``. To choose
        it, pass ``plan=plan_steps(model.schedule, N, scheduler, mu=...)``.
    device : str or torch.device, optional
        Default: CUDA when available, else CPU.
    record : list or tuple of {"x_t", "x0", "eps"}
        What to keep per step (kept on the CPU). A single string is refused (it is not read as
        letters).
    callback : callable, optional
        Called with each :class:`~chromaviz.sampling.trajectory.StepRecord` as soon as it is recorded.
        Its tensors are the trajectory's own storage, not copies (a copy per step would cost as much as
        the recording): read them, and ``.clone()`` one before changing it in place.
    stop : threading.Event, optional
        Anything with ``is_set()``; checked before every step; once set, the run ends with status
        ``"cancelled"``.
    progress : bool
        Show a tqdm progress bar.
    guidance_rescale : float
        φ ∈ [0, 1] of Lin et al. (2023) §3.4, as diffusers' ``rescale_noise_cfg``: the guided output
        is rescaled to the per-sample standard deviation of the conditional one and mixed with
        weight φ. 0 (default) leaves guidance as is.
    eta : float
        η ∈ [0, 1] of DDIM (Song et al. 2021, eq. 16: 0 deterministic, 1 the DDPM posterior
        variance), passed to the scheduler's ``step`` where it takes one, as the pipelines do.
    generator_device : str or torch.device
        Device of the random generator that draws the initial noise (in the model's dtype, as
        diffusers' ``randn_tensor``, so that ``sample`` and ``pipe(...)`` start alike) and any
        scheduler noise. "cpu" (default) makes a seed mean the same noise on every device. Not
        always in every dtype: torch's CPU generator may draw other numbers in float16 or bfloat16
        than in float32 (torch 2.11 does), so compare a float16 run with a float16 run.
    record_scale : int
        Keep recorded tensors average-pooled by this factor (1: full size; it must divide the
        sample size); pooling happens on the model's device before the copy to the host, so long
        high-resolution runs fit in memory.
    plan : StepPlan, optional
        The run's step plan, computed before (what :func:`check_sample` returns for the same
        arguments), so that diffusers' ``set_timesteps`` runs once per run; it must be the plan of
        this model's schedule, N and scheduler (:meth:`StepPlan.check_for
        <chromaviz.noise.plan.StepPlan.check_for>`). Default: planned here. With a plan,
        ``num_inference_steps`` defaults to the plan's N.

    Returns
    -------
    Trajectory
        Status ``"complete"`` or ``"cancelled"``. Its metadata records ``num_inference_steps``
        (N), ``num_evaluations`` (S) and ``num_steps`` (S, for older readers).

    Raises
    ------
    TypeError, ValueError
        For bad arguments, before any step runs; the message names the argument, what was given
        and what is allowed. A ``ValueError`` also when the recording (S × B × C × H × W × recorded
        tensors, after ``record_scale``) cannot fit in the host's available memory, or for a ``plan``
        made for another schedule, N or scheduler.
    SamplingError
        If anything fails once sampling has started: the live prompt, the prompt encoder, the model
        (out of memory, say), the guidance combination, the scheduler step, or the callback raises,
        or one of them produces NaN or ∞ (the message names which, and the step). Its
        ``trajectory`` has status ``"failed"`` and keeps every earlier step.
    SamplingInterrupted
        A ``KeyboardInterrupt`` (Ctrl-C, a notebook's interrupt) during the run; still a
        ``KeyboardInterrupt``. Its ``trajectory`` has status ``"interrupted"`` and keeps every
        recorded step.

    Warns
    -----
    SuspectRunWarning
        A ``UserWarning``: when the run returned (nearly) its initial noise (mean cosine similarity
        above 0.9), for any step count and sampler (e.g. ``num_inference_steps=1`` with DDIM, DDPM,
        PNDM or Euler at their default spacing, which evaluate the model at t = 0 on pure noise, or
        Heun with 2 steps): it is not a sample. :func:`chromaviz.analysis.compare` flags it too, with
        bands that hold several times their data power.
    """
    # 1. check, 2. plan
    inputs, plan = _check_and_plan(
        model=model, prompt=prompt, num_inference_steps=num_inference_steps, scheduler=scheduler,
        guidance=guidance, negative_prompt=negative_prompt, seed=seed, batch_size=batch_size, height=height,
        width=width, device=device, record=record, callback=callback, stop=stop, progress=progress,
        guidance_rescale=guidance_rescale, eta=eta, generator_device=generator_device, record_scale=record_scale,
        plan=plan,
    )
    # 3. prepare
    run = _prepare(inputs, plan)
    # 4. loop
    traj = _denoise(run, plan, inputs.stop)
    _warn_if_noise(traj, run.initial, plan, model)
    return traj


def check_sample(model: Denoiser, prompt: PromptSource = None, **options: Any) -> StepPlan:
    """What ``sample(model, prompt, **options)`` checks before its first step, without sampling.

    Every argument, the step plan, the prompt at every step and the recording's host memory, as
    :func:`sample` checks them; nothing is drawn, moved to a device or evaluated. Pass the plan it
    returns to ``sample(..., plan=plan)`` to sample that run without planning it again. For tools that
    refuse a bad run before they start anything (``chromaviz report`` before its kernel starts).

    Returns
    -------
    StepPlan
        The run's step plan.

    Raises
    ------
    TypeError, ValueError
        What :func:`sample` would raise before its first step, with the same message (an option
        ``sample`` does not take is a TypeError).
    """
    try:
        bound = inspect.signature(sample).bind(model, prompt, **options)
    except TypeError as err:  # with sample()'s own words
        raise TypeError(f"sample() {err}") from None
    bound.apply_defaults()
    inputs, plan = _check_and_plan(**bound.arguments)
    shape = (inputs.batch_size, model.channels, *inputs.size)
    check_host_memory(recording_bytes(plan.num_evaluations, shape, inputs.record, inputs.record_scale, model.dtype),
                      plan, shape, inputs.record, inputs.record_scale)
    _prompt_source(inputs.prompt, model, plan)
    return plan


# ---------------------------------------------------------------------- 1. check
def _check_and_plan(*, num_inference_steps: int | None, plan: StepPlan | None = None,
                    **arguments: Any) -> tuple[_Inputs, StepPlan]:
    """Phases 1 and 2 of :func:`sample`, given its arguments by name (a ``plan`` given is checked, not redone)."""
    if plan is not None and not isinstance(plan, StepPlan):
        raise TypeError(f"plan must be a StepPlan (what check_sample() or chromaviz.noise.plan_steps() returns) or "
                        f"None, got {_kind(plan)}")
    if num_inference_steps is None:
        num_inference_steps = plan.num_inference_steps if plan is not None else DEFAULT_STEPS
    inputs = _Inputs(num_inference_steps=num_inference_steps, **arguments)
    if plan is not None:
        return inputs, plan.check_for(inputs.model.schedule, inputs.num_inference_steps, inputs.scheduler)
    # A dynamic-shifting flow scheduler (Flux, SD3.5) takes its shift from the image size, as diffusers'
    # pipelines compute it: mu = calculate_shift(image_seq_len, ...) over the model's tokens.
    tokens = image_seq_len(*inputs.size, getattr(inputs.model, "patch_size", 1))
    return inputs, plan_steps(inputs.model.schedule, inputs.num_inference_steps, inputs.scheduler, image_seq_len=tokens)


@dataclass
class _Inputs:
    """The arguments of one :func:`sample` call, checked and normalised (see there)."""

    model: Denoiser
    prompt: PromptSource
    num_inference_steps: int
    scheduler: Any
    guidance: float
    negative_prompt: str | None
    seed: int
    batch_size: int
    height: int | None
    width: int | None
    device: Any
    record: Sequence[str]
    callback: Callable[[StepRecord], None] | None
    stop: Any
    progress: bool
    guidance_rescale: float
    eta: float
    generator_device: Any
    record_scale: int

    def __post_init__(self) -> None:
        if not isinstance(self.model, Denoiser):
            raise TypeError(f"model must be a chromaviz Denoiser (e.g. chromaviz.models.GaussianPowerLaw(), or "
                            f"chromaviz.models.load_pipeline(...) for a diffusers pipeline), got {_kind(self.model)}")
        model = self.model
        self.num_inference_steps = _checks.positive_int("num_inference_steps", self.num_inference_steps)
        if not isinstance(self.scheduler, (str, SchedulerMixin)):
            raise TypeError(f"scheduler must be a scheduler name (see chromaviz.noise.SCHEDULERS) or 'default', or a "
                            f"diffusers scheduler instance, got {_kind(self.scheduler)}")
        self.guidance = _checks.real("guidance", self.guidance, minimum=0)
        self.guidance_rescale = _checks.real("guidance_rescale", self.guidance_rescale, minimum=0, maximum=1)
        if not model.conditional and self.guidance != 1:
            raise ValueError(f"{model.name} is unconditional: guidance={self.guidance:g} would change nothing (guidance "
                             "scales a prompt's effect); leave it at 1")
        self.eta = _checks.real("eta", self.eta, minimum=0, maximum=1)
        self.seed = _checks.integer("seed", self.seed, minimum=0, maximum=2**64 - 1)
        self.batch_size = _checks.positive_int("batch_size", self.batch_size)
        self.height = _checks.positive_int("height", self.height if self.height is not None else model.default_size[0])
        self.width = _checks.positive_int("width", self.width if self.width is not None else model.default_size[1])
        model.check_size(self.height, self.width)
        self.record = tuple(dict.fromkeys(_checks.subset("record", self.record, RECORDABLE)))
        self.record_scale = _checks.positive_int("record_scale", self.record_scale)
        h, w = self.size
        if h % self.record_scale or w % self.record_scale:
            raise ValueError(f"record_scale={self.record_scale} must divide the sample size {h}×{w}")
        if self.callback is not None and not callable(self.callback):
            raise TypeError(f"callback must be a function of a StepRecord, or None; got {_kind(self.callback)}")
        if self.stop is not None and not callable(getattr(self.stop, "is_set", None)):
            raise TypeError(f"stop must be a threading.Event (anything with is_set()), or None; got {_kind(self.stop)}")
        self.progress = _checks.boolean("progress", self.progress)
        self.device = _checks.torch_device("device", self.device) if self.device is not None else default_device()
        self.generator_device = _checks.torch_device("generator_device", self.generator_device)
        if self.negative_prompt is not None and not isinstance(self.negative_prompt, str):
            raise TypeError(f"negative_prompt must be a str or None, got {_kind(self.negative_prompt)}")
        try:
            self.negative_prompt = model.check_prompt(self.negative_prompt)
        except ValueError as err:
            raise ValueError(f"negative_prompt: {err}") from None
        _check_prompt_source(self.prompt)

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the model's samples: pixels, or the latent grid of a latent model."""
        return tuple(self.model.latent_size(self.height, self.width))


def _kind(value: Any) -> str:
    text = repr(value)
    return f"{text if len(text) <= 60 else text[:57] + '...'} ({type(value).__name__})"


def _check_prompt_source(prompt: Any) -> None:
    if prompt is None or isinstance(prompt, (str, PromptSchedule)):
        return
    if not callable(prompt):
        raise TypeError(f"prompt must be a str, a PromptSchedule, a function (i, noise) or (i, noise, plan) "
                        f"returning a prompt, or None; got {_kind(prompt)}")
    _live_arity(prompt)


def _live_arity(prompt: Callable) -> int:
    """3 if the live prompt takes ``(i, noise, plan)``, 2 if it takes ``(i, noise)``."""
    try:
        signature = inspect.signature(prompt)
    except (TypeError, ValueError):  # a builtin without a signature: the documented two arguments
        return 2
    for arity in (3, 2):
        try:
            signature.bind(*range(arity))
            return arity
        except TypeError:
            pass
    raise TypeError(f"a live prompt function must take (i, noise) or (i, noise, plan); {prompt!r} takes {signature}")


# ---------------------------------------------------------------------- 3. prepare
@dataclass
class _Run:
    """What the loop needs, prepared."""

    model: Any  # the model as guidance calls it (Recorder.watch)
    parameterization: str
    scheduler: Any  # the plan's scheduler, copied, to be stepped
    target: str  # what the scheduler's step takes: "epsilon", "sample", "v_prediction" or "flow"
    latents: torch.Tensor
    initial: torch.Tensor  # a copy of the initial latents (a run that returns them is flagged)
    scale: Callable[[torch.Tensor, Any], torch.Tensor]
    step_kwargs: dict[str, Any]
    guidance: Guidance
    prompt_at: Callable[[int, NoiseLevel], str | None]
    negative_prompt: str | None
    encode: Callable[[str | None], Any]
    recorder: Recorder

    def model_output(self, out: torch.Tensor, x0: torch.Tensor, eps: torch.Tensor, noise: NoiseLevel) -> torch.Tensor:
        """The guided prediction in the parametrisation the scheduler's step takes."""
        return out if self.target == self.parameterization else join_prediction(x0, eps, noise, self.target)


def _prepare(inputs: _Inputs, plan: StepPlan) -> _Run:
    model = inputs.model
    sched = plan.new_scheduler()
    target = stepping_target(sched, plan.noise)  # v, not ε, through α = 0 (zero terminal SNR)
    traj = Trajectory(metadata=_metadata(inputs, plan, sched))
    shape = (inputs.batch_size, model.channels, *inputs.size)
    recorder = Recorder(traj, plan, shape=shape, dtype=model.dtype, device=inputs.device, record=inputs.record,
                        record_scale=inputs.record_scale, callback=inputs.callback, progress=inputs.progress)
    prompt_at = _prompt_source(inputs.prompt, model, plan)  # prompts checked before any step
    model.to(inputs.device)

    generator = torch.Generator(inputs.generator_device).manual_seed(inputs.seed)
    # As diffusers' prepare_latents: noise drawn in the model's dtype on the generator's device.
    # FlowMatch* schedulers have no init_noise_sigma: their initial sample is ε itself (σ = 1).
    x = torch.randn(shape, generator=generator, device=generator.device, dtype=model.dtype).to(inputs.device)
    x = x * getattr(sched, "init_noise_sigma", 1.0)
    accepted = inspect.signature(sched.step).parameters  # as the pipelines' prepare_extra_step_kwargs
    step_kwargs = {k: v for k, v in {"eta": inputs.eta, "generator": generator}.items() if k in accepted}
    encoded: dict[str | None, Any] = {}

    def encode(p: str | None) -> Any:
        if p not in encoded:
            with recorder.part("the prompt encoder"):
                encoded[p] = model.encode([p] * inputs.batch_size)
        return encoded[p]

    guided = inputs.guidance != 1.0 and model.conditional
    return _Run(
        model=recorder.watch(model), parameterization=model.parameterization, scheduler=sched, target=target,
        latents=x, initial=x.clone(),
        # FlowMatch* schedulers have no scale_model_input (SD3/Flux pipelines feed x_t as is).
        scale=getattr(sched, "scale_model_input", lambda sample, timestep: sample), step_kwargs=step_kwargs,
        guidance=Guidance(inputs.guidance if guided else 1.0, inputs.guidance_rescale), prompt_at=prompt_at,
        negative_prompt=inputs.negative_prompt, encode=encode, recorder=recorder,
    )


def _metadata(inputs: _Inputs, plan: StepPlan, sched: Any) -> dict[str, Any]:
    return {
        "chromaviz_version": __version__,
        "model": inputs.model.describe(),
        "scheduler": plan.scheduler_name,
        "scheduler_class": type(sched).__name__,
        "scheduler_config": dict(sched.config),
        "num_steps": plan.num_evaluations,
        "num_evaluations": plan.num_evaluations,
        "num_inference_steps": plan.num_inference_steps,
        "seed": inputs.seed,
        "generator_device": str(inputs.generator_device),
        "mu": plan.mu,
        "guidance": inputs.guidance if inputs.model.conditional else 1.0,  # what ran: an unconditional model takes none
        "guidance_rescale": inputs.guidance_rescale,
        "eta": inputs.eta,
        "record_scale": inputs.record_scale,
        "negative_prompt": inputs.negative_prompt,
        "prompt": _describe_prompt(inputs.prompt),
        "batch_size": inputs.batch_size,
        "height": inputs.height,
        "width": inputs.width,
        "device": str(inputs.device),
        "status": "running",
        "message": "",
    }


def _prompt_source(prompt: PromptSource, model: Denoiser, plan: StepPlan) -> Callable[[int, NoiseLevel], str | None]:
    """Resolve prompts up front (so bad prompts fail before sampling) or wrap a live function."""
    if callable(prompt) and not isinstance(prompt, (str, PromptSchedule)):
        with_plan = _live_arity(prompt) == 3

        def live(i: int, noise: NoiseLevel) -> str | None:
            p = prompt(i, noise, plan) if with_plan else prompt(i, noise)
            if p is not None and not isinstance(p, str):
                raise TypeError(f"the live prompt function returned {_kind(p)}; it must return a str or None")
            return check_prompt(model, p)

        return live
    schedule = PromptSchedule.coerce(prompt)
    per_step = schedule.prompts_for_steps(list(plan.timesteps), list(plan.log_snr))
    per_step = [check_prompt(model, p) for p in per_step]  # term by term for AND (guidance.check_prompt)
    return lambda i, noise: per_step[i]


def _describe_prompt(prompt: PromptSource) -> Any:
    if prompt is None or isinstance(prompt, str):
        return prompt
    if isinstance(prompt, PromptSchedule):
        return prompt.to_dict()
    return "live"


# ---------------------------------------------------------------------- 4. loop
def _denoise(run: _Run, plan: StepPlan, stop: Any) -> Trajectory:
    """The denoising loop: the record of every step, and the final sample."""
    x, sched, recorder = run.latents, run.scheduler, run.recorder
    stepping = f"the scheduler step ({type(sched).__name__}.step)"
    with recorder:
        for i, (t, noise) in enumerate(zip(sched.timesteps, plan.noise)):
            recorder.at(i, "the stop signal (stop.is_set())")
            if stop is not None and stop.is_set():
                recorder.cancel(i)
                return recorder.trajectory
            recorder.at(i, "the prompt")
            prompt = run.prompt_at(i, noise)
            recorder.at(i, "the guidance combination")
            x_in = run.scale(x, t)
            out = run.guidance.predict(run.model, x_in, noise, prompt, run.negative_prompt, run.encode)
            x0, eps = split_prediction(out, x_in, noise, run.parameterization)
            recorder.at(i, stepping)
            x = sched.step(run.model_output(out, x0, eps, noise), t, x, **run.step_kwargs).prev_sample
            recorder.at(i, "the recording")
            recorder.add(i, noise, prompt, {"x_t": x_in, "x0": x0, "eps": eps},
                         output=out, outputs=run.model.take_outputs(), next_sample=x)
        recorder.complete(x)
    return recorder.trajectory


def _warn_if_noise(traj: Trajectory, initial: torch.Tensor, plan: StepPlan, model: Denoiser | None = None) -> None:
    """Warn (:class:`SuspectRunWarning`) when a finished run returned (nearly) its initial noise.

    The mean cosine similarity of the samples with their initial noise above
    :data:`~chromaviz.sampling.trajectory.NOISE_SIMILARITY` is flagged, for any step count and sampler
    (Heun with 2 steps returns half its initial noise), unless the model's own spectrum makes its data
    that similar to white noise (:func:`~chromaviz.sampling.trajectory.noise_similarity_of_data`).
    """
    if traj.final is None:
        return
    similarity = noise_similarity(traj.final, initial)
    if similarity <= NOISE_SIMILARITY:
        return
    power = model.data_power(*traj.final.shape[-2:]) if model is not None else None
    if power is not None and noise_similarity_of_data(power) > NOISE_SIMILARITY:
        return  # data this close to white noise: a good sample may look like its noise
    noise = plan.noise[0]
    if plan.num_inference_steps == 1:
        why = (f"num_inference_steps=1: {type(plan.scheduler).__name__}'s single step evaluated the model at "
               f"t={noise.timestep:g} (λ={noise.log_snr:.3g}) on pure noise and returned (nearly) that noise")
    else:
        why = (f"{type(plan.scheduler).__name__} with num_inference_steps={plan.num_inference_steps} returned (nearly) "
               "its initial noise")
    what = "one step is" if plan.num_inference_steps == 1 else "this is"
    warnings.warn(f"{why} (cosine similarity {similarity:.3f}); {what} not a sample; use more steps or another "
                  "scheduler", SuspectRunWarning, stacklevel=3)
