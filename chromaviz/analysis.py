"""A recorded run set against the theory: the one comparison the CLI, widgets and reports show."""

from __future__ import annotations

import math
import warnings
import weakref
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import numpy as np
import torch

from . import prediction, spectral, theory
from .noise.plan import NoiseLevel
from .sampling.trajectory import NOISE_SIMILARITY, SuspectRunWarning, Trajectory, noise_similarity, noise_similarity_of_data


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
    expected, expected_std : ndarray, shape (S, L), or None
        The expected chromatography of the run as it is sampled and its standard deviation for the
        run's batch, size and channels (:func:`chromaviz.prediction.expected_run`; as
        :attr:`Comparison.expected`); None without an exact data spectrum or a batch size.
    """

    levels: tuple[int, ...]
    method: str
    timesteps: np.ndarray
    log_snr: np.ndarray
    spectrum_aware: np.ndarray
    m2_law: np.ndarray
    power_source: str
    expected: np.ndarray | None = None
    expected_std: np.ndarray | None = None


BAND_SIGMAS = 2.0
"""Half-width of the expected band in standard deviations: a run's cells should lie within
E[G] ± 2·std[G] about 95 % of the time (more where a band holds many modes, somewhat less where
its weighted χ² is skewed)."""

ROUNDING = 1e-5
"""Relative difference from E[G] that is float32 rounding of the records, not a deviation (a run
normalised by its last step has std 0 there, and G/G equal to 1 within about 1e-6)."""

MIN_COVERAGE = 0.5
"""A run is outside its band when fewer of its (step, level) cells than this lie within ±2σ. A run's
cells are strongly correlated along its steps (a deterministic sampler's G_b is set by its initial
noise), so a conforming run has a whole level outside ±2σ about one time in twenty per level: with
three levels, coverage 2/3 is no evidence against it; two levels of three outside happen < 1 % of the
time."""

MAX_Z = 5.0
"""… or when one cell lies further than this many standard deviations from its expectation (largest
seen in 240 conforming runs of 16×16, 20 steps, four samplers, batch 1 to 16: 3.8σ)."""


@dataclass(frozen=True)
class Agreement:
    """How a run sits in its expected band (:attr:`Comparison.agreement`): the falsifiable summary.

    Attributes
    ----------
    max_z : float
        max over (step, level) of |G − E[G]| / std[G] (dimensionless; NaN without an expected band).
        Differences within :data:`ROUNDING` of E[G] count as none (a cell with std 0 is then 0σ, else ∞).
    coverage : float
        Share of the cells with |G − E[G]| ≤ 2·std[G] (0 … 1; NaN without a band).
    worst_step : int
        Index of the step of the worst cell (−1 without a band).
    worst_level : int
        Block size m of the worst cell (0 without a band).
    cells : int
        Cells judged (finite G and E[G]).
    inside : bool or None
        True if the run is consistent with its band (coverage ≥ :data:`MIN_COVERAGE` and
        max_z ≤ :data:`MAX_Z`), False if not, None without a band.
    verdict : str
        One sentence saying so, e.g. ``"outside its ±2σ band at 12% of cells, worst 7.3σ at step 40, m = 8"``
        or ``"consistent with its expected band: 96% of cells within ±2σ, worst 2.4σ at step 3, m = 4"``.
    """

    max_z: float
    coverage: float
    worst_step: int
    worst_level: int
    cells: int
    inside: bool | None
    verdict: str

    @classmethod
    def of(cls, measured: np.ndarray, expected: np.ndarray | None, std: np.ndarray | None,
           levels: Sequence[int], note: str = "") -> Agreement:
        """The agreement of ``measured`` (S, L) with ``expected`` ± ``std`` (S, L); ``note`` says why
        there is no band when ``expected`` is None."""
        if expected is None or std is None:
            why = f": {note}" if note else ""
            return cls(float("nan"), float("nan"), -1, 0, 0, None, f"not tested against an expected band{why}")
        d = np.abs(np.asarray(measured, dtype=np.float64) - expected)
        ok = np.isfinite(d) & np.isfinite(std)
        d = np.maximum(d - ROUNDING * np.abs(expected), 0.0)  # float32 records: no deviation below rounding
        if not ok.any():
            return cls(float("nan"), float("nan"), -1, 0, 0, None, "not tested against an expected band: no finite cell")
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(std > 0, d / std, np.where(d > 0, np.inf, 0.0))
        z = np.where(ok, z, -1.0)
        i, j = np.unravel_index(int(np.argmax(z)), z.shape)
        max_z = float(z[i, j])
        coverage = float((z[ok] <= BAND_SIGMAS).mean())
        inside = bool(coverage >= MIN_COVERAGE and max_z <= MAX_Z)
        where = f"worst {max_z:.1f}σ at step {i}, m = {levels[j]}"
        if inside:
            verdict = f"consistent with its expected band: {coverage:.0%} of cells within ±{BAND_SIGMAS:g}σ, {where}"
        else:
            verdict = f"outside its ±{BAND_SIGMAS:g}σ band at {1 - coverage:.0%} of cells, {where}"
        return cls(max_z, coverage, int(i), int(levels[j]), int(ok.sum()), inside, verdict)


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
        The run replayed mode by mode from its own noise (initial, and injected for stochastic
        samplers; :func:`chromaviz.prediction.predict_run`): a consistency check of the model's Wiener
        conformance and of the code, equal to ``measured`` to float rounding for an exact Gaussian
        model; not a prediction (that is ``expected``). None where unavailable.
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
    expected, expected_std : ndarray, shape (S, L), or None
        The expected chromatography and its noise band: E[G_b] and std[G_b] over the initial noise
        (and a stochastic sampler's injected noise) for the run's scheduler and steps, batch, size
        and channels, from the data spectrum alone (:func:`chromaviz.prediction.expected_run`). The
        prediction a run can fail: see :attr:`agreement`. None where the model declares no exact
        spectrum (``expected_note`` says why). After :meth:`normalised`, by the delta method.
    expected_final, expected_final_std : ndarray, shape (L,), or None
        The same for the run's sample (what ``measured_final`` measures).
    expected_final_corr : ndarray, shape (S, L), or None
        Correlation of each step's G_b with the sample's (for :meth:`normalised`).
    expected_note : str
        Why there is no expected band (empty when there is one).
    ideal : ndarray, shape (S, L), or None
        The model's **ideal process** at the run's noise levels: its own denoiser (guided as the run
        was) applied to x_t = α·x0 + σ·ε with x0 drawn from its data for each step's prompt, measured
        as the run is (:func:`ideal_process`). Exact where the denoiser is the exact posterior
        (``ExemplarMixture``, ``GaussianPowerLaw``); for a learned model, its denoiser on its training
        distribution (shapes) or on the user's images (``compare(..., data=folder)``). None where no
        data can be drawn (``ideal_note`` says why). ``measured − ideal`` is the sampler's share,
        ``ideal − spectrum_aware`` the data's non-Gaussianity (``spectrum_aware`` is a lower bound on it).
    ideal_std : ndarray, shape (S, L), or None
        The spread a run of this batch size would show about ``ideal`` (from the draws' per-sample
        energies, :func:`ideal_process` ``with_std``); None for Gaussian data, whose ideal process is
        the closed form and whose run is judged by the ``expected`` band.
    ideal_note : str
        What the ideal process is (its data), or why there is none.
    power_note : str
        Which data power the fractions are of (exact, estimated from draws, or fitted to this run).
    flags : tuple of str
        What a reader must know before trusting the numbers: steps whose prompt's data power is not
        known and is stood in for by another's (a prompt switch to a prompt without data).
    band_birth_log_snr : ndarray, shape (L,), or None
        Each band's birth: the λ at which the spectrum-aware fraction of the final prompt's spectrum
        reaches ½ (:func:`chromaviz.theory.band_birth_log_snr`); the m² law's is −2·ln m.
    suspect : tuple of str
        Why the run is not a sample of its model, if it is not (:func:`suspicions`; empty for a good
        run): a band whose generated sample holds several times its data power, or samples that are
        (nearly) their initial noise. :func:`compare` warns of them (:class:`SuspectRunWarning`).
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
    expected: np.ndarray | None = None
    expected_std: np.ndarray | None = None
    expected_final: np.ndarray | None = None
    expected_final_std: np.ndarray | None = None
    expected_final_corr: np.ndarray | None = None
    expected_note: str = ""
    ideal: np.ndarray | None = None
    ideal_std: np.ndarray | None = None
    ideal_note: str = ""
    power_note: str = ""
    flags: tuple[str, ...] = ()
    band_birth_log_snr: np.ndarray | None = None
    suspect: tuple[str, ...] = ()

    @property
    def fitted(self) -> bool:
        """True where no data power is known and the fractions are of the run's own samples' power:
        every curve is then **fitted to this run** and no deviation from it is a test."""
        return self.power_source == "samples"

    @property
    def lower_bound(self) -> np.ndarray:
        """``spectrum_aware`` under its meaning for any data: the latest each band can form for this
        spectrum (the ideal denoiser's fraction is at least this; exact for Gaussian data)."""
        return self.spectrum_aware

    @property
    def theory(self) -> Theory:
        """Its theories alone, over its steps (as :func:`planned_theory` gives them before the run):
        the continuous ones and the expected chromatography with its band."""
        return Theory(self.levels, self.method, self.timesteps, self.log_snr, self.spectrum_aware, self.m2_law,
                      self.power_source, self.expected, self.expected_std)

    @property
    def agreement(self) -> Agreement:
        """Where the measurement lies in its expected band: max |G − E[G]|/std[G], the share of cells
        within ±2σ, and a verdict (:class:`Agreement`). The headline of every view."""
        return Agreement.of(self.measured, self.expected, self.expected_std, self.levels, self.expected_note)

    @property
    def max_z(self) -> float:
        """max |G − expected| / expected_std over steps and levels (:attr:`Agreement.max_z`)."""
        return self.agreement.max_z

    @property
    def coverage(self) -> float:
        """Share of (step, level) cells with |G − expected| ≤ 2·expected_std (:attr:`Agreement.coverage`)."""
        return self.agreement.coverage

    @property
    def reference(self) -> np.ndarray:
        """The curve the run is measured against: ``predicted`` where available, else ``spectrum_aware``."""
        return self.predicted if self.predicted is not None else self.spectrum_aware

    @property
    def max_deviation(self) -> float:
        """max |measured − reference| over steps and levels (the as-sampled prediction where there is one);
        NaN where the comparison is :attr:`fitted` to the run (a fitted curve agrees by construction)."""
        if self.fitted:
            return float("nan")
        return float(np.nanmax(np.abs(self.measured - self.reference)))

    @property
    def max_deviation_continuous(self) -> float:
        """max |measured − spectrum_aware|: how far the run is from the continuous spectrum-aware lower
        bound; NaN where :attr:`fitted`."""
        if self.fitted:
            return float("nan")
        return float(np.nanmax(np.abs(self.measured - self.spectrum_aware)))

    @property
    def max_deviation_ideal(self) -> float:
        """max |measured − ideal|: how far the run is from the model's own ideal process (NaN without one)."""
        if self.ideal is None or not np.isfinite(self.ideal).any():
            return float("nan")
        return float(np.nanmax(np.abs(self.measured - self.ideal)))

    def references(self) -> list[dict[str, Any]]:
        """The run against each of its references, one row per reference (docs/chromatography.md,
        "Four references"): ``name``, ``symbol``, ``max_abs`` (max |G − reference| over steps and
        levels, NaN where there is none), ``coverage`` (share of cells within its ±2σ band, NaN
        without a band), ``source`` (where the curve comes from) and ``meaning`` (what G minus it is).

        Examples
        --------
        >>> from chromaviz import GaussianPowerLaw, sample
        >>> model = GaussianPowerLaw(size=16)
        >>> c = compare(sample(model, num_inference_steps=5, batch_size=4, device="cpu"), model)
        >>> [r["symbol"] for r in c.references()]
        ['E', 'i', 's', 'm²', 'p']
        """
        def gap(curve: np.ndarray | None) -> float:
            if curve is None or not np.isfinite(curve).any() or self.fitted:
                return float("nan")
            return float(np.nanmax(np.abs(self.measured - curve)))

        fitted = " (fitted to this run)" if self.fitted else ""
        return [
            {"name": "expected as sampled ± 2σ", "symbol": "E", "max_abs": gap(self.expected), "coverage": self.coverage,
             "source": "the schedule, the sampler's steps and the data spectrum alone, for this batch" + fitted,
             "meaning": "the test: a run outside its band is not what this sampler does to this spectrum"},
            {"name": "the model's ideal process", "symbol": "i", "max_abs": gap(self.ideal), "coverage": self.ideal_coverage,
             "source": self.ideal_note,
             "meaning": "G − i: the sampler's share (its steps, its start from N(0, I))"},
            {"name": "spectrum-aware lower bound", "symbol": "s", "max_abs": gap(self.spectrum_aware), "coverage": float("nan"),
             "source": f"the continuous theory of the {self.power_source} spectrum" + fitted,
             "meaning": "i − s: the data's non-Gaussianity (0 for Gaussian data); G − s: every effect at once"},
            {"name": "m² law", "symbol": "m²", "max_abs": gap(self.m2_law), "coverage": float("nan"),
             "source": "λ = −2 ln m: births of pooled images, no spectrum",
             "meaning": "what averaging m×m pixels alone predicts"},
            {"name": "the run replayed from its own noise", "symbol": "p", "max_abs": gap(self.predicted),
             "coverage": float("nan"), "source": self.prediction_kind,
             "meaning": "a consistency check of the model's Wiener conformance and of the code, not a prediction"},
        ]

    @property
    def ideal_coverage(self) -> float:
        """Share of the (step, level) cells with |measured − ideal| ≤ 2·ideal_std (NaN without ``ideal_std``)."""
        if self.ideal is None or self.ideal_std is None:
            return float("nan")
        ok = np.isfinite(self.ideal) & np.isfinite(self.ideal_std)
        if not ok.any():
            return float("nan")
        return float(np.mean(np.abs(self.measured - self.ideal)[ok] <= 2 * self.ideal_std[ok]))

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
        expected = expected_std = None
        if self.expected is not None and self.expected_final is not None:
            expected, expected_std = prediction.Expectation(
                self.levels, self.method, self.expected, self.expected_std, self.expected_final,
                self.expected_final_std, self.expected_final_corr, np.ones(len(self.levels)), 0).normalised()
        return replace(
            self, measured=self.measured / final_m, spectrum_aware=self.spectrum_aware / self.spectrum_aware[-1],
            m2_law=self.m2_law / self.m2_law[-1], predicted=by_end(self.predicted, final_p),
            batch_noise=by_end(self.batch_noise, final_p),
            measured_final=np.ones_like(final_m), predicted_final=None if final_p is None else np.ones_like(final_p),
            ideal=None if self.ideal is None else self.ideal / self.ideal[-1],
            ideal_std=None if self.ideal_std is None or self.ideal is None else self.ideal_std / self.ideal[-1],
            normalisation="last step", expected=expected, expected_std=expected_std,
            expected_final=None if expected is None else np.ones_like(final_m),
            expected_final_std=None if expected is None else np.zeros_like(final_m),
            expected_final_corr=None,
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
            # fitted to this run, the sample's share is 1 by construction: no "missing" to report
            missing_measured=nan if self.fitted else 1 - final_m, missing_predicted=nan if self.fitted else 1 - final_p,
            from_initial_noise=self.from_initial_noise if self.from_initial_noise is not None else nan,
        )

    def to_rows(self) -> list[dict]:
        """One record per step and level, for a table or a CSV file.

        Keys: ``step``, ``timestep``, ``log_snr``, ``level``, ``measured``, ``predicted`` (NaN if
        none), ``spectrum_aware``, ``m2_law``, ``batch_noise`` (NaN if none), ``ideal`` (NaN if none),
        ``expected`` and ``expected_std`` (NaN if none) and ``normalisation``.
        """
        nan = np.full_like(self.measured, np.nan)
        band = (self.expected, self.expected_std) if self.expected is not None else (nan, nan)
        predicted = self.predicted if self.predicted is not None else nan
        ideal = self.ideal if self.ideal is not None else nan
        noise = self.batch_noise if self.batch_noise is not None else nan
        return [
            {"step": i, "timestep": float(self.timesteps[i]), "log_snr": float(self.log_snr[i]), "level": m,
             "measured": float(self.measured[i, j]), "predicted": float(predicted[i, j]),
             "spectrum_aware": float(self.spectrum_aware[i, j]), "m2_law": float(self.m2_law[i, j]),
             "batch_noise": float(noise[i, j]), "ideal": float(ideal[i, j]), "expected": float(band[0][i, j]),
             "expected_std": float(band[1][i, j]), "normalisation": self.normalisation}
            for i in range(len(self.timesteps)) for j, m in enumerate(self.levels)
        ]

    def band_rows(self, num_rows: int = 6) -> list[list[str]]:
        """Rows for the headline table at ``num_rows`` evenly spaced steps: step, t, λ, then per level
        ``G E±2σ`` (measured, expected and twice its standard deviation; ``-`` without a band)."""
        idx = np.unique(np.linspace(0, len(self.timesteps) - 1, num_rows).round().astype(int))
        rows = []
        for i in idx:
            cells = []
            for j in range(len(self.levels)):
                band = "-" if self.expected is None else (
                    f"{self.expected[i, j]:.3f}±{BAND_SIGMAS * self.expected_std[i, j]:.3f}")
                cells.append(f"{self.measured[i, j]:.3f} {band}")
            rows.append([str(i), f"{self.timesteps[i]:.0f}", f"{self.log_snr[i]:+.2f}", *cells])
        return rows

    def format_band_table(self, num_rows: int = 6) -> str:
        """The headline: :meth:`band_rows` as a plain-text table, a line saying what the numbers are
        and the :attr:`agreement` verdict."""
        header = ["step", "t", "λ", *[f"m={m} G E±2σ" for m in self.levels]]
        what = (f"fractions of the {self.normalisation}" if self.normalisation == "data power"
                else "fractions normalised by their last step (band by the delta method)")
        note = (f"measured G and the expected chromatography E ± 2σ for this batch, size and channels ({what}; "
                "E from the schedule, the sampler's steps and the data spectrum alone)")
        return f"{note}\n{_format([header, *self.band_rows(num_rows)])}\nthe run is {self.agreement.verdict}"

    def table_rows(self, num_rows: int = 6) -> list[list[str]]:
        """Rows for a text table at ``num_rows`` evenly spaced steps: step, t, λ, then per level
        G/p/i/s (measured / as sampled / the model's ideal process / the continuous spectrum-aware lower
        bound; ``-`` where there is no prediction or no ideal process)."""
        idx = np.unique(np.linspace(0, len(self.timesteps) - 1, num_rows).round().astype(int))
        rows = []
        for i in idx:
            cells = []
            for j in range(len(self.levels)):
                p = "-" if self.predicted is None else f"{self.predicted[i, j]:.3f}"
                ideal = "-" if self.ideal is None or not np.isfinite(self.ideal[i, j]) else f"{self.ideal[i, j]:.3f}"
                cells.append(f"{self.measured[i, j]:.3f}/{p}/{ideal}/{self.spectrum_aware[i, j]:.3f}")
            rows.append([str(i), f"{self.timesteps[i]:.0f}", f"{self.log_snr[i]:+.2f}", *cells])
        return rows

    def format_table(self, num_rows: int = 6) -> str:
        """A plain-text table of :meth:`table_rows`, with a line saying what the numbers are."""
        header = ["step", "t", "λ", *[f"m={m} G/p/i/s" for m in self.levels]]
        note = (f"fractions of the {self.normalisation}" if self.normalisation == "data power"
                else "fractions normalised by their last step")
        if self.fitted:
            note += " of this run's own samples: fitted to this run, so no column below is a test"
        elif self.power_note:
            note += f" ({self.power_note})"
        if self.fitted:
            p_text = "the run replayed from its own noise (fitted to this run)"
        elif self.prediction_kind == "exact":
            p_text = "the run replayed from its own noise (exact; a consistency check)"
        else:
            p_text = (f"the Gaussian of the same data power, as sampled ({self.prediction_kind}; not a check: far from G "
                      "where the data is not Gaussian)")
        note += (f"; p: {p_text}, i: the model's ideal process "
                 f"({self.ideal_note if self.ideal is not None else 'none: ' + self.ideal_note}), "
                 f"s: the latest each band can form for this spectrum (spectrum-aware lower bound, "
                 f"{'fitted to this run' if self.fitted else self.power_source + ' spectrum'})")
        for why in self.suspect:
            note += f"\nSUSPECT RUN: {why}"
        for flag in self.flags:
            note += f"\nflag: {flag}"
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
                   levels: Sequence[int] | None = None, batch_size: int | None = None,
                   channels: int | None = None, eta: float = 0.0, prompt: str | None = None) -> Theory:
    """The theories of a run before it is sampled: over its planned steps, on its bands.

    The same curves :func:`compare` draws for the run once it is recorded, where the model
    declares an exact spectrum (with none, ``spectrum_aware`` is NaN: :func:`compare` estimates the
    spectrum from the run's samples, which do not exist yet). Given the run's ``batch_size``, also
    the expected chromatography and its noise band (``expected``, ``expected_std``:
    :func:`chromaviz.prediction.expected_run` over the plan's scheduler and steps), the prediction
    the run will be judged by.

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
    batch_size : int, optional
        B of the run: with it (and an exact spectrum) the expected band is computed, else it is None.
        One sample is measured about its prompt's data mean (:func:`compare`): for data with a mean the
        band needs ``prompt``.
    channels : int, optional
        C of the run (default ``model.channels``).
    eta : float
        DDIM's η of the run.
    prompt : str or PromptSchedule, optional
        The run's prompt (or prompt schedule), for one sample of data with a mean; without it such a run
        gets no band before it is sampled.

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
    >>> banded = planned_theory(plan, model, 16, 16, batch_size=2)
    >>> bool(np.allclose(banded.expected, compare(traj, model).expected))
    True
    """
    method = spectral._check_method(method)
    levels = tuple(levels) if levels is not None else spectral.levels_for(height, width)
    power, source = data_power(model, height, width)
    log_snr = np.asarray(plan.log_snr, dtype=np.float64)
    spectrum_aware, m2 = expected(log_snr, levels, power, method)
    band = None
    zero_mean = getattr(getattr(model, "data", None), "gaussian", False)
    exact = batch_size is not None and power is not None and source == "model"
    data_mean = None  # one sample of data with a mean: each step's prompt's, if the prompt is given
    if exact and batch_size == 1 and not zero_mean and prompt is not None:
        data_mean = _step_means(model, prompt, plan, height, width)
    if exact and (batch_size >= 2 or zero_mean or data_mean is not None):
        channels = channels if channels is not None else int(getattr(model, "channels", 1))
        band = prediction.expected_run(plan.scheduler, plan.noise, power, batch_size=batch_size, channels=channels,
                                       levels=levels, method=method, eta=eta, data_mean=data_mean)
    return Theory(levels, method, np.asarray(plan.timesteps, dtype=np.float64), log_snr, spectrum_aware, m2, source,
                  None if band is None else band.mean, None if band is None else band.std)


