"""chromaviz.analysis: the spectrum that stands in for the data when a model has none."""

import numpy as np
import torch

from chromaviz import GaussianPowerLaw
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
