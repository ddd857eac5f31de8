"""Tests for chromaviz.theory: signal fractions, chromatograms, level timings, time adjustment.

Expected values come from THEORY.md §2–§6, written out here in numpy (sigmoid, m²·SNR, …) or
taken from diffusers' own ``alphas_cumprod``; never from chromaviz's output.
"""

from __future__ import annotations

import math

import diffusers
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from chromaviz import theory
from chromaviz.models.gaussian import power_law_grid
from chromaviz.noise import plan_steps
from chromaviz.noise.schedules import Schedule

LEVELS = (1, 2, 4, 8, 16, 32, 64, 128)
SD_KW = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)

SCHEDULES = {
    "linear": Schedule.preset("linear"),
    "scaled_linear": Schedule.preset("scaled_linear"),
    "squaredcos_cap_v2": Schedule.preset("squaredcos_cap_v2"),
    "zero_snr": Schedule.preset("scaled_linear").zero_terminal_snr(),
}
FLOW = Schedule.flow_matching(3.0)
SETTINGS = settings(max_examples=60, deadline=None)


def sigmoid(z):
    z = np.asarray(z, dtype=np.float64)
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-z))


def abar_ref(schedule_name: str, t) -> np.ndarray:
    """ᾱ(t) from diffusers' own alphas_cumprod, linear between integer timesteps."""
    ab = _DIFFUSERS_ABAR[schedule_name]
    return np.interp(np.asarray(t, dtype=np.float64), np.arange(len(ab)), ab)


_PRESET_KW = {
    "linear": dict(beta_schedule="linear", beta_start=1e-4, beta_end=0.02),
    "scaled_linear": SD_KW,
    "squaredcos_cap_v2": dict(beta_schedule="squaredcos_cap_v2"),
    "zero_snr": dict(SD_KW, rescale_betas_zero_snr=True),
}
_DIFFUSERS_ABAR = {n: diffusers.DDPMScheduler(**kw).alphas_cumprod.double().numpy() for n, kw in _PRESET_KW.items()}

schedule_names = st.sampled_from(sorted(SCHEDULES))
levels_st = st.sampled_from(LEVELS)


# ------------------------------------------------------------------------------------------
# signal fraction
# ------------------------------------------------------------------------------------------


@SETTINGS
@given(
    name=schedule_names,
    m=levels_st,
    ts=st.lists(st.floats(0, 999, allow_nan=False), min_size=2, max_size=40),
)
def test_signal_fraction_is_monotone_in_t(name, m, ts):
    s = SCHEDULES[name]
    t = np.sort(np.asarray(ts))
    frac = theory.signal_fraction_at(s, t, [m])[:, 0]
    assert frac.shape == t.shape
    assert np.all(np.diff(frac) <= 1e-15)
    assert np.all((frac >= 0) & (frac <= 1))
    # s_m = m²·SNR / (1 + m²·SNR) with SNR from diffusers' ᾱ
    ab = abar_ref(name, t)
    expected = m**2 * ab / ((1 - ab) + m**2 * ab)
    np.testing.assert_allclose(frac, expected, atol=2e-6)


def test_signal_fraction_is_sigmoid_of_shifted_log_snr():
    lam = np.array([-np.inf, -20.0, -3.0, -1.386, 0.0, 2.5, 30.0, np.inf])
    out = theory.signal_fraction(lam, LEVELS)
    assert out.shape == (len(lam), len(LEVELS))
    for j, m in enumerate(LEVELS):
        np.testing.assert_allclose(out[:, j], sigmoid(lam + 2 * math.log(m)), rtol=1e-12, atol=0)
    assert np.all(out[0] == 0) and np.all(out[-1] == 1)
    # each octave adds 2 ln 2 to the log-SNR (THEORY §2)
    np.testing.assert_allclose(theory.level_offset([1, 2, 4]), [0, 2 * math.log(2), 4 * math.log(2)])
    np.testing.assert_allclose(theory.birth_log_snr([4]), [-2 * math.log(4)])
    with pytest.raises(ValueError):
        theory.signal_fraction(lam, [0])