def _step_means(model, prompt: str | None, plan, height: int, width: int) -> np.ndarray | None:
    """Each planned step's prompt's data mean (S, C, h, w), which one sample is measured about; None where
    the model knows no data of one of them."""
    import warnings

    from .prompts import PromptSchedule

    with warnings.catch_warnings():  # a switch that never happens is the planner's to say, not the theory's
        warnings.simplefilter("ignore")
        texts = PromptSchedule.coerce("" if prompt is None else prompt).prompts_for_steps(list(plan.timesteps),
                                                                                       list(plan.log_snr))
    known = {}
    for text in dict.fromkeys(texts):
        data = prompt_data_power(model, model.check_prompt(text) if model is not None else text, height, width)
        if data is None:
            return None
        known[text] = data.mean
    return np.stack([known[t] for t in texts])


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


def _check_same_model(traj: Trajectory, model: Any) -> None:
    """Refuse a model other than the one that sampled the run: its spectrum and data would measure the
    run against another model's data without a word."""
    if model is None:
        return
    sampled = traj.metadata.get("model", {}).get("name")
    given = getattr(model, "name", None)
    if sampled is not None and given is not None and sampled != given:
        raise ValueError(f"this run was sampled by the model {sampled!r}, and compare() was given {given!r}: its "
                         "spectrum and data would stand for another model's; pass the run's own model, or none "
                         "(the curves are then fitted to the run), or data=... for other data")


