"""The run as it was sampled: band energies predicted mode by mode through the run's own scheduler.

The continuous-time chromatography of :mod:`chromaviz.theory` describes the ideal process. A
sampled run differs from it by its normalisation, by what it inherits from the initial noise and by
the sampler's discretisation (THEORY §4b). For a Gaussian model all three are exact: its denoiser is
the Wiener filter x̂0_k = g_k·x_t,k with g_k = α·P(k)/(α²·P(k) + σ²), linear and diagonal in the
orthonormal 2-D FFT, and every diffusers scheduler step is linear in the sample and the model output.
So the run's own scheduler (same class, same config, same ``set_timesteps``), stepped on one
amplitude per Fourier mode with the Wiener gain as the model, gives every mode's exact gain at every
step (:func:`mode_gains`):

- **Deterministic samplers** (DDIM, Euler, DPM-Solver++, PNDM, flow Euler): x̂0_k(step) = c_k(step)·ε_k,
  a fixed multiple of the same mode of the run's initial noise ε. Applied to the run's own ε (its
  first x_t, or the noise regenerated from its seed), the band energies are predicted exactly for
  that run, with no batch noise.
- **Stochastic samplers** (DDPM, Euler ancestral, DDIM with η > 0, SDE-DPM-Solver++, …): the noise
  each step injected is replayed from the run's seed by the run's own scheduler, stepped on zeros at the
  run's shape and dtype (:func:`_injected_noise`: the same draws, whatever dtype the scheduler draws
  in), and added to the replay mode by mode, so these runs are replayed exactly too. Where the noise
  cannot be replayed (no seed, another generator) each injection is tracked as its own lane of white
  noise instead: the prediction is then the expectation over the injected noise given the run's
  initial noise, and :attr:`Prediction.batch_noise` says how far a batch scatters around it.

The replay is a **consistency check**, not a prediction: for a model whose denoiser is the Wiener
filter of its declared spectrum it equals the measurement to float rounding (≤ 1e-5) by construction,
so a larger difference means a model that is not that Wiener filter, or a bug. It is no evidence for
the theory; the expectation before the run (:func:`expected_run`) is what a run can fall outside of.

Bands are octave rings (a 0/1 weight per mode) or box-pyramid bands. A pyramid band
B_m = U_m·D_m − U_2m·D_2m is an orthogonal projection whose response to mode k is
|Ŵ_m(k)|² − |Ŵ_2m(k)|², with Ŵ_m the Dirichlet kernel of m×m block averaging
(:func:`chromaviz.spectral.band_weights`); it folds aliased modes together, which :func:`_pyramid_energies` keeps
exactly. Every energy is expressed as a fraction of the data power of its band, the normalisation of
the continuous theory (:func:`chromaviz.theory.band_signal_fraction`).

Models without an exact spectrum (the shapes model, diffusers pipelines) get the same prediction
from the spectrum estimated from the run's final samples, labelled ``"approximation"``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from . import spectral
from .models.base import join_prediction, split_prediction
from .noise.plan import NoiseLevel
from .noise.schedulers import scheduler_from_config, set_timesteps, stepping_target
from .sampling.trajectory import Trajectory

__all__ = [
    "KINDS", "Expectation", "ModeGains", "NotWhiteNoise", "Prediction", "data_energy", "exact_spectrum", "expected_run",
    "mean_gains", "mode_gains", "planned_scheduler", "predict_run", "run_scheduler",
]

FIXED_POINT_STEPS = 4
"""Refinements of a data spectrum estimated from a run's samples (see :func:`predict_run`)."""

KINDS = ("exact", "expectation", "approximation")
"""What a :class:`Prediction` is: the run replayed exactly (its own initial noise, and for stochastic
samplers its own injected noise replayed from its seed; a consistency check), the expectation over
injected noise given the initial noise (stochastic samplers whose noise cannot be replayed), or an
approximation from a spectrum estimated from the run (models without an exact spectrum)."""


# --------------------------------------------------------------------------------------------
# sums over the modes that share a power value
# --------------------------------------------------------------------------------------------


def _group_sums(weights: np.ndarray, groups: np.ndarray, num_groups: int, values: np.ndarray | None = None) -> np.ndarray:
    """Σ over the modes of each group of weights[b]·values, shape (K, L); ``groups`` is (C', H, W)."""
    w = np.broadcast_to(weights[:, None], (weights.shape[0], *groups.shape))
    v = w if values is None else w * values
    flat = groups.ravel()
    return np.stack([np.bincount(flat, v[b].ravel(), minlength=num_groups) for b in range(len(weights))], axis=1)


# --------------------------------------------------------------------------------------------
# the run's scheduler stepped on per-mode amplitudes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModeGains:
    """Every mode's gains through a run, for modes of data power ``power`` (K values).

    The run starts from x_T = ``init_noise_sigma``·ε with ε ~ N(0, I). A mode's x̂0 at step i is
    ``x0[i, 0]``·ε_k plus, for stochastic samplers, ``x0[i, j]``·z_j for the white noise z_j the
    scheduler injects at its j-th noisy step (lanes j ≥ 1, independent, unit variance). A scheduler
    that keeps nothing between steps (DDPM, Euler ancestral, DDIM with η > 0) carries every injected
    noise alike, so its noises share lane 1, as one standard deviation (``xt`` is then given).

    Attributes
    ----------
    power : ndarray, shape (K,)
        P(k) of the modes (white noise = 1).
    x0 : ndarray, shape (S, J, K)
        Coefficient of each noise source (lane 0: the initial noise ε) in x̂0 at each model evaluation.
    final : ndarray, shape (J, K)
        The same for the scheduler's last output (the generated sample).
    input_scale : float
        The network input at the first step per unit of ε (``init_noise_sigma`` after
        ``scale_model_input``): ε = x_t(step 0) / input_scale.
    injected_std : ndarray, shape (S,)
        Standard deviation of the white noise the scheduler added at each step (0: deterministic).
    xt : ndarray, shape (S, 2, K), or None
        Where the injected noises share lane 1: the same coefficients in each step's sample x_t
        (before ``scale_model_input``), which :meth:`covariance_with` needs.
    """

    power: np.ndarray
    x0: np.ndarray
    final: np.ndarray
    input_scale: float
    injected_std: np.ndarray
    xt: np.ndarray | None = None

    def covariance_with(self, ends: np.ndarray) -> np.ndarray:
        """Covariance of each step's x̂0 with a later output of coefficients ``ends`` (J, K): the
        sample (``final``) or the last x̂0. Shape (S, K), per unit variance of the sources.

        With separate lanes it is Σ_j x0[i, j]·ends[j]. With shared lane 1, the noise in x_t(i) reaches
        ``ends`` multiplied by what ε's coefficient is, ends[0]/xt[i, 0] (every step acts on a mode as
        one multiplier), and the noise injected after step i is independent of x̂0(i).
        """
        if self.xt is None:
            return (self.x0 * ends[None]).sum(1)
        carried = ends[0][None] / self.xt[:, 0]  # x_t(i) → ends, per mode (lane 0 is never 0 here)
        return self.x0[:, 0] * ends[0][None] + self.x0[:, 1] * self.xt[:, 1] * carried

    @property
    def stochastic(self) -> bool:
        """True if any step injected noise."""
        return bool((self.injected_std > 0).any())


def run_scheduler(trajectory_or_metadata) -> Any:
    """A fresh copy of a run's scheduler: its recorded class and config, ``set_timesteps`` as the run.

    Parameters
    ----------
    trajectory_or_metadata : Trajectory or dict
        A run (or its ``metadata``) recorded by :func:`chromaviz.sampling.sample`, which stores the
        scheduler's class name, its config (after any change the sampler made, e.g. v-prediction on a
        zero-terminal-SNR schedule), N and, for a dynamic-shifting flow scheduler, its ``mu``.

    Raises
    ------
    ValueError
        If the metadata lacks the scheduler's class, config or N.
    """
    meta = trajectory_or_metadata.metadata if isinstance(trajectory_or_metadata, Trajectory) else trajectory_or_metadata
    missing = [k for k in ("scheduler_class", "scheduler_config", "num_inference_steps") if k not in meta]
    if missing:
        raise ValueError(f"the run's metadata lacks {missing}: it was not recorded by chromaviz.sampling.sample")
    sched = scheduler_from_config(meta["scheduler_class"], meta["scheduler_config"])
    mu = meta.get("mu")  # the image-size shift of a dynamic-shifting flow scheduler, as the run used it
    set_timesteps(sched, int(meta["num_inference_steps"]), mu=None if mu is None else float(mu))
    return sched


