"""The universal path: any diffusers text-to-image pipeline, recorded as its own ``__call__`` runs it.

:func:`record_pipeline` calls ``pipe(...)`` itself and watches it; nothing in the pipeline's arithmetic
is replaced, so the run *is* ``pipe(...)`` with that seed (bit for bit, by construction). It sees:

- every scheduler step, through the pipeline's own ``scheduler.step(model_output, t, x_t)`` call: the
  network input x_t (``scale_model_input(x_t, t)`` where the scheduler has one), the guided model output
  the pipeline hands the scheduler, and the scheduler's own x̂0 where its step returns one
  (``pred_original_sample``, LCM's ``denoised``), else x̂0 from the output in the scheduler's
  parametrisation (ε, v, x0 or the flow velocity ε − x0); ε̂ follows from x_t = α·x̂0 + σ·ε̂;
- the noise level (t, α, σ, λ) of every step, from the pipeline's scheduler after its ``set_timesteps``
  (:func:`~chromaviz.noise.plan.noise_levels`);
- packed latents (Flux-like pipelines hold (B, h·w/4, 4·C) tokens) unpacked with the pipeline's own
  ``_unpack_latents`` to (B, C, h, w).

Prompt switches are made as diffusers documents them: ``callback_on_step_end`` returns, after step
i − 1, the embeddings of the prompt of step i for every prompt tensor the pipeline lets the callback
replace (``_callback_tensor_inputs`` whose name holds ``embeds``: ``prompt_embeds``, SD3's
``pooled_prompt_embeds``, SDXL's ``add_text_embeds``, …), already in the pipeline's own layout
(``cat([negative, positive])`` under classifier-free guidance). Those embeddings are taken from the
pipeline itself: a call with that prompt, stopped by its callback after its first step (one model
evaluation per extra prompt). The step plan a schedule needs (timesteps and λ of every
step) comes from a call stopped before its first model evaluation.

What it cannot do that the native adapters can (``docs/pipelines.md``): switch what the callback
cannot reach (Flux's pooled CLIP embedding; Qwen-Image's attention mask, so only to a prompt of as many
tokens), switch prompts of a pipeline without ``callback_on_step_end`` (PixArt), composable ``AND``
prompts and emphasis weights, another scheduler than the pipeline's, chromaviz's guidance (rescale,
``AND``), the ideal process (no chromaviz denoiser to call), and live prompts. The trajectory is a
normal chromaviz run: ``compare``, the decoded comparison (``compare(traj, decode=pipeline_decoder(pipe))``)
and the views read it.
"""

from __future__ import annotations

import copy
import functools
import inspect
import threading
import warnings
from contextlib import ExitStack, contextmanager
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from .. import __version__, _checks
from ..noise.plan import StepPlan, noise_levels
from ..noise.schedulers import STEP_SIGMAS, is_flow_scheduler, scheduler_from_config, set_timesteps
from ..noise.schedules import Schedule
from ..prompts import PromptSchedule, PromptSwitchWarning, has_weights, split_and
from ..models.base import split_prediction
from ..models.diffusers.adapter import quiet_loading
from ..models.diffusers.previews import LinearPreview, VaeDecoder, fit_linear_preview

__all__ = ["PipelineRunError", "pipeline_decoder", "pipeline_preview", "record_pipeline"]

RESERVED = ("prompt", "generator", "output_type", "return_dict", "callback_on_step_end",
            "callback_on_step_end_tensor_inputs", "callback", "callback_steps")
"""``pipe(...)`` arguments :func:`record_pipeline` sets itself."""


class PipelineRunError(ValueError):
    """A pipeline :func:`record_pipeline` cannot record as asked (said before any step runs)."""


class _Stop(Exception):
    """Ends a probe or capture call of the pipeline (never leaves this module)."""


def _network(pipe) -> torch.nn.Module:
    """The denoising network of ``pipe``: its ``transformer`` or ``unet``."""
    for name in ("transformer", "unet", "prior"):
        module = getattr(pipe, name, None)
        if isinstance(module, torch.nn.Module):
            return module
    raise PipelineRunError(f"{type(pipe).__name__} has no transformer or unet to record")