def compare(traj: Trajectory, model=None, *, method: str = "rings", levels: Sequence[int] | None = None,
            decode: Callable[[torch.Tensor], torch.Tensor] | None = None, predict: bool = True,
            plan=None, data=None, ideal: bool = True) -> Comparison:
    """Measured band signal fractions of ``traj`` against the run as sampled and the continuous theory.

    Every curve is a fraction of the band's data power (see :class:`Comparison`; :meth:`Comparison.normalised`
    for the form divided by the end of the run). The measured G_b is the band energy of each step's x̂0
    about the batch mean (B ≥ 2) over the data's expected energy in that band. One sample is measured
    about its step's prompt's data mean where the model knows every prompt's (else about zero): about zero
    it would hold the prompt's layout from the first step on, which no theory of the part about the mean
    describes. What it holds of other means (a prompt switch leaves the earlier prompt's in the levels
    formed before it) is known for Gaussian data (:func:`chromaviz.prediction.mean_gains`), and the
    expected band and the replay of octave rings include it.

    Parameters
    ----------
    traj : Trajectory
        A run that recorded x̂0 (complete or partial).
    model : Denoiser, optional
        If it declares an exact spectrum (``model.data_power(H, W)``), every theory uses it and the
        as-sampled prediction is exact for the run (deterministic samplers) or the expectation given
        its initial noise (stochastic ones). Otherwise the fractions are of the data power of each
        step's prompt where it is known (:func:`prompt_data_power`: the exact moments the model
        declares, else an estimate from draws of its data), and only where no data is known of the
        power of the run's own samples, labelled **fitted to this run** (``power_source == "samples"``;
        then the prediction, fitted through the run's scheduler, is no test either).
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
    data : DataSource or path, optional
        Data of the run's prompt instead of the model's own: a
        :class:`~chromaviz.models.base.DataSource`, or a folder of images (for a diffusers pipeline,
        encoded by its VAE: :class:`~chromaviz.models.diffusers.adapter.ImageFolder`). It gives the
        data power and the ideal process.
    ideal : bool
        Compute the model's ideal process (:func:`ideal_process`, ``Comparison.ideal``) where data can
        be drawn: as many model evaluations as the run (at most :data:`IDEAL_STEPS` steps).

    Returns
    -------
    Comparison

    Raises
    ------
    TypeError
        If ``traj`` is not a :class:`Trajectory` or ``model`` not a Denoiser (or None).
    ValueError
        For a run without x̂0, bad levels or method, a ``plan`` that is not the run's, or a ``model``
        other than the one that sampled the run (its name differs from the run's metadata).

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
    from .models.base import Denoiser

    if model is not None and not isinstance(model, Denoiser):
        raise TypeError(f"compare()'s model must be the chromaviz model that sampled the run (a Denoiser) or None, got "
                        f"{model!r} ({type(model).__name__}); load a named one with chromaviz.models.registry.load_model")
    method = spectral._check_method(method)
    _check_same_model(traj, model)
    if decode is not None:
        traj, model = decoded(traj, decode), None
    b, c, h, w = traj.x0.shape[1:]
    levels = tuple(levels) if levels is not None else spectral.levels_for(h, w)
    reference = spectral.batch_reference(b)
    source_data = _as_data_source(data, model) if decode is None else None
    norm = _normalisation(traj, model, levels, method, reference, source_data)
    x0, sample = norm.centre(traj.x0, _sample_as_recorded(traj))  # one sample: about its prompt's data mean
    energies = spectral.step_band_energies(x0, levels, method, reference).numpy()
    final_energy = spectral.step_band_energies(sample[None], levels, method, reference).numpy()[0]
    power, source = norm.power, norm.source
    if source == "model":  # the model's exact Gaussian spectrum, as it declares it
        power = model.data_power(h, w)
    pred, note = None, "not asked for" if not predict else ""
    if plan is not None:  # a wrong plan is the caller's mistake, not a run that cannot be predicted
        prediction.planned_scheduler(plan, traj)
    if predict:
        try:
            given = norm.power if source in ("model data", "data draws") else None  # known, never fitted
            pred = prediction.predict_run(traj, model, method=method, levels=levels, reference=reference, plan=plan,
                                          power=given, data_mean=norm.means)
        except Exception as exc:  # the measurement and the continuous theory stand without it
            note = f"{type(exc).__name__}: {exc}"
    # Never divide the measurement by a spectrum fitted through the run's scheduler: the denominator is
    # each step's prompt's data power (or, where none is known, the run's own samples' power, flagged).
    denominator = norm.denominators  # (S, L)
    spectrum_aware = norm.spectrum_aware
    m2 = theory.signal_fraction(np.asarray(traj.log_snr, dtype=np.float64), levels)
    predicted_final = None
    if pred is not None:  # the prediction's fractions of its own data energy, re-expressed as ours
        pred = replace(pred, fractions=pred.fractions * pred.data_energy / denominator,
                       final=pred.final * pred.data_energy / norm.final,
                       batch_noise=pred.batch_noise * pred.data_energy / denominator)
        predicted_final = pred.final if traj.final is not None else pred.fractions[-1]
    ideal_curve, ideal_std, ideal_note = None, None, "not asked for"
    if ideal and decode is None:
        ideal_curve, ideal_std, ideal_note = _ideal(traj, model, method, levels, source_data, norm)
    band, band_note = _expected_band(traj, power if source == "model" else None, levels, method, reference, plan,
                                     norm.means)
    if band is not None and not np.allclose(band.data_energy, denominator, rtol=1e-9):
        band, band_note = None, "the measurement is not normalised by the model's data power"
    judged = final_energy / norm.final
    if norm.switches_mean:  # a composed sample is neither prompt's about its mean: judged with its mean, about zero
        with_mean = np.abs(np.fft.fft2(norm.means[-1], norm="ortho")) ** 2
        judged = (spectral.step_band_energies(_sample_as_recorded(traj)[None], levels, method, reference).numpy()[0]
                  / (norm.final + np.einsum("lhw,chw->l", spectral.band_weights(h, w, levels, method), with_mean)))
    suspect = suspicions(traj, judged, levels, method, reference, norm.power,
                         model.data_power(h, w) if model is not None and decode is None else None)
    if suspect:
        warnings.warn("suspect run: " + "; ".join(suspect), SuspectRunWarning, stacklevel=2)
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
        measured_final=final_energy / norm.final,
        predicted_final=predicted_final,
        from_initial_noise=None if pred is None else pred.from_initial_noise,
        prediction_note=note,
        expected=None if band is None else band.mean,
        expected_std=None if band is None else band.std,
        expected_final=None if band is None else band.final,
        expected_final_std=None if band is None else band.final_std,
        expected_final_corr=None if band is None else band.final_corr,
        expected_note=band_note,
        ideal=ideal_curve,
        ideal_std=ideal_std,
        ideal_note=ideal_note,
        power_note=norm.note,
        flags=norm.flags,
        band_birth_log_snr=None if norm.power is None else theory.band_birth_log_snr(
            norm.power, spectral.band_weights(h, w, levels, method)),
        suspect=suspect,
    )


SUSPECT_POWER = 4.0
"""A band of a generated sample holding more than this many times its data power is suspect (a good
run ends near 1; Heun with 2 steps leaves the finest band at 210×), unless its few modes make that
likely by chance (:func:`suspicions`)."""

SUSPECT_TAIL = 1e-6
"""Probability with which a good run's band may exceed the bound of :func:`suspicions` by chance."""