# ------------------------------------------------------------------------------------------
# the same bell in log-SNR coordinates
# ------------------------------------------------------------------------------------------


@SETTINGS
@given(lam=st.floats(-40, 40, allow_nan=False), m=levels_st)
def test_rate_per_log_snr_is_the_same_bell_for_every_level(lam, m):
    shifted = theory.rate_per_log_snr([lam - 2 * math.log(m)], [m])[0, 0]
    base = theory.rate_per_log_snr([lam], [1])[0, 0]
    assert shifted == pytest.approx(base, rel=1e-9, abs=1e-13)
    # sigmoid′(λ) = e^λ / (1 + e^λ)² (s·(1 − s) loses relative precision far in the tails)
    assert base == pytest.approx(math.exp(-abs(lam)) / (1 + math.exp(-abs(lam))) ** 2, rel=1e-9, abs=1e-13)


@pytest.mark.parametrize("m", LEVELS)
def test_bell_peaks_at_birth_with_value_one_quarter(m):
    lam = np.linspace(-25, 15, 400_001)  # step 1e-4
    rate = theory.rate_per_log_snr(lam, [m])[:, 0]
    i = np.argmax(rate)
    assert lam[i] == pytest.approx(-2 * math.log(m), abs=1.5e-4)
    assert rate[i] == pytest.approx(0.25, abs=1e-8)
    # and it is the derivative of s_m in λ
    s = theory.signal_fraction(lam, [m])[:, 0]
    np.testing.assert_allclose(np.gradient(s, lam), rate, atol=1e-8)


# ------------------------------------------------------------------------------------------
# time adjustment (THEORY §6)
# ------------------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    name=st.sampled_from(sorted(SCHEDULES) + ["flow"]),
    t=st.floats(0, 1, allow_nan=False),
    m=st.floats(1, 16, allow_nan=False),
)
def test_time_adjustment(name, t, m):
    s = FLOW if name == "flow" else SCHEDULES[name]
    t = s.t_min + t * (s.t_max - s.t_min)
    assume(name != "flow" or t == 0 or t > 1e-9)  # e^{λ/2} overflows for subnormal t
    # At the other end, a float64 timestep within 1e-9·T of T cannot carry T − t, so λ there is noise.
    assume(name != "flow" or s.t_max - t > 1e-9 * s.t_max or t == s.t_max)
    # the schedule's maximum λ, at its least noisy timestep (ᾱ_0 checked against diffusers elsewhere)
    ab0 = s.signal_variance[0]
    lam_max = math.inf if name == "flow" else math.log(ab0 / (1 - ab0))
    lam_t = float(s.log_snr(t))
    target = lam_t + 2 * math.log(m)
    assume(not math.isfinite(lam_max) or abs(target - lam_max) > 1e-6)
    tau, rho = theory.time_adjustment(s, t, m)
    tau, rho = float(tau), float(rho)
    if target > lam_max:
        assert math.isnan(tau)
    else:
        assert not math.isnan(tau)
        assert s.t_min <= tau <= t + 1e-9  # pooling makes it less noisy
        lam_tau = float(s.log_snr(tau))
        if math.isinf(target):
            assert lam_tau == target
        elif target > -25:
            assert lam_tau == pytest.approx(target, abs=1e-6)
        else:  # within ~1e-10 of a zero-SNR end, float64 timesteps cannot resolve λ to 1e-6
            assert lam_tau == pytest.approx(target, rel=1e-2)
    # intensity ρ = √(α² + σ²/m²) with (α, σ) of the network input
    if name == "flow":
        alpha, sigma = 1 - t / 1000, t / 1000
    else:
        ab = float(abar_ref(name, t))
        alpha, sigma = math.sqrt(ab), math.sqrt(1 - ab)
    assert rho == pytest.approx(math.sqrt(alpha**2 + sigma**2 / m**2), rel=1e-5)


