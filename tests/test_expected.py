"""The expected chromatography and its noise band (issue 25, item 1): calibrated, and able to fail.

``expected`` / ``expected_std`` come from the schedule, the sampler's steps and the data spectrum
alone (:func:`chromaviz.prediction.expected_run`). A conforming run lies within ±2σ at about 95 % of
its (step, level) cells; a denoiser that is not the Wiener filter of its declared spectrum does not.

Calibration runs: each sampler draws ``RUNS`` independent runs of batch B at once, as one batch of
``RUNS·B`` samples split into groups of B (every sampler and the Gaussian model act on each sample
alone, so a group is a run of batch B with its own noise; ``test_a_group_is_a_run`` checks it). The
whole table, with true runs seed by seed: ``python benchmarks/expected_cost.py --calibration``.
"""

import numpy as np
import pytest
import torch

from chromaviz import GaussianPowerLaw, sample, spectral
from chromaviz.analysis import Agreement, compare, planned_theory
from chromaviz.models.gaussian import power_law_grid
from chromaviz.noise import plan_steps
from chromaviz.prediction import expected_run, mode_gains

SIZE, STEPS, RUNS = 16, 20, 40
SAMPLERS = ("ddim", "dpmsolver++", "ddpm", "euler_ancestral")


class Declares(GaussianPowerLaw):
    """A Wiener denoiser of exponent ``exponent`` that declares the spectrum of exponent ``declared``."""

    def __init__(self, declared: float, **kwargs) -> None:
        super().__init__(**kwargs)
        self.declared = declared

    def data_power(self, height, width):
        return power_law_grid(height, width, self.amplitude, self.declared)


def group_fractions(model, plan, scheduler, batch, runs, seed, method="rings"):
    """G of ``runs`` runs of batch ``batch``, shape (runs, S, L), and their expectation."""
    traj = sample(model, num_inference_steps=STEPS, batch_size=runs * batch, seed=seed, record=("x0",), plan=plan,
                  scheduler=scheduler, device="cpu", height=SIZE, width=SIZE)
    x0 = traj.x0  # (S, runs·B, C, H, W)
    s = x0.shape[0]
    grouped = x0.reshape(s * runs, batch, *x0.shape[2:])  # step-major: row i·runs + r is run r at step i
    levels = spectral.levels_for(SIZE, SIZE)
    band = expected_run(plan.scheduler, plan.noise, model.data_power(SIZE, SIZE), batch_size=batch,
                        channels=model.channels, levels=levels, method=method)
    energies = spectral.step_band_energies(grouped, levels, method, spectral.batch_reference(batch)).numpy()
    return energies.reshape(s, runs, -1).transpose(1, 0, 2) / band.data_energy, band


@pytest.fixture(scope="module")
def model():
    return GaussianPowerLaw(size=SIZE)


@pytest.mark.parametrize("scheduler", SAMPLERS)
def test_band_is_calibrated(model, scheduler):
    plan = plan_steps(model.schedule, STEPS, scheduler)
    shares = {}
    for k, batch in enumerate((1, 4, 16)):
        g, band = group_fractions(model, plan, scheduler, batch, RUNS, seed=1000 * k + 7)
        inside = np.abs(g - band.mean) <= 2 * band.std
        shares[batch] = float(inside.mean())
    assert all(0.90 <= v <= 0.99 for v in shares.values()), f"{scheduler}: share within ±2σ per batch {shares}"


def test_pyramid_band_is_calibrated(model):
    plan = plan_steps(model.schedule, STEPS, "ddim")
    g, band = group_fractions(model, plan, "ddim", 4, RUNS, seed=3, method="pyramid")
    share = float((np.abs(g - band.mean) <= 2 * band.std).mean())
    assert 0.90 <= share <= 0.99, share


