"""diffusers schedulers by name, and the exact noise level of each step they take.

All stepping is done by diffusers' own schedulers. This module only builds them from a
:class:`~chromaviz.noise.schedules.Schedule` and reads, for every step, the (α, σ) of the network input
``scale_model_input(x, t)``: from the scheduler's own ``sigmas`` where it keeps them (Euler,
DPM-Solver, flow matching; so Karras or shifted sigmas are honoured exactly), otherwise from
``alphas_cumprod`` at the integer timestep (DDIM, DDPM, PNDM).
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .schedules import Schedule


SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "ddim": ("DDIMScheduler", {}),
    "ddpm": ("DDPMScheduler", {}),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_ancestral": ("EulerAncestralDiscreteScheduler", {}),
    "dpmsolver++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "dpmsolver++_karras": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True}),
    "flow_euler": ("FlowMatchEulerDiscreteScheduler", {}),
}
"""Scheduler names accepted everywhere in chromaviz, with the diffusers class and overrides."""

FLOW_SCHEDULERS = frozenset({"flow_euler"})

DEFAULT_IS_OWN_CLASS = "_chromaviz_default_is_own_class"
"""Key of a schedule's ``scheduler_config``: when true, ``"default"`` means its ``_class_name``
(the scheduler the model came with) rather than DDIM."""

STEP_SIGMAS = "_chromaviz_step_sigmas"
"""Key of a flow-matching scheduler's config: the σ list its pipeline hands ``set_timesteps``.