def test_time_adjustment_vectorised_and_identity():
    s = SCHEDULES["scaled_linear"]
    t = np.array([100.0, 500.5, 999.0])
    tau, rho = theory.time_adjustment(s, t, 1.0)
    np.testing.assert_allclose(tau, t, atol=1e-6)
    np.testing.assert_allclose(rho, 1.0, rtol=1e-12)
    tau, rho = theory.time_adjustment(s, t, 4.0)
    assert tau.shape == rho.shape == t.shape
    # the pooled sample at t = 999 of SD sits at SNR 16·SNR(999): near level 4's birth side
    ab = _DIFFUSERS_ABAR["scaled_linear"]
    snr_target = 16 * ab[999] / (1 - ab[999])
    abar_tau = snr_target / (1 + snr_target)
    k = np.searchsorted(-ab, -abar_tau)  # ᾱ decreasing: first index with ᾱ ≤ target
    assert k - 1 <= tau[2] <= k
    with pytest.raises(ValueError):
        theory.time_adjustment(s, t, 0.5)


# ------------------------------------------------------------------------------------------
# rates integrate to the signal
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SCHEDULES) + ["flow"])
def test_rate_per_timestep_integrates_to_signal(name):
    s = FLOW if name == "flow" else SCHEDULES[name]
    levels = [1, 2, 8, 32]
    if name == "flow":
        t = np.linspace(s.t_min, s.t_max, 200_001)
    else:
        # ᾱ is piecewise linear, so the rate jumps at integer timesteps; a grid that puts every
        # integer at the middle of a trapezoid keeps the rule second-order accurate across jumps.
        n = 100
        t = (np.arange(999)[:, None] + (np.arange(n) + 0.5)[None, :] / n).ravel()
        t = np.concatenate([[0.0], t, [999.0]])
    rate = theory.rate_per_timestep(s, t, levels)
    assert np.all(np.isfinite(rate)) and np.all(rate >= 0)
    integral = np.trapezoid(rate, t, axis=0)
    # s_m at both ends, from first principles
    if name == "flow":
        lam = np.array([np.inf, -np.inf])
    else:
        ab = _DIFFUSERS_ABAR[name]
        with np.errstate(divide="ignore"):
            lam = np.log(ab[[0, -1]]) - np.log1p(-ab[[0, -1]])
    expected = np.array([sigmoid(lam[0] + 2 * math.log(m)) - sigmoid(lam[1] + 2 * math.log(m)) for m in levels])
    np.testing.assert_allclose(integral, expected, atol=2e-5)


@pytest.mark.parametrize("scheduler", ["ddim", "euler", "dpmsolver++"])
def test_rate_per_step_sums_to_signal_at_last_step(scheduler):
    s = SCHEDULES["scaled_linear"]
    lam = plan_steps(s, 30, scheduler).log_snr
    rate = theory.rate_per_step(lam, LEVELS)
    assert rate.shape == (len(lam), len(LEVELS))
    for j, m in enumerate(LEVELS):
        np.testing.assert_allclose(np.cumsum(rate[:, j]), sigmoid(lam + 2 * math.log(m)), atol=1e-12)
        assert rate[0, j] == pytest.approx(sigmoid(lam[0] + 2 * math.log(m)))  # inherited from noise
    assert np.all(rate >= 0)


# ------------------------------------------------------------------------------------------
# level timings (THEORY §3, §6)
# ------------------------------------------------------------------------------------------


