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
- **Stochastic samplers** (DDPM, Euler ancestral, DDIM with η > 0): the noise a step injects is
  white with a standard deviation read from the scheduler itself; each injection is tracked as its
  own lane, so the prediction is the expectation over the injected noise given the run's initial
  noise, and :attr:`Prediction.batch_noise` says how far a batch scatters around it.

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
from typing import Any, Sequence

import numpy as np
import torch

from . import spectral
from .models.base import join_prediction, split_prediction
from .noise.plan import NoiseLevel
from .noise.schedulers import is_flow_scheduler, scheduler_from_config, set_timesteps
from .sampling.trajectory import Trajectory

__all__ = [
    "KINDS", "ModeGains", "Prediction", "data_energy", "exact_spectrum", "mode_gains",
    "planned_scheduler", "predict_run", "run_scheduler",
]

FIXED_POINT_STEPS = 4
"""Refinements of a data spectrum estimated from a run's samples (see :func:`predict_run`)."""

KINDS = ("exact", "expectation", "approximation")
"""What a :class:`Prediction` is: exact for the run (deterministic sampler, the run's own initial
noise), the expectation over injected noise given the initial noise (stochastic samplers), or an
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
    scheduler injects at its j-th noisy step (lanes j ≥ 1, independent, unit variance).

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
    """

    power: np.ndarray
    x0: np.ndarray
    final: np.ndarray
    input_scale: float
    injected_std: np.ndarray

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
        zero-terminal-SNR schedule) and N.

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
    set_timesteps(sched, int(meta["num_inference_steps"]))
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


def _noise_stds(sched, levels: Sequence[NoiseLevel], step_kwargs: dict) -> np.ndarray:
    """The white-noise standard deviation each ``sched.step`` injects: stepped on zeros with a known
    generator, whose draw is reproduced with diffusers' ``randn_tensor`` and checked to match."""
    from diffusers.utils.torch_utils import randn_tensor

    if "generator" not in step_kwargs:
        return np.zeros(len(levels))
    gen = torch.Generator().manual_seed(0)
    scale = getattr(sched, "scale_model_input", lambda sample, timestep: sample)
    zeros = torch.zeros((1, 1, 1, 4), dtype=torch.float64)  # 4-D: some schedulers read shape[1]
    stds = np.zeros(len(levels))
    for i, t in enumerate(list(sched.timesteps)[: len(levels)]):
        state = gen.get_state()
        z = randn_tensor(zeros.shape, generator=gen, dtype=zeros.dtype)
        gen.set_state(state)
        scale(zeros, t)
        out = sched.step(zeros, t, zeros, **{**step_kwargs, "generator": gen}).prev_sample.double()
        std = float((out * z).sum() / (z * z).sum())
        if not torch.allclose(out, std * z, rtol=1e-5, atol=1e-9):
            raise ValueError(f"{type(sched).__name__} adds noise at step {i} that is not white noise drawn with "
                             "diffusers' randn_tensor; its run cannot be predicted mode by mode")
        stds[i] = std
    return stds