def _call_parameters(pipe) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(type(pipe).__call__).parameters)


@contextmanager
def _patched_step(scheduler, step: Callable) -> Iterator[None]:
    """``scheduler.step`` replaced by ``step`` on this instance only, restored after.

    The replacement shows the original's signature: pipelines pass ``eta`` and ``generator`` only to a
    ``step`` whose signature names them (``prepare_extra_step_kwargs``)."""
    @functools.wraps(type(scheduler).step.__get__(scheduler))
    def observed(*args: Any, **kwargs: Any) -> Any:
        return step(*args, **kwargs)

    scheduler.step = observed
    try:
        yield
    finally:
        del scheduler.step


@contextmanager
def _quiet(pipe) -> Iterator[None]:
    """The pipeline's own progress bar off inside (chromaviz shows its own), restored after."""
    had = "_progress_bar_config" in pipe.__dict__
    before = copy.copy(pipe.__dict__.get("_progress_bar_config"))
    pipe.set_progress_bar_config(disable=True)
    try:
        yield
    finally:
        if had:
            pipe._progress_bar_config = before
        else:
            del pipe._progress_bar_config


def _pixel_size(pipe, kwargs: dict[str, Any]) -> tuple[int, int]:
    """(height, width) in pixels the call makes: its arguments, else the pipeline's default."""
    factor = int(getattr(pipe, "vae_scale_factor", 8))
    default = getattr(pipe, "default_sample_size", None)
    if default is None:
        size = getattr(_network(pipe).config, "sample_size", 64)
        default = size if isinstance(size, int) else size[0]
    h = kwargs.get("height") or int(default) * factor
    w = kwargs.get("width") or int(default) * factor
    return int(h), int(w)


