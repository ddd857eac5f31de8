"""Step-by-step sampling with any denoiser and any diffusers scheduler, recording every step.

The loop is the one every diffusers pipeline runs (``set_timesteps``, ``scale_model_input``,
model, ``step``); chromaviz only adds what makes it observable and steerable: the exact noise
level of each step, a per-step prompt, classifier-free guidance, a record of x_t, x̂0 and ε, a
callback, and a stop signal.
"""

from __future__ import annotations

import inspect
import threading
import time
from typing import Any, Callable, Sequence

import torch

from .._version import __version__
from ..models.base import Denoiser, join_prediction, split_prediction
from .guidance import Guidance
from .prompts import PromptSchedule
from ..noise.plan import NoiseLevel, noise_levels
from ..noise.schedulers import is_flow_scheduler, make_scheduler, scheduler_name, set_timesteps
from .trajectory import RECORDABLE, StepRecord, Trajectory

PromptSource = str | PromptSchedule | Callable[[int, NoiseLevel], "str | None"] | None
"""A prompt, a prompt schedule, or a function (step index, noise level) → prompt, polled every step."""


DEFER_ON = ("cuda",)
"""Device types on which a step's record is handed out one step late (after the next step is
queued), so that copying it to the host never waits for the GPU."""


class SamplingError(RuntimeError):
    """Sampling stopped at a step; ``trajectory`` holds everything recorded before it."""

    def __init__(self, message: str, trajectory: Trajectory) -> None:
        super().__init__(message)
        self.trajectory = trajectory


