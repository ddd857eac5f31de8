"""The model's ideal process, the data power every fraction is of, the lower bound and band births
(issue 25, items 4–6): docs/chromatography.md, "Four references"."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from chromaviz import GaussianPowerLaw, sample, spectral, theory
from chromaviz.analysis import compare, ideal_process, prompt_data_power
from chromaviz.models import ExemplarMixture
from chromaviz.noise import Schedule

SIZE = 32
STEPS = 25
BATCH = 16


@pytest.fixture(scope="module")
def exemplars():
    return ExemplarMixture(size=SIZE)


@pytest.fixture(scope="module")
def cat_run(exemplars):
    traj = sample(exemplars, "cat", num_inference_steps=STEPS, batch_size=BATCH, height=SIZE, width=SIZE,
                  device="cpu", seed=3)
    return traj, compare(traj, exemplars)


def test_exemplar_mixture_declares_its_exact_data_power(exemplars):
    """The enumerated windows' variance per mode matches a large batch of draws (Monte Carlo, 2048)."""
    mean, power = exemplars.data_moments("cat", SIZE, SIZE)
    x = exemplars.draw_data("cat", 2048, (SIZE, SIZE), torch.Generator().manual_seed(0)).double()
    spec = torch.fft.fft2(x - x.mean(0), norm="ortho").abs().square().mean(0).numpy()
    levels = spectral.levels_for(SIZE, SIZE)
    weights = spectral.band_weights(SIZE, SIZE, levels, "rings")
    exact = np.einsum("lhw,chw->l", weights, power)
    drawn = np.einsum("lhw,chw->l", weights, spec)
    np.testing.assert_allclose(drawn, exact, rtol=0.12)
    np.testing.assert_allclose(x.mean(0).numpy(), mean, atol=0.1)
    caps = exemplars.capabilities()
    assert caps.data != "none" and not caps.exact_spectrum  # draws data; no Gaussian spectrum to replay with


@pytest.mark.parametrize("flips", [True, False])
@pytest.mark.parametrize("height, width", [(16, 16), (12, 19)])
def test_exemplar_data_moments_are_every_windows_own(flips, height, width):
    """The separable window power equals the definition: every window (and mirror), transformed whole."""
    model = ExemplarMixture(size=16, flips=flips)
    mean, power = model.data_moments("cat", height, width)
    windows = model._sources("cat", height, width).unfold(-2, height, 1).unfold(-2, width, 1)
    windows = windows.permute(0, 2, 3, 1, 4, 5).reshape(-1, 3, height, width)  # (every window, C, h, w)
    first = windows.mean(0)
    second = torch.fft.fft2(windows, norm="ortho").abs().square().mean(0)
    variance = second - torch.fft.fft2(first, norm="ortho").abs().square()
    np.testing.assert_allclose(mean, first.numpy(), atol=1e-13)
    np.testing.assert_allclose(power - model.texture_power(height, width)[None], variance.clamp_min(0).numpy(),
                               rtol=1e-9, atol=1e-12)


def test_ideal_process_is_evaluated_once_per_noise_level_and_prompt():
    """A second run at the same noise levels (another seed) reuses the rows: no model call, same curve."""
    calls = []

    class Counted(ExemplarMixture):
        def __call__(self, x_t, noise, cond):
            calls.append(len(x_t))
            return super().__call__(x_t, noise, cond)

    model = Counted(size=16)
    first = sample(model, "cat", num_inference_steps=8, batch_size=2, height=16, width=16, seed=0)
    again = sample(model, "cat", num_inference_steps=8, batch_size=4, height=16, width=16, seed=1)
    calls.clear()
    a = ideal_process(first, model, with_std=True)
    evaluated = len(calls)
    b = ideal_process(again, model, with_std=True)
    assert evaluated == 8 and len(calls) == evaluated  # the second: none
    fresh = ideal_process(again, ExemplarMixture(size=16), with_std=True)
    np.testing.assert_array_equal(b[0], fresh[0])
    np.testing.assert_allclose(b[1], fresh[1], rtol=1e-12)  # the run's own batch in the spread: 4, not 2
    assert not np.allclose(a[1], b[1])
    ideal_process(again, model, method="pyramid")
    assert len(calls) == 2 * evaluated  # other bands: evaluated again


def test_exemplar_run_is_measured_against_its_exact_data_power(cat_run, exemplars):
    traj, c = cat_run
    assert c.power_source == "model data" and not c.fitted and "exact" in c.power_note
    # switching the prediction off no longer changes the measurement (it was divided by a fitted spectrum)
    bare = compare(traj, exemplars, predict=False, ideal=False)
    np.testing.assert_allclose(bare.measured, c.measured, rtol=1e-12)
    assert c.prediction_kind == "approximation"  # the Gaussian of the same data power, as sampled: no fit