def test_level_timings_stable_diffusion():
    s = SCHEDULES["scaled_linear"]
    ab = _DIFFUSERS_ABAR["scaled_linear"]
    timings = {lt.level: lt for lt in theory.level_timings(s, LEVELS)}
    assert timings[4].birth_timestep == pytest.approx(745, abs=3)
    assert timings[2].birth_timestep == pytest.approx(563, abs=3)
    for m in (1, 2, 4, 8):
        lt = timings[m]
        assert not lt.inherited
        assert lt.birth_log_snr == pytest.approx(-2 * math.log(m))
        # m²·SNR(t_m) = 1 ⇔ ᾱ(t_m) = 1/(1 + m²), with diffusers' ᾱ interpolated linearly
        assert float(abar_ref("scaled_linear", lt.birth_timestep)) == pytest.approx(1 / (1 + m * m), abs=2e-6)
        # the per-timestep peak: maximum of −ds_m/dt of diffusers' ᾱ (finite differences)
        sm = m * m * ab / ((1 - ab) + m * m * ab)
        rate = -np.diff(sm)  # mean rate over [k, k + 1]; the top of the bell is flat
        assert rate[min(int(lt.peak_timestep), 998)] >= (1 - 2e-3) * rate.max()
        assert lt.peak_timestep == pytest.approx(np.argmax(rate) + 0.5, abs=5)
    # earlier (noisier) births for coarser levels
    births = [timings[m].birth_timestep for m in (1, 2, 4, 8)]
    assert births == sorted(births)
    snr_T = ab[-1] / (1 - ab[-1])
    assert 1 / math.sqrt(snr_T) == pytest.approx(14.6, abs=0.05)
    for m in (16, 32, 64, 128):
        assert timings[m].inherited
        assert math.isnan(timings[m].birth_timestep) and math.isnan(timings[m].peak_timestep)
    for m in LEVELS:
        assert timings[m].signal_at_start == pytest.approx(m * m * snr_T / (1 + m * m * snr_T), rel=1e-5)
    assert theory.inherited_levels(s) == [16, 32, 64, 128]
    assert theory.inherited_levels(s, (1, 8, 15, 16)) == [15, 16]


def test_dominant_level():
    s = SCHEDULES["scaled_linear"]
    ab = _DIFFUSERS_ABAR["scaled_linear"]
    t = np.array([0, 100, 354, 563, 745, 999])
    np.testing.assert_allclose(theory.dominant_level(s, t), 1 / np.sqrt(ab[t] / (1 - ab[t])), rtol=5e-5)
    assert float(theory.dominant_level(s, 999)) == pytest.approx(14.6, abs=0.05)
    z = SCHEDULES["zero_snr"]
    assert float(theory.dominant_level(z, 999)) == np.inf


def test_zero_terminal_snr_inherits_nothing():
    z = SCHEDULES["zero_snr"]
    assert theory.inherited_levels(z) == []
    for lt in theory.level_timings(z, LEVELS):
        assert not lt.inherited
        assert lt.signal_at_start == 0.0
        assert 0 < lt.birth_timestep < 999
        assert float(abar_ref("zero_snr", lt.birth_timestep)) == pytest.approx(1 / (1 + lt.level**2), abs=2e-6)


# ------------------------------------------------------------------------------------------
# spectrum-aware form
# ------------------------------------------------------------------------------------------


def _random_partition(h, w, n, seed):
    labels = np.random.default_rng(seed).integers(0, n, size=(h, w))
    labels[:n, 0] = np.arange(n)  # no empty band
    return np.stack([labels == b for b in range(n)])


def test_band_signal_fraction_flat_spectrum_is_sigmoid():
    masks = _random_partition(16, 12, 4, 0)
    lam = np.linspace(-10, 10, 41)
    out = theory.band_signal_fraction(lam, np.ones((16, 12)), masks)
    assert out.shape == (41, 4)
    for b in range(4):
        np.testing.assert_allclose(out[:, b], sigmoid(lam), rtol=1e-12)