def test_moments_are_exact():
    """Mean and std of G against 2000 draws of the per-mode Gaussian fields (rings and pyramid, a
    deterministic and a stochastic sampler): the quadratic-form moments, Hermitian pairs and aliasing."""
    torch.manual_seed(0)
    model = GaussianPowerLaw(size=16)
    power = model.data_power(16, 16)
    values, groups = np.unique(power, return_inverse=True)
    for name in ("ddim", "euler_ancestral"):
        plan = plan_steps(model.schedule, 5, name)
        coef = torch.from_numpy(mode_gains(plan.scheduler, plan.noise, values).x0[:, :, groups.reshape(16, 16)])
        z = torch.fft.fft2(torch.randn(2000, coef.shape[1], 3, 2, 16, 16, dtype=torch.float64), norm="ortho")
        for method in ("rings", "pyramid"):
            band = expected_run(plan.scheduler, plan.noise, power, batch_size=3, channels=2, method=method)
            for i in (0, 4):
                x0 = torch.fft.ifft2((coef[i][None, :, None, None] * z).sum(1), norm="ortho").real
                g = spectral.step_band_energies(x0, (1, 2, 4), method, "batch").numpy() / band.data_energy
                np.testing.assert_allclose(g.mean(0), band.mean[i], rtol=0.02)
                np.testing.assert_allclose(g.std(0), band.std[i], rtol=0.08)


def test_a_group_is_a_run(model):
    """A run of batch 4 with its own seed and a group of 4 in a larger batch are alike: the same
    expectation, and compare() reports it (from the run's own scheduler) as the plan gives it."""
    plan = plan_steps(model.schedule, STEPS, "ddpm")
    traj = sample(model, num_inference_steps=STEPS, batch_size=4, seed=11, record=("x0",), plan=plan, scheduler="ddpm",
                  device="cpu")
    c = compare(traj, model, predict=False, ideal=False)
    planned = planned_theory(plan, model, SIZE, SIZE, batch_size=4)
    np.testing.assert_allclose(c.expected, planned.expected, rtol=1e-9)
    np.testing.assert_allclose(c.expected_std, planned.expected_std, rtol=1e-9)
    _, band = group_fractions(model, plan, "ddpm", 4, 2, seed=12)
    np.testing.assert_allclose(c.expected, band.mean, rtol=1e-9)
    assert c.expected.shape == c.expected_std.shape == c.measured.shape
    assert c.agreement.inside and c.theory.expected is c.expected


def test_a_wrong_denoiser_falls_outside_its_band():
    """Exponent 2.3 denoised, 2.0 declared: the run is outside its band and says so."""
    wrong = Declares(2.0, exponent=2.3, size=SIZE)
    for batch in (1, 16):
        traj = sample(wrong, num_inference_steps=STEPS, batch_size=batch, seed=5, record=("x0",), device="cpu")
        found = compare(traj, wrong, predict=False, ideal=False).agreement
        assert not found.inside and found.max_z > 10 and found.coverage < 0.5, found
        assert found.verdict.startswith("outside its ±2σ band at")
    right = GaussianPowerLaw(exponent=2.3, size=SIZE)
    traj = sample(right, num_inference_steps=STEPS, batch_size=16, seed=5, record=("x0",), device="cpu")
    assert compare(traj, right, predict=False, ideal=False).agreement.inside


def test_agreement_summary():
    e, s = np.full((3, 2), 0.5), np.full((3, 2), 0.1)
    g = e.copy()
    g[1, 1] = 1.23
    a = Agreement.of(g, e, s, (1, 2))
    assert a.max_z == pytest.approx(7.3, abs=1e-3) and a.worst_step == 1 and a.worst_level == 2
    assert a.coverage == pytest.approx(5 / 6) and not a.inside
    assert a.verdict == "outside its ±2σ band at 17% of cells, worst 7.3σ at step 1, m = 2"
    zero = Agreement.of(e * (1 + 1e-6), e, np.zeros_like(e), (1, 2))  # std 0, equal to rounding: 0σ, not NaN
    assert zero.max_z == 0 and zero.coverage == 1 and zero.inside
    none = Agreement.of(g, None, None, (1, 2), "the model declares no data spectrum")
    assert none.inside is None and np.isnan(none.max_z) and "not tested against an expected band" in none.verdict