def test_exemplar_run_lies_around_its_ideal_process_which_lies_above_the_lower_bound(cat_run):
    """Run − ideal is the sampler's share (25 DDIM steps); ideal − bound ≥ 0 within Monte Carlo noise.

    Measured (32×32, batch 16, seed 3): max |G − ideal| 0.21, mean 0.04; min (ideal − s) −0.02.
    """
    _, c = cat_run
    assert c.ideal is not None and c.ideal.shape == c.measured.shape and np.isfinite(c.ideal).all()
    assert "exact posterior" in c.ideal_note
    gap = np.abs(c.measured - c.ideal)
    assert gap.mean() < 0.08 and gap.max() < 0.35, c.format_table(25)
    assert np.all(np.abs(c.measured[-1] - c.ideal[-1]) < 0.15)  # both end near the data power (batch noise)
    assert (c.ideal - c.lower_bound).min() > -0.06, c.format_table(25)  # the bound holds (Monte Carlo noise)
    assert (c.ideal - c.lower_bound).mean() > 0.05  # memorised photographs form far earlier than Gaussian data


def test_exemplar_runs_lie_within_their_band_around_the_ideal_process_and_a_coarse_sampler_does_not(exemplars):
    """ideal ± 2·ideal_std: the spread of a run of this batch (and of the draws themselves) about the
    model's ideal process. Over seeds a 25-step DDIM run covers ~0.9 of the cells (the rest is the
    sampler's share and the band's approximation); 3 steps leave the ideal process far behind."""
    coverage = []
    for seed in (3, 4, 5):
        traj = sample(exemplars, "cat", num_inference_steps=STEPS, batch_size=BATCH, height=SIZE, width=SIZE,
                      device="cpu", seed=seed)
        c = compare(traj, exemplars)
        assert c.ideal_std is not None and c.ideal_std.shape == c.ideal.shape and (c.ideal_std > 0).all()
        coverage.append(c.ideal_coverage)
    assert np.mean(coverage) >= 0.85, coverage
    coarse = sample(exemplars, "cat", num_inference_steps=3, batch_size=BATCH, height=SIZE, width=SIZE, device="cpu", seed=3)
    assert compare(coarse, exemplars).ideal_coverage < 0.5


def test_gaussian_ideal_process_is_the_spectrum_aware_curve():
    """For Gaussian data the bound is attained: the ideal process equals s_b up to Monte Carlo noise."""
    model = GaussianPowerLaw(size=SIZE)
    traj = sample(model, num_inference_steps=10, batch_size=4, height=SIZE, width=SIZE, device="cpu")
    energy = ideal_process(traj, model, batch=256, levels=(1, 2, 4))
    power = prompt_data_power(model, None, SIZE, SIZE)
    assert power.source == "model"
    ideal = energy / power.band_energy((1, 2, 4), "rings", "batch")
    spectrum_aware = compare(traj, model, levels=(1, 2, 4), ideal=False).spectrum_aware
    np.testing.assert_allclose(ideal, spectrum_aware, atol=0.05)


def test_gaussian_ideal_in_compare_is_the_closed_form_the_monte_carlo_above_confirms():
    """compare() no longer draws for Gaussian data (1.45 s against a 0.51 s run): the ideal process is
    the spectrum-aware curve, which the test above checks against draws through the model's denoiser."""
    model = GaussianPowerLaw(size=SIZE)
    traj = sample(model, num_inference_steps=10, batch_size=4, height=SIZE, width=SIZE, device="cpu")
    c = compare(traj, model)
    np.testing.assert_array_equal(c.ideal, c.spectrum_aware)
    assert "closed form" in c.ideal_note


def test_prompt_switched_runs_are_fractions_of_the_active_prompts_power(exemplars):
    """[cat:moon:m=4] once showed G up to 7.7 'of the data power' (the moon's); now each step's own."""
    traj = sample(exemplars, "[cat:moon:m=4]", num_inference_steps=20, batch_size=8, height=SIZE, width=SIZE,
                  device="cpu")
    c = compare(traj, exemplars, ideal=False)
    assert {"cat", "moon"} <= set(traj.prompts) and not c.flags
    assert np.nanmax(c.measured) < 1.5, c.format_table(20)
    cat = prompt_data_power(exemplars, "cat", SIZE, SIZE).band_energy(c.levels, "rings", "batch")
    moon = prompt_data_power(exemplars, "moon", SIZE, SIZE).band_energy(c.levels, "rings", "batch")
    first = traj.prompts.index("moon")
    x0 = traj.x0
    raw = spectral.step_band_energies(x0, c.levels, "rings", "batch").numpy() / (len(x0[0]) - 1)
    np.testing.assert_allclose(c.measured[:first], raw[:first] / cat, rtol=1e-9)
    np.testing.assert_allclose(c.measured[first:], raw[first:] / moon, rtol=1e-9)