def suspicions(traj: Trajectory, final_fractions, levels: Sequence[int], method: str, reference: str | None,
               power=None, model_power=None) -> tuple[str, ...]:
    """Why a finished run is not a sample of its model: empty for a good run.

    - **Band energy**: a band of the generated sample holds more than its bound of the data power:
      :data:`SUSPECT_POWER`, or more where the band holds so few modes that a good run exceeds 4 with a
      probability above :data:`SUSPECT_TAIL` (its energy scatters like χ² with the band's effective
      degrees of freedom (Σw·P)²/Σ(w·P)², times the batch's and channels').
    - **Initial noise**: the samples are (nearly) their initial noise: mean cosine similarity above
      :data:`~chromaviz.sampling.trajectory.NOISE_SIMILARITY` with it (its first x_t, or the noise drawn
      again from its seed), unless the model's spectrum ``model_power`` makes ideal samples that similar.

    Parameters
    ----------
    traj : Trajectory
    final_fractions : array_like, shape (L,)
        The generated sample's band energies over their data energies (``Comparison.measured_final``).
    levels, method, reference
        The bands, as measured.
    power : array_like, shape (H, W) or (C, H, W), optional
        The data power the fractions are of (for the bands' degrees of freedom; white without it).
    model_power : array_like, optional
        The model's exact spectrum, if it declares one.

    Returns
    -------
    tuple of str
    """
    from scipy.stats import chi2

    found = []
    final = traj.final
    if final is None:
        return ()
    b, c, h, w = final.shape
    fractions = np.asarray(final_fractions, dtype=np.float64)
    p = None if power is None else np.asarray(power, dtype=np.float64)
    if p is None or p.shape[-2:] != (h, w):  # no data power on the sample's grid (pooled records): white
        p = np.ones((h, w))
    p = p.reshape(-1, h, w)
    weights = spectral.band_weights(h, w, tuple(levels), method)
    wp = np.einsum("lhw,chw->lc", weights, p)
    wp2 = np.einsum("lhw,chw->lc", weights**2, p**2)
    dof = spectral.degrees_of_freedom(b, reference) * (c // p.shape[0]) * wp.sum(1) ** 2 / np.maximum(wp2.sum(1), 1e-300)
    bound = np.maximum(SUSPECT_POWER, chi2.isf(SUSPECT_TAIL, np.maximum(dof, 1e-3)) / np.maximum(dof, 1e-3))
    over = [(m, f, lim) for m, f, lim in zip(levels, fractions, bound) if np.isfinite(f) and f > lim]
    if over:
        shown = ", ".join(f"m={m} at {f:.3g}×" for m, f, _ in over[:4])
        found.append(f"the generated sample holds several times its data power in {len(over)} band"
                     f"{'s' if len(over) > 1 else ''} ({shown}; a sample of the model ends near 1): it is not a "
                     "sample of the model (too few steps for this sampler, or a scheduler that does not match it)")
    initial = traj.steps[0].x_t if traj.steps else None
    if initial is None or tuple(initial.shape) != tuple(final.shape):
        seeded = prediction._seeded_noise(traj, tuple(final.shape)) if traj.steps else None
        initial = None if seeded is None else seeded[0]
    if initial is not None:
        similarity = noise_similarity(final, initial)
        white = model_power is not None and noise_similarity_of_data(model_power) > NOISE_SIMILARITY
        if similarity > NOISE_SIMILARITY and not white:
            found.append(f"the samples are (nearly) their initial noise (cosine similarity {similarity:.3f}): the run "
                         "did not denoise")
    return tuple(found)


def _expected_band(traj: Trajectory, power: np.ndarray | None, levels: tuple[int, ...], method: str,
                   reference: str | None, plan=None, data_mean=None) -> tuple[prediction.Expectation | None, str]:
    """The expected chromatography of a recorded run (:func:`chromaviz.prediction.expected_run`) from its
    scheduler, its recorded noise levels and the model's exact spectrum ``power``; (None, why) where
    there is none."""
    if power is None:
        return None, "the model declares no data spectrum (an expected band needs the exact one)"
    if int(traj.metadata.get("record_scale", 1)) != 1:
        return None, "the run was recorded pooled (record_scale > 1)"
    try:
        sched = prediction.run_scheduler(traj) if plan is None else prediction.planned_scheduler(plan, traj)
        noise = [NoiseLevel(s.timestep, s.alpha, s.sigma) for s in traj.steps]
        b, c = traj.steps[0].x0.shape[:2]
        return prediction.expected_run(sched, noise, power, batch_size=b, channels=c, levels=levels, method=method,
                                       reference=reference, eta=float(traj.metadata.get("eta", 0.0)),
                                       ends_with_sample=traj.final is not None, data_mean=data_mean), ""
    except Exception as exc:  # the measurement stands without it
        return None, f"{type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------------------------
# the data's power (the denominator of every fraction) and the model's ideal process
# --------------------------------------------------------------------------------------------

DATA_DRAWS = 256
"""Samples drawn from a model's data (:meth:`Denoiser.draw_data <chromaviz.models.base.Denoiser.draw_data>`)
to estimate its power per mode where the model declares no exact one."""

IDEAL_STEPS = 50
"""At most this many of a run's steps get the ideal process evaluated (evenly spaced, first and last
included); the curve is interpolated in λ between them. Runs of up to this many steps: every step."""

IDEAL_BATCH = 16
"""Fewest data draws per step of the ideal process (its Monte Carlo noise is that of a batch this size)."""

_IDEAL_ROWS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
"""Per model whose denoiser is the exact posterior mean of its own data (fixed by construction): the
ideal process's rows evaluated so far, (draws and bands, step's prompt and noise level) → the mean and
standard deviation of the draws' band energies. A new run at noise levels seen before (another seed,
sampler or a rerun in the explorer) costs no model evaluation for them."""

IDEAL_ROWS_KEPT = 4096
"""Rows kept per model; the oldest go first."""

POWER_SOURCES = ("model", "model data", "data draws", "samples", "none")
"""Where a :class:`Comparison`'s data power comes from: the model's exact Gaussian spectrum
(``data_power``), the exact moments of the model's own data (``data_moments``, e.g. the exemplar
mixture), an estimate from draws of its data (``draw_data``, e.g. the shapes training distribution or
a folder of images), the power of the run's own final samples (**fitted to this run**: the fractions
are then fractions of what the run produced, not of the data, and nothing compared with them is a
test), or none."""


@dataclass(frozen=True)
class DataPower:
    """The data of one prompt, per Fourier mode: what every signal fraction is a fraction of.

    Attributes
    ----------
    mean : ndarray, shape (C, h, w)
        E[x0] in sample space (zeros for a zero-mean model).
    power : ndarray, shape (C, h, w)
        E|F(x0 − E x0)|² per mode of the orthonormal 2-D FFT (white noise = 1): each mode's variance.
    source : str
        One of :data:`POWER_SOURCES`.
    description : str
        Said in tables, e.g. ``"exact data power of the model's own photographs"``.
    """

    mean: np.ndarray
    power: np.ndarray
    source: str
    description: str

    def band_energy(self, levels: Sequence[int], method: str, reference: str | None) -> np.ndarray:
        """Expected band energy of one data sample, shape (L,), in squared sample units: about the
        data mean (``reference="batch"``: Σ_c Σ_k w_b(k)·P(k)) or about zero (None: the mean's own
        band energy added). Exact for octave rings; for box-pyramid bands the Dirichlet-weighted
        per-mode power, exact for data whose covariance is stationary."""
        h, w = self.power.shape[-2:]
        p = self.power
        if reference is None:
            p = p + np.abs(np.fft.fft2(self.mean, norm="ortho")) ** 2
        return np.einsum("lhw,chw->l", spectral.band_weights(h, w, levels, method), p)


def prompt_data_power(model, prompt: str | None, height: int, width: int, *, data=None,
                      draws: int = DATA_DRAWS, seed: int = 0) -> DataPower | None:
    """The data power of ``prompt`` on the model's (h, w) sample grid, from the best source there is.

    In this order: the exact moments the model declares (:meth:`Denoiser.data_moments
    <chromaviz.models.base.Denoiser.data_moments>`: a Gaussian model's spectrum, source ``"model"``;
    the exemplar mixture's enumerated photographs, ``"model data"``), else an estimate from ``draws``
    samples of its data (``data``, else the model's own :class:`~chromaviz.models.base.DataSource`:
    ``"data draws"``), else None. Never a spectrum fitted to a run.

    Parameters
    ----------
    model : Denoiser or None
    prompt : str or None
        The prompt as the run recorded it (canonical).
    height, width : int
        The sample grid (h, w) in the model's space.
    data : DataSource, optional
        Data to use instead of the model's own (e.g. :class:`~chromaviz.models.diffusers.adapter.ImageFolder`).
    draws : int
        Samples drawn for the estimate (fewer for a finite source: its ``count``).
    seed : int
        Seed of the draws.

    Returns
    -------
    DataPower or None
        None where no data is known for this prompt (the model has none, or none for this prompt).
    """
    if model is None:
        return None
    if data is None:
        try:
            moments = model.data_moments(prompt, height, width)
        except ValueError:  # a prompt the model's data does not hold (AND terms, several photographs)
            moments = None
        if moments is not None:
            mean, power = (np.asarray(a, dtype=np.float64) for a in moments)
            exact_gaussian = model.data_power(height, width) is not None
            return DataPower(mean, power, "model" if exact_gaussian else "model data",
                             "the model's exact data spectrum" if exact_gaussian else
                             f"exact data power of {model.data.description if model.data else 'the model data'}")
        data = model.data
    if data is None:
        return None
    n = max(2, min(draws, getattr(data, "count", None) or draws))
    size = _image_size(model, height, width)
    try:
        x = data.draw(prompt, n, size, torch.Generator().manual_seed(seed)).double().cpu()
    except ValueError:
        return None
    mean = x.mean(0)
    power = torch.fft.fft2(x - mean, norm="ortho").abs().square().sum(0) / (n - 1)
    return DataPower(mean.numpy(), power.numpy(), "data draws", f"estimated from {n} draws of {data.description}")


def _image_size(model, height: int, width: int) -> tuple[int, int]:
    """(H, W) image pixels whose samples are (height, width) in the model's space."""
    for scale in (1, 2, 4, 8, 16):
        if tuple(model.latent_size(height * scale, width * scale)) == (height, width):
            return height * scale, width * scale
    raise ValueError(f"{model.name} has no image size whose samples are {height}×{width}")


def _as_data_source(data, model):
    """``compare(data=…)``: a DataSource as it is, a folder of images wrapped for the model."""
    if data is None:
        return None
    from .models.base import DataSource

    if isinstance(data, DataSource):
        return data
    from .models.diffusers.adapter import ImageFolder

    return ImageFolder(data, model)


def _ideal_rows(model, source, data) -> dict | None:
    """The ideal process's rows kept for ``model`` (:data:`_IDEAL_ROWS`); None where they are not kept:
    data given from outside, or a denoiser that is not exact (its weights may change: a learned model)."""
    if data is not None or model is None or not getattr(source, "exact", False):
        return None
    try:
        return _IDEAL_ROWS.setdefault(model, {})
    except TypeError:  # a model that cannot be weakly referenced or hashed
        return None


def ideal_process(traj: Trajectory, model, *, method: str = "rings", levels: Sequence[int] | None = None,
                  data=None, batch: int | None = None, max_steps: int | None = IDEAL_STEPS,
                  seed: int = 0, with_std: bool = False):
    """The model's ideal process at the run's noise levels: band energy of x̂0 per data sample.

    At each recorded step i, data x0 of the step's prompt (``data``, else the model's own
    :meth:`~chromaviz.models.base.Denoiser.draw_data`) is noised forward to the step's noise level,
    x_t = α_i·x0 + σ_i·ε, and given to the model as the run gave it its input (the run's guidance
    scale, rescale and negative prompt, in the model's parametrisation); x̂0 is measured exactly as
    the run is measured (the same bands, about the batch mean when ``batch`` ≥ 2). The same draws x0
    and ε serve every step of a prompt. Where the model's denoiser is the exact posterior mean of the
    data (``DataSource.exact``), this is the signal fraction an infinitely fine sampler started from
    the model's own noisy marginal would show (THEORY §4c). Such a model's rows are kept
    (:data:`_IDEAL_ROWS`): a step at a prompt and noise level evaluated before, with the same draws
    and bands, costs no model evaluation (the explorer's next run, another seed or sampler).

    Parameters
    ----------
    traj : Trajectory
        A recorded run (its steps' timesteps, α, σ and prompts; its metadata's guidance).
    model : Denoiser
    method : {"rings", "pyramid"}
    levels : sequence of int, optional
        Default :func:`chromaviz.spectral.levels_for` of the sample size.
    data : DataSource, optional
        Instead of the model's own data.
    batch : int, optional
        Draws per step (default: the run's batch size, at least :data:`IDEAL_BATCH`).
    max_steps : int or None
        Evaluate at most this many steps (evenly spaced) and interpolate in λ between them; None: every step.
    seed : int
        Seed of the draws and of ε.

    with_std : bool
        Also return the spread a run of the trajectory's batch size would show about this curve.

    Returns
    -------
    ndarray, shape (S, L), or None
        Σ over the draws of the band energy of x̂0 (about their mean) divided by the degrees of freedom
        (``batch`` − 1): the expected band energy per sample, in squared sample units. NaN rows where
        a step's prompt has no data; None where the model cannot draw data at all.
    ndarray, shape (S, L)
        With ``with_std``: the standard deviation of a run's band energy per sample about this
        curve, for the run's batch size b: the draws' per-sample energies' standard deviation times
        √(1/b + 1/``batch``), the run's sampling noise and this curve's own (the draws taken as
        independent: an approximation, rough where the energies are heavy-tailed).
    """
    from .models.base import split_prediction
    from .sampling.guidance import Guidance

    source = data if data is not None else (model.data if model is not None else None)
    if source is None:
        return None
    b, c, h, w = traj.steps[0].x0.shape if traj.steps[0].x0 is not None else (len(traj.final), *traj.final.shape[1:])
    levels = tuple(levels) if levels is not None else spectral.levels_for(h, w)
    n = max(2, int(batch if batch is not None else max(b, IDEAL_BATCH)))
    reference = spectral.batch_reference(n)
    dof = spectral.degrees_of_freedom(n, reference)
    size = _image_size(model, h, w)
    meta = traj.metadata
    scale = float(meta.get("guidance", 1.0)) if model.conditional else 1.0
    guidance = Guidance(scale, float(meta.get("guidance_rescale", 0.0)))
    negative = meta.get("negative_prompt")
    s = len(traj.steps)
    pick = np.arange(s) if max_steps is None or s <= max_steps else np.unique(
        np.linspace(0, s - 1, max_steps).round().astype(int))
    encoded: dict = {}
    kept = _ideal_rows(model, source, data)
    setting = (n, seed, (c, h, w), size, scale, guidance.rescale, negative, method, levels, str(model.device), str(model.dtype))

    def encode(p):
        if p not in encoded:
            encoded[p] = model.encode([p] * n)
        return encoded[p]

    drawn: dict = {}
    out = np.full((s, len(levels)), np.nan)
    spread = np.full((s, len(levels)), np.nan)
    with torch.no_grad():
        for i in pick:
            st = traj.steps[i]
            row = (setting, st.prompt, float(st.timestep), float(st.alpha), float(st.sigma))
            if kept is not None and row in kept:
                out[i], draws_std = kept[row]
                spread[i] = draws_std * math.sqrt(1 / b + 1 / n)
                continue
            if st.prompt not in drawn:
                gen = torch.Generator().manual_seed(seed)
                try:
                    x0 = source.draw(st.prompt, n, size, gen)
                except ValueError:
                    x0 = None
                eps = torch.randn((n, c, h, w), generator=gen)
                drawn[st.prompt] = None if x0 is None else (x0.to(model.device, model.dtype), eps.to(model.device, model.dtype))
            if drawn[st.prompt] is None:
                continue
            x0, eps = drawn[st.prompt]
            level = NoiseLevel(st.timestep, st.alpha, st.sigma)
            x_in = st.alpha * x0 + st.sigma * eps
            pred = guidance.predict(model, x_in, level, st.prompt, negative, encode)
            x0_hat = split_prediction(pred, x_in, level, model.parameterization)[0].detach().float().cpu()
            centred = x0_hat - x0_hat.mean(0, keepdim=True)  # about the draws' mean, as reference "batch" measures
            per_draw = spectral.step_band_energies(centred[:, None], levels, method, None).numpy() * (n / dof)  # (n, L)
            out[i] = per_draw.mean(0)
            spread[i] = per_draw.std(0, ddof=1) * math.sqrt(1 / b + 1 / n)  # the run's noise and these draws' own
            if kept is not None:
                while len(kept) >= IDEAL_ROWS_KEPT:
                    del kept[next(iter(kept))]
                kept[row] = (out[i].copy(), per_draw.std(0, ddof=1))
    if len(pick) < s:  # interpolate between the evaluated steps of each prompt, in λ (monotone along a run)
        x = np.clip(np.asarray(traj.log_snr, dtype=np.float64), -50, 50)
        prompts = np.array([str(st.prompt) for st in traj.steps])
        for p in set(prompts):
            rows = np.flatnonzero(prompts == p)
            for j in range(len(levels)):
                ok = np.intersect1d(pick, rows)
                ok = ok[np.isfinite(out[ok, j])]
                if len(ok) >= 2:
                    out[rows, j] = np.interp(x[rows], x[ok], out[ok, j])
                    spread[rows, j] = np.interp(x[rows], x[ok], spread[ok, j])
    return (out, spread) if with_std else out


@dataclass(frozen=True)
class _Normalisation:
    """Per step, what a run's fractions are fractions of (its active prompt's data power)."""

    power: np.ndarray | None  # the final prompt's spectrum, (C', h, w) or (h, w); None: none
    source: str  # POWER_SOURCES
    note: str  # which data power, said in tables
    denominators: np.ndarray  # (S, L): the expected data energy of the run's batch at each step
    final: np.ndarray  # (L,): the same for the run's sample (its final prompt)
    per_sample: np.ndarray  # (S, L): the same for one sample (the ideal process's denominator)
    spectrum_aware: np.ndarray  # (S, L): the continuous spectrum-aware curve of each step's prompt
    flags: tuple[str, ...]  # what a reader must know (a prompt whose data power is not known)
    means: np.ndarray | None = None  # (S, C, h, w): one sample is measured about its step's prompt's data mean

    def centre(self, x0: torch.Tensor, sample: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x̂0 (S, B, C, h, w) and the sample (B, C, h, w) as they are measured: one sample about its
        step's prompt's data mean where every prompt's is known, else as they are."""
        if self.means is None:
            return x0, sample
        means = torch.as_tensor(self.means, dtype=x0.dtype)
        return x0 - means[:, None], sample - means[-1][None]

    @property
    def switches_mean(self) -> bool:
        """One sample measured about each step's prompt's data mean, and the mean changes with a prompt
        switch: the levels formed before it keep the earlier prompt's mean."""
        return self.means is not None and not bool((self.means == self.means[0]).all())


def _sample_as_recorded(traj: Trajectory) -> torch.Tensor:
    """The run's sample on the grid of its records: average-pooled as they were (``record_scale``)."""
    sample, h = traj.sample, traj.x0.shape[-1]
    return torch.nn.functional.avg_pool2d(sample.float(), sample.shape[-1] // h) if sample.shape[-1] != h else sample


def _normalisation(traj: Trajectory, model, levels: tuple[int, ...], method: str, reference: str | None,
                   data=None) -> _Normalisation:
    """Each step's prompt's data power (:func:`prompt_data_power`), or, where no data is known for the
    final prompt, the power of the run's own samples (fitted to this run); flagged where a step's prompt
    has no known data power and another's stands in."""
    x0 = traj.x0
    b, c, h, w = x0.shape[1:]
    nb = spectral.degrees_of_freedom(b, reference)
    prompts = [st.prompt for st in traj.steps]
    final_prompt = prompts[-1]
    pooled = traj.sample.shape[-2:] != (h, w)  # recorded with record_scale > 1: the data's power pooled is not known
    known: dict = {}
    for p in dict.fromkeys(prompts):
        known[p] = None if pooled else prompt_data_power(model, p, h, w, data=data, seed=0)
    flags: list[str] = []
    final = known[final_prompt]
    centred = reference is None and all(dp is not None for dp in known.values())  # one sample, every mean known
    about = "batch" if centred else reference  # DataPower.band_energy: "batch" is about the data mean
    if final is not None:
        fallback_energy = final.band_energy(levels, method, about)
        power, source, note = final.power, final.source, final.description
        fallback_sa = lambda lam: expected(lam, levels, final.power, method)[0]  # noqa: E731
    else:
        power, _ = data_power(None, h, w, _sample_as_recorded(traj))
        source = "samples"
        note = ("no data power known" + (" for a recording pooled with record_scale" if pooled else "")
                + ": fractions of the power of this run's own samples (fitted to this run, so they are not a test "
                "of anything)")
        fallback_energy = prediction.data_energy(power, levels, method, b, c, reference) / nb
        fallback_sa = lambda lam: expected(lam, levels, power, method)[0]  # noqa: E731
    lam = np.asarray(traj.log_snr, dtype=np.float64)
    per_sample = np.empty((len(prompts), len(levels)))
    spectrum_aware = np.empty_like(per_sample)
    for p, dp in known.items():
        rows = [i for i, q in enumerate(prompts) if q == p]
        if dp is not None:
            per_sample[rows] = dp.band_energy(levels, method, about)
            spectrum_aware[rows] = expected(lam[rows], levels, dp.power, method)[0]
        else:
            per_sample[rows] = fallback_energy
            spectrum_aware[rows] = fallback_sa(lam[rows])
            if p != final_prompt:
                flags.append(f"steps {rows[0]}–{rows[-1]} (prompt {p!r}): no data power known for this prompt; "
                             f"their fractions are of the final prompt's ({'its samples' if final is None else note})")
    if final is None and len(set(prompts)) > 1:
        flags.append("prompt switched, and no data power known for the final prompt: every step is measured "
                     "against the final samples' power, which is the final prompt's")
    sources = {dp.source for dp in known.values() if dp is not None}
    if final is not None and len(sources) > 1:
        source = max(sources, key=POWER_SOURCES.index)  # the weakest of them
    means = np.stack([known[p].mean for p in prompts]) if centred else None
    return _Normalisation(power, source, note, nb * per_sample, nb * per_sample[-1] if final is not None
                          else nb * fallback_energy, per_sample, spectrum_aware, tuple(flags), means)


def _ideal(traj: Trajectory, model, method: str, levels: tuple[int, ...], data,
           norm: _Normalisation) -> tuple[np.ndarray | None, np.ndarray | None, str]:
    """``Comparison.ideal``, ``ideal_std`` and ``ideal_note``: the ideal process's fractions of each
    step's data power, the spread a run of this batch would show about them, and what they are."""
    source = data if data is not None else (model.data if model is not None else None)
    if source is None:
        return None, None, "no data to draw (the model declares none; compare(..., data=folder) gives some)"
    if traj.sample.shape[-2:] != traj.x0.shape[-2:]:
        return None, None, "the run was recorded pooled (record_scale > 1): its data's pooled process is not drawn"
    if data is None and source.gaussian and np.isfinite(norm.spectrum_aware).all():
        # E|x̂0 band|² / E|x0 band|² of the Wiener filter on Gaussian data is the spectrum-aware fraction itself
        return (norm.spectrum_aware.copy(), None,
                "exact: for Gaussian data the ideal process is the spectrum-aware curve (closed form)")
    try:
        found = ideal_process(traj, model, method=method, levels=levels, data=data, with_std=True)
    except Exception as exc:  # the measurement stands without it
        return None, None, f"{type(exc).__name__}: {exc}"
    if found is None:
        return None, None, "no data to draw"
    energy, spread = found
    exact = "exact posterior" if source.exact else "the model's denoiser"
    return energy / norm.per_sample, spread / norm.per_sample, f"{exact} on forward-noised draws of {source.description}"


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
        self._means: dict = {}  # prompt → its data mean (one sample is measured about it), or None

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
        new = spectral.step_band_energies(torch.stack([self._centred(s.x0, s.prompt) for s in steps]), self.levels,
                                          self.method, self._reference())
        self._energies = new if self._energies is None else torch.cat([self._energies, new])

    def _centred(self, x: torch.Tensor, prompt) -> torch.Tensor:
        """One sample about its prompt's data mean, as :func:`compare` measures it (where it is known)."""
        if x.shape[0] != 1 or self.model is None:
            return x
        if prompt not in self._means:
            try:
                mean = self.model.data_mean(prompt, *x.shape[-2:])  # cheaper than the moments, where a model says so
            except ValueError:  # a prompt whose data the model cannot name (cat AND moon)
                mean = None
            if mean is None:
                data = prompt_data_power(self.model, prompt, *x.shape[-2:])
                mean = None if data is None else data.mean
            self._means[prompt] = None if mean is None else torch.as_tensor(mean, dtype=x.dtype)
        mean = self._means[prompt]
        return x if mean is None else x - mean

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
            self._centred(final, self.steps[-1].prompt)[None], self.levels, self.method, self._reference())[0]
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