``"1/N"``: σ = linspace(1, 1/N, N) before the shift, what the Flux and Qwen-Image pipelines pass
(``sigmas = np.linspace(1.0, 1 / num_inference_steps, num_inference_steps)``), where the scheduler's own
default is linspace(1, 1/T, N) with T its training timesteps. It is kept by
:func:`scheduler_from_config` (so a recorded run's scheduler steps as the run did) and read by
:func:`set_timesteps`; absent, the scheduler's own spacing is used."""

STEP_SIGMA_RULES = ("1/N",)
"""Values :data:`STEP_SIGMAS` may take."""


def step_sigmas(scheduler, num_steps: int):
    """The σ list ``set_timesteps`` is given for ``scheduler`` (:data:`STEP_SIGMAS`), or None for its own spacing.

    Parameters
    ----------
    scheduler : diffusers scheduler
    num_steps : int
        N.

    Returns
    -------
    ndarray of float64, shape (N,), or None

    Examples
    --------
    >>> s = scheduler_from_config("FlowMatchEulerDiscreteScheduler", {STEP_SIGMAS: "1/N"})
    >>> step_sigmas(s, 4).tolist()
    [1.0, 0.75, 0.5, 0.25]
    """
    import numpy as np

    rule = scheduler.config.get(STEP_SIGMAS)
    if rule is None or scheduler.config.get("use_flow_sigmas"):
        return None
    if rule not in STEP_SIGMA_RULES:
        raise ValueError(f"{STEP_SIGMAS}={rule!r} is not a step-σ rule chromaviz knows; use one of {STEP_SIGMA_RULES}")
    return np.linspace(1.0, 1.0 / num_steps, num_steps)


def is_flow_scheduler(scheduler) -> bool:
    """True for flow-matching schedulers (velocity prediction, α = 1 − σ).

    Examples
    --------
    >>> from chromaviz.noise import Schedule
    >>> is_flow_scheduler(make_scheduler('default', Schedule.flow_matching())), is_flow_scheduler(make_scheduler('ddim', Schedule.preset('linear')))
    (True, False)
    """
    return type(scheduler).__name__.startswith("FlowMatch") or bool(scheduler.config.get("use_flow_sigmas"))


def stepping_target(scheduler, noise_levels) -> str:
    """The parametrisation ``scheduler.step`` is given: ``"flow"``, or its ``prediction_type``, where an
    ε-prediction scheduler stepping through α = 0 (zero terminal SNR) is switched to ``"v_prediction"``
    in place: from ε its x̂0 = (x_t − σ·ε)/α is 0/0 there (DDIM, DDPM and PNDM step to NaN), while
    v = α·ε − σ·x̂0 is finite everywhere (Lin et al. 2023, "Common diffusion noise schedules and sample
    steps are flawed"). The sampler and the predictions step the same way through this one rule.

    Examples
    --------
    >>> from chromaviz.noise import Schedule, plan_steps
    >>> plan = plan_steps(Schedule.preset("squaredcos_cap_v2").zero_terminal_snr(), 10, "ddim")
    >>> stepping_target(plan.new_scheduler(), plan.noise)
    'v_prediction'
    """
    if is_flow_scheduler(scheduler):
        return "flow"
    target = scheduler.config.get("prediction_type", "epsilon")
    if target == "epsilon" and any(level.alpha == 0 for level in noise_levels):
        scheduler.register_to_config(prediction_type="v_prediction")
        return "v_prediction"
    return target


def schedulers_for(schedule: Schedule) -> tuple[str, ...]:
    """The :data:`SCHEDULERS` names that can sample ``schedule``, in their order: the
    flow-matching ones (:data:`FLOW_SCHEDULERS`) for a ``"flow"`` schedule, the others otherwise.

    Parameters
    ----------
    schedule : Schedule
        The noise schedule (a model's ``.schedule``).

    Returns
    -------
    tuple of str
        Names :func:`make_scheduler` accepts for ``schedule`` (besides ``"default"``).

    Examples
    --------
    >>> from chromaviz.noise import Schedule
    >>> schedulers_for(Schedule.flow_matching())
    ('flow_euler',)
    >>> schedulers_for(Schedule.preset('linear'))[:3]
    ('ddim', 'ddpm', 'pndm')
    """
    flow = schedule.kind == "flow"
    return tuple(n for n in SCHEDULERS if (n in FLOW_SCHEDULERS) == flow and _steps_zero_snr(n, schedule))


def _steps_zero_snr(name: str, schedule: Schedule) -> bool:
    """False where ``schedule`` is rescaled to zero terminal SNR and scheduler ``name``'s class cannot take
    that (it has no ``rescale_betas_zero_snr``: it would silently step the unrescaled betas)."""
    class_name, overrides = SCHEDULERS[name]
    zero_snr = {**schedule.scheduler_config, **overrides}.get("rescale_betas_zero_snr")
    return not zero_snr or "rescale_betas_zero_snr" in _options(class_name)


def _own_class(schedule: Schedule) -> str | None:
    cfg = schedule.scheduler_config
    return cfg.get("_class_name") if cfg.get(DEFAULT_IS_OWN_CLASS) else None


def scheduler_name(scheduler, schedule: Schedule) -> str:
    """The scheduler a request means: a :data:`SCHEDULERS` name, or a diffusers class name for a
    scheduler instance or for a model whose own scheduler is its ``"default"``.

    Examples
    --------
    >>> from chromaviz.noise import Schedule
    >>> scheduler_name('default', Schedule.preset('linear')), scheduler_name('default', Schedule.flow_matching())
    ('ddim', 'flow_euler')
    """
    if not isinstance(scheduler, str):
        return type(scheduler).__name__
    name = scheduler.lower()
    if name != "default":
        return name
    return _own_class(schedule) or ("flow_euler" if schedule.kind == "flow" else "ddim")


def check_scheduler_name(scheduler: str) -> None:
    """Refuse a name that is neither ``"default"`` nor one of :data:`SCHEDULERS` (any case).

    Raises
    ------
    ValueError
        Naming the choices.
    """
    if scheduler.lower() != "default" and scheduler.lower() not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {scheduler!r}; choose 'default' or one of {sorted(SCHEDULERS)}")


def make_scheduler(scheduler, schedule: Schedule):
    """A fresh diffusers scheduler realising ``schedule``.

    Parameters
    ----------
    scheduler : str or diffusers scheduler
        A name from :data:`SCHEDULERS`, ``"default"`` (DDIM for variance-preserving schedules,
        flow Euler for flow matching; the schedule's own scheduler class where its config sets
        :data:`DEFAULT_IS_OWN_CLASS`), or a scheduler instance (copied, never mutated).
    schedule : Schedule
        The noise schedule; its ``scheduler_config`` configures the scheduler.

    Examples
    --------
    >>> from chromaviz.noise import Schedule
    >>> type(make_scheduler('dpmsolver++', Schedule.preset('scaled_linear'))).__name__
    'DPMSolverMultistepScheduler'
    """
    if not isinstance(scheduler, str):
        if is_flow_scheduler(scheduler) != (schedule.kind == "flow"):
            raise ValueError(
                f"{type(scheduler).__name__} does not match the model's {schedule.kind!r} schedule"
            )
        return _refuse_learned_variance(copy.deepcopy(scheduler))
    name = scheduler_name(scheduler, schedule)
    if name == _own_class(schedule):  # a model whose own scheduler is its default (diffusers pipelines)
        return _build(name, schedule.scheduler_config)
    if name not in SCHEDULERS:
        check_scheduler_name(scheduler)
    if (name in FLOW_SCHEDULERS) != (schedule.kind == "flow"):
        allowed = sorted(schedulers_for(schedule))
        raise ValueError(f"scheduler {name!r} cannot sample a {schedule.kind!r} schedule; choose one of {allowed}")
    class_name, overrides = SCHEDULERS[name]
    config = {**schedule.scheduler_config, **overrides}
    if not _steps_zero_snr(name, schedule):
        able = sorted(n for n, (c, _) in SCHEDULERS.items() if "rescale_betas_zero_snr" in _options(c))
        raise ValueError(f"scheduler {name!r} ({class_name}) cannot step a zero-terminal-SNR schedule: it has no "
                         f"rescale_betas_zero_snr and would silently use the unrescaled betas; choose one of {able}")
    return _build(class_name, config)


def scheduler_from_config(class_name: str, config: Mapping[str, Any]):
    """A diffusers scheduler of class ``class_name`` built from ``config``.

    The one way chromaviz builds a scheduler from a class name and a config (a schedule's
    ``scheduler_config``, a pipeline's, a recorded run's): the options the class's ``__init__``
    takes are passed, the others and the private keys (``_class_name``, ``_diffusers_version``, …)
    are left out, as ``from_config`` would but without its log messages about them.

    Parameters
    ----------
    class_name : str
        A scheduler class of diffusers, e.g. ``"DDIMScheduler"``.
    config : mapping
        Its options; unknown and private keys are ignored.

    Returns
    -------
    diffusers scheduler
        A new instance, before ``set_timesteps``.

    Raises
    ------
    ValueError
        If diffusers has no scheduler class of that name, or (raised by diffusers) an option
        value the class does not implement.

    Examples
    --------
    >>> s = scheduler_from_config("DDIMScheduler", {"beta_schedule": "linear", "_class_name": "PNDMScheduler", "skip_prk_steps": True})
    >>> type(s).__name__, s.config.beta_schedule
    ('DDIMScheduler', 'linear')
    """
    accepted = _options(class_name)
    scheduler = _scheduler_class(class_name)(**{k: v for k, v in config.items() if k in accepted and not k.startswith("_")})
    if config.get(STEP_SIGMAS) is not None and is_flow_scheduler(scheduler):  # how its pipeline spaces the steps
        scheduler.register_to_config(**{STEP_SIGMAS: config[STEP_SIGMAS]})
    return scheduler


def _scheduler_class(class_name: str) -> type:
    import diffusers

    cls = getattr(diffusers, class_name, None) if isinstance(class_name, str) else None
    if not (isinstance(cls, type) and callable(getattr(cls, "set_timesteps", None))):
        raise ValueError(f"{class_name!r} is not a diffusers scheduler class")
    return cls


def _options(class_name: str) -> set[str]:
    """The options the ``__init__`` of scheduler class ``class_name`` takes."""
    return set(inspect.signature(_scheduler_class(class_name).__init__).parameters)


LEARNED_VARIANCE = ("learned", "learned_range")
"""``variance_type`` values whose scheduler step needs the model's predicted variance (2·C output channels)."""


def _build(class_name: str, config: Mapping[str, Any]):
    """:func:`scheduler_from_config`, refusing options the class does not implement (ValueError naming
    the option) and a variance the sampler cannot step with."""
    try:
        scheduler = scheduler_from_config(class_name, config)
    except (NotImplementedError, ValueError) as exc:
        options = {k: v for k, v in config.items() if k in _options(class_name)}
        able = [n for n in SCHEDULERS if n not in FLOW_SCHEDULERS and _constructible(n, config)]
        raise ValueError(f"{class_name} cannot realise this schedule: {_option_in(exc, options)}; "
                         f"schedulers that can: {able or 'none of chromaviz’s'}") from None
    return _refuse_learned_variance(scheduler)


def _refuse_learned_variance(scheduler):
    """``scheduler``, unless its step needs the model's predicted variance (which chromaviz does not pass)."""
    variance = scheduler.config.get("variance_type")
    if variance in LEARNED_VARIANCE:
        raise ValueError(
            f"{type(scheduler).__name__} with variance_type={variance!r} needs the model's predicted variance at every step, which "
            "chromaviz does not pass to the scheduler (it steps with the mean prediction); sample with scheduler='ddim', "
            "'euler' or 'dpmsolver++' (the mean prediction only, as diffusers' IF pipelines do with such schedulers), "
            "or use a config with variance_type='fixed_small'")
    return scheduler


def _constructible(name: str, config: Mapping[str, Any]) -> bool:
    class_name, overrides = SCHEDULERS[name]
    try:
        scheduler_from_config(class_name, {**config, **overrides})
    except (NotImplementedError, ValueError):
        return False
    return True


def _option_in(exc: Exception, config: Mapping[str, Any]) -> str:
    """The message of ``exc`` led by the config option it is about, where its value is named in it."""
    text = str(exc)
    named = [f"{k}={v!r}" for k, v in config.items() if isinstance(v, str) and v and v in text]
    return (f"it does not implement {', '.join(named)} ({text})" if named else text)


def set_timesteps(scheduler, num_steps: int, *, mu: float | None = None) -> None:
    """``scheduler.set_timesteps(num_steps)``, refusing step lists diffusers cannot step through.

    Checked on the actual timesteps and σ, for every option and step count, before any step:

    - schedulers that find their place by timestep (``index_for_timestep``: Euler, DPM-Solver, …)
      start at the *second* occurrence of a repeated first timestep and step past the end of
      their sigmas at the last step (Karras sigmas on a schedule with a huge σ_max, such as zero
      terminal SNR or the cosine schedule; more steps than training timesteps);
    - multistep solvers divide by the step in log-SNR, so two equal consecutive σ (a timestep
      repeated by rounding, e.g. DPM-Solver++ at 1000 steps) make the run NaN.

    PNDM, Heun and KDPM2 repeat timesteps by design and count their steps; they pass.

    Parameters
    ----------
    scheduler : diffusers scheduler
    num_steps : int
        N, the inference steps.
    mu : float, optional
        The image-size dependent shift of flow-matching schedulers with ``use_dynamic_shifting``
        (Flux, SD3.5): ``mu = calculate_shift(image_seq_len, ...)`` as the pipelines compute it
        (:func:`dynamic_shift_mu`). Required for them, refused for others.

    Raises
    ------
    ValueError
        For the step lists above, a dynamic-shifting scheduler without ``mu``, an option diffusers
        does not implement (naming it), or more steps than the schedule's training timesteps where
        the scheduler refuses them.

    Examples
    --------
    >>> from chromaviz.noise import Schedule
    >>> scheduler = make_scheduler('ddim', Schedule.preset('scaled_linear'))
    >>> set_timesteps(scheduler, 5)
    >>> scheduler.timesteps.tolist()
    [800, 600, 400, 200, 0]
    """
    name = type(scheduler).__name__
    dynamic = bool(scheduler.config.get("use_dynamic_shifting"))
    if dynamic and mu is None:
        raise ValueError(
            f"{name} has use_dynamic_shifting=True: its shift depends on the image size (mu = calculate_shift(image "
            "sequence length), as the Flux and SD3 pipelines compute it); sample() computes it from the run's size, "
            "and plan_steps takes it: plan_steps(..., image_seq_len=image_seq_len(h, w, patch_size)) or "
            "plan_steps(..., mu=...)")
    if mu is not None and not dynamic:
        raise ValueError(f"mu applies to schedulers with use_dynamic_shifting=True; {name} has a fixed shift")
    sigmas = step_sigmas(scheduler, num_steps)
    try:
        scheduler.set_timesteps(num_steps, **({"mu": mu} if dynamic else {}), **({"sigmas": sigmas} if sigmas is not None else {}))
    except NotImplementedError as exc:
        raise ValueError(f"{name} cannot take {num_steps} steps: {_option_in(exc, dict(scheduler.config))}") from None
    except ValueError as exc:
        trained = scheduler.config.get("num_train_timesteps")
        if trained is not None and num_steps > trained:  # DDIM, DDPM, PNDM, …: "cannot be larger than train_timesteps"
            raise ValueError(f"{name} cannot take {num_steps} steps: at most {trained}, the schedule's training "
                             "timesteps") from None
        raise ValueError(f"{name} cannot take {num_steps} steps: {exc}") from None
    timesteps = [float(t) for t in scheduler.timesteps]
    spoiled = ""
    if hasattr(scheduler, "index_for_timestep") and timesteps.count(timesteps[0]) > 1:
        spoiled = (f"its first timestep {timesteps[0]:g} occurs {timesteps.count(timesteps[0])} times, and {name} "
                   "finds its place by timestep: it would start at the second one and step past its last σ")
    sigmas = getattr(scheduler, "sigmas", None)
    if not spoiled and "Multistep" in name and sigmas is not None:
        sig = [float(v) for v in sigmas[: len(timesteps)]]
        equal = [i for i in range(len(sig) - 1) if sig[i] == sig[i + 1]]
        if equal:
            spoiled = (f"steps {equal[0]} and {equal[0] + 1} have the same σ = {sig[equal[0]]:.4g} (timestep "
                       f"{timesteps[equal[0]]:g} repeated), and a multistep solver divides by their difference (NaN)")
    if spoiled:
        repeats = len(timesteps) - len(set(timesteps))
        options = ", ".join(f"{k}={scheduler.config[k]!r}" for k in ("use_karras_sigmas", "timestep_spacing")
                            if k in scheduler.config)
        raise ValueError(
            f"{name} cannot run {num_steps} steps of this schedule ({options}; {repeats} repeated timesteps): "
            f"{spoiled}; " + ("use sigmas without Karras spacing ('dpmsolver++' or 'euler')"
                               if scheduler.config.get("use_karras_sigmas") else "use fewer steps, or 'euler' or 'ddim'"))


def image_seq_len(height: int, width: int, patch_size: int = 1) -> int:
    """Tokens of a sample grid of ``height`` × ``width`` cut into ``patch_size`` × ``patch_size`` patches.

    What diffusers' pipelines pass to ``calculate_shift``: Flux packs its 1/8-size latents into 2×2
    patches, ``(H // 16)·(W // 16)`` tokens for an H × W image; SD3 uses its transformer's
    ``patch_size`` the same way. chromaviz gives it the model's sample grid (pixels for the built-in
    models, whose patch size is 1).

    Examples
    --------
    >>> image_seq_len(128, 128, 2)  # Flux at 1024×1024: 128×128 latents in 2×2 patches
    4096
    """
    return (int(height) // int(patch_size)) * (int(width) // int(patch_size))


def dynamic_shift_mu(config, image_seq_len: int) -> float:
    """``mu`` of a dynamic-shifting flow-matching scheduler for an image of ``image_seq_len`` latent tokens.

    Diffusers' own ``calculate_shift`` (the Flux pipeline's) with the config's ``base_image_seq_len``,
    ``max_image_seq_len``, ``base_shift`` and ``max_shift``: mu is linear in the token count.
    For Flux, ``image_seq_len = (height // 16) · (width // 16)`` (8× VAE, 2×2 patches).

    Examples
    --------
    >>> dynamic_shift_mu({"base_image_seq_len": 256, "max_image_seq_len": 4096, "base_shift": 0.5,
    ...                   "max_shift": 1.15}, 4096)
    1.15
    """
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    cfg = dict(config)
    return float(calculate_shift(image_seq_len, cfg.get("base_image_seq_len", 256), cfg.get("max_image_seq_len", 4096),
                                 cfg.get("base_shift", 0.5), cfg.get("max_shift", 1.15)))