def test_band_signal_fraction_power_m2_is_level_m():
    masks = _random_partition(16, 16, len(LEVELS[:5]), 1)
    power = np.zeros((16, 16))
    for b, m in enumerate(LEVELS[:5]):
        power[masks[b]] = m * m
    lam = np.linspace(-12, 8, 81)
    out = theory.band_signal_fraction(lam, power, masks)
    for b, m in enumerate(LEVELS[:5]):
        np.testing.assert_allclose(out[:, b], sigmoid(lam + 2 * math.log(m)), rtol=1e-12)


def test_band_signal_fraction_general_and_channels():
    rng = np.random.default_rng(2)
    masks = _random_partition(8, 8, 3, 3)
    power = rng.lognormal(0, 2, size=(3, 8, 8))
    lam = np.array([-5.0, 0.3, 4.0])
    out = theory.band_signal_fraction(lam, power, masks)
    snr = np.exp(lam)
    for b in range(3):
        p = power[:, masks[b]].ravel()
        r = snr[:, None] * p / (1 + snr[:, None] * p)
        np.testing.assert_allclose(out[:, b], (r * p).sum(1) / p.sum(), rtol=1e-12)
    with pytest.raises(ValueError):
        theory.band_signal_fraction(lam, power, masks[:, :4])


def test_band_signal_fraction_with_pyramid_weights_is_the_weighted_mean_over_modes():
    """The one spectrum-aware rule for any band weights: Σ_k w_b·P·r_k / Σ_k w_b·P, mode by mode."""
    from scipy.special import expit

    from chromaviz import spectral

    power = np.random.default_rng(4).lognormal(0, 2, size=(2, 8, 8))
    weights = spectral.band_weights(8, 8, (1, 2, 4), "pyramid")
    lam = np.array([-np.inf, -3.0, 0.0, 2.5, np.inf])
    r = expit(lam[:, None, None, None] + np.log(power))  # (S, C, H, W)
    expected = np.einsum("schw,lhw,chw->sl", r, weights, power) / np.einsum("lhw,chw->l", weights, power)
    np.testing.assert_allclose(theory.band_signal_fraction(lam, power, weights), expected, atol=1e-12)