def planned_scheduler(plan, trajectory_or_metadata) -> Any:
    """:func:`run_scheduler` of a run from the plan it was sampled with, without ``set_timesteps``.

    Parameters
    ----------
    plan : StepPlan
        The run's step plan.
    trajectory_or_metadata : Trajectory or dict
        The run (or its ``metadata``); configuration the sampler changed after planning (v-prediction
        on a zero-terminal-SNR schedule) is applied to the copy.

    Returns
    -------
    diffusers scheduler
        A fresh copy of the plan's scheduler, never stepped.

    Raises
    ------
    ValueError
        If the plan is not this run's: another scheduler class or another N.
    """
    meta = trajectory_or_metadata.metadata if isinstance(trajectory_or_metadata, Trajectory) else trajectory_or_metadata
    recorded = (meta.get("scheduler_class"), meta.get("num_inference_steps"))
    planned = (type(plan.scheduler).__name__, plan.num_inference_steps)
    if recorded[0] != planned[0] or recorded[1] is None or int(recorded[1]) != planned[1]:
        raise ValueError(f"plan= is the plan of a {planned[0]} run of N={planned[1]} steps; this run was sampled with "
                         f"{recorded[0]}, N={recorded[1]}")
    sched = plan.new_scheduler()
    config = dict(sched.config)
    changed = {}
    for k, v in meta.get("scheduler_config", {}).items():
        if k.startswith("_") or k not in config:
            continue
        try:
            same = bool(config[k] == v)
        except (ValueError, TypeError):  # arrays
            same = bool(np.array_equal(np.asarray(config[k]), np.asarray(v)))
        if not same:
            changed[k] = v
    if changed:
        sched.register_to_config(**changed)
    return sched


def _step_kwargs(sched, eta: float) -> dict:
    """The keywords the sampler passes ``sched.step`` where it takes them: DDIM's η and a generator."""
    accepted = inspect.signature(sched.step).parameters
    return {k: v for k, v in {"eta": eta, "generator": None}.items() if k in accepted}


def _adds_noise(step_kwargs: dict) -> bool:
    """Whether steps taking ``step_kwargs`` may inject noise: they draw from a generator, unless η = 0 (DDIM)."""
    return "generator" in step_kwargs and step_kwargs.get("eta", None) != 0


class NotWhiteNoise(ValueError):
    """A scheduler step injects noise that is not one fresh white draw (SA-Solver reuses the previous
    step's): its run cannot be predicted in expectation mode by mode, only replayed from its seed."""


def _noise_rms(sched, levels: Sequence[NoiseLevel], step_kwargs: dict) -> np.ndarray:
    """The root mean square of the noise each ``sched.step`` injects (0 where a step adds none).

    A copy of ``sched`` is stepped on float64 zeros with a seeded generator, so its output is the noise
    alone, whatever its making (for noise that is not one white draw per step, which :class:`_Probe`
    cannot separate).
    """
    import copy

    sched = copy.deepcopy(sched)
    gen = torch.Generator().manual_seed(0)
    scale = getattr(sched, "scale_model_input", lambda sample, timestep: sample)
    zeros = torch.zeros((1, 1, 4, 8), dtype=torch.float64)  # 4-D: some schedulers read shape[1]
    rms = np.zeros(len(levels))
    for i, t in enumerate(list(sched.timesteps)[: len(levels)]):
        scale(zeros, t)
        out = sched.step(zeros, t, zeros, **{**step_kwargs, "generator": gen}).prev_sample.double()
        rms[i] = float(out.square().mean().sqrt())
    return rms


def mode_gains(scheduler, levels: Sequence[NoiseLevel], power, *, eta: float = 0.0, lanes: bool = True) -> ModeGains:
    """Step a fresh copy of ``scheduler`` on one amplitude per mode, with the Wiener gain as the model.

    Parameters
    ----------
    scheduler : diffusers scheduler
        After ``set_timesteps`` and never stepped (e.g. :func:`run_scheduler`); copied, not mutated.
    levels : sequence of NoiseLevel, length S
        Noise level of the network input at each evaluation (a run's records or ``StepPlan.noise``).
        Fewer than the scheduler's steps predicts a partial run.
    power : array_like, shape (K,)
        Data power P of each mode (white noise = 1).
    eta : float
        DDIM's η, passed to ``step`` where it takes one (as the sampler does).
    lanes : bool
        Track each step's injected noise (the default): as a lane of its own, or, for a scheduler that keeps
        nothing between steps, all in lane 1 as one standard deviation (:class:`ModeGains`). False keeps lane 0 alone,
        the multiple of the initial noise (what a replay of the run's own noise needs), and accepts
        noise that is not a fresh white draw per step; ``injected_std`` is then its root mean square.

    Returns
    -------
    ModeGains

    Raises
    ------
    NotWhiteNoise
        With ``lanes``, for a scheduler whose injected noise is not one white draw per step.

    Notes
    -----
    The model output is built exactly as in the sampler: x̂0 = g·x_t with g = α·P/(α²·P + σ²) (the
    posterior mean of N(0, P) data, THEORY §5), converted with :func:`~chromaviz.models.base.split_prediction`
    and :func:`~chromaviz.models.base.join_prediction` to the scheduler's prediction type. The noise
    a stochastic step injects is read off a lane kept at zero, removed from the stepped amplitudes
    (drawn again from the generator state) and tracked as above: one scheduler step per step.

    Examples
    --------
    >>> from chromaviz.noise import Schedule, plan_steps
    >>> plan = plan_steps(Schedule.preset("scaled_linear"), 10, "ddim")
    >>> g = mode_gains(plan.scheduler, plan.noise, [0.1, 1.0, 10.0])
    >>> g.x0.shape, g.stochastic
    ((10, 1, 3), False)
    """
    import copy

    p = torch.as_tensor(np.asarray(power, dtype=np.float64).ravel())
    stepped = copy.deepcopy(scheduler)
    target = stepping_target(stepped, levels)  # as the sampler steps: v, not ε, through α = 0
    step_kwargs = _step_kwargs(stepped, eta)
    if not _adds_noise(step_kwargs):
        return _stepped_gains(stepped, levels, p, target, step_kwargs, None)
    try:
        if lanes:
            try:
                return _stepped_gains(stepped, levels, p, target, step_kwargs, _Probe(step_kwargs, "shared"))
            except _NoSharedLane:
                stepped = copy.deepcopy(scheduler)
        return _stepped_gains(stepped, levels, p, target, step_kwargs, _Probe(step_kwargs, "lanes" if lanes else "first"))
    except NotWhiteNoise:
        if lanes:
            raise
    stepped = copy.deepcopy(scheduler)  # noise of its own making: stepped in lockstep with a copy on zeros
    stds = _noise_rms(stepped, levels, step_kwargs)
    stepper = _NoiseFree(stepped, step_kwargs, injects=bool(stds.any()))
    gains = _stepped_gains(stepped, levels, p, target, step_kwargs, stepper)
    return ModeGains(gains.power, gains.x0, gains.final, gains.input_scale, stds)


class _NoSharedLane(Exception):
    """The injected noises cannot share one lane: the scheduler keeps samples or model outputs between
    steps (a multistep one), or ε's coefficient of some mode reached 0."""


def _keeps_samples(sched, shape: torch.Size) -> bool:
    """Whether ``sched`` holds, between steps, a tensor of the sample's shape (alone or in a list)."""
    for value in vars(sched).values():
        for item in value if isinstance(value, (list, tuple)) else (value,):
            if isinstance(item, torch.Tensor) and item.shape == shape:
                return True
    return False


def mean_gains(scheduler, levels: Sequence[NoiseLevel], power, *, eta: float = 0.0,
               prompts: Sequence[int] | None = None) -> np.ndarray:
    """How a run carries its data's means: E[x̂0] = Σ_q c_q·μ_q per mode, for data N(μ_q, P) of prompt q
    and the Wiener denoiser (the prompts share P).

    Parameters
    ----------
    scheduler, levels, power, eta
        As :func:`mode_gains` (K power values).
    prompts : sequence of int, length S, optional
        The prompt q ∈ {0 … Q − 1} each evaluation denoises for (a prompt switch); default one prompt.

    Returns
    -------
    ndarray, shape (S + 1, Q, K)
        c_q at each model evaluation, and for the scheduler's last output (the sample). A run of one
        prompt that carries its mean as the data has it gives c = 1 at every step: from pure noise
        (α = 0) every sampler diffusers ships does, where its steps land on the noise levels it
        evaluates the model at. After a switch from prompt 0 to 1, c_0 is what the levels already
        formed keep of prompt 0's mean.

    Notes
    -----
    The run starts from x_T of mean 0; the posterior mean of N(μ, P) data is
    x̂0 = μ + g·(x_t − α·μ), g = α·P/(α²·P + σ²), so a lane of mean 0 stepped with x̂0 = g·x_t + (1 − g·α)·1_q
    (1_q: 1 while prompt q is denoised for, else 0) is μ_q's coefficient, the noise each step injects
    removed as in :func:`mode_gains`.
    """
    active = np.zeros(len(levels), dtype=np.int64) if prompts is None else np.asarray(prompts, dtype=np.int64)
    if active.shape != (len(levels),) or (active < 0).any():
        raise ValueError(f"prompts must give a prompt index ≥ 0 for each of the {len(levels)} evaluations")
    offsets = np.eye(int(active.max()) + 1 if len(active) else 1)[active]  # (S, Q)
    import copy

    p = torch.as_tensor(np.asarray(power, dtype=np.float64).ravel())
    stepped = copy.deepcopy(scheduler)
    target = stepping_target(stepped, levels)
    step_kwargs = _step_kwargs(stepped, eta)
    try:
        stepper = _Probe(step_kwargs, "first") if _adds_noise(step_kwargs) else None
        gains = _stepped_gains(stepped, levels, p, target, step_kwargs, stepper, offsets=offsets)
    except NotWhiteNoise:
        stepped = copy.deepcopy(scheduler)
        gains = _stepped_gains(stepped, levels, p, target, step_kwargs, _NoiseFree(stepped, step_kwargs), offsets=offsets)
    return np.concatenate([gains.x0, gains.final[None]])


