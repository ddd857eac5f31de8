"""chromaviz.analysis: the spectrum that stands in for the data when a model has none."""

import numpy as np
import pytest
import torch

from chromaviz import GaussianPowerLaw, compare, sample
from chromaviz.analysis import centred_rapsd, data_power
from chromaviz.models import power_law_grid


def test_centred_rapsd_is_unbiased_for_white_noise():
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(16, 3, 64, 64, generator=g) * 2.0 + 5.0  # variance 4 around a shared mean of 5
    freqs, power = centred_rapsd(noise)
    assert freqs[0] == 0
    assert abs(power[1:].mean() - 4.0) < 0.04  # without the B/(B−1) correction: 3.75


def test_data_power_prefers_the_models_exact_spectrum_then_the_samples():
    model = GaussianPowerLaw()
    power, source = data_power(model, 32, 32)
    assert source == "model" and np.allclose(power, power_law_grid(32, 32, 0.04, 2.0))
    assert data_power(None, 32, 32) == (None, "none")
    samples = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    power, source = data_power(None, 32, 32, samples)
    assert source == "samples" and power.shape == (32, 32)
    assert abs(np.median(power) - 1.0) < 0.15  # white noise samples: a flat spectrum near 1


def test_compare_states_its_normalisation_and_measures_against_the_run_as_sampled():
    from chromaviz import compare, sample
    from chromaviz.analysis import StepwiseComparison

    model = GaussianPowerLaw(size=32)
    traj = sample(model, num_inference_steps=12, batch_size=4, device="cpu")
    c = compare(traj, model)
    assert c.normalisation == "data power" and c.prediction_kind == "exact"
    assert c.format_table().splitlines()[0].startswith("fractions of the data power")
    assert c.max_deviation < 1e-4 < c.max_deviation_continuous
    # Measured: band energy over the data power; its normalised form is the ratio to the final sample.
    np.testing.assert_allclose(c.normalised().measured, traj.signal_fractions().numpy(), rtol=1e-9)
    inh = c.inheritance
    np.testing.assert_allclose(inh.at_start_measured, c.measured[0])
    np.testing.assert_allclose(inh.missing_predicted, 1 - c.predicted_final)
    assert len(inh.format_table().splitlines()) == 2 + len(c.levels)
    # The live, step-by-step form measures the same numbers.
    live = StepwiseComparison(model)
    live.extend(traj.steps)
    np.testing.assert_allclose(live.comparison(traj.final).measured, c.measured, rtol=1e-12)


def test_pyramid_comparison_uses_the_pyramid_theory():
    from chromaviz import compare, sample

    model = GaussianPowerLaw(size=32)
    traj = sample(model, num_inference_steps=12, batch_size=4, device="cpu", record=("x0",))
    rings, pyramid = compare(traj, model), compare(traj, model, method="pyramid")
    assert pyramid.method == "pyramid" and pyramid.max_deviation < 1e-4
    assert np.abs(pyramid.spectrum_aware - rings.spectrum_aware).max() > 0.01  # a different theory for other bands


def test_compare_refuses_another_models_spectrum():
    """``compare(gaussian_run, ExemplarMixture())`` measured the run against the mixture's data without a word."""
    from chromaviz.models import ExemplarMixture

    traj = sample(GaussianPowerLaw(size=16), num_inference_steps=2, batch_size=1, device="cpu")
    with pytest.raises(ValueError, match=r"sampled by the model 'gaussian', and compare\(\) was given 'exemplars'"):
        compare(traj, ExemplarMixture())