def test_power_grid_from_rapsd_reproduces_power_law():
    from chromaviz import spectral

    n, amp, alpha = 64, 0.04, 2.0
    ref = power_law_grid(n, n, amp, alpha)
    fy, fx = np.fft.fftfreq(n)[:, None], np.fft.fftfreq(n)[None, :]
    radius = np.sqrt(fy**2 + fx**2)
    inside = (radius >= 8 / n) & (radius <= 0.5)
    # an exact power law on the RAPSD's bins is reproduced exactly (interpolation in log-log)
    freqs = np.arange(n // 2 + 1) / n
    power = np.concatenate([[amp * n**alpha], amp * freqs[1:] ** -alpha])
    grid = theory.power_grid_from_rapsd(freqs, power, n, n)
    assert grid.shape == (n, n)
    np.testing.assert_allclose(grid[inside], ref[inside], rtol=1e-9)
    assert grid[0, 0] == power[0]
    # the measured RAPSD of a field whose spectrum is exactly the power law: within a few %
    import torch

    field = np.fft.ifft2(np.sqrt(ref), norm="ortho").real
    f_meas, p_meas = spectral.rapsd(torch.from_numpy(field)[None, None])
    grid = theory.power_grid_from_rapsd(f_meas.numpy(), p_meas.numpy(), n, n)
    np.testing.assert_allclose(grid[inside], ref[inside], rtol=0.03)


# ------------------------------------------------------------------------------------------
# chromatogram
# ------------------------------------------------------------------------------------------


def test_chromatogram_log_snr():
    s = SCHEDULES["scaled_linear"]
    levels = (1, 2, 4, 8)
    c = theory.chromatogram(s, levels, "log_snr", num_points=201)
    lo, hi = s.log_snr_range
    assert c.coordinate == "log_snr" and c.levels == levels
    assert c.x.shape == (201,) and c.signal.shape == c.rate.shape == (201, 4)
    assert c.x[0] == pytest.approx(lo) and c.x[-1] == pytest.approx(min(hi, 12.0))
    np.testing.assert_array_equal(c.log_snr, c.x)
    for j, m in enumerate(levels):
        sm = sigmoid(c.x + 2 * math.log(m))
        np.testing.assert_allclose(c.signal[:, j], sm, rtol=1e-12)
        np.testing.assert_allclose(c.rate[:, j], sm * (1 - sm), rtol=1e-9)
    z = theory.chromatogram(SCHEDULES["zero_snr"], levels, "log_snr", num_points=11)
    assert z.x[0] == -12.0  # −∞ clipped to the limits


def test_chromatogram_timestep():
    s = SCHEDULES["squaredcos_cap_v2"]
    c = theory.chromatogram(s, (1, 4), "timestep", num_points=1000)
    assert c.x.shape == (1000,) and c.signal.shape == c.rate.shape == (1000, 2)
    assert c.x[0] == 999 and c.x[-1] == 0 and np.all(np.diff(c.x) < 0)  # sampling order
    # the schedule's own ᾱ grid (checked against diffusers in test_schedules), interpolated here
    ab = np.interp(c.x, np.arange(1000), s.signal_variance)
    np.testing.assert_allclose(c.log_snr, np.log(ab) - np.log1p(-ab), rtol=1e-10)
    np.testing.assert_allclose(c.signal[:, 1], 16 * ab / ((1 - ab) + 16 * ab), atol=1e-6)
    # rate per timestep is −ds/dt: on this integer grid x[i+1] = k starts the linear piece
    # [k, k + 1] of ᾱ, over which ds/dt is nearly constant
    ds = -np.diff(c.signal, axis=0) / np.diff(c.x)[:, None]  # −ds/dt
    np.testing.assert_allclose(ds, c.rate[1:], rtol=0.02, atol=1e-3 * c.rate.max())
    assert np.argmax(ds[:, 1]) == pytest.approx(np.argmax(c.rate[1:, 1]), abs=3)


@pytest.mark.parametrize("scheduler", ["ddim", "euler"])
def test_chromatogram_step(scheduler):
    s = SCHEDULES["scaled_linear"]
    c = theory.chromatogram(s, (1, 2, 16), "step", num_inference_steps=20, scheduler=scheduler)
    lam = plan_steps(s, 20, scheduler).log_snr
    np.testing.assert_array_equal(c.log_snr, lam)
    np.testing.assert_array_equal(c.x, np.arange(len(lam)))
    assert c.signal.shape == c.rate.shape == (len(lam), 3)
    np.testing.assert_allclose(c.signal[:, 2], sigmoid(lam + 2 * math.log(16)), rtol=1e-12)
    np.testing.assert_allclose(c.rate.sum(0), c.signal[-1], atol=1e-12)
    f = theory.chromatogram(FLOW, (1, 2), "step", num_inference_steps=10)
    np.testing.assert_array_equal(f.log_snr, plan_steps(FLOW, 10, "flow_euler").log_snr)


def test_chromatogram_unknown_coordinate():
    with pytest.raises(ValueError, match="log_snr"):
        theory.chromatogram(SCHEDULES["linear"], (1, 2), "frequency")


def test_step_coordinates_read_a_step_plan_and_n_is_num_inference_steps():

    s = SCHEDULES["scaled_linear"]
    plan = plan_steps(s, 12, "pndm")  # S = 13 evaluations for N = 12
    c = theory.chromatogram(s, (1, 4), "step", plan=plan)
    assert len(c.x) == plan.num_evaluations == 13
    np.testing.assert_array_equal(c.log_snr, plan.log_snr)
    by_n = theory.chromatogram(s, (1, 4), "step", num_inference_steps=12, scheduler="pndm")
    np.testing.assert_array_equal(by_n.signal, c.signal)
