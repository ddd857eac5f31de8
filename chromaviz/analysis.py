"""A recorded run set against the theory: the one comparison the CLI, widgets and reports show."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Sequence

import numpy as np
import torch

from . import prediction, spectral, theory
from .sampling.trajectory import Trajectory


NORMALISATIONS = ("data power", "last step")
"""How a :class:`Comparison`'s fractions are normalised: by the band's data power (the default), or
each curve by its own value at the end of the run (:meth:`Comparison.normalised`)."""


@dataclass(frozen=True)
class Inheritance:
    """Per level, what a run takes from its initial noise and what it misses because of it.

    Fractions of the level's data power (THEORY §4b). ``at_start``: the share already in x̂0 at the
    first step, read from the noise the run starts from. ``missing``: 1 − the generated sample's
    share, the power the run never produces (a sampler starts from N(0, I), not from the model's
    noisy marginal N(0, α_T²·P + σ_T²) at its first timestep; finite steps add their error).

    Attributes
    ----------
    levels : tuple of int, length L
    log_snr : float
        λ of the first step.
    at_start_measured, at_start_predicted, at_start_continuous : ndarray, shape (L,)
        Measured, predicted as sampled, and the continuous spectrum-aware s_b(λ_0).
    missing_measured, missing_predicted : ndarray, shape (L,)
        1 − the generated sample's fraction, measured and predicted.
    from_initial_noise : ndarray, shape (L,)
        Predicted share of the generated sample's band energy that is a multiple of the initial
        noise (1 for deterministic samplers).
    """

    levels: tuple[int, ...]
    log_snr: float
    at_start_measured: np.ndarray
    at_start_predicted: np.ndarray
    at_start_continuous: np.ndarray
    missing_measured: np.ndarray
    missing_predicted: np.ndarray
    from_initial_noise: np.ndarray

    def table_rows(self) -> list[list[str]]:
        """One row per level: m, then at start and missing, measured/predicted, and from the noise."""
        return [[str(m), f"{self.at_start_measured[j]:.3f}/{self.at_start_predicted[j]:.3f}",
                 f"{self.missing_measured[j]:.3f}/{self.missing_predicted[j]:.3f}", f"{self.from_initial_noise[j]:.3f}"]
                for j, m in enumerate(self.levels)]

    def format_table(self) -> str:
        """A plain-text table of :meth:`table_rows` (measured/predicted, fractions of the data power)."""
        return _format([["m", "at start G/p", "missing G/p", "from noise"], *self.table_rows()])


def _format(rows: list[list[str]]) -> str:
    widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


@dataclass(frozen=True)
class Theory:
    """The continuous theories of a run over its steps, with nothing measured: the lines a
    chromatography plot draws (before a run, from its step plan: :func:`planned_theory`; after it,
    from its :class:`Comparison`: :attr:`Comparison.theory`).

    Attributes
    ----------
    levels : tuple of int, length L
        Block sizes m (1 = finest).
    method : {"rings", "pyramid"}
        The band decomposition the theories use (that of the measurement they are drawn against).
    timesteps, log_snr : ndarray, shape (S,)
        Per step.
    spectrum_aware : ndarray, shape (S, L)
        The continuous-time s_b(λ) from the data power spectrum; NaN where there is none
        (``power_source == "none"``).
    m2_law : ndarray, shape (S, L)
        s_m = sigmoid(λ + 2·ln m), the unit-variance law.
    power_source : str
        ``"model"``, ``"samples"`` or ``"none"``, as :attr:`Comparison.power_source`.
    """

    levels: tuple[int, ...]
    method: str
    timesteps: np.ndarray
    log_snr: np.ndarray
    spectrum_aware: np.ndarray
    m2_law: np.ndarray
    power_source: str


@dataclass(frozen=True)
class Comparison:
    """Measured signal fractions of one run against the three theories, per step and level.

    All fractions are of the band's data power (``normalisation == "data power"``): the band energy
    of x̂0 (about the batch mean when B ≥ 2) over the data's expected energy in that band, on the
    measured side and on every theoretical side alike. :meth:`normalised` divides each curve by its
    value at the end of the run instead.

    Attributes
    ----------
    levels : tuple of int, length L
        Block sizes m (1 = finest).
    method : {"rings", "pyramid"}
        Band decomposition used for the measurement, and for every theory (pyramid bands weight the
        spectrum by their Dirichlet-kernel responses, :func:`chromaviz.spectral.band_weights`).
    timesteps, log_snr : ndarray, shape (S,)
        Per recorded step.
    measured : ndarray, shape (S, L)
        G_b: band energy of x̂0 over the band's data power.
    spectrum_aware : ndarray, shape (S, L)
        The continuous-time s_b(λ) from the data power spectrum (``power_source`` says which).
    m2_law : ndarray, shape (S, L)
        s_m = sigmoid(λ + 2·ln m), the unit-variance law.
    power_source : str
        ``"model"`` (the model's exact spectrum), ``"samples"`` (RAPSD of the final samples) or ``"none"``.
    predicted : ndarray, shape (S, L), or None
        The run as it was sampled (:func:`chromaviz.prediction.predict_run`); None where unavailable.
    prediction_kind : str
        ``"exact"``, ``"expectation"``, ``"approximation"`` (:data:`chromaviz.prediction.KINDS`) or
        ``"none"``.
    batch_noise : ndarray, shape (S, L), or None
        1σ of the measured fractions around ``predicted`` for this batch (0 where exact).
    measured_final, predicted_final : ndarray, shape (L,), or None
        The generated sample's fraction, measured and predicted.
    from_initial_noise : ndarray, shape (L,), or None
        Predicted share of the generated sample's band energy that is a multiple of the initial noise.
    normalisation : {"data power", "last step"}
    prediction_note : str
        Why there is no prediction (empty when there is one).
    """

    levels: tuple[int, ...]
    method: str
    timesteps: np.ndarray
    log_snr: np.ndarray
    measured: np.ndarray
    spectrum_aware: np.ndarray
    m2_law: np.ndarray
    power_source: str
    predicted: np.ndarray | None = None
    prediction_kind: str = "none"
    batch_noise: np.ndarray | None = None
    measured_final: np.ndarray | None = None
    predicted_final: np.ndarray | None = None
    from_initial_noise: np.ndarray | None = None
    normalisation: str = "data power"
    prediction_note: str = ""

    @property
    def theory(self) -> Theory:
        """Its continuous theories alone, over its steps (as :func:`planned_theory` gives them
        before the run)."""
        return Theory(self.levels, self.method, self.timesteps, self.log_snr, self.spectrum_aware, self.m2_law,
                      self.power_source)

    @property
    def reference(self) -> np.ndarray:
        """The curve the run is measured against: ``predicted`` where available, else ``spectrum_aware``."""
        return self.predicted if self.predicted is not None else self.spectrum_aware

    @property
    def max_deviation(self) -> float:
        """max |measured − reference| over steps and levels (the as-sampled prediction where there is one)."""
        return float(np.nanmax(np.abs(self.measured - self.reference)))

    @property
    def max_deviation_continuous(self) -> float:
        """max |measured − spectrum_aware|: how far the run is from the ideal continuous-time process."""
        return float(np.nanmax(np.abs(self.measured - self.spectrum_aware)))

    @property
    def max_deviation_m2(self) -> float:
        """max |measured − m2_law|."""
        return float(np.nanmax(np.abs(self.measured - self.m2_law)))

    def normalised(self) -> Comparison:
        """The same comparison with every curve divided by its own value at the end of the run.

        Measured and predicted by the generated sample's fraction (so the measured curve is the
        explained-variance ratio against the final sample), the continuous theories by their last
        step. The batch noise is scaled with the prediction.
        """
        if self.normalisation == "last step":
            return self

        def by_end(curve, end):
            return None if curve is None else curve / end

        final_m = self.measured_final if self.measured_final is not None else self.measured[-1]
        final_p = self.predicted_final if self.predicted_final is not None else (
            None if self.predicted is None else self.predicted[-1])
        return replace(
            self, measured=self.measured / final_m, spectrum_aware=self.spectrum_aware / self.spectrum_aware[-1],
            m2_law=self.m2_law / self.m2_law[-1], predicted=by_end(self.predicted, final_p),
            batch_noise=by_end(self.batch_noise, final_p),
            measured_final=np.ones_like(final_m), predicted_final=None if final_p is None else np.ones_like(final_p),
            normalisation="last step",
        )

    @property
    def inheritance(self) -> Inheritance:
        """Per level: the share taken from the initial noise at the first step, and the share missed.

        See :class:`Inheritance`; measured against the as-sampled prediction (NaN where there is none).
        """
        nan = np.full(len(self.levels), np.nan)
        predicted = self.predicted if self.predicted is not None else np.full_like(self.measured, np.nan)
        final_m = self.measured_final if self.measured_final is not None else self.measured[-1]
        final_p = self.predicted_final if self.predicted_final is not None else predicted[-1]
        return Inheritance(
            levels=self.levels, log_snr=float(self.log_snr[0]),
            at_start_measured=self.measured[0], at_start_predicted=predicted[0],
            at_start_continuous=self.spectrum_aware[0],
            missing_measured=1 - final_m, missing_predicted=1 - final_p,
            from_initial_noise=self.from_initial_noise if self.from_initial_noise is not None else nan,
        )

    def to_rows(self) -> list[dict]:
        """One record per step and level, for a table or a CSV file.

        Keys: ``step``, ``timestep``, ``log_snr``, ``level``, ``measured``, ``predicted`` (NaN if
        none), ``spectrum_aware``, ``m2_law``, ``batch_noise`` (NaN if none) and ``normalisation``.
        """
        nan = np.full_like(self.measured, np.nan)
        predicted = self.predicted if self.predicted is not None else nan
        noise = self.batch_noise if self.batch_noise is not None else nan
        return [
            {"step": i, "timestep": float(self.timesteps[i]), "log_snr": float(self.log_snr[i]), "level": m,
             "measured": float(self.measured[i, j]), "predicted": float(predicted[i, j]),
             "spectrum_aware": float(self.spectrum_aware[i, j]), "m2_law": float(self.m2_law[i, j]),
             "batch_noise": float(noise[i, j]), "normalisation": self.normalisation}
            for i in range(len(self.timesteps)) for j, m in enumerate(self.levels)
        ]

    def table_rows(self, num_rows: int = 6) -> list[list[str]]:
        """Rows for a text table at ``num_rows`` evenly spaced steps: step, t, λ, then per level
        G/p/s (measured / as sampled / continuous spectrum-aware; ``-`` where there is no prediction)."""
        idx = np.unique(np.linspace(0, len(self.timesteps) - 1, num_rows).round().astype(int))
        rows = []
        for i in idx:
            cells = []
            for j in range(len(self.levels)):
                p = "-" if self.predicted is None else f"{self.predicted[i, j]:.3f}"
                cells.append(f"{self.measured[i, j]:.3f}/{p}/{self.spectrum_aware[i, j]:.3f}")
            rows.append([str(i), f"{self.timesteps[i]:.0f}", f"{self.log_snr[i]:+.2f}", *cells])
        return rows

    def format_table(self, num_rows: int = 6) -> str:
        """A plain-text table of :meth:`table_rows`, with a line saying what the numbers are."""
        header = ["step", "t", "λ", *[f"m={m} G/p/s" for m in self.levels]]
        note = (f"fractions of the {self.normalisation}" if self.normalisation == "data power"
                else "fractions normalised by their last step")
        note += f"; p: as sampled ({self.prediction_kind}), s: continuous spectrum-aware ({self.power_source} spectrum)"
        if self.predicted is None and self.prediction_note:
            note += f"\nno prediction of the run as sampled: {self.prediction_note}"
        return note + "\n" + _format([header, *self.table_rows(num_rows)])


def data_power(model, height: int, width: int, samples=None) -> tuple[np.ndarray | None, str]:
    """The data power spectrum on the (H, W) FFT grid and where it came from.

    The model's exact spectrum when it declares one (:meth:`Denoiser.data_power
    <chromaviz.models.base.Denoiser.data_power>` is not None), else the RAPSD of ``samples``
    (B, C, H, W) interpolated onto the grid, else ``(None, "none")``.

    Examples
    --------
    >>> from chromaviz import GaussianPowerLaw
    >>> power, source = data_power(GaussianPowerLaw(), 16, 16)
    >>> power.shape, source, data_power(None, 16, 16)
    ((16, 16), 'model', (None, 'none'))
    """
    power = model.data_power(height, width) if model is not None else None
    if power is not None:
        return power, "model"
    if samples is None:
        return None, "none"
    return theory.power_grid_from_rapsd(*centred_rapsd(samples), height, width), "samples"


centred_rapsd = spectral.centred_rapsd
"""The one centred RAPSD, :func:`chromaviz.spectral.centred_rapsd` (kept here under its old name)."""


def expected(log_snr, levels: Sequence[int], power: np.ndarray | None = None, method: str = "rings") -> tuple[np.ndarray, np.ndarray]:
    """Continuous-time fractions at the given λ (shape (S,)): (spectrum-aware or NaN, m² law), each (S, L).

    ``power`` is a data spectrum on an (H, W) FFT grid; the bands are that grid's octave rings or
    its box-pyramid bands (``method``), weighted as :func:`chromaviz.spectral.band_weights`.

    Examples
    --------
    >>> spectrum_aware, m2 = expected([0.0], (1, 2))
    >>> bool(np.isnan(spectrum_aware).all()), m2.round(3).tolist()
    (True, [[0.5, 0.8]])
    """
    log_snr = np.asarray(log_snr, dtype=np.float64)
    m2 = theory.signal_fraction(log_snr, levels)
    if power is None:
        return np.full_like(m2, np.nan), m2
    weights = spectral.band_weights(*power.shape[-2:], levels, method)
    return theory.band_signal_fraction(log_snr, power, weights), m2


def planned_theory(plan, model, height: int, width: int, *, method: str = "rings",
                   levels: Sequence[int] | None = None) -> Theory:
    """The continuous theories of a run before it is sampled: over its planned steps, on its bands.

    The same curves :func:`compare` draws for the run once it is recorded, where the model
    declares an exact spectrum (with none, ``spectrum_aware`` is NaN: :func:`compare` estimates the
    spectrum from the run's samples, which do not exist yet).

    Parameters
    ----------
    plan : StepPlan
        The run's step plan (:func:`chromaviz.noise.plan_steps`, or what
        :func:`chromaviz.sampling.check_sample` returns): its ``timesteps`` and ``log_snr``, shape (S,).
    model : Denoiser or None
        Supplies the exact data spectrum where it declares one (:func:`data_power`).
    height, width : int
        The sample grid in the model's space (``model.latent_size(H, W)`` for latent models).
    method : {"rings", "pyramid"}
        Band decomposition of the measurement the theories are drawn against, as in :func:`compare`.
    levels : sequence of int, optional
        Default :func:`chromaviz.spectral.levels_for` of the grid.

    Returns
    -------
    Theory

    Raises
    ------
    ValueError
        For a bad method or bad levels.

    Examples
    --------
    >>> from chromaviz import GaussianPowerLaw, sample
    >>> from chromaviz.noise import plan_steps
    >>> model = GaussianPowerLaw(size=16)
    >>> plan = plan_steps(model.schedule, 5)
    >>> rings, pyramid = (planned_theory(plan, model, 16, 16, method=m) for m in ("rings", "pyramid"))
    >>> pyramid.levels, pyramid.spectrum_aware.shape, pyramid.power_source
    ((1, 2, 4), (5, 3), 'model')
    >>> bool(np.allclose(rings.spectrum_aware, pyramid.spectrum_aware))
    False
    >>> traj = sample(model, num_inference_steps=5, batch_size=2, record=("x0",))
    >>> bool(np.allclose(compare(traj, model, method="pyramid").spectrum_aware, pyramid.spectrum_aware))
    True
    """
    method = spectral._check_method(method)
    levels = tuple(levels) if levels is not None else spectral.levels_for(height, width)
    power, source = data_power(model, height, width)
    log_snr = np.asarray(plan.log_snr, dtype=np.float64)
    spectrum_aware, m2 = expected(log_snr, levels, power, method)
    return Theory(levels, method, np.asarray(plan.timesteps, dtype=np.float64), log_snr, spectrum_aware, m2, source)


def decoded(traj: Trajectory, decode: Callable[[torch.Tensor], torch.Tensor], *, batch: int = 8) -> Trajectory:
    """The run with every recorded x̂0 and its final sample decoded, e.g. latents → RGB.

    Parameters
    ----------
    traj : Trajectory
        A run that recorded x̂0; its x_t and ε are dropped (they live in the model's space).
    decode : callable
        (N, C, h, w) → (N, 3, H, W), e.g. ``model.decode`` (the VAE) or ``model.to_rgb`` (a preview).
    batch : int
        Tensors decoded per call.

    Returns
    -------
    Trajectory
        Same steps, noise levels and prompts; ``x0`` and ``final`` decoded; ``metadata["space"] = "rgb"``.

    Examples
    --------
    >>> from chromaviz import GaussianPowerLaw, sample
    >>> model = GaussianPowerLaw(size=16)
    >>> traj = sample(model, num_inference_steps=5, batch_size=2, device="cpu", record=("x0",))
    >>> rgb = decoded(traj, model.to_rgb)
    >>> rgb.metadata["space"], tuple(rgb.x0.shape)
    ('rgb', (5, 2, 3, 16, 16))
    """
    if not traj.steps or traj.steps[0].x0 is None:
        raise ValueError("decoding needs a run that recorded x0 (record=('x0', ...))")
    x0 = traj.x0  # (S, B, C, h, w)
    s, b = x0.shape[:2]
    flat = x0.reshape(s * b, *x0.shape[2:])
    with torch.no_grad():
        rgb = torch.cat([decode(flat[i : i + batch]).float().cpu() for i in range(0, len(flat), batch)])
        final = decode(traj.final).float().cpu() if traj.final is not None else None
    rgb = rgb.reshape(s, b, *rgb.shape[1:])
    steps = [replace(st, x0=rgb[i], x_t=None, eps=None) for i, st in enumerate(traj.steps)]
    return Trajectory(metadata={**traj.metadata, "space": "rgb"}, steps=steps, final=final)


def compare(traj: Trajectory, model=None, *, method: str = "rings", levels: Sequence[int] | None = None,
            decode: Callable[[torch.Tensor], torch.Tensor] | None = None, predict: bool = True,
            plan=None) -> Comparison:
    """Measured band signal fractions of ``traj`` against the run as sampled and the continuous theory.

    Every curve is a fraction of the band's data power (see :class:`Comparison`; :meth:`Comparison.normalised`
    for the form divided by the end of the run). The measured G_b is the band energy of each step's x̂0
    about the batch mean (B ≥ 2; about zero for one sample) over the data's expected energy in that band.

    Parameters
    ----------
    traj : Trajectory
        A run that recorded x̂0 (complete or partial).
    model : Denoiser, optional
        If it declares an exact spectrum (``model.data_power(H, W)``), every theory uses it and the
        as-sampled prediction is exact for the run (deterministic samplers) or the expectation given
        its initial noise (stochastic ones); otherwise the RAPSD of the run's final samples stands in
        for the data spectrum and the prediction is an approximation.
    method : {"rings", "pyramid"}
        Band decomposition; the theories use the same bands (pyramid: Dirichlet-kernel weights).
    levels : sequence of int, optional
        Default :func:`chromaviz.spectral.levels_for` of the sample size.
    decode : callable, optional
        Measure in decoded space instead (latents → RGB, see :func:`decoded`); the data spectrum
        then comes from the decoded final samples (the prediction is an approximation).
    predict : bool
        Compute the as-sampled prediction (:func:`chromaviz.prediction.predict_run`); where the run
        cannot be predicted (no scheduler in its metadata, pooled records, a scheduler that cannot be
        stepped mode by mode) ``predicted`` is None and ``prediction_note`` says why.
    plan : StepPlan, optional
        The run's step plan (the one it was sampled with): the prediction reuses its scheduler
        instead of planning the run again (see :func:`chromaviz.prediction.predict_run`).

    Returns
    -------
    Comparison

    Raises
    ------
    TypeError
        If ``traj`` is not a :class:`Trajectory`.
    ValueError
        For a run without x̂0, bad levels or method, or a ``plan`` that is not the run's.

    Examples
    --------
    >>> from chromaviz import GaussianPowerLaw, sample
    >>> model = GaussianPowerLaw(size=16)
    >>> traj = sample(model, num_inference_steps=5, batch_size=2, device="cpu", record=("x0",))
    >>> c = compare(traj, model)
    >>> c.levels, c.measured.shape, c.power_source
    ((1, 2, 4), (5, 3), 'model')
    """
    if not isinstance(traj, Trajectory):
        raise TypeError(f"compare() needs a Trajectory (from sample() or Trajectory.load), got {type(traj).__name__}")
    method = spectral._check_method(method)
    if decode is not None:
        traj, model = decoded(traj, decode), None
    x0 = traj.x0
    b, c, h, w = x0.shape[1:]
    levels = tuple(levels) if levels is not None else spectral.levels_for(h, w)
    reference = spectral.batch_reference(b)
    energies = spectral.step_band_energies(x0, levels, method, reference).numpy()
    final_energy = spectral.step_band_energies(traj.sample[None], levels, method, reference).numpy()[0]
    power, source = data_power(model, h, w, traj.sample)
    pred, note = None, "not asked for" if not predict else ""
    if plan is not None:  # a wrong plan is the caller's mistake, not a run that cannot be predicted
        prediction.planned_scheduler(plan, traj)
    if predict:
        try:
            pred = prediction.predict_run(traj, model, method=method, levels=levels, reference=reference, plan=plan)
        except Exception as exc:  # the measurement and the continuous theory stand without it
            note = f"{type(exc).__name__}: {exc}"
    if pred is not None and pred.power_source == "samples":
        power = pred.power  # the run's own estimate, refined through its scheduler (an approximation)
    denominator = pred.data_energy if pred is not None else prediction.data_energy(power, levels, method, b, c, reference)
    spectrum_aware, m2 = expected(traj.log_snr, levels, power, method)
    predicted_final = None
    if pred is not None:
        predicted_final = pred.final if traj.final is not None else pred.fractions[-1]
    return Comparison(
        levels=levels,
        method=method,
        timesteps=traj.timesteps,
        log_snr=traj.log_snr,
        measured=energies / denominator,
        spectrum_aware=spectrum_aware,
        m2_law=m2,
        power_source=source,
        predicted=None if pred is None else pred.fractions,
        prediction_kind="none" if pred is None else pred.kind,
        batch_noise=None if pred is None else pred.batch_noise,
        measured_final=final_energy / denominator,
        predicted_final=predicted_final,
        from_initial_noise=None if pred is None else pred.from_initial_noise,
        prediction_note=note,
    )


class StepwiseComparison:
    """:func:`compare` of a run while it goes: steps are added as they are recorded.

    Each step's band energies are computed once, when it is added; :meth:`comparison` then divides
    by the energies of the run's sample (its ``final`` output, else the newest x̂0), exactly as
    :func:`compare` does for a trajectory holding the same steps, and returns the same type.

    Parameters
    ----------
    model : Denoiser, optional
        As in :func:`compare` (its exact spectrum, if it has one, feeds the theory).
    method : {"rings", "pyramid"}
    levels : sequence of int, optional
        Default :func:`chromaviz.spectral.levels_for` of the sample size.

    Examples
    --------
    >>> from chromaviz import GaussianPowerLaw, sample
    >>> model = GaussianPowerLaw(size=16)
    >>> traj = sample(model, num_inference_steps=4, batch_size=2)
    >>> live = StepwiseComparison(model)
    >>> live.extend(traj.steps[:2])
    >>> live.comparison().measured.shape
    (2, 3)
    """

    def __init__(self, model=None, *, method: str = "rings", levels: Sequence[int] | None = None) -> None:
        self.model = model
        self.method = spectral._check_method(method)
        self.levels = tuple(levels) if levels is not None else None
        self.steps: list = []
        self._energies: torch.Tensor | None = None
        self._power: tuple[np.ndarray | None, str] | None = None

    def __len__(self) -> int:
        return len(self.steps)

    def _reference(self) -> str | None:
        return spectral.batch_reference(self.steps[0].x0.shape[0])

    def extend(self, steps) -> None:
        """Add recorded steps (:class:`~chromaviz.sampling.trajectory.StepRecord` with x̂0), in order."""
        steps = list(steps)
        if not steps:
            return
        if any(s.x0 is None for s in steps):
            raise ValueError("a step-by-step comparison needs steps that recorded x0 (record=('x0', ...))")
        self.steps.extend(steps)
        if self.levels is None:
            self.levels = spectral.levels_for(*steps[0].x0.shape[-2:])
        new = spectral.step_band_energies(torch.stack([s.x0 for s in steps]), self.levels, self.method, self._reference())
        self._energies = new if self._energies is None else torch.cat([self._energies, new])

    def comparison(self, final: torch.Tensor | None = None) -> Comparison:
        """The :class:`Comparison` of the steps added so far.

        Parameters
        ----------
        final : torch.Tensor, shape (B, C, H, W), optional
            The run's final output once it is complete (as ``Trajectory.final``); without it the
            newest x̂0 is the reference, as :func:`compare` does for a partial run.

        Raises
        ------
        ValueError
            If no step has been added.
        """
        if not self.steps:
            raise ValueError("no steps added yet: a comparison needs at least one recorded step")
        sample = final if final is not None else self.steps[-1].x0
        final_energy = self._energies[-1] if final is None else spectral.step_band_energies(
            final[None], self.levels, self.method, self._reference())[0]
        b, c, h, w = sample.shape
        if self._power is None or self._power[1] != "model":  # the model's spectrum never changes
            self._power = data_power(self.model, h, w, sample)
        power, source = self._power
        denom = prediction.data_energy(power, self.levels, self.method, b, c, self._reference())  # as compare()
        log_snr = np.array([s.log_snr for s in self.steps], dtype=np.float64)
        spectrum_aware, m2 = expected(log_snr, self.levels, power, self.method)
        return Comparison(
            levels=self.levels,
            method=self.method,
            timesteps=np.array([s.timestep for s in self.steps], dtype=np.float64),
            log_snr=log_snr,
            measured=self._energies.numpy() / denom,
            spectrum_aware=spectrum_aware,
            m2_law=m2,
            power_source=source,
            measured_final=final_energy.numpy() / denom,
        )