def default_device() -> torch.device:
    """CUDA when available, otherwise the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _scheduler_prediction(scheduler) -> str:
    return "flow" if is_flow_scheduler(scheduler) else scheduler.config.get("prediction_type", "epsilon")


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def sample(
    model: Denoiser,
    prompt: PromptSource = None,
    *,
    num_steps: int = 50,
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
) -> Trajectory:
    """Sample from ``model`` and record every step.

    Parameters
    ----------
    model : Denoiser
        Any chromaviz model.
    prompt : str, PromptSchedule, callable or None
        A prompt (A1111-style ``[a:b:when]`` switches are parsed), a :class:`PromptSchedule`, or
        a function ``(step_index, noise_level) -> prompt`` polled before every step (how a live UI
        flips prompts mid-run). None samples unconditionally.
    num_steps : int
        Inference steps handed to the scheduler's ``set_timesteps``.
    scheduler : str or diffusers scheduler
        A name from :data:`chromaviz.noise.SCHEDULERS`, a scheduler instance (copied), or
        ``"default"``: the model's own scheduler where its schedule says so (a diffusers
        pipeline's), else DDIM (flow Euler for flow-matching schedules).
    guidance : float
        Classifier-free guidance scale; 1 means none (a single model call per step).
    negative_prompt : str or None
        The prompt guidance pushes away from (None: unconditional).
    seed : int
        Seeds the initial noise and any stochastic scheduler, on a CPU generator so that a seed
        means the same noise on every device.
    batch_size, height, width : int
        Samples per run and their size in pixels (default: the model's ``default_size``). Latent
        models map pixels to their sample grid with ``model.latent_size(height, width)``.
    device : str or torch.device, optional
        Default: CUDA when available, else CPU.
    record : sequence of {"x_t", "x0", "eps"}
        What to keep per step (kept on the CPU).
    callback : callable, optional
        Called with each :class:`~chromaviz.sampling.trajectory.StepRecord` as soon as it is recorded.
    stop : threading.Event, optional
        Checked before every step; once set, the run ends with status ``"cancelled"``.
    progress : bool
        Show a tqdm progress bar.
    guidance_rescale : float
        φ of Lin et al. (2023) §3.4, as diffusers' ``rescale_noise_cfg``: the guided output is
        rescaled to the per-sample standard deviation of the conditional one and mixed with
        weight φ. 0 (default) leaves guidance as is.
    eta : float
        Passed to the scheduler's ``step`` where it takes one (DDIM's η), as the pipelines do.
    generator_device : str or torch.device
        Device of the random generator that draws the initial noise (in the model's dtype, as
        diffusers' ``randn_tensor``) and any scheduler noise. "cpu" (default) makes a seed mean the
        same noise on every device.
    record_scale : int
        Keep recorded tensors average-pooled by this factor (1: full size); pooling happens on the
        model's device before the copy to the host, so long high-resolution runs fit in memory.

    Returns
    -------
    Trajectory
        Status ``"complete"`` or ``"cancelled"``.

    Raises
    ------
    ValueError
        For bad arguments, before any step runs.
    SamplingError
        If anything fails once sampling has started: the model returns NaN or ∞ or raises (out of
        memory, say), a live prompt is invalid, the scheduler or the callback raises. Its
        ``trajectory`` has status ``"failed"`` and keeps every earlier step.
    """
    num_steps = _check_positive_int("num_steps", num_steps)
    batch_size = _check_positive_int("batch_size", batch_size)
    height = _check_positive_int("height", height if height is not None else model.default_size[0])
    width = _check_positive_int("width", width if width is not None else model.default_size[1])
    model.check_size(height, width)
    if not guidance >= 0:
        raise ValueError(f"guidance must be ≥ 0, got {guidance!r}")
    if not 0 <= guidance_rescale <= 1:
        raise ValueError(f"guidance_rescale must lie in [0, 1], got {guidance_rescale!r}")
    record_scale = _check_positive_int("record_scale", record_scale)
    unknown = set(record) - set(RECORDABLE)
    if unknown:
        raise ValueError(f"cannot record {sorted(unknown)}; choose from {RECORDABLE}")
    negative_prompt = model.check_prompt(negative_prompt)
    device = torch.device(device) if device is not None else default_device()
    model.to(device)

    sched = make_scheduler(scheduler, model.schedule)
    set_timesteps(sched, num_steps)
    levels = noise_levels(sched, model.schedule)
    prompt_at = _prompt_source(prompt, model, levels)
    guided = guidance != 1.0 and model.conditional
    target = _scheduler_prediction(sched)
    if target == "epsilon" and any(lv.alpha == 0 for lv in levels):
        # Zero terminal SNR: from ε, x̂0 = (x_t − σ·ε)/α is 0/0 at α = 0 (DDIM, DDPM and PNDM
        # step to NaN). Hand the scheduler v = α·ε − σ·x̂0 instead (Lin et al. 2023): finite everywhere.
        sched.register_to_config(prediction_type="v_prediction")
        target = "v_prediction"

    generator = torch.Generator(generator_device).manual_seed(seed)
    size = model.latent_size(height, width) if hasattr(model, "latent_size") else (height, width)
    if record_scale > 1 and (size[0] % record_scale or size[1] % record_scale):
        raise ValueError(f"record_scale={record_scale} must divide the sample size {size[0]}×{size[1]}")
    shape = (batch_size, model.channels, *size)
    # FlowMatch* schedulers have no init_noise_sigma: their initial sample is ε itself (σ = 1).
    init_sigma = getattr(sched, "init_noise_sigma", 1.0)
    # As diffusers' prepare_latents: noise drawn in the model's dtype on the generator's device.
    x = torch.randn(shape, generator=generator, device=generator.device, dtype=model.dtype).to(device) * init_sigma
    # FlowMatch* schedulers have no scale_model_input (SD3/Flux pipelines feed x_t as is).
    scale = getattr(sched, "scale_model_input", lambda sample, timestep: sample)
    accepted = inspect.signature(sched.step).parameters  # as the pipelines' prepare_extra_step_kwargs
    step_kwargs = {k: v for k, v in {"eta": eta, "generator": generator}.items() if k in accepted}
    guide = Guidance(guidance if guided else 1.0, guidance_rescale)
    keep = _Recorder(record, record_scale, device)

    traj = Trajectory(
        metadata={
            "chromaviz_version": __version__,
            "model": model.describe(),
            "scheduler": scheduler_name(scheduler, model.schedule),
            "scheduler_class": type(sched).__name__,
            "scheduler_config": {k: v for k, v in dict(sched.config).items()},
            "num_steps": len(levels),
            "num_inference_steps": num_steps,
            "seed": seed,
            "guidance": guidance,
            "guidance_rescale": guidance_rescale,
            "eta": eta,
            "record_scale": record_scale,
            "negative_prompt": negative_prompt,
            "prompt": _describe_prompt(prompt),
            "batch_size": batch_size,
            "height": height,
            "width": width,
            "device": str(device),
            "status": "running",
            "message": "",
        }
    )
    encoded: dict[str | None, Any] = {}

    def encode(p: str | None) -> Any:
        if p not in encoded:
            encoded[p] = model.encode([p] * batch_size)
        return encoded[p]

    started = time.perf_counter()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(levels), desc=f"sampling {model.name}", unit="step")
    # On CUDA a step's record is handed out after the next step has been queued: its copies to
    # pinned memory (and its NaN check) then complete while the GPU works on, never stalling it.
    defer = keep.defer
    pending = None

    def hand_out(rec: StepRecord, notify: bool = True) -> None:
        traj.steps.append(rec)
        if notify and callback is not None:
            callback(rec)
        if bar is not None:
            bar.update(1)

    def fail_nonfinite(exc: _NonFinite) -> SamplingError:
        traj.metadata.update(status="failed", message=f"{exc}; sampling stopped and the {len(traj.steps)} earlier steps are kept")
        return SamplingError(traj.metadata["message"], traj)

    def settle(notify: bool = True) -> None:
        nonlocal pending
        if pending is not None:
            finish, pending = pending, None
            try:
                rec = finish()
            except _NonFinite as exc:
                raise fail_nonfinite(exc) from None
            hand_out(rec, notify)

    try:
        for i, (t, level) in enumerate(zip(sched.timesteps, levels)):
            if stop is not None and stop.is_set():
                settle()
                traj.metadata.update(status="cancelled", message=f"stopped before step {i} of {len(levels)}")
                break
            rec = None
            try:
                finish, x = _step(model, sched, x, t, i, level, prompt_at, negative_prompt, guide,
                                  encode, target, keep, step_kwargs, scale, len(levels))
                if defer:
                    finish, pending = pending, finish
                rec = finish() if finish is not None else None
            except _NonFinite as exc:
                raise fail_nonfinite(exc) from None
            except Exception as exc:  # a bad live prompt, out of memory, a model bug: keep the partial run
                settle(notify=False)
                hint = ""
                if isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower():
                    hint = " (out of memory: try torch_dtype=torch.float16, a smaller batch or size, record=('x0',) or record_scale=2)"
                traj.metadata.update(status="failed", message=f"step {i} (t={level.timestep:g}) failed: {type(exc).__name__}: {exc}{hint}")
                raise SamplingError(traj.metadata["message"], traj) from exc
            if rec is not None:
                hand_out(rec)
        else:
            settle()
            traj.final = x.detach().to("cpu", copy=True)
            traj.metadata.update(status="complete", message=f"{len(levels)} steps")
    finally:
        traj.metadata["elapsed_seconds"] = time.perf_counter() - started
        if bar is not None:
            bar.close()
    return traj


class _NonFinite(ArithmeticError):
    """The model's output had NaN or ∞."""


def _step(model, sched, x, t, i, level, prompt_at, negative, guide, encode, target, keep, step_kwargs, scale, num_steps):
    """One sampling step: the record of step ``i`` and the scheduler's next sample."""
    active = prompt_at(i, level)
    x_in = scale(x, t)
    out = guide.predict(model, x_in, level, active, negative, encode)
    finite = torch.isfinite(out).all()
    message = f"the model returned NaN or infinity at step {i} (t={level.timestep:g}, λ={level.log_snr:.3g})"
    if not keep.defer and not finite:
        raise _NonFinite(message)
    x0, eps = split_prediction(out, x_in, level, model.parameterization)
    model_output = out if target == model.parameterization else join_prediction(x0, eps, level, target)
    x_next = sched.step(model_output, t, x, **step_kwargs).prev_sample
    if keep.cuda:
        finite = finite.to("cpu", non_blocking=True)  # before the event, so the event covers it
    copies, event = keep({"x_t": x_in, "x0": x0, "eps": eps})

    def finish() -> StepRecord:
        """The step's record, once its copies to the host are complete."""
        if event is not None:
            event.synchronize()
        if not bool(finite):
            raise _NonFinite(message)
        return StepRecord(
            index=i, timestep=level.timestep, log_snr=level.log_snr, alpha=level.alpha, sigma=level.sigma,
            **copies, prompt=active, num_steps=num_steps,
        )

    return finish, x_next


class _Recorder:
    """Copies the recorded tensors of a step to the host, pooled by ``scale``.

    On CUDA the copies go to pinned host memory without blocking; the returned event is waited
    for before the record is handed out, so the host never reads a half-copied tensor.
    """

    def __init__(self, record: Sequence[str], scale: int, device: torch.device) -> None:
        self.record, self.scale = tuple(record), scale
        self.cuda = device.type == "cuda"
        self.defer = device.type in DEFER_ON

    def __call__(self, tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor | None], Any]:
        out: dict[str, torch.Tensor | None] = {}
        for name, v in tensors.items():
            if name not in self.record:
                out[name] = None
                continue
            v = v.detach()
            if self.scale > 1:
                v = torch.nn.functional.avg_pool2d(v.float(), self.scale).to(v.dtype)
            if self.cuda:
                host = torch.empty(v.shape, dtype=v.dtype, pin_memory=True)
                host.copy_(v, non_blocking=True)
                out[name] = host
            else:
                out[name] = v.to("cpu", copy=True)
        event = None
        if self.cuda:
            event = torch.cuda.Event()
            event.record()
        return out, event


def _prompt_source(prompt: PromptSource, model: Denoiser, levels: list[NoiseLevel]) -> Callable[[int, NoiseLevel], str | None]:
    """Resolve prompts up front (so bad prompts fail before sampling) or wrap a live function."""
    if callable(prompt) and not isinstance(prompt, (str, PromptSchedule)):
        def live(i: int, level: NoiseLevel) -> str | None:
            return model.check_prompt(prompt(i, level))

        return live
    schedule = PromptSchedule.coerce(prompt)
    per_step = schedule.prompts_for_steps([lv.timestep for lv in levels], [lv.log_snr for lv in levels])
    per_step = [model.check_prompt(p) for p in per_step]
    return lambda i, level: per_step[i]


def _describe_prompt(prompt: PromptSource) -> Any:
    if prompt is None or isinstance(prompt, str):
        return prompt
    if isinstance(prompt, PromptSchedule):
        return prompt.to_dict()
    return "live"