def _stepped_gains(sched, levels: Sequence[NoiseLevel], p: torch.Tensor, target: str, step_kwargs: dict,
                   stepper, offsets: np.ndarray | None = None) -> ModeGains:
    """The loop of :func:`mode_gains`: ``stepper`` None (no step adds noise), a :class:`_Probe` (the noise
    read off a zero lane and removed; its ``mode`` says where the noise goes) or a :class:`_NoiseFree`
    (lane 0 alone). ``offsets`` (S, Q): Q lanes of mean 0 whose x̂0 holds ``offsets[i, q]`` of a data mean
    (:func:`mean_gains`)."""
    mode = stepper.mode if isinstance(stepper, _Probe) else None
    modes = len(p)
    if mode and modes < PROBE_MODES:  # pad the mode axis so that the noise check sees enough elements
        p = torch.cat([p, torch.ones(PROBE_MODES - modes, dtype=p.dtype)])
    lanes = offsets.shape[1] if offsets is not None else {"lanes": 1 + len(levels), "shared": 2}.get(mode, 1)
    scale = getattr(sched, "scale_model_input", lambda sample, timestep: sample)
    x = torch.zeros((lanes + bool(mode), 1, 1, len(p)), dtype=torch.float64)  # (B, C, H, W) as schedulers expect
    x[0] = 0.0 if offsets is not None else float(getattr(sched, "init_noise_sigma", 1.0))
    shares = torch.zeros((len(levels), len(x), 1, 1, 1), dtype=torch.float64)  # of a data mean in x̂0, per lane
    if offsets is not None:
        shares[:, :lanes, 0, 0, 0] = torch.as_tensor(offsets, dtype=torch.float64)  # never in the zero lane
    x0_gains = np.empty((len(levels), lanes, modes))
    xt_gains = np.empty((len(levels), lanes, modes)) if mode == "shared" else None
    stds = np.zeros(len(levels))
    used = 1 if mode == "lanes" else lanes
    input_scale = 1.0
    for i, (t, level) in enumerate(zip(sched.timesteps, levels)):
        if xt_gains is not None:
            xt_gains[i] = x[:lanes].reshape(lanes, -1)[:, :modes].numpy()
            if not (xt_gains[i, 0] != 0).all():
                raise _NoSharedLane
        x_in = scale(x, t)
        if i == 0:
            input_scale = float(x_in[0, 0, 0, 0]) if modes else 1.0
        gain = level.alpha * p / (level.alpha**2 * p + level.sigma**2)  # broadcasts over the mode axis
        x0, eps = split_prediction(gain * x_in + (1 - gain * level.alpha) * shares[i], x_in, level, "sample")
        x0_gains[i] = x0[:lanes].reshape(lanes, -1)[:, :modes].numpy()
        model_output = join_prediction(x0, eps, level, target)
        if stepper is None:
            x = sched.step(model_output, t, x, **step_kwargs).prev_sample.double()
        elif mode:
            x, stds[i] = stepper.step(sched, model_output, t, x, i)
            if mode == "shared":
                if _keeps_samples(sched, x.shape):
                    raise _NoSharedLane
                x[1] = torch.sqrt(x[1].square() + stds[i] ** 2)  # the carried noise and the new, independent
            elif mode == "lanes" and stds[i] > 0:
                x[used] = stds[i]
                used += 1
        else:
            x = stepper.step(sched, model_output, t, x)
    final = x[:used].reshape(-1, len(p))[:, :modes].numpy()
    return ModeGains(p[:modes].numpy(), x0_gains[:, :used], final, input_scale, stds, xt_gains)


PROBE_MODES = 32
"""Fewest elements of the zero lane a stochastic step's noise is read from: torch's CPU generator draws the
same normals in float32 and float64 for tensors of fewer than 16 elements and other ones from 16 on, so
the dtype a scheduler draws in can only be told from enough elements."""


class _Probe:
    """Removes the white noise a scheduler step injects, read off the last lane, which stays zero.

    Every step is linear in the sample and the model output, so a lane whose sample and model output are
    zero comes out as the step's noise alone: std·z, z the normals diffusers' ``randn_tensor`` drew for the
    whole tensor from the generator state before the step (in the sample's dtype, or in float32 as
    SDE-DPM-Solver++ draws). Those normals are drawn again, the dtype found by matching the zero lane
    element by element, and std·z is subtracted from every lane: one step per step, no stepped copy.
    Noise that matches neither dtype (noise of the scheduler's own making) raises :class:`NotWhiteNoise`.
    """

    def __init__(self, step_kwargs: dict, mode: str) -> None:
        """``mode``: each injected noise a lane of its own (``"lanes"``), all in lane 1 (``"shared"``), or
        none kept (``"first"``: lane 0 alone)."""
        self.kwargs = {**step_kwargs, "generator": None}
        self.mode = mode
        self.gen = torch.Generator().manual_seed(0)

    def step(self, sched, model_output: torch.Tensor, t, x: torch.Tensor, i: int) -> tuple[torch.Tensor, float]:
        """``sched.step(...).prev_sample`` without its noise (float64, the zero lane zero again), and the noise's std."""
        from diffusers.utils.torch_utils import randn_tensor

        state = self.gen.get_state()
        out = sched.step(model_output, t, x, **{**self.kwargs, "generator": self.gen}).prev_sample
        out = out.double()
        after = self.gen.get_state()
        drawn = out[-1]
        if not drawn.abs().max() > 0:
            return out, 0.0
        for dtype in (x.dtype, torch.float32):
            self.gen.set_state(state)
            z = randn_tensor(x.shape, generator=self.gen, dtype=dtype).double()
            std = float((drawn * z[-1]).sum() / (z[-1] * z[-1]).sum())
            if torch.allclose(drawn, std * z[-1], rtol=1e-5, atol=1e-6 * abs(std)):
                self.gen.set_state(after)
                out = out - std * z
                out[-1] = 0.0
                return out, std
        raise NotWhiteNoise(f"{type(sched).__name__} adds noise at step {i} that is not white noise drawn with "
                            "diffusers' randn_tensor (in the sample's dtype or float32); its run cannot be predicted "
                            "mode by mode")


class _NoiseFree:
    """Steps a scheduler without the noise it injects: a copy of it, stepped in lockstep on zeros with the
    same generator state, draws the same noise (same shape, dtype and generator state) and outputs nothing
    else (every step is linear in the sample and the model outputs, and the copy's are all zero), so the
    difference of the two outputs is the step without its noise, whatever dtype the scheduler draws in."""

    def __init__(self, scheduler, step_kwargs: dict, injects: bool = True) -> None:
        """``injects=False``: the steps were found to add no noise (DDIM with η = 0): no copy is stepped."""
        import copy

        self.kwargs = dict(step_kwargs)
        self.zeros = copy.deepcopy(scheduler) if "generator" in step_kwargs and injects else None
        self.scale = getattr(self.zeros, "scale_model_input", lambda sample, timestep: sample)
        self.gen = torch.Generator().manual_seed(0)

    def step(self, sched, model_output: torch.Tensor, t, x: torch.Tensor) -> torch.Tensor:
        """``sched.step(model_output, t, x).prev_sample`` without its injected noise, float64."""
        if self.zeros is None:
            return sched.step(model_output, t, x, **self.kwargs).prev_sample.double()
        state = self.gen.get_state()
        out = sched.step(model_output, t, x, **{**self.kwargs, "generator": self.gen}).prev_sample.double()
        self.gen.set_state(state)
        zeros = torch.zeros_like(x)
        self.scale(zeros, t)
        noise = self.zeros.step(torch.zeros_like(model_output), t, zeros, **{**self.kwargs, "generator": self.gen})
        return out - noise.prev_sample.double()


# --------------------------------------------------------------------------------------------
# band energies of a run
# --------------------------------------------------------------------------------------------