def _unpacker(pipe, kwargs: dict[str, Any]) -> Callable[[torch.Tensor], torch.Tensor]:
    """Latents as the pipeline holds them → (B, C, h, w): unchanged when 4-D, unpacked with the pipeline's
    ``_unpack_latents`` when packed (B, L, D) (a video-style (B, C, 1, h, w) result is squeezed)."""
    height, width = _pixel_size(pipe, kwargs)
    factor = int(getattr(pipe, "vae_scale_factor", 8))

    def unpack(x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:
            return x
        if x.ndim == 3 and hasattr(pipe, "_unpack_latents"):
            out = pipe._unpack_latents(x, height, width, factor)
            return out[:, :, 0] if out.ndim == 5 else out
        if x.ndim == 5 and x.shape[2] == 1:
            return x[:, :, 0]
        raise PipelineRunError(f"{type(pipe).__name__} holds latents of shape {tuple(x.shape)}, which chromaviz cannot "
                               "map to (B, C, h, w)")

    return unpack


def pipeline_decoder(pipe) -> VaeDecoder:
    """The pipeline's VAE as a decoder of recorded latents (B, C, h, w) → RGB (B, 3, H, W) in [0, 1].

    As the pipelines decode: z/scaling_factor (+ shift_factor for SD3 and Flux, or SDXL-style
    latents_mean/std). Pass it as ``compare(traj, decode=pipeline_decoder(pipe))``.

    Raises
    ------
    PipelineRunError
        If the pipeline has no VAE.
    """
    if getattr(pipe, "vae", None) is None:
        raise PipelineRunError(f"{type(pipe).__name__} has no vae to decode with")
    return VaeDecoder(pipe.vae)


def pipeline_preview(pipe, channels: int) -> LinearPreview:
    """A linear latent → RGB preview fitted to the pipeline's VAE (any channel count: 4, 16, …).

    Parameters
    ----------
    pipe : DiffusionPipeline
        A latent pipeline.
    channels : int
        C of the unpacked latents (the recorded trajectory's channels).
    """
    factor = int(getattr(pipe, "vae_scale_factor", 8))
    return fit_linear_preview(pipeline_decoder(pipe), channels, factor, upsample=factor)


def _call_default(pipe, name: str, kwargs: dict[str, Any]) -> Any:
    if name in kwargs:
        return kwargs[name]
    param = _call_parameters(pipe).get(name)
    return None if param is None or param.default is inspect.Parameter.empty else param.default


def _check_text(text: Any, where: str) -> str:
    if not isinstance(text, str):
        raise PipelineRunError(f"{where} is {text!r}: a pipeline called as it is needs text at every step (use '' for "
                               "the empty prompt)")
    terms = split_and(text)
    if len(terms) > 1 or terms[0][1] != 1.0:
        raise PipelineRunError(f"{where} has AND terms ({text!r}): composable prompts need chromaviz's own guidance, "
                               "which a pipeline's __call__ does not have; use the native adapter (from_pipeline)")
    if has_weights(text):
        raise PipelineRunError(f"{where} has emphasis weights ({text!r}), which a pipeline's __call__ does not read; "
                               "use the native adapter (from_pipeline) of a CLIP pipeline, or write \\( \\) for literal brackets")
    return text


def _swap_keys(pipe) -> list[str]:
    """The prompt tensors the pipeline lets ``callback_on_step_end`` replace."""
    return [k for k in getattr(pipe, "_callback_tensor_inputs", []) if "embeds" in k]


def _solve_mu(name: str, config: dict[str, Any], num_inference_steps: int, own: np.ndarray) -> float:
    """μ with which ``set_timesteps`` gives the σ of ``own`` at its second step (bisection: σ grows with μ,
    whatever the shift's form, the terminal stretch or the σ spacing)."""
    linear = config.get("time_shift_type") == "linear"  # σ' = μ/(μ + 1/σ − 1): μ > 0, searched in ln μ
    k = 1 if len(own) > 2 else 0

    def sigma(x: float) -> float:
        trial = scheduler_from_config(name, config)
        set_timesteps(trial, num_inference_steps, mu=float(np.exp(x)) if linear else x)
        return float(trial.sigmas[k])

    lo, hi = -30.0, 30.0
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if sigma(mid) < own[k] else (lo, mid)
    x = (lo + hi) / 2
    return float(np.exp(x)) if linear else x


def _reproducible_config(snapshot, num_inference_steps: int) -> tuple[dict[str, Any], float | None, bool]:
    """The scheduler config (with :data:`STEP_SIGMAS` where the pipeline spaced the steps its own way)
    and μ with which ``set_timesteps`` gives the visited steps of ``snapshot`` again, and whether it does."""
    cfg = {k: v for k, v in dict(snapshot.config).items() if k != STEP_SIGMAS}
    name = type(snapshot).__name__
    own = np.asarray(getattr(snapshot, "sigmas", snapshot.timesteps), dtype=np.float64)
    dynamic = bool(cfg.get("use_dynamic_shifting"))
    # the dynamic-shifting pipelines (Flux, Qwen-Image) pass σ = linspace(1, 1/N, N): tried first for them, as a
    # terminal stretch (shift_terminal) can make both spacings give the same few σ with different μ
    rules = ((("1/N", None) if dynamic else (None, "1/N")) if is_flow_scheduler(snapshot) else (None,))
    for rule in rules:
        trial_cfg = cfg if rule is None else {**cfg, STEP_SIGMAS: rule}
        try:
            mu = _solve_mu(name, trial_cfg, num_inference_steps, own) if dynamic else None
            trial = scheduler_from_config(name, trial_cfg)
            set_timesteps(trial, num_inference_steps, mu=mu)
        except (ValueError, TypeError):
            continue
        again = np.asarray(getattr(trial, "sigmas", trial.timesteps), dtype=np.float64)
        if again.shape == own.shape and np.allclose(again, own, rtol=0, atol=1e-5):
            return dict(trial.config), mu, True
    return dict(snapshot.config), None, False


def _metadata(pipe, prompt: Any, schedule: PromptSchedule, kwargs: dict[str, Any], seed: int, generator_device: Any,
              record_scale: int) -> dict[str, Any]:
    """The run's metadata known before the call (the scheduler's part is added at the first step)."""
    name = str(getattr(pipe, "name_or_path", None) or "").rstrip("/").split("/")[-1] or type(pipe).__name__
    parameterization = ("flow" if is_flow_scheduler(pipe.scheduler)
                        else pipe.scheduler.config.get("prediction_type", "epsilon"))
    negative = kwargs.get("negative_prompt")
    return {
        "chromaviz_version": __version__,
        "model": {"name": name, "pipeline": type(pipe).__name__, "path": "pipeline call",
                  "parameterization": parameterization},
        "seed": seed,
        "generator_device": str(generator_device),
        "guidance": float(_call_default(pipe, "guidance_scale", kwargs) or 1.0),
        "guidance_rescale": float(_call_default(pipe, "guidance_rescale", kwargs) or 0.0),
        "eta": float(kwargs.get("eta") or 0.0),
        "record_scale": record_scale,
        "negative_prompt": negative if isinstance(negative, str) else None,
        "prompt": prompt if isinstance(prompt, str) else schedule.to_dict(),
        "call_kwargs": {k: v for k, v in kwargs.items() if v is None or isinstance(v, (bool, int, float, str))},
        "status": "running",
        "message": "",
    }


class _Run:
    """The state of one recorded ``pipe(...)`` call (the scheduler-step observer and the prompt switcher)."""

    def __init__(self, pipe, per_step: Callable[[StepPlan], list[str]], embeddings: dict[str, dict[str, torch.Tensor]],
                 kwargs: dict[str, Any], record: Sequence[str], record_scale: int, callback, stop, progress: bool,
                 metadata: dict[str, Any], stack: ExitStack) -> None:
        self.pipe, self.per_step, self.embeddings, self.kwargs = pipe, per_step, embeddings, kwargs
        self.record, self.record_scale, self.callback, self.stop, self.progress = record, record_scale, callback, stop, progress
        self.metadata, self.stack = metadata, stack
        self.scheduler = pipe.scheduler
        self.step = type(self.scheduler).step.__get__(self.scheduler)
        self.unpack = _unpacker(pipe, kwargs)
        self.index = 0
        self.recorder = None
        self.plan: StepPlan | None = None
        self.prompts: list[str] = []
        self.target = "epsilon"

    # ------------------------------------------------------------------ the first step: the plan, the recorder
    def _start(self, sample: torch.Tensor) -> None:
        from .recorder import Recorder
        from .trajectory import Trajectory

        sched = self.scheduler
        snapshot = copy.deepcopy(sched)
        n = int(getattr(sched, "num_inference_steps", None) or len(sched.timesteps))
        config, mu, same = _reproducible_config(snapshot, n)
        schedule = Schedule.from_scheduler(sched)
        plan = StepPlan(snapshot, type(sched).__name__, tuple(noise_levels(snapshot, schedule)), n,
                        mu if config.get("use_dynamic_shifting") else None)
        self.plan = plan
        self.prompts = self.per_step(plan)
        self.target = "flow" if is_flow_scheduler(sched) else sched.config.get("prediction_type", "epsilon")
        x = self.unpack(sample)
        factor = int(getattr(self.pipe, "vae_scale_factor", 1) if getattr(self.pipe, "vae", None) is not None else 1)
        h, w = x.shape[-2] * factor, x.shape[-1] * factor
        self.metadata.update({
            "scheduler": type(sched).__name__, "scheduler_class": type(sched).__name__, "scheduler_config": config,
            "steps_reproducible": same, "num_steps": plan.num_evaluations, "num_evaluations": plan.num_evaluations,
            "num_inference_steps": n, "mu": plan.mu, "batch_size": int(x.shape[0]), "height": h, "width": w,
            "device": str(x.device),
        })
        model = self.metadata["model"]
        model["dtype"] = str(x.dtype).replace("torch.", "")
        traj = Trajectory(metadata=self.metadata)
        self.recorder = Recorder(traj, plan, shape=tuple(x.shape), dtype=x.dtype, device=x.device, record=self.record,
                                 record_scale=self.record_scale, callback=self.callback, progress=self.progress)
        self.stack.enter_context(self.recorder)

    # ------------------------------------------------------------------ every step
    def observe(self, *args: Any, **kwargs: Any) -> Any:
        """The pipeline's ``scheduler.step(model_output, timestep, sample, ...)``, run unchanged and recorded."""
        names = ("model_output", "timestep", "sample")
        bound = dict(zip(names, args))
        bound.update({k: kwargs[k] for k in names if k in kwargs})
        output, t, sample = bound["model_output"], bound["timestep"], bound["sample"]
        if self.recorder is None:
            self._start(sample)
        i, recorder = self.index, self.recorder
        if i >= self.plan.num_evaluations:
            raise PipelineRunError(f"{type(self.pipe).__name__} stepped its scheduler more often than its "
                                   f"{self.plan.num_evaluations} timesteps")
        if self.stop is not None and self.stop.is_set():
            raise _Stop(i)
        noise = self.plan.noise[i]
        scale = getattr(self.scheduler, "scale_model_input", None)
        x_in = scale(sample, t) if scale is not None else sample  # the network input, as the pipeline made it
        recorder.at(i, f"the scheduler step ({type(self.scheduler).__name__}.step)")
        result = self.step(*args, **kwargs)
        next_sample = result[0] if isinstance(result, tuple) else result.prev_sample
        own_x0 = None
        if isinstance(result, tuple):
            own_x0 = result[1] if len(result) > 1 and isinstance(result[1], torch.Tensor) else None
        else:
            own_x0 = getattr(result, "pred_original_sample", None)
            own_x0 = getattr(result, "denoised", None) if own_x0 is None else own_x0
        recorder.at(i, "the recording")
        x_in, out, nxt = self.unpack(x_in), self.unpack(output), self.unpack(next_sample)
        if own_x0 is not None and own_x0.shape == sample.shape:
            x0 = self.unpack(own_x0).to(x_in.dtype)
            _, eps = split_prediction(x0, x_in, noise, "sample")
        else:
            x0, eps = split_prediction(out, x_in, noise, self.target)
        recorder.add(i, noise, self.prompts[i], {"x_t": x_in, "x0": x0, "eps": eps}, output=out, outputs=[out],
                     next_sample=nxt)
        recorder.at(i + 1, "the pipeline")
        self.index = i + 1
        return result

    def switch(self, pipe, i: int, t: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
        """``callback_on_step_end`` after step ``i``: the embeddings of step i + 1's prompt, where it changes."""
        if i + 1 < len(self.prompts) and self.prompts[i + 1] != self.prompts[i]:
            new = self.embeddings[self.prompts[i + 1]]
            for key, value in new.items():
                if key in callback_kwargs and value.shape != callback_kwargs[key].shape:
                    raise PipelineRunError(
                        f"{type(pipe).__name__} holds {key} of shape {tuple(callback_kwargs[key].shape)} and the prompt "
                        f"{self.prompts[i + 1]!r} has {tuple(value.shape)}: this pipeline sizes its embeddings by the "
                        "prompt and its callback cannot replace what goes with them (e.g. an attention mask), so it "
                        "can only switch to a prompt of as many tokens")
            return {**callback_kwargs, **new}
        return callback_kwargs


def record_pipeline(pipe, prompt: str | PromptSchedule, *, seed: int = 0, generator_device: str | torch.device = "cpu",
                    record: Sequence[str] = ("x_t", "x0", "eps"), record_scale: int = 1,
                    callback: Callable | None = None, stop: threading.Event | None = None, progress: bool = False,
                    **call_kwargs: Any):
    """Run ``pipe(prompt, **call_kwargs)`` as the pipeline does and record every step as a chromaviz run.

    Parameters
    ----------
    pipe : DiffusionPipeline
        Any loaded diffusers text-to-image pipeline whose ``__call__`` steps a diffusers scheduler.
    prompt : str or PromptSchedule
        The prompt, or a schedule of prompts (A1111's ``[a:b:when]`` text is parsed) switched by step,
        fraction, t, λ or level as for :func:`chromaviz.sampling.sample`. Every step's prompt must be plain
        text (no ``AND``, no emphasis weights). A schedule needs a pipeline with ``callback_on_step_end``.
    seed : int
        Seeds ``generator=torch.Generator(generator_device).manual_seed(seed)``, what the call gets.
    generator_device : str or torch.device
        Device of that generator ("cpu": a seed means the same noise everywhere).
    record : tuple of {"x_t", "x0", "eps"}
        What to keep per step.
    record_scale : int
        Average-pool the records by this factor (it must divide the latent size).
    callback : callable, optional
        Called with each :class:`~chromaviz.sampling.trajectory.StepRecord` as it is recorded.
    stop : threading.Event, optional
        Checked before each step; once set the run ends with status ``"cancelled"``.
    progress : bool
        A tqdm bar (the pipeline's own bar is always off).
    **call_kwargs
        Everything else ``pipe(...)`` takes: ``num_inference_steps``, ``guidance_scale``, ``height``,
        ``width``, ``negative_prompt``, ``num_images_per_prompt``, ``true_cfg_scale``, … (not
        ``generator``, ``output_type``, ``return_dict`` or the callbacks, which are set here).

    Returns
    -------
    Trajectory
        x_t, x̂0, ε̂ per step as (B, C, h, w) latents (packed latents unpacked), the noise levels and
        prompts, and ``final``: the latents ``pipe(...)`` decodes (``output_type="latent"``). Its metadata
        has ``model = {"name", "pipeline", "path": "pipeline call"}``, the scheduler's class and config,
        ``guidance`` (the call's ``guidance_scale``) and ``steps_reproducible`` (whether the recorded
        scheduler config reproduces the visited steps, which the as-sampled prediction needs).

    Raises
    ------
    TypeError
        For a ``pipe`` that is not a diffusers pipeline, an argument ``pipe(...)`` does not take, or one set here.
    ValueError
        A ``num_inference_steps`` that is not a positive integer.
    PipelineRunError
        (a ValueError) before any step: no scheduler or network, a prompt that is not plain text, a
        schedule for a pipeline without ``callback_on_step_end``.
    SamplingError
        If anything fails once stepping has started; its ``trajectory`` keeps the earlier steps.

    Examples
    --------
    ``traj = record_pipeline(pipe, "[a cat:a dog:0.3]", num_inference_steps=28, guidance_scale=4.5)``, then
    ``compare(traj)`` and ``compare(traj, decode=pipeline_decoder(pipe))``.
    """
    from .trajectory import RECORDABLE

    # 1. check, before any work
    from diffusers import DiffusionPipeline

    if not isinstance(pipe, DiffusionPipeline):
        hint = (" (a chromaviz model: sample() it, or pass its diffusers pipeline, model.pipe)"
                if hasattr(pipe, "pipe") else "")
        raise TypeError(f"record_pipeline records a diffusers pipeline (a DiffusionPipeline, e.g. from "
                        f"DiffusionPipeline.from_pretrained); got {type(pipe).__name__}{hint}")
    params = _call_parameters(pipe)
    for key in call_kwargs:  # by name only: a pipeline's **kwargs takes deprecated arguments, not new ones
        if key in RESERVED:
            raise TypeError(f"record_pipeline sets {key!r} itself; pass the seed as seed=, and record_pipeline's own "
                            "callback= for a per-step callback")
        if key not in params or params[key].kind is inspect.Parameter.VAR_KEYWORD:
            raise TypeError(f"{type(pipe).__name__}.__call__ takes no argument {key!r}")
    if "num_inference_steps" in call_kwargs:
        _checks.positive_int("num_inference_steps", call_kwargs["num_inference_steps"])
    if getattr(pipe, "scheduler", None) is None or not callable(getattr(pipe.scheduler, "step", None)):
        raise PipelineRunError(f"{type(pipe).__name__} has no diffusers scheduler to record")
    network = _network(pipe)
    seed = _checks.integer("seed", seed, minimum=0, maximum=2**64 - 1)
    record = tuple(dict.fromkeys(_checks.subset("record", record, RECORDABLE)))
    record_scale = _checks.positive_int("record_scale", record_scale)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be a function of a StepRecord, or None; got {type(callback).__name__}")
    if stop is not None and not callable(getattr(stop, "is_set", None)):
        raise TypeError(f"stop must be a threading.Event (anything with is_set()), or None; got {type(stop).__name__}")
    progress = _checks.boolean("progress", progress)
    schedule = PromptSchedule.coerce(prompt)
    constant = schedule.is_constant
    if constant:
        first = _check_text(schedule.prompts_for_steps([0.0])[0], "the prompt")
    keys = _swap_keys(pipe)
    if not constant and ("callback_on_step_end" not in params or not keys):
        raise PipelineRunError(f"{type(pipe).__name__} has no callback_on_step_end that can replace its prompt "
                               "embeddings, so a prompt schedule cannot be applied as it runs; give one prompt, or use "
                               "a native adapter (from_pipeline)")
    if not constant and "pooled_prompt_embeds" in params and not any("pooled" in k or k == "add_text_embeds" for k in keys):
        warnings.warn(f"{type(pipe).__name__}'s callback_on_step_end cannot replace its pooled prompt embedding: the "
                      f"prompt switch changes {', '.join(keys)} only, the pooled embedding stays the first prompt's "
                      "(the native adapter, from_pipeline, switches both)", PromptSwitchWarning, stacklevel=2)
    kwargs = dict(call_kwargs)

    def call(text: str, **extra: Any) -> Any:
        generator = torch.Generator(generator_device).manual_seed(seed)
        return pipe(prompt=text, generator=generator, output_type="latent", **kwargs, **extra)

    with _quiet(pipe):
        # 2. plan (a schedule only): the pipeline's scheduler after its set_timesteps, before any model evaluation
        per_step_cache: list[list[str]] = []
        if constant:
            def per_step(plan: StepPlan) -> list[str]:
                return [first] * plan.num_evaluations
        else:
            planned: list[Any] = []

            def before_network(module, args, kw):
                planned.append(copy.deepcopy(pipe.scheduler))
                raise _Stop()

            handle = network.register_forward_pre_hook(before_network, with_kwargs=True)
            try:
                with quiet_loading():  # the planning call's own messages would repeat the run's
                    call("")
            except _Stop:
                pass
            finally:
                handle.remove()
            if not planned:
                raise PipelineRunError(f"{type(pipe).__name__} never called its network")
            snap = planned[0]
            probe = StepPlan(snap, type(snap).__name__, tuple(noise_levels(snap, Schedule.from_scheduler(snap))),
                             int(getattr(snap, "num_inference_steps", None) or len(snap.timesteps)))
            texts = schedule.prompts_for_steps(list(probe.timesteps), list(probe.log_snr))
            per_step_cache.append([_check_text(p, f"the prompt of step {i}") for i, p in enumerate(texts)])
            first = per_step_cache[0][0]

            def per_step(plan: StepPlan) -> list[str]:
                if plan.num_evaluations != len(per_step_cache[0]):
                    raise PipelineRunError("the pipeline visited other steps than its planning call")
                return per_step_cache[0]

        # 3. prepare: the embeddings of every prompt switched to, in the pipeline's own layout
        embeddings: dict[str, dict[str, torch.Tensor]] = {}
        if not constant:
            texts = per_step_cache[0]
            wanted = dict.fromkeys(texts[k] for k in range(1, len(texts)) if texts[k] != texts[k - 1])
            for text in wanted:
                def capture(p, i, t, kw, text=text):
                    embeddings[text] = {k: v.clone() for k, v in kw.items()}
                    raise _Stop()

                try:
                    with quiet_loading():
                        call(text, callback_on_step_end=capture, callback_on_step_end_tensor_inputs=keys)
                except _Stop:
                    pass

        # 4. the call itself, watched
        metadata = _metadata(pipe, prompt, schedule, kwargs, seed, generator_device, record_scale)
        with ExitStack() as stack:
            run = _Run(pipe, per_step, embeddings, kwargs, record, record_scale, callback, stop, progress, metadata, stack)
            extra = {} if constant else {"callback_on_step_end": run.switch, "callback_on_step_end_tensor_inputs": keys}
            try:
                with _patched_step(pipe.scheduler, run.observe):
                    out = call(first, **extra)
            except _Stop as stopped:
                if run.recorder is None:
                    raise
                run.recorder.cancel(int(stopped.args[0]) if stopped.args else run.index)
                return run.recorder.trajectory
            if run.recorder is None:
                raise PipelineRunError(f"{type(pipe).__name__} finished without stepping its scheduler")
            final = run.unpack(out[0] if not isinstance(out, torch.Tensor) else out)
            run.recorder.complete(final)
            return run.recorder.trajectory
