"""A recorded run set against the theory: the one comparison the CLI, widgets and reports show."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Sequence

import numpy as np
import torch

from . import spectral, theory
from .sampling.trajectory import Trajectory


@dataclass(frozen=True)
class Comparison:
    """Measured and theoretical signal fractions of one run, per step and level.

    Attributes
    ----------
    levels : tuple of int, length L
        Block sizes m (1 = finest).
    method : {"rings", "pyramid"}
        Band decomposition used for the measurement.
    timesteps, log_snr : ndarray, shape (S,)
        Per recorded step.
    measured : ndarray, shape (S, L)
        G_b: explained variance of each band of x̂0 relative to the final sample.
    spectrum_aware : ndarray, shape (S, L)
        s_b from the data power spectrum (``power_source`` says where it came from).
    m2_law : ndarray, shape (S, L)
        s_m = sigmoid(λ + 2·ln m), the unit-variance law.
    power_source : str
        ``"model"`` (the model's exact spectrum) or ``"samples"`` (RAPSD of the final samples).
    """

    levels: tuple[int, ...]
    method: str
    timesteps: np.ndarray
    log_snr: np.ndarray
    measured: np.ndarray
    spectrum_aware: np.ndarray
    m2_law: np.ndarray
    power_source: str

    @property
    def max_deviation(self) -> float:
        """max |measured − spectrum_aware| over steps and levels."""
        return float(np.nanmax(np.abs(self.measured - self.spectrum_aware)))

    def table_rows(self, num_rows: int = 6) -> list[list[str]]:
        """Rows for a text table at ``num_rows`` evenly spaced steps: step, t, λ, then G/s per level."""
        idx = np.unique(np.linspace(0, len(self.timesteps) - 1, num_rows).round().astype(int))
        rows = []
        for i in idx:
            cells = [f"{self.measured[i, j]:.3f}/{self.spectrum_aware[i, j]:.3f}" for j in range(len(self.levels))]
            rows.append([str(i), f"{self.timesteps[i]:.0f}", f"{self.log_snr[i]:+.2f}", *cells])
        return rows

    def format_table(self, num_rows: int = 6) -> str:
        """A plain-text table of measured/theoretical fractions (see :meth:`table_rows`)."""
        header = ["step", "t", "λ", *[f"m={m}" for m in self.levels]]
        rows = [header, *self.table_rows(num_rows)]
        widths = [max(len(r[k]) for r in rows) for k in range(len(header))]
        lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)


def data_power(model, height: int, width: int, samples=None) -> tuple[np.ndarray | None, str]:
    """The data power spectrum on the (H, W) FFT grid and where it came from.

    The model's exact spectrum when it has one (``model.power``), else the RAPSD of ``samples``
    (B, C, H, W) interpolated onto the grid, else ``(None, "none")``.
    """
    if model is not None and hasattr(model, "power"):
        return model.power(height, width), "model"
    if samples is None:
        return None, "none"
    return theory.power_grid_from_rapsd(*centred_rapsd(samples), height, width), "samples"


def centred_rapsd(samples) -> tuple[np.ndarray, np.ndarray]:
    """RAPSD of samples (B, C, H, W) with the batch mean removed (a batch of one: each image's mean),
    scaled by B/(B − 1) so that the removal does not bias it (white noise gives 1).

    Returns
    -------
    freqs, power : ndarray, shape (R,)
        As :func:`chromaviz.spectral.rapsd`: cycles/pixel and power (white noise = 1); bin 0 is DC.
    """
    x = samples.double()
    b = x.shape[0]
    x = x - x.mean(0) if b > 1 else x - x.mean(dim=(-2, -1), keepdim=True)
    freqs, power = spectral.rapsd(x)
    if b > 1:  # removing the batch mean takes away 1/B of every mode's variance
        power = power * (b / (b - 1))
    return freqs.cpu().numpy(), power.cpu().numpy()


def expected(log_snr, levels: Sequence[int], power: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Theoretical fractions at the given λ (shape (S,)): (spectrum-aware or NaN, m² law), each (S, L).

    ``power`` is a data spectrum on an (H, W) FFT grid; the octave rings of that grid define the bands.
    """
    log_snr = np.asarray(log_snr, dtype=np.float64)
    m2 = theory.signal_fraction(log_snr, levels)
    if power is None:
        return np.full_like(m2, np.nan), m2
    masks = spectral.octave_ring_masks(*power.shape[-2:], levels).cpu().numpy()
    return theory.band_signal_fraction(log_snr, power, masks), m2


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
            decode: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Comparison:
    """Measured band signal fractions of ``traj`` against the theory.

    Parameters
    ----------
    traj : Trajectory
        A run that recorded x̂0 (complete or partial; partial runs are measured against their last x̂0).
    model : Denoiser, optional
        If it has an exact spectrum (``model.power(H, W)``), the spectrum-aware theory uses it;
        otherwise the RAPSD of the run's final samples stands in for the data spectrum.
    method : {"rings", "pyramid"}
    levels : sequence of int, optional
        Default :func:`chromaviz.spectral.levels_for` of the sample size.
    decode : callable, optional
        Measure in decoded space instead (latents → RGB, see :func:`decoded`); the data spectrum
        then comes from the decoded final samples.
    """
    if decode is not None:
        traj, model = decoded(traj, decode), None
    x0 = traj.x0
    h, w = x0.shape[-2:]
    levels = tuple(levels) if levels is not None else spectral.levels_for(h, w)
    measured = traj.signal_fractions(levels, method=method).numpy()
    power, source = data_power(model, h, w, traj.sample)
    spectrum_aware, m2 = expected(traj.log_snr, levels, power)
    return Comparison(
        levels=levels,
        method=method,
        timesteps=traj.timesteps,
        log_snr=traj.log_snr,
        measured=measured,
        spectrum_aware=spectrum_aware,
        m2_law=m2,
        power_source=source,
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
    >>> traj = sample(model, num_steps=4, batch_size=2)
    >>> live = StepwiseComparison(model)
    >>> live.extend(traj.steps[:2])
    >>> live.comparison().measured.shape
    (2, 4)
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
        return "batch" if self.steps[0].x0.shape[0] >= 2 else None  # as Trajectory.signal_fractions

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
        denom = self._energies[-1] if final is None else spectral.step_band_energies(
            final[None], self.levels, self.method, self._reference())[0]
        h, w = sample.shape[-2:]
        if self._power is None or self._power[1] != "model":  # the model's spectrum never changes
            self._power = data_power(self.model, h, w, sample)
        power, source = self._power
        log_snr = np.array([s.log_snr for s in self.steps], dtype=np.float64)
        spectrum_aware, m2 = expected(log_snr, self.levels, power)
        return Comparison(
            levels=self.levels,
            method=self.method,
            timesteps=np.array([s.timestep for s in self.steps], dtype=np.float64),
            log_snr=log_snr,
            measured=(self._energies / denom).numpy(),
            spectrum_aware=spectrum_aware,
            m2_law=m2,
            power_source=source,
        )