def exact_spectrum(model, height: int, width: int) -> np.ndarray | None:
    """The model's exact data power on the (H, W) FFT grid, or None if it declares none.

    What :meth:`Denoiser.data_power <chromaviz.models.base.Denoiser.data_power>` declares.

    Returns
    -------
    ndarray, shape (H, W) or (C, H, W), or None
    """
    if model is None:
        return None
    power = model.data_power(height, width)
    return None if power is None else np.asarray(power, dtype=np.float64)


def data_energy(power, levels: Sequence[int], method: str, batch: int, channels: int, reference: str | None) -> np.ndarray:
    """Expected band energy of a batch of data, shape (L,): the denominator of every fraction.

    nb·Σ_channels Σ_k w_b(k)·P(k), with w_b the :func:`chromaviz.spectral.band_weights` and nb = B − 1 about the batch
    mean (``reference="batch"``) or B about zero (``None``), in squared sample units.

    Examples
    --------
    >>> float(data_energy(np.ones((8, 8)), (1, 2), "rings", 4, 3, "batch").sum())  # white noise: (B − 1)·C·H·W
    576.0
    """
    p = np.asarray(power, dtype=np.float64)
    h, w = p.shape[-2:]
    p = p.reshape(-1, h, w)
    nb = spectral.degrees_of_freedom(batch, reference)
    return nb * (channels // p.shape[0]) * np.einsum("lhw,chw->l", spectral.band_weights(h, w, levels, method), p)


@dataclass(frozen=True)
class Prediction:
    """Band energies of a run's x̂0, predicted through its own scheduler, as fractions of the data power.

    Attributes
    ----------
    levels : tuple of int, length L
    method : {"rings", "pyramid"}
    kind : {"exact", "expectation", "approximation"}
        See :data:`KINDS`.
    power_source : {"model", "samples", "given"}
        The model's exact spectrum, the RAPSD of the run's final samples, or the ``power`` passed in.
    fractions : ndarray, shape (S, L)
        Predicted band energy of x̂0 at each recorded step over the band's data power.
    final : ndarray, shape (L,)
        The same for the generated sample (the scheduler's last output).
    batch_noise : ndarray, shape (S, L)
        One standard deviation of a measured fraction around ``fractions`` from the noise a
        stochastic sampler injects (zero for an exact prediction; for an approximation, the scatter
        of a batch of Gaussian data with the estimated spectrum).
    final_batch_noise : ndarray, shape (L,)
    from_initial_noise : ndarray, shape (L,)
        Share of the generated sample's band energy that is a multiple of the initial noise ε
        (1 for deterministic samplers; below 1 where a stochastic sampler replaced it).
    data_energy : ndarray, shape (L,)
        The denominator: the band's expected data energy over the batch (about the batch mean when
        the batch has at least two samples), in squared sample units.
    power : ndarray, shape (C', H, W)
        The data spectrum the prediction used (for an approximation: the one estimated from the run).
    """

    levels: tuple[int, ...]
    method: str
    kind: str
    power_source: str
    fractions: np.ndarray
    final: np.ndarray
    batch_noise: np.ndarray
    final_batch_noise: np.ndarray
    from_initial_noise: np.ndarray
    data_energy: np.ndarray
    power: np.ndarray | None = None


def _initial_noise(traj: Trajectory, gains: ModeGains, shape: tuple[int, ...]) -> torch.Tensor | None:
    """The run's ε, (B, C, H, W) float64: its first x_t over the input scale, else regenerated from its
    seed as the sampler draws it (:func:`_seeded_noise`); None if neither is possible."""
    first = traj.steps[0].x_t
    if first is not None and tuple(first.shape) == shape:
        return first.double() / gains.input_scale
    seeded = _seeded_noise(traj, shape)
    return None if seeded is None else seeded[0].double()


def _seeded_noise(traj: Trajectory, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Generator] | None:
    """The run's ε drawn again as :func:`chromaviz.sampling.sample` drew it, and the generator after it.

    Its seed, on its generator's device (``generator_device``, CPU for runs that do not record it), in the
    dtype of its records (the model's), at its shape: the same normals, bit for bit. None without a
    seed, or for a generator device this machine does not have.
    """
    seed = traj.metadata.get("seed")
    device = str(traj.metadata.get("generator_device", "cpu"))
    if seed is None or (device.startswith("cuda") and not torch.cuda.is_available()):
        return None
    dtype = traj.steps[0].x0.dtype if traj.steps[0].x0 is not None else torch.float32
    try:
        gen = torch.Generator(device).manual_seed(int(seed))
        return torch.randn(shape, generator=gen, device=gen.device, dtype=dtype).cpu(), gen
    except RuntimeError:
        return None


def _injected_noise(traj: Trajectory, sched, levels: Sequence[NoiseLevel], shape: tuple[int, ...],
                    step_kwargs: dict, input_scale: float) -> tuple[torch.Tensor, list[torch.Tensor | None]] | None:
    """The run's ε and the noise each of its steps injected, replayed from its seed by its own scheduler.

    A fresh copy of the run's scheduler is stepped at the run's shape and dtype on zeros (sample and
    model output), with a generator seeded as the run's and advanced past its initial noise. Each step
    then outputs exactly the noise it adds (every step is linear in the sample and the model outputs,
    all zero here), drawn as the run drew it: same generator state, shape and dtype, whichever dtype
    the scheduler draws in. Returns (ε float64, per step the injected noise float64 or None), or None
    where the run cannot be replayed: no seed, a scheduler that draws without the run's generator, or
    an ε that is not the run's (checked against its first x_t when recorded).
    """
    import copy

    seeded = _seeded_noise(traj, shape)
    if seeded is None:
        return None
    eps, gen = seeded
    first = traj.steps[0].x_t
    if first is not None and tuple(first.shape) == shape:
        if not torch.allclose(first.double() / input_scale, eps.double(), rtol=1e-3, atol=1e-3):
            return None  # the run did not start from its seed's noise (a generator of its own)
    if "generator" not in step_kwargs:
        return None
    replay = copy.deepcopy(sched)
    scale = getattr(replay, "scale_model_input", lambda sample, timestep: sample)
    zeros = torch.zeros(shape, dtype=eps.dtype, device=gen.device)
    noises: list[torch.Tensor | None] = []
    for t, _ in zip(replay.timesteps, levels):
        scale(zeros, t)
        out = replay.step(zeros, t, zeros, **{**step_kwargs, "generator": gen}).prev_sample
        noises.append(out.double().cpu() if bool(out.abs().max() > 0) else None)
    return eps.double(), noises


def _as_real(spectrum: torch.Tensor) -> torch.Tensor:
    """A complex (B, C, H, W) spectrum as the real (B, C, H, 2W) tensor schedulers can step."""
    return torch.view_as_real(spectrum).reshape(*spectrum.shape[:-1], -1)


def _as_complex(x: torch.Tensor) -> torch.Tensor:
    return torch.view_as_complex(x.reshape(*x.shape[:-1], -1, 2).contiguous())


def _replayed_energies(sched, levels: Sequence[NoiseLevel], power: torch.Tensor, eps: torch.Tensor,
                       noises: Sequence[torch.Tensor | None], step_kwargs: dict,
                       band_energies: Callable[[torch.Tensor], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Band energies of x̂0 at every step and of the final sample of a run replayed mode by mode.

    The run's own scheduler steps the orthonormal FFT of the run (as a real tensor, real and imaginary
    parts side by side) with the Wiener gain g_k = α·P/(α²·P + σ²) as the model: diagonal, so each mode
    is stepped on its own, from the FFT of the run's ε. Each step's own noise draw is removed
    (:class:`_NoiseFree`) and the FFT of the noise the run injected at that step (``noises``) added
    instead, so the replay is the run's, noise included. ``power`` is (C, H, W); ``band_energies`` maps a
    (B, C, H, W) complex spectrum to its band energies, shape (L,).
    """
    import copy

    sched = copy.deepcopy(sched)
    target = stepping_target(sched, levels)  # as the sampler steps: v, not ε, through α = 0
    stepped = copy.deepcopy(sched)
    scale = getattr(stepped, "scale_model_input", lambda sample, timestep: sample)
    stepper = _NoiseFree(sched, step_kwargs)
    p = power.repeat_interleave(2, dim=-1)  # the real and imaginary parts of a mode share its power
    x = _as_real(torch.fft.fft2(eps, norm="ortho")) * float(getattr(stepped, "init_noise_sigma", 1.0))
    out = []
    for t, level, noise in zip(stepped.timesteps, levels, noises):
        x_in = scale(x, t)
        x0, e = split_prediction(level.alpha * p / (level.alpha**2 * p + level.sigma**2) * x_in, x_in, level, "sample")
        out.append(band_energies(_as_complex(x0)))
        x = stepper.step(stepped, join_prediction(x0, e, level, target), t, x)
        if noise is not None:
            x = x + _as_real(torch.fft.fft2(noise, norm="ortho"))
    return np.stack(out), band_energies(_as_complex(x))


def _pyramid_energies(gains: torch.Tensor, spectrum: torch.Tensor, levels: tuple[int, ...], chunk: int = 64) -> np.ndarray:
    """Σ‖B_m x̂0‖² over the batch and channels for x̂0 = F⁻¹[gains·spectrum] at each step, shape (S, L).

    ``gains`` (S, C', H, W) real, ``spectrum`` (B, C, H, W) the orthonormal full FFT of the initial
    noise. ‖U_m D_m x‖² = m²·‖D_m x‖². D_2 x̂0 comes from its spectrum on the (H/2, W/2) grid,
    (1/2)·Σ over the four aliases of Ŵ_2(k)·x̂0_k (aliases summed, so the cross terms of a single
    run are kept), a real product of the gains with the noise spectrum; coarser levels pool it.
    Since ‖B_m x‖² = ‖U_m D_m x‖² − ‖U_2m D_2m x‖² (nested orthogonal projections), that is all.
    """
    s, cp, h, w = gains.shape
    b, c = spectrum.shape[:2]
    total = (gains.square().reshape(s, cp, 1, h, w) * spectrum.abs().square().sum(0).reshape(cp, c // cp, h, w)).sum(
        dim=(1, 2, 3, 4))  # ‖x̂0‖² = ‖U_1 D_1 x̂0‖²
    out = np.empty((s, len(levels)))
    if len(levels) == 1:
        out[:, 0] = total.numpy()
        return out
    half = w // 4 + 1  # D_2 x̂0 is real: its spectrum's columns 0 … W/4 suffice (irfft2)
    box = np.outer(spectral._box_response(h, 2), spectral._box_response(w, 2)) / 2
    weighted = torch.view_as_real((spectrum * torch.as_tensor(box)).to(torch.complex64))
    weighted = weighted.reshape(b, cp, c // cp, 2, h // 2, 2, w // 2, 2)[:, :, :, :, :, :, :half]
    for start in range(0, s, chunk):
        g = gains[start : start + chunk].float().reshape(-1, cp, 2, h // 2, 2, w // 2)[..., :half]
        spec2 = torch.einsum("sjaqbr,kjcaqbrz->skjcqrz", g, weighted).contiguous()
        n = len(spec2)
        pooled = torch.fft.irfft2(torch.view_as_complex(spec2), s=(h // 2, w // 2), norm="ortho")  # D_2 x̂0
        pooled = pooled.reshape(-1, h // 2, w // 2)
        kept = [total[start : start + chunk]]
        for i, m in enumerate(levels[1:]):
            if i:
                pooled = torch.nn.functional.avg_pool2d(pooled, 2)
            flat = pooled.reshape(n, -1)
            kept.append(m * m * torch.einsum("ij,ij->i", flat, flat).double())
        kept = torch.stack(kept, dim=1)  # (chunk, L): ‖U_m D_m x̂0‖²
        out[start : start + chunk] = torch.cat([kept[:, :-1] - kept[:, 1:], kept[:, -1:]], dim=1).numpy()
    return out


def _sample_power(samples: torch.Tensor, reference: str | None) -> np.ndarray:
    """The radially averaged power of samples (B, C, H, W) on their FFT grid, (H, W): |FFT|² (orthonormal,
    about the batch mean for ``"batch"``, unbiased by B/(B − 1)) averaged over batch, channels and every
    mode of the same exact radius, so that each band's energy is kept."""
    x = samples.double()
    b, c, h, w = x.shape
    if reference == "batch":
        x = x - x.mean(0, keepdim=True)
    mode_power = torch.fft.fft2(x, norm="ortho").abs().square().sum(dim=(0, 1)).numpy() / (
        spectral.degrees_of_freedom(b, reference) * c)
    fy, fx = np.fft.fftfreq(h)[:, None] * h * w, np.fft.fftfreq(w)[None, :] * h * w
    _, ring = np.unique(np.rint(fy**2 + fx**2).astype(np.int64), return_inverse=True)  # exact radius, integer
    ring = ring.reshape(h, w)
    return (np.bincount(ring.ravel(), mode_power.ravel()) / np.bincount(ring.ravel()))[ring]


def predict_run(traj: Trajectory, model=None, *, method: str = "rings", levels: Sequence[int] | None = None,
                power=None, reference: str | None = "auto", plan=None, data_mean=None) -> Prediction:
    """Replay ``traj`` mode by mode from its own noise (THEORY §4b): a consistency check of the model and the code.

    For a Gaussian model the replay equals the measured fractions to float rounding (≤ 1e-5), for
    every sampler: it checks that the model is the Wiener filter of its declared spectrum and that the
    code is right, and is no evidence for the theory (that is :func:`expected_run`).

    Parameters
    ----------
    traj : Trajectory
        A run recorded by :func:`chromaviz.sampling.sample` with x̂0 (complete or partial; its
        metadata names the scheduler, its config, N, η and the seed).
    model : Denoiser, optional
        Its exact data spectrum (:func:`exact_spectrum`), if it has one, makes the replay exact (any
        sampler, the run's initial and injected noise drawn again from its seed; where the injected
        noise cannot be drawn again, the expectation given the run's initial noise).
        Without one the spectrum is estimated from the run's final samples (``"approximation"``).
    method : {"rings", "pyramid"}
    levels : sequence of int, optional
        Default :func:`chromaviz.spectral.levels_for` of the sample size.
    power : array_like, shape (H, W) or (C, H, W), optional
        A data spectrum to use instead (the prediction is then an approximation unless it is the
        model's).
    reference : "auto", "batch" or None
        As :meth:`Trajectory.signal_fractions`: energies about the batch mean ("auto": when B ≥ 2).
    plan : StepPlan, optional
        The run's step plan (the one :func:`chromaviz.sampling.sample` sampled with): its scheduler is
        reused (:func:`planned_scheduler`) instead of being rebuilt from the metadata and set to N
        steps again (:func:`run_scheduler`).
    data_mean : array_like, shape (C, H, W) or (S, C, H, W), optional
        One sample of data N(μ, P) measured about its (each step's prompt's) mean: μ. What the run holds
        of the means besides the active prompt's (:func:`expected_run`) is replayed with the noise (octave
        rings of a deterministic sampler; pyramid bands and replayed injected noise refuse it).

    Returns
    -------
    Prediction

    Raises
    ------
    ValueError
        For a run without x̂0, one recorded with ``record_scale`` > 1, bad levels or method, or a
        scheduler whose noise cannot be separated mode by mode.

    Examples
    --------
    >>> from chromaviz import GaussianPowerLaw, sample
    >>> model = GaussianPowerLaw()
    >>> traj = sample(model, num_inference_steps=10, batch_size=4, height=16, width=16, device="cpu")
    >>> pred = predict_run(traj, model)
    >>> pred.kind, pred.fractions.shape
    ('exact', (10, 3))
    """
    method = spectral._check_method(method)
    if not traj.steps or traj.steps[0].x0 is None:
        raise ValueError("predict_run needs a run that recorded x0 (record=('x0', ...))")
    if int(traj.metadata.get("record_scale", 1)) != 1:
        raise ValueError(f"the run was recorded pooled (record_scale={traj.metadata['record_scale']}); "
                         "the prediction needs full-size records (record_scale=1)")
    b, c, h, w = traj.steps[0].x0.shape
    lv = spectral._check_levels(levels if levels is not None else spectral.levels_for(h, w))
    if reference == "auto":
        reference = spectral.batch_reference(b)
    if reference not in ("batch", None):
        raise ValueError(f"reference must be 'auto', 'batch' or None, got {reference!r}")
    nb = spectral.degrees_of_freedom(b, reference)

    exact = exact_spectrum(model, h, w) if power is None else None
    source = "model" if exact is not None else ("samples" if power is None else "given")
    if power is None:
        power = exact if exact is not None else _sample_power(traj.sample, reference)
    p = np.asarray(power, dtype=np.float64)
    p = p.reshape(-1, h, w)
    if p.shape[0] not in (1, c):
        raise ValueError(f"power has {p.shape[0]} channels; the run has {c}")
    mult = c // p.shape[0]  # channels that share one spectrum
    values, groups = np.unique(p, return_inverse=True)
    groups = groups.reshape(p.shape)
    k = len(values)

    levels_rec = [NoiseLevel(s.timestep, s.alpha, s.sigma) for s in traj.steps]
    sched = run_scheduler(traj) if plan is None else planned_scheduler(plan, traj)
    eta = float(traj.metadata.get("eta", 0.0))
    try:
        gains = mode_gains(sched, levels_rec, values, eta=eta)
        not_white = None
    except NotWhiteNoise as exc:  # only a replay of the run's own noise can predict it
        gains, not_white = mode_gains(sched, levels_rec, values, eta=eta, lanes=False), exc
    if source == "samples":
        # The finished samples hold less than the data power where the run inherits or steps coarsely:
        # take as data spectrum the one this run would turn into the observed spectrum (a few
        # fixed-point steps P ← P·P_observed/P_sampled, P_sampled the predicted power of the sample).
        observed = values
        for _ in range(FIXED_POINT_STEPS):
            sampled = ((gains.final if traj.final is not None else gains.x0[-1]) ** 2).sum(0)
            values = values * observed / np.maximum(sampled, 1e-12)
            gains = mode_gains(sched, levels_rec, values, eta=eta, lanes=not_white is None)
        p = values[groups]

    weights = spectral.band_weights(h, w, lv, method)  # (L, H, W)
    wsum = _group_sums(weights, groups, k)  # (K, L)
    w2sum = _group_sums(weights**2, groups, k)
    denominator = data_energy(p, lv, method, b, c, reference)

    conditioned = exact is not None
    noise = _initial_noise(traj, gains, (b, c, h, w)) if conditioned else None
    conditioned = noise is not None
    replayed = None  # a stochastic run's own injected noise, replayed from its seed by its scheduler
    if conditioned and gains.stochastic:
        step_kwargs = _step_kwargs(sched, eta)
        replayed = _injected_noise(traj, sched, levels_rec, (b, c, h, w), step_kwargs, gains.input_scale)
        if replayed is not None:
            noise = replayed[0]
    if not_white is not None and replayed is None:
        raise not_white
    if conditioned:  # the run's own initial noise: Σ over batch and shared channels of w·|ε̂|² per group
        spec = torch.fft.fft2(noise, norm="ortho")
        if reference == "batch":
            spec = spec - spec.mean(0, keepdim=True)
        spec_power = (spec.real.square() + spec.imag.square()).sum(0)  # (C, H, W)
        spec_power = spec_power.reshape(p.shape[0], mult, h, w).sum(1).numpy()
        noise_w = _group_sums(weights, groups, k, spec_power)  # (K, L)
        noise_w2 = _group_sums(weights**2, groups, k, spec_power)
    offsets = None
    if data_mean is not None and reference is None:
        offsets = _mean_offsets(sched, levels_rec, values, values, eta, True, traj.final is not None, data_mean)
        if offsets.negligible:
            offsets = None  # the run carries its one mean exactly (to float32 rounding)
        elif method == "pyramid" or not conditioned or (gains.stochastic and replayed is not None):
            raise ValueError(f"the run holds {np.abs(offsets.a).max():.2g} of a data mean besides its prompt's "
                             "(mean_gains); a replay of that offset is computed for octave rings of a deterministic "
                             "sampler's run")
        else:  # Σ over the modes of each power value of w·Re(ε̂·conj μ̂_q) and w·Re(μ̂_q·conj μ̂_q')
            eps_mu = [(spec.sum(0).numpy() * mu.conj()).real.reshape(p.shape[0], mult, h, w).sum(1)
                      for mu in offsets.spectra]
            cross_w = [_group_sums(weights, groups, k, x) for x in eps_mu]
            cross_w2 = [_group_sums(weights**2, groups, k, x) for x in eps_mu]
            mean_w, mean_w2 = (offsets.pair_sums(wt, groups, p.shape[0]) for wt in (weights, weights**2))
    if source != "model":
        kind = "approximation"
    else:
        kind = "exact" if conditioned and (replayed is not None or not gains.stochastic) else "expectation"

    def energies(coef: np.ndarray, a: np.ndarray | None = None):
        """Band energies of x̂0 with lane coefficients ``coef`` (N, J, K) and, for one sample about its data
        mean, the means' offsets ``a`` (N, Q, K): mean, batch-noise variance and the part that is known (a
        multiple of the initial noise, and the offset), each (N, L)."""
        random = coef[:, 1:] if conditioned else coef
        v = (random**2).sum(1)  # (N, K): variance per mode from the random lanes
        mean = nb * mult * (v @ wsum)
        var = 2 * nb * mult * ((v**2) @ w2sum)  # a Gaussian mode's |x|² has variance 2·v² per grid mode
        if not conditioned:
            return mean, var, nb * mult * ((coef[:, 0] ** 2) @ wsum)
        c0 = coef[:, 0]  # (N, K): the multiple of ε
        if method == "rings":
            cond = (c0**2) @ noise_w
        else:
            grid = torch.from_numpy(c0[:, groups.reshape(-1)].reshape(len(c0), *p.shape))  # (N, C', H, W)
            cond = _pyramid_energies(grid, spec, lv)
        var = var + 4 * ((c0**2 * v) @ noise_w2)  # cross terms of the known and the random part
        if a is not None:  # x̂0 = c0·ε̂ + Σ a_q·μ̂_q + random: |c0·ε̂ + Σ a_q·μ̂_q|² and its cross terms
            ones = np.ones_like(c0)
            cond = cond + sum(2 * (c0 * a[:, q]) @ cross_w[q] for q in range(a.shape[1])) + _pairs(a, a, ones, mean_w)
            var = var + 4 * (sum(2 * (c0 * a[:, q] * v) @ cross_w2[q] for q in range(a.shape[1]))
                             + _pairs(a, a, v, mean_w2))
        return mean + cond, var, cond

    mean, var, _ = energies(gains.x0, None if offsets is None else offsets.a[:-1])
    fmean, fvar, fcond = energies(gains.final[None], None if offsets is None else offsets.a[-1:])
    if replayed is not None:  # the run replayed with its own injected noise: exact, no batch noise
        def band_energies(spectrum: torch.Tensor) -> np.ndarray:
            if reference == "batch":
                spectrum = spectrum - spectrum.mean(0, keepdim=True)
            if method == "pyramid":
                return _pyramid_energies(torch.ones((1, c, h, w), dtype=torch.float64), spectrum, lv)[0]
            return np.einsum("lhw,hw->l", weights, spectrum.abs().square().sum(dim=(0, 1)).numpy())

        grid = torch.from_numpy(p).repeat_interleave(mult, dim=0)  # (C, H, W)
        mean, final = _replayed_energies(sched, levels_rec, grid, replayed[0], replayed[1], step_kwargs, band_energies)
        var, fmean, fvar = np.zeros_like(mean), final[None], np.zeros((1, len(lv)))
    from_noise = np.divide(fcond[0], fmean[0], out=np.ones(len(lv)), where=fmean[0] > 0)
    return Prediction(
        levels=lv, method=method, kind=kind, power_source=source,
        fractions=mean / denominator, final=fmean[0] / denominator,
        batch_noise=np.sqrt(var) / denominator, final_batch_noise=np.sqrt(fvar[0]) / denominator,
        from_initial_noise=from_noise, data_energy=denominator, power=p,
    )


# --------------------------------------------------------------------------------------------
# the expected chromatography and its noise band (no run needed)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expectation:
    """The expected band signal fractions of a run, and their standard deviations, before it is sampled.

    What :func:`expected_run` returns: E[G_b] and std[G_b] over the initial noise (and, for
    stochastic samplers, the noise each step injects) of a run of ``batch_size`` samples of
    ``channels`` channels, G_b being the measured fraction of :func:`chromaviz.analysis.compare`
    (band energy of x̂0 about the batch mean for B ≥ 2, about the data mean or zero for B = 1, over the
    band's data energy :func:`data_energy`).

    Attributes
    ----------
    levels : tuple of int, length L
    method : {"rings", "pyramid"}
    mean, std : ndarray, shape (S, L)
        E[G_b] and std[G_b] at each model evaluation (dimensionless fractions of the data power).
    final, final_std : ndarray, shape (L,)
        The same for the run's sample (the scheduler's last output, or the last x̂0 where
        :func:`expected_run` was told the run ends there).
    final_corr : ndarray, shape (S, L)
        Correlation of each step's G_b with the sample's, for the delta method of ratios
        (:meth:`normalised`).
    data_energy : ndarray, shape (L,)
        The denominator, :func:`data_energy` (squared sample units).
    dof : int
        Independent samples' worth of energy in a band: B − 1 about the batch mean, B about zero.
    """

    levels: tuple[int, ...]
    method: str
    mean: np.ndarray
    std: np.ndarray
    final: np.ndarray
    final_std: np.ndarray
    final_corr: np.ndarray
    data_energy: np.ndarray
    dof: int

    def normalised(self) -> tuple[np.ndarray, np.ndarray]:
        """E and std of G_b(step)/G_b(sample), shape (S, L) each, by the delta method.

        With X = G_b(step), Y = G_b(sample), ρ their correlation: E[X/Y] ≈ μx/μy·(1 + cy² − ρ·cx·cy)
        and Var[X/Y] ≈ (μx/μy)²·(cx² + cy² − 2ρ·cx·cy), c = σ/μ (second order in c for the mean,
        first for the variance; exact, 1 ± 0, where X is Y).
        """
        mx, my = self.mean, self.final[None]
        with np.errstate(divide="ignore", invalid="ignore"):
            cx, cy = self.std / mx, self.final_std[None] / my
            ratio = mx / my
            cov = self.final_corr * cx * cy
            mean = ratio * (1 + cy**2 - cov)
            var = ratio**2 * np.maximum(cx**2 + cy**2 - 2 * cov, 0.0)
        return mean, np.sqrt(var)


MAX_EXACT_MODES = 256
"""Distinct power values up to which :func:`expected_run` steps every one (above: interpolation)."""

INTERPOLATION_NODES = 129
"""Log-spaced power values :func:`expected_run` steps, and interpolates between, above that."""


MEAN_TOLERANCE = 1e-4
"""|c − 1| (:func:`mean_gains`) below which a run counts as carrying its data mean exactly (float32
schedulers land about 1e-6 from 1)."""


@dataclass(frozen=True)
class _MeanOffsets:
    """What one sample, measured about each step's prompt's data mean, holds of the data means besides:
    x̂0(i) − μ_p(i) = zero-mean part + Σ_q a[i, q]·μ̂_q, per mode (:func:`mean_gains`: a = c − 1 for the
    active prompt, c for the others); row S is the run's end, about the last prompt's mean."""

    a: np.ndarray  # (S + 1, Q, K) on the K power values
    spectra: np.ndarray  # (Q, C, H, W) complex: the orthonormal FFT of each distinct mean

    @property
    def negligible(self) -> bool:
        return not np.abs(self.a).max() > MEAN_TOLERANCE

    def pair_sums(self, weights: np.ndarray, groups: np.ndarray, spectrum_channels: int, per: float = 1.0) -> np.ndarray:
        """Σ over the modes of each power value of weights·Re(μ̂_q·conj μ̂_q'), summed over the channels that
        share a spectrum and divided by ``per``: shape (Q, Q, K, L)."""
        q, c, h, w = self.spectra.shape
        k = int(groups.max()) + 1
        out = np.empty((q, q, k, weights.shape[0]))
        for i in range(q):
            for j in range(q):
                re = (self.spectra[i] * self.spectra[j].conj()).real.reshape(spectrum_channels, -1, h, w).sum(1)
                out[i, j] = _group_sums(weights, groups, k, re / per)
        return out


def _mean_offsets(scheduler, noise: Sequence[NoiseLevel], nodes: np.ndarray, values: np.ndarray, eta: float,
                  exact: bool, ends_with_sample: bool, data_mean) -> _MeanOffsets:
    """:class:`_MeanOffsets` of a run whose steps denoise for data of mean ``data_mean`` ((C, H, W), or
    (S, C, H, W) per step), on the K power ``values``."""
    means = np.asarray(data_mean, dtype=np.float64)
    if means.ndim == 3:
        means = np.broadcast_to(means, (len(noise), *means.shape))
    if len(means) != len(noise):
        raise ValueError(f"data_mean holds {len(means)} steps' means; the run has {len(noise)} evaluations")
    distinct, active = _distinct_rows(means)
    c = mean_gains(scheduler, noise, nodes, eta=eta, prompts=active)  # (S + 1, Q, K nodes)
    if not ends_with_sample:
        c = np.concatenate([c[:-1], c[-2:-1]])
    if not exact:
        from scipy.interpolate import CubicSpline

        c = CubicSpline(np.log(nodes), c, axis=2)(np.log(values))
    a = c.copy()
    a[np.arange(len(noise)), active] -= 1
    a[-1, active[-1]] -= 1
    spectra = np.fft.fft2(distinct, norm="ortho")
    return _MeanOffsets(a, spectra)


def _distinct_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct arrays along ``rows``' first axis, in order of first appearance, and which of them
    each row is: (D, ...) and (N,) int. A run has one mean per prompt, so D is a few; compared
    row by row (``np.unique(axis=0)`` sorts every element of the rows, seconds at 128²)."""
    distinct: list[np.ndarray] = []
    which = np.empty(len(rows), dtype=np.intp)
    for i, row in enumerate(rows):
        found = next((k for k, d in enumerate(distinct) if np.array_equal(d, row)), None)
        if found is None:
            found = len(distinct)
            distinct.append(row)
        which[i] = found
    return np.stack(distinct), which


def _pairs(a1: np.ndarray, a2: np.ndarray, rows: np.ndarray, sums: np.ndarray) -> np.ndarray:
    """Σ_qq' (a1_q·a2_q'·rows) @ sums[q, q']: a1, a2 (N, Q, K), rows (N, K), sums (Q, Q, K, L) → (N, L)."""
    q = a1.shape[1]
    return sum((a1[:, i] * a2[:, j] * rows) @ sums[i, j] for i in range(q) for j in range(q))


def _cos2(n: int) -> np.ndarray:
    """|Ŵ_2(f)|² = cos²(π·f) of 2-point averaging on the n-point FFT grid, shape (n,)."""
    return np.cos(np.pi * np.fft.fftfreq(n)) ** 2


def _pyramid_moments(q: np.ndarray, groups: np.ndarray, levels: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """tr(A_m·Q) and tr((A_m·Q)²) of the pyramid bands' quadratic forms, each (N, L).

    ``q`` (N, K) holds, for each of the K distinct power values, the diagonal of a stationary covariance in
    the orthonormal 2-D FFT (a mode's variance, or the cross-covariance of two such fields); ``groups``
    (C', H, W) says which value each grid mode has. A_m = B_mᵀB_m is the band's energy form, summed over
    the C' channels. D_m x of a stationary x is stationary on the (H/m, W/m) grid with per-mode variance
    (1/4)·Σ_aliases cos²·cos²·(that of D_{m/2} x), and ‖B_m x‖² = m²·yᵀ(I − P_2)y with y = D_m x and
    P_2 = U_2·D_2 a rank-one projection u·uᴴ on each class of four aliased modes (|u_a|² = |Ŵ_2|²,
    Σ_a |u_a|² = 1). So, per class, tr((I − uuᴴ)Q) = Σ q − Σ|u|²q and
    tr(((I − uuᴴ)Q)²) = Σ q² − 2·Σ|u|²q² + (Σ|u|²q)², and the coarsest level M holds M²·‖D_M x‖². On the
    full grid every term but the class sums depends on a mode only through its value, so they are sums
    over the K values; the class sums are one sparse product.
    """
    from scipy import sparse

    cp, h, w = groups.shape
    mean = np.empty((len(q), len(levels)))
    square = np.empty((len(q), len(levels)))
    y, at = np.ascontiguousarray(q.T), groups.ravel()  # y: (rows, N); grid position p holds row at[p]
    for i, m in enumerate(levels):
        rows = len(y)
        if i == len(levels) - 1:
            count = np.bincount(at, minlength=rows)
            mean[:, i] = m**2 * (count @ y)
            square[:, i] = m**4 * (count @ (y * y))
            break
        r = np.broadcast_to(np.outer(_cos2(h), _cos2(w)), (cp, h, w)).ravel()
        c, row, col = np.unravel_index(np.arange(cp * h * w), (cp, h, w))
        alias_class = (c * (h // 2) + row % (h // 2)) * (w // 2) + col % (w // 2)
        agg = sparse.csr_matrix((r, (alias_class, at)), shape=(cp * h * w // 4, rows)) @ y  # Σ_a |u_a|²·q_a
        mean[:, i] = m**2 * (np.bincount(at, 1 - r, minlength=rows) @ y)
        square[:, i] = m**4 * (np.bincount(at, 1 - 2 * r, minlength=rows) @ (y * y) + (agg * agg).sum(0))
        y, at, h, w = agg / 4, np.arange(len(agg)), h // 2, w // 2  # per-mode variance of D_2m x
    return mean, square


def expected_run(scheduler, noise: Sequence[NoiseLevel], power, *, batch_size: int, channels: int,
                 levels: Sequence[int] | None = None, method: str = "rings", reference: str | None = "auto",
                 eta: float = 0.0, ends_with_sample: bool = True, exact: bool | None = None,
                 data_mean=None) -> Expectation:
    """The expected chromatography of a run and its noise band, from its plan and the data spectrum alone.

    No run is needed: the scheduler is stepped mode by mode with the Wiener gain as the model
    (:func:`mode_gains`), which gives x̂0 at every step as a fixed linear map of the initial noise ε
    and of the white noise z_j each stochastic step injects. Every source is independent white
    noise, so x̂0 (per sample and channel) is a stationary Gaussian field whose orthonormal-FFT
    modes have variance v_k = Σ_j c_jk² (c_jk the coefficient of source j). A band's energy
    E_b = Σ_samples Σ_channels (x̂0 − reference)ᵀ·A_b·(x̂0 − reference) is then a Gaussian quadratic
    form: about the batch mean it is n = B − 1 independent copies of one sample's (Helmert), about
    zero n = B; channels sharing a spectrum are independent copies too. For x ~ N(0, Σ),
    E[xᵀAx] = tr(AΣ) and Var[xᵀAx] = 2·tr((AΣ)²), so

    - rings (A diagonal in the FFT, weight w_b(k) ∈ {0, 1}): E[E_b] = n·Σ_c Σ_k w_b(k)·v_k and
      Var[E_b] = 2·n·Σ_c Σ_k w_b(k)²·v_k² — over the full FFT grid, which counts the Hermitian pair
      (k, −k) of a real field correctly: the pair is one complex mode with 2n degrees of freedom at
      half the scale, the same variance as two independent grid modes;
    - pyramid bands fold aliased modes together (A is not diagonal); their trace terms are exact
      (:func:`_pyramid_moments`).

    G_b = E_b / D_b with D_b the fixed data energy (:func:`data_energy`), so E[G_b] = E[E_b]/D_b and
    std[G_b] = √Var[E_b] / D_b exactly (the distribution is a weighted χ², skewed where a band holds
    few modes; std is its exact second moment).

    Parameters
    ----------
    scheduler : diffusers scheduler
        After ``set_timesteps`` and never stepped (``StepPlan.scheduler`` or :func:`run_scheduler`);
        copied, not mutated.
    noise : sequence of NoiseLevel, length S
        Noise level of the network input at each evaluation (``StepPlan.noise``, or a run's records).
    power : array_like, shape (H, W) or (C', H, W)
        The data power spectrum on the sample's FFT grid (white noise = 1), e.g. ``model.data_power(H, W)``.
    batch_size : int
        B, samples in the run's batch.
    channels : int
        C, channels per sample (a multiple of C').
    levels : sequence of int, optional
        Default :func:`chromaviz.spectral.levels_for` of the grid.
    method : {"rings", "pyramid"}
    reference : "auto", "batch" or None
        As :func:`chromaviz.analysis.compare` measures: about the batch mean when B ≥ 2 ("auto").
    eta : float
        DDIM's η, as the run uses it.
    ends_with_sample : bool
        True: ``final`` is the scheduler's last output (a complete run's sample); False: the last
        x̂0 (a partial run, measured against its newest x̂0).
    data_mean : array_like, shape (C, H, W) or (S, C, H, W), optional
        For one sample (``reference`` None) of data N(μ, P) measured about its mean μ: μ in sample space,
        or each step's prompt's μ (a prompt switch; the prompts share P). About a batch mean it cancels and
        is not used. What the run holds of the means besides the active prompt's (:func:`mean_gains`: the
        levels formed before a switch keep the earlier prompt's; a sampler whose steps miss the noise
        levels it evaluates at carries its mean only in part) is a known offset m = Σ_q a_q·μ̂_q of every
        mode, adding Σ w·|m|² to E and 4·Σ w²·|m|²·v to Var (octave rings; pyramid bands refuse it).
    exact : bool, optional
        Step every distinct power value (True), or :data:`INTERPOLATION_NODES` log-spaced values and
        interpolate the moments in log P with a cubic spline (False; relative error below 1e-6 in
        the tests). Default: exact up to :data:`MAX_EXACT_MODES` distinct power values (a stochastic
        sampler's injected noises are lanes of their own, so stepping costs S·J·K: Euler ancestral
        at 128×128 and 200 steps took 30 s exact, under 1 s interpolated).

    Returns
    -------
    Expectation

    Raises
    ------
    ValueError
        For a bad method, levels, reference, a spectrum whose channels do not divide C, or a
        scheduler whose injected noise cannot be separated mode by mode.

    Notes
    -----
    Source: the per-mode gains of THEORY §4b applied to the moments of Gaussian quadratic forms
    (e.g. Mathai & Provost, *Quadratic Forms in Random Variables*, 1992, Thm 3.2b.2); the measured
    fraction is THEORY §4 (Hwang, Park & Jo 2023, arXiv:2401.10247), with the data-power normalisation.

    Examples
    --------
    >>> from chromaviz import GaussianPowerLaw
    >>> from chromaviz.noise import plan_steps
    >>> model = GaussianPowerLaw(size=16)
    >>> plan = plan_steps(model.schedule, 10, "ddim")
    >>> e = expected_run(plan.scheduler, plan.noise, model.data_power(16, 16), batch_size=4, channels=3)
    >>> e.mean.shape, e.std.shape, e.dof
    ((10, 3), (10, 3), 3)
    >>> bool((e.std > 0).all() and (e.mean[-1] < 1).all())  # the coarse bands inherit: short of their power
    True
    """
    method = spectral._check_method(method)
    batch_size = int(batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    p = np.asarray(power, dtype=np.float64)
    h, w = p.shape[-2:]
    p = p.reshape(-1, h, w)
    if channels % p.shape[0]:
        raise ValueError(f"power has {p.shape[0]} channels, which do not divide the run's {channels}")
    lv = spectral._check_levels(levels if levels is not None else spectral.levels_for(h, w))
    if reference == "auto":
        reference = spectral.batch_reference(batch_size)
    if reference not in ("batch", None):
        raise ValueError(f"reference must be 'auto', 'batch' or None, got {reference!r}")
    if reference == "batch" and batch_size < 2:
        raise ValueError("reference='batch' needs a batch of at least 2 samples; use None")
    nb = spectral.degrees_of_freedom(batch_size, reference)
    mult = channels // p.shape[0]
    values, groups = np.unique(p, return_inverse=True)
    groups = groups.reshape(p.shape)
    if exact is None:  # a stochastic sampler's lanes cost S·J·K: interpolate in P where K is large
        exact = len(values) <= MAX_EXACT_MODES
    exact = exact or not values[0] > 0
    nodes = values if exact else np.geomspace(values[0], values[-1], INTERPOLATION_NODES)
    gains = mode_gains(scheduler, noise, nodes, eta=eta)
    ends = gains.final if ends_with_sample else gains.x0[-1]  # (J, K)
    v = (gains.x0**2).sum(1)  # (S, K): each mode's variance of x̂0 over every noise source
    vf = (ends**2).sum(0)[None]  # (1, K)
    cross = gains.covariance_with(ends)  # (S, K): covariance of a step's mode with the sample's
    q = np.concatenate([v, vf, cross])  # (2S + 1, K)
    if not exact:  # every moment is a smooth function of log P (the Wiener gains are)
        from scipy.interpolate import CubicSpline

        q = CubicSpline(np.log(nodes), q, axis=1)(np.log(values))
    offsets = None if data_mean is None or reference is not None else _mean_offsets(
        scheduler, noise, nodes, values, eta, exact, ends_with_sample, data_mean)
    if offsets is not None and offsets.negligible:
        offsets = None  # the run carries its one mean exactly (to float32 rounding)
    if method == "rings":
        weights = spectral.band_weights(h, w, lv, method)
        mean = q @ _group_sums(weights, groups, len(values))
        square = (q**2) @ _group_sums(weights**2, groups, len(values))
        if offsets is not None:  # m = Σ a_q·μ̂_q adds |m|² to each mode's energy and 4·|m|²·v (·cov) to its variance
            s = len(v)
            a = offsets.a
            a1 = np.concatenate([a[:s], a[s:], a[:s]])  # the rows of q: steps, the end, steps (with the end)
            a2 = np.concatenate([a[:s], a[s:], np.broadcast_to(a[s:], a[:s].shape)])
            extra = _pairs(a1, a2, np.ones_like(q), offsets.pair_sums(weights, groups, p.shape[0], mult))
            extra[s + 1:] = 0  # the cross rows are covariances: the offsets' product is no variance
            mean = mean + extra
            square = square + 2 * _pairs(a1, a2, q, offsets.pair_sums(weights**2, groups, p.shape[0], mult))
    else:
        spectral._check_divisible(h, w, lv[-1], f"{lv[-1]}, the deepest pyramid level", " or fewer levels")
        if offsets is not None:
            raise ValueError(f"the run holds {np.abs(offsets.a).max():.2g} of a data mean besides its prompt's (mean_gains), "
                             "and the pyramid bands' moments of a field with such an offset are not computed; use octave rings")
        mean, square = _pyramid_moments(q, groups, lv)
    denominator = data_energy(p, lv, method, batch_size, channels, reference)
    mean = nb * mult * mean / denominator
    var = 2 * nb * mult * square / denominator**2  # Var for v rows, Cov for the cross rows
    s = len(v)
    std, fstd = np.sqrt(var[:s]), np.sqrt(var[s])
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = np.where(std * fstd > 0, var[s + 1 :] / (std * fstd), 0.0)
    return Expectation(levels=lv, method=method, mean=mean[:s], std=std, final=mean[s], final_std=fstd,
                       final_corr=corr, data_energy=denominator, dof=nb)