def test_a_prompt_without_data_is_flagged(exemplars):
    """A prompt whose data the model cannot give (two photographs AND-ed) is flagged, not hidden."""
    traj = sample(exemplars, lambda i, noise: "cat AND moon" if i < 6 else "moon", num_inference_steps=12,
                  batch_size=4, height=SIZE, width=SIZE, device="cpu")
    c = compare(traj, exemplars, ideal=False, predict=False)
    assert c.flags and "no data power known" in c.flags[0]
    assert "flag:" in c.format_table()


def test_models_without_data_are_fitted_to_the_run_and_say_so():
    class Hidden(GaussianPowerLaw):
        def data_power(self, height, width):
            return None

    model = Hidden()
    model.data = None  # no spectrum and no data: nothing to measure the run against
    traj = sample(model, num_inference_steps=10, batch_size=4, height=SIZE, width=SIZE, device="cpu")
    c = compare(traj, model)
    assert c.fitted and c.power_source == "samples" and c.ideal is None
    assert np.isnan(c.max_deviation) and np.isnan(c.max_deviation_continuous)
    assert np.isnan(c.inheritance.missing_measured).all()  # circular: 1 − G_final is 0 by construction
    assert "fitted to this run" in c.format_table()


def test_band_births_come_after_the_m2_law():
    """SD's schedule, unit-variance α = 2 data at 64×64, m = 1 … 8: 0.95–1.25 nats (rings), 98–170
    timesteps later than −2·ln m; box-pyramid bands 0.82–0.87 nats."""
    power = GaussianPowerLaw(size=64).power(64, 64)
    schedule = Schedule.preset("scaled_linear")
    for method, (lo, hi) in (("rings", (0.6, 1.3)), ("pyramid", (0.6, 1.3))):
        timings = theory.level_timings(schedule, (1, 2, 4, 8, 16, 32), power=power, method=method)[:4]
        delays = np.array([lt.band_delay for lt in timings])
        assert ((delays > lo) & (delays < hi)).all(), (method, delays)
        assert all(lt.band_birth_timestep < lt.birth_timestep for lt in timings)
    weights = spectral.band_weights(64, 64, (1, 2, 4, 8, 16, 32), "rings")
    births = theory.band_birth_log_snr(power, weights)
    s = theory.band_signal_fraction(births, power, weights)
    np.testing.assert_allclose(np.diag(s), 0.5, atol=1e-6)


def test_a_random_weight_pipeline_shows_no_agreement(tmp_path):
    """A tiny random-weight SD pipeline: without data nothing is a test (fitted, NaN deviations); with
    a folder of images its samples are far from the data power and from its own ideal process."""
    pytest.importorskip("diffusers")
    import diffusers_models as tiny
    from PIL import Image

    from chromaviz.models.diffusers.adapter import load_pipeline
    from chromaviz.models.photos import load_photo

    from chromaviz.sampling.trajectory import SuspectRunWarning

    model = load_pipeline(tiny.save_sd(tmp_path / "sd"))
    with pytest.warns(SuspectRunWarning, match="initial noise"):  # random weights do not denoise, and it says so
        traj = sample(model, "a photo of a cat", num_inference_steps=6, batch_size=4, height=32, width=32,
                      device="cpu")
    with pytest.warns(SuspectRunWarning):
        bare = compare(traj, model)
    assert bare.fitted and np.isnan(bare.max_deviation) and bare.ideal is None
    assert "fitted to this run" in bare.format_table()
    folder = tmp_path / "images"
    folder.mkdir()
    for word in ("cat", "coffee", "astronaut", "rocket"):
        rgb = ((load_photo(word, 64, 64).transpose(1, 2, 0) + 1) * 127.5).clip(0, 255).astype(np.uint8)
        Image.fromarray(rgb).save(folder / f"{word}.png")
    with pytest.warns(SuspectRunWarning):
        c = compare(traj, model, data=folder)
    assert not c.fitted and c.power_source == "data draws" and c.ideal is not None
    assert "4 images" in c.power_note
    off = np.abs(np.log(c.measured_final))  # random weights: the sample's band power is not the data's
    assert off.max() > np.log(3), c.format_table()
    assert c.max_deviation_continuous > 0.5