def mode_gains(scheduler, levels: Sequence[NoiseLevel], power, *, eta: float = 0.0) -> ModeGains:
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

    Returns
    -------
    ModeGains

    Notes
    -----
    The model output is built exactly as in the sampler: x̂0 = g·x_t with g = α·P/(α²·P + σ²) (the
    posterior mean of N(0, P) data, THEORY §5), converted with :func:`~chromaviz.models.base.split_prediction`
    and :func:`~chromaviz.models.base.join_prediction` to the scheduler's prediction type. The noise
    a stochastic step injects is removed from the stepped amplitudes (reproduced from the generator
    state) and tracked as a lane of its own.

    Examples
    --------
    >>> from chromaviz.noise import Schedule, plan_steps
    >>> plan = plan_steps(Schedule.preset("scaled_linear"), 10, "ddim")
    >>> g = mode_gains(plan.scheduler, plan.noise, [0.1, 1.0, 10.0])
    >>> g.x0.shape, g.stochastic
    ((10, 1, 3), False)
    """
    import copy

    from diffusers.utils.torch_utils import randn_tensor

    p = torch.as_tensor(np.asarray(power, dtype=np.float64).ravel())
    stepped = copy.deepcopy(scheduler)
    flow = is_flow_scheduler(stepped)
    target = "flow" if flow else stepped.config.get("prediction_type", "epsilon")
    accepted = inspect.signature(stepped.step).parameters
    step_kwargs = {k: v for k, v in {"eta": eta, "generator": None}.items() if k in accepted}
    stds = _noise_stds(copy.deepcopy(scheduler), levels, step_kwargs)
    lane_of = np.cumsum(stds > 0)  # the lane a step's injected noise enters: 1, 2, … (0: none)
    lanes = 1 + int(lane_of[-1]) if len(stds) else 1
    scale = getattr(stepped, "scale_model_input", lambda sample, timestep: sample)
    x = torch.zeros((lanes, 1, 1, len(p)), dtype=torch.float64)  # (B, C, H, W) as schedulers expect
    x[0] = float(getattr(stepped, "init_noise_sigma", 1.0))
    gen = torch.Generator().manual_seed(0)
    x0_gains = np.empty((len(levels), lanes, len(p)))
    input_scale = 1.0
    for i, (t, level) in enumerate(zip(stepped.timesteps, levels)):
        x_in = scale(x, t)
        if i == 0:
            input_scale = float(x_in[0, 0, 0, 0]) if len(p) else 1.0
        gain = level.alpha * p / (level.alpha**2 * p + level.sigma**2)  # broadcasts over the mode axis
        x0, eps = split_prediction(gain * x_in, x_in, level, "sample")
        x0_gains[i] = x0.reshape(lanes, -1).numpy()
        kwargs = dict(step_kwargs)
        z = None
        if "generator" in kwargs:
            state = gen.get_state()
            if stds[i] > 0:
                z = randn_tensor(x.shape, generator=gen, dtype=x.dtype)
                gen.set_state(state)
            kwargs["generator"] = gen
        x = stepped.step(join_prediction(x0, eps, level, target), t, x, **kwargs).prev_sample.double()
        if z is not None:
            x = x - stds[i] * z
            x[lane_of[i]] = stds[i]
    return ModeGains(p.numpy(), x0_gains, x.reshape(lanes, -1).numpy(), input_scale, stds)


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
    seed as the sampler draws it (CPU generator, float32); None if neither is possible."""
    first = traj.steps[0].x_t
    if first is not None and tuple(first.shape) == shape:
        return first.double() / gains.input_scale
    seed = traj.metadata.get("seed")
    if seed is None:
        return None
    gen = torch.Generator("cpu").manual_seed(int(seed))
    return torch.randn(shape, generator=gen, dtype=torch.float32).double()


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
                power=None, reference: str | None = "auto", plan=None) -> Prediction:
    """Predict the band signal fractions of ``traj`` as it was sampled (THEORY §4b).

    Parameters
    ----------
    traj : Trajectory
        A run recorded by :func:`chromaviz.sampling.sample` with x̂0 (complete or partial; its
        metadata names the scheduler, its config, N, η and the seed).
    model : Denoiser, optional
        Its exact data spectrum (:func:`exact_spectrum`), if it has one, makes the prediction exact
        (deterministic samplers) or the expectation given the run's initial noise (stochastic ones).
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
    gains = mode_gains(sched, levels_rec, values, eta=eta)
    if source == "samples":
        # The finished samples hold less than the data power where the run inherits or steps coarsely:
        # take as data spectrum the one this run would turn into the observed spectrum (a few
        # fixed-point steps P ← P·P_observed/P_sampled, P_sampled the predicted power of the sample).
        observed = values
        for _ in range(FIXED_POINT_STEPS):
            sampled = ((gains.final if traj.final is not None else gains.x0[-1]) ** 2).sum(0)
            values = values * observed / np.maximum(sampled, 1e-12)
            gains = mode_gains(sched, levels_rec, values, eta=eta)
        p = values[groups]

    weights = spectral.band_weights(h, w, lv, method)  # (L, H, W)
    wsum = _group_sums(weights, groups, k)  # (K, L)
    w2sum = _group_sums(weights**2, groups, k)
    denominator = data_energy(p, lv, method, b, c, reference)

    conditioned = exact is not None
    noise = _initial_noise(traj, gains, (b, c, h, w)) if conditioned else None
    conditioned = noise is not None
    if conditioned:  # the run's own initial noise: Σ over batch and shared channels of w·|ε̂|² per group
        spec = torch.fft.fft2(noise, norm="ortho")
        if reference == "batch":
            spec = spec - spec.mean(0, keepdim=True)
        spec_power = (spec.real.square() + spec.imag.square()).sum(0)  # (C, H, W)
        spec_power = spec_power.reshape(p.shape[0], mult, h, w).sum(1).numpy()
        noise_w = _group_sums(weights, groups, k, spec_power)  # (K, L)
        noise_w2 = _group_sums(weights**2, groups, k, spec_power)
    if source != "model":
        kind = "approximation"
    else:
        kind = "exact" if conditioned and not gains.stochastic else "expectation"

    def energies(coef: np.ndarray):
        """Band energies of x̂0 with lane coefficients ``coef`` (N, J, K): mean, batch-noise variance and
        the part that is a multiple of the initial noise, each (N, L)."""
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
        return mean + cond, var, cond

    mean, var, _ = energies(gains.x0)
    fmean, fvar, fcond = energies(gains.final[None])
    from_noise = np.divide(fcond[0], fmean[0], out=np.ones(len(lv)), where=fmean[0] > 0)
    return Prediction(
        levels=lv, method=method, kind=kind, power_source=source,
        fractions=mean / denominator, final=fmean[0] / denominator,
        batch_noise=np.sqrt(var) / denominator, final_batch_noise=np.sqrt(fvar[0]) / denominator,
        from_initial_noise=from_noise, data_energy=denominator, power=p,
    )