def test_normalised_band_by_delta_method(model):
    """Divided by the last step: the last cell is exactly 1 ± 0, the rest within their band."""
    traj = sample(model, num_inference_steps=STEPS, batch_size=8, seed=2, record=("x0",), device="cpu")
    n = compare(traj, model, predict=False, ideal=False).normalised()
    assert n.expected is not None and n.expected.shape == n.measured.shape
    assert np.isfinite(n.expected_std).all() and (n.expected_std >= 0).all()
    assert n.agreement.coverage > 0.6


def test_no_band_without_an_exact_spectrum():
    from chromaviz.models import ExemplarMixture

    model = ExemplarMixture(size=16)
    traj = sample(model, "cat", num_inference_steps=4, batch_size=2, height=16, width=16, record=("x0",), device="cpu")
    c = compare(traj, model, predict=False, ideal=False)
    assert c.expected is None and c.expected_note and c.agreement.inside is None


def test_interpolated_moments_match_exact():
    """Above MAX_EXACT_MODES distinct powers a stochastic sampler's moments are interpolated in log P."""
    model = GaussianPowerLaw(size=48)
    plan = plan_steps(model.schedule, 10, "euler_ancestral")
    for method in ("rings", "pyramid"):
        a, b = (expected_run(plan.scheduler, plan.noise, model.data_power(48, 48), batch_size=4, channels=3,
                             method=method, exact=exact) for exact in (True, False))
        np.testing.assert_allclose(b.mean, a.mean, rtol=1e-5)
        np.testing.assert_allclose(b.std, a.std, rtol=1e-5)


def test_noises_share_one_lane_only_where_the_scheduler_keeps_nothing_between_steps():
    """DDPM and Euler ancestral keep nothing between steps, so their injected noises travel alike and share
    lane 1: the band's moments equal those of one lane per noise; a multistep SDE solver keeps one per noise."""
    import copy

    from diffusers import DPMSolverMultistepScheduler

    from chromaviz import prediction
    from chromaviz.noise.schedulers import set_timesteps, stepping_target

    model = GaussianPowerLaw(size=16)
    values = np.unique(model.data_power(16, 16))
    for name in ("ddpm", "euler_ancestral"):
        plan = plan_steps(model.schedule, 12, name)
        shared = mode_gains(plan.scheduler, plan.noise, values)
        assert shared.xt is not None and shared.x0.shape[1] == 2
        sched = copy.deepcopy(plan.scheduler)
        kwargs = {"generator": None}
        separate = prediction._stepped_gains(sched, plan.noise, torch.from_numpy(values), stepping_target(sched, plan.noise),
                                             kwargs, prediction._Probe(kwargs, "lanes"))
        assert separate.xt is None and separate.x0.shape[1] == 12  # ε and a lane for each of 11 noisy steps
        for a, b in [((shared.x0**2).sum(1), (separate.x0**2).sum(1)), ((shared.final**2).sum(0), (separate.final**2).sum(0)),
                     (shared.covariance_with(shared.final), separate.covariance_with(separate.final)),
                     (shared.covariance_with(shared.x0[-1]), separate.covariance_with(separate.x0[-1]))]:
            np.testing.assert_allclose(a, b, rtol=2e-6, atol=1e-12)  # Euler ancestral steps in float32
    multistep = plan_steps(model.schedule, 12, "dpmsolver++")
    sde = DPMSolverMultistepScheduler.from_config(multistep.scheduler.config, algorithm_type="sde-dpmsolver++")
    set_timesteps(sde, 12)
    gains = mode_gains(sde, multistep.noise, values)
    assert gains.xt is None and gains.x0.shape[1] > 2
