"""Tests for the built-in exact denoisers and the prediction contract (chromaviz.models).

The posterior means are recomputed here from their definitions (THEORY.md §5) with dense
matrices or explicit loops over every mixture component, not with the models' FFT shortcuts.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from chromaviz.models import (
    PARAMETERIZATIONS,
    ExemplarMixture,
    GaussianPowerLaw,
    join_prediction,
    split_prediction,
    vocabulary,
)
from chromaviz.models.photos import PHOTOS, load_photo
from chromaviz.noise import NoiseLevel


def _power_law_np(h: int, w: int, amplitude: float, exponent: float) -> np.ndarray:
    """A·|f|^(−α) on the unshifted FFT grid (cycles/pixel), DC at |f| = 1/max(H, W)."""
    f = np.sqrt(np.fft.fftfreq(h)[:, None] ** 2 + np.fft.fftfreq(w)[None, :] ** 2)
    f[0, 0] = 1 / max(h, w)
    return amplitude * f ** (-exponent)


def _dft_matrix(h: int, w: int) -> np.ndarray:
    """Orthonormal 2-D DFT as a dense (HW, HW) matrix acting on row-major flattened images."""
    fh = np.exp(-2j * np.pi * np.outer(np.arange(h), np.arange(h)) / h)
    fw = np.exp(-2j * np.pi * np.outer(np.arange(w), np.arange(w)) / w)
    return np.kron(fh, fw) / math.sqrt(h * w)


def _circulant_covariance(power: np.ndarray) -> np.ndarray:
    """Σ = F^H·diag(P)·F: the stationary covariance whose FFT-mode variances are P."""
    h, w = power.shape
    f = _dft_matrix(h, w)
    sigma = f.conj().T @ np.diag(power.ravel()) @ f
    assert np.abs(sigma.imag).max() < 1e-10
    return sigma.real


# ------------------------------------------------------------------------------------------
# GaussianPowerLaw
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("exponent", "amplitude"), [(2.0, 0.04), (1.3, 0.5), (0.0, 1.0)])
def test_gaussian_denoiser_is_wiener_filter(exponent, amplitude):
    model = GaussianPowerLaw(exponent, amplitude, channels=3)
    rng = np.random.default_rng(0)
    x_t = rng.standard_normal((2, 3, 16, 12))
    level = NoiseLevel(500.0, 0.6, 0.8)
    out = model(torch.from_numpy(x_t), level, None).numpy()
    p = _power_law_np(16, 12, amplitude, exponent)
    gain = 0.6 * p / (0.36 * p + 0.64)
    expected = np.fft.ifft2(np.fft.fft2(x_t) * gain).real
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(model.power(16, 12), p, rtol=1e-12)
    # float32 in, float32 out
    out32 = model(torch.from_numpy(x_t).float(), level, None)
    assert out32.dtype == torch.float32
    np.testing.assert_allclose(out32.numpy(), expected, atol=1e-5)


@pytest.mark.parametrize(("alpha", "sigma"), [(0.9, 0.3), (0.3, 0.95), (1.0, 0.0)])
def test_gaussian_denoiser_equals_dense_posterior_mean(alpha, sigma):
    h = w = 4
    model = GaussianPowerLaw(exponent=2.0, amplitude=0.3, channels=1)
    cov = _circulant_covariance(_power_law_np(h, w, 0.3, 2.0))
    assert np.allclose(cov, cov.T) and np.linalg.eigvalsh(cov).min() > 0
    rng = np.random.default_rng(1)
    x = rng.standard_normal(h * w)
    mu = np.zeros(h * w)  # the process has mean zero
    expected = mu + alpha * cov @ np.linalg.solve(alpha**2 * cov + sigma**2 * np.eye(h * w), x - alpha * mu)
    out = model(torch.from_numpy(x.reshape(1, 1, h, w)), NoiseLevel(0.0, alpha, sigma), None)
    np.testing.assert_allclose(out.numpy().ravel(), expected, rtol=0, atol=1e-12)


def test_gaussian_default_amplitude_gives_unit_variance_at_64():
    # per-pixel variance of a stationary field = mean of its mode powers (orthonormal FFT)
    assert _power_law_np(64, 64, 0.04, 2.0).mean() == pytest.approx(1.04, abs=0.01)
    assert GaussianPowerLaw().power(64, 64).mean() == pytest.approx(1.04, abs=0.01)


def test_gaussian_fitted_to_cat():
    model = GaussianPowerLaw.fitted_to("cat")
    assert 1.0 < model.exponent < 4.0
    assert model.amplitude > 0
    assert model.default_size == (64, 64)


def test_gaussian_rejects_prompts_and_bad_parameters():
    model = GaussianPowerLaw()
    assert model.encode([None, ""]) is None
    with pytest.raises(ValueError, match="prompt"):
        model.encode(["a photo of a cat"])
    with pytest.raises(ValueError):
        model.check_prompt("cat")
    with pytest.raises(ValueError):
        GaussianPowerLaw(exponent=-1.0)
    with pytest.raises(ValueError):
        GaussianPowerLaw(amplitude=0.0)


@pytest.mark.parametrize("name", ["gaussian", "exemplars", "shapes"])
@pytest.mark.parametrize("size, error, words", [
    (0, ValueError, "size must be a positive integer, got 0"),
    ("64", TypeError, "got '64' (str)"),
    (float("nan"), TypeError, "got nan (float)"),
    (True, TypeError, "got True (bool)"),
    ((64,), ValueError, "got (64,)"),
    (7, ValueError, "7×7"),
])
def test_built_in_models_refuse_a_bad_size_when_made(name, size, error, words):
    """Refused by the constructor, saying what was given (they were kept, and failed later)."""
    from chromaviz.models import load_builtin

    with pytest.raises(error) as info:
        load_builtin(name, size=size)
    assert words in str(info.value)


@pytest.mark.parametrize("make, words", [
    (lambda: GaussianPowerLaw(exponent="2"), "exponent must be a number"),
    (lambda: GaussianPowerLaw(amplitude=float("nan")), "amplitude must be a number, got nan"),
    (lambda: GaussianPowerLaw(channels=0), "channels must be a positive integer"),
    (lambda: GaussianPowerLaw(size=(32, 0)), "size (width) must be a positive integer"),
    (lambda: ExemplarMixture(margin=5), "margin must be in [0, 4]"),
    (lambda: ExemplarMixture(texture_std="0.1"), "texture_std must be a number"),
    (lambda: ExemplarMixture(flips="no"), "flips must be"),
])
def test_model_parameters_are_checked_when_made(make, words):
    with pytest.raises(ValueError) as info:  # ArgumentTypeError is a ValueError too
        make()
    assert words in str(info.value)


def test_a_size_pair_is_height_and_width():
    assert GaussianPowerLaw(size=(32, 48)).default_size == (32, 48)
    assert ExemplarMixture(size=(16, 24)).default_size == (16, 24)


# ------------------------------------------------------------------------------------------
# ExemplarMixture
# ------------------------------------------------------------------------------------------

H = W = 8
MARGIN = 0.25  # source photographs are 10×10: 3×3 shifts, and their mirror images


@pytest.fixture(scope="module")
def mixture() -> ExemplarMixture:
    return ExemplarMixture(size=H, margin=MARGIN, flips=True, texture_std=0.3, texture_exponent=2.0)


def _components(word: str, hp: int, wp: int):
    """Every (source, shift) window of photograph ``word``, looped over explicitly."""
    photo = load_photo(word, hp, wp).astype(np.float64)
    out = {}
    for s, src in enumerate([photo, photo[:, :, ::-1]]):
        for i in range(hp - H + 1):
            for j in range(wp - W + 1):
                out[(s, i, j)] = src[:, i : i + H, j : j + W].copy()
    return out


def _brute_force(model, x, alpha, sigma, words):
    """Posterior weights and mean of the mixture Σ_k π_k N(y_k, Σ_tex) with dense Σ_tex."""
    hp = wp = H + int(round(MARGIN * H))
    cov = _circulant_covariance(model.texture_power(H, W))
    c = alpha**2 * cov + sigma**2 * np.eye(H * W)
    c_inv = np.linalg.inv(c)
    gain = alpha * cov @ c_inv
    keys, logliks, means = [], [], []
    for word in words:
        for key, y in _components(word, hp, wp).items():
            r = (x - alpha * y).reshape(3, -1)
            logliks.append(-0.5 * np.einsum("ci,ij,cj->", r, c_inv, r))  # equal priors π_k
            means.append(y.reshape(3, -1) + r @ gain.T)
            keys.append((word, *key))
    logliks = np.array(logliks)
    wts = np.exp(logliks - logliks.max())
    wts /= wts.sum()
    mean = np.einsum("k,kci->ci", wts, np.array(means)).reshape(3, H, W)
    return keys, wts, mean


def _model_weight(words, weights_b, key):
    word, s, i, j = key
    return float(weights_b[words.index(word), s, i, j])


def test_texture_power_is_the_stated_spectrum(mixture):
    p = mixture.texture_power(H, W)
    shape = _power_law_np(H, W, 1.0, 2.0)
    np.testing.assert_allclose(p / shape, (p / shape)[0, 0], rtol=1e-12)  # a power law, α = 2
    assert p.mean() == pytest.approx(0.3**2, rel=1e-12)  # pixel variance = texture_std²
    cov = _circulant_covariance(p)
    np.testing.assert_allclose(np.diag(cov), 0.09, rtol=1e-10)


@pytest.mark.parametrize(("alpha", "sigma"), [(0.25, 0.97), (0.7, 0.7)])
def test_exemplar_posterior_and_mean_match_brute_force(mixture, alpha, sigma):
    rng = np.random.default_rng(3)
    hp = wp = H + int(round(MARGIN * H))
    truth = _components("coins", hp, wp)[(1, 2, 0)]
    x = np.stack([
        alpha * truth + sigma * rng.standard_normal((3, H, W)),
        alpha * _components("cat", hp, wp)[(0, 1, 1)] + sigma * rng.standard_normal((3, H, W)),
    ])
    cond = ["coins", "cat"]
    level = NoiseLevel(0.0, alpha, sigma)
    words, weights = mixture.posterior(torch.from_numpy(x), level, cond)
    assert words == ["cat", "coins"]  # vocabulary order
    assert tuple(weights.shape) == (2, 2, 2, 3, 3)
    out = mixture(torch.from_numpy(x), level, cond).numpy()
    for b, word in enumerate(cond):
        keys, wts, mean = _brute_force(mixture, x[b], alpha, sigma, [word])
        got = np.array([_model_weight(words, weights[b].numpy(), k) for k in keys])
        np.testing.assert_allclose(got, wts, rtol=1e-8, atol=1e-12)
        assert weights[b].sum().item() == pytest.approx(1.0, abs=1e-12)
        other = [w for w in words if w != word][0]
        assert weights[b, words.index(other)].abs().max().item() == 0.0  # the prompt excludes it
        np.testing.assert_allclose(out[b], mean, rtol=0, atol=1e-9)
    # the comparison is informative: weights neither uniform nor one-hot at the noisy level
    if alpha < 0.5:
        assert 0.02 < wts.max() < 0.9


def test_exemplar_banks_are_a_bounded_cache(monkeypatch):
    """A bank per (prompt, size, device) was kept for ever (RSS 452 MB → 2.6 GB over 16 prompts at 128²)."""
    from chromaviz.models import exemplars

    model = ExemplarMixture(size=16)
    one = model._banks_for(["cat"], 16, 16)[0].nbytes
    monkeypatch.setattr(exemplars, "BANK_CACHE_BYTES", int(2.5 * one))  # room for two banks of this size
    x, level = torch.zeros(1, 3, 16, 16, dtype=torch.float64), NoiseLevel(0.0, 0.7, 0.7)
    for word in ("cat", "moon", "coins", "cat", "astronaut"):
        model(x, level, [word])
    assert [key[0] for key in model._banks] == ["cat", "astronaut"]  # the least recently used ("moon", "coins") went
    assert sum(b.nbytes for b in model._banks.values()) <= exemplars.BANK_CACHE_BYTES
    model(x, level, [None])  # unconditional: every photograph's bank, all kept while they are needed
    assert len(model._banks) == len(model.vocabulary)
    model(x, level, ["moon"])
    assert len(model._banks) == 2 and next(reversed(model._banks))[0] == "moon"


def test_exemplar_unconditional_mixes_all_photographs(mixture):
    rng = np.random.default_rng(4)
    alpha, sigma = 0.15, 0.99
    x = sigma * rng.standard_normal((1, 3, H, W))
    words, weights = mixture.posterior(torch.from_numpy(x), NoiseLevel(0.0, alpha, sigma), [None])
    assert words == list(PHOTOS)
    per_word = weights[0].sum(dim=(1, 2, 3)).numpy()
    assert per_word.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.all(per_word > 0)
    keys, wts, mean = _brute_force(mixture, x[0], alpha, sigma, list(PHOTOS))
    got = np.array([_model_weight(words, weights[0].numpy(), k) for k in keys])
    np.testing.assert_allclose(got, wts, rtol=1e-8, atol=1e-12)
    out = mixture(torch.from_numpy(x), NoiseLevel(0.0, alpha, sigma), [None]).numpy()
    np.testing.assert_allclose(out[0], mean, atol=1e-9)


def test_exemplar_posterior_peaks_at_the_true_window():
    model = ExemplarMixture(size=16, margin=0.5)
    hp = wp = 24
    photo = load_photo("astronaut", hp, wp).astype(np.float64)
    y = photo[:, :, ::-1][:, 3 : 3 + 16, 5 : 5 + 16]  # mirror image, shift (3, 5)
    alpha, sigma = (float(v) for v in model.schedule.alpha_sigma(40.0))
    assert sigma < 0.2
    x = alpha * y + sigma * np.random.default_rng(5).standard_normal(y.shape)
    words, weights = model.posterior(torch.from_numpy(x[None]), NoiseLevel(40.0, alpha, sigma), ["astronaut"])
    w = weights[0, words.index("astronaut")]
    assert tuple(w.shape) == (2, 9, 9)
    idx = np.unravel_index(int(torch.argmax(w)), tuple(w.shape))
    assert tuple(int(i) for i in idx) == (1, 3, 5)
    assert w.max().item() > 0.99
    # and the denoised sample is that window, up to the weak texture's share of the noise
    out = model(torch.from_numpy(x[None]), NoiseLevel(40.0, alpha, sigma), ["astronaut"])[0].numpy()
    assert np.abs(out - y).mean() < 0.5 * sigma


def test_exemplar_prompts(mixture):
    assert mixture.check_prompt("a photo of a cat") == "cat"
    assert mixture.check_prompt("Chelsea the cat") == "cat"
    assert mixture.encode(["a photo of a cat", None, "", "coins"]) == ["cat", None, None, "coins"]
    assert mixture.vocabulary == vocabulary() == tuple(PHOTOS)
    with pytest.raises(ValueError) as info:
        mixture.check_prompt("a photo of a dog")
    for word in PHOTOS:
        assert word in str(info.value)
    with pytest.raises(ValueError, match="several"):
        mixture.check_prompt("a cat riding a horse")
    with pytest.raises(ValueError):
        mixture.posterior(torch.zeros(2, 3, H, W, dtype=torch.float64), NoiseLevel(0.0, 0.5, 0.5), ["cat"])


# ------------------------------------------------------------------------------------------
# prediction parameterizations
# ------------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    parameterization=st.sampled_from(PARAMETERIZATIONS),
    sigma=st.floats(0.01, 0.99),
    seed=st.integers(0, 2**16),
)
def test_split_and_join_prediction_are_inverse(parameterization, sigma, seed):
    if parameterization == "flow":
        alpha = 1 - sigma
    else:
        alpha = math.sqrt(1 - sigma**2)
    level = NoiseLevel(1.0, alpha, sigma)
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.randn(2, 3, 4, 5, generator=gen, dtype=torch.float64)
    eps = torch.randn(2, 3, 4, 5, generator=gen, dtype=torch.float64)
    x_t = alpha * x0 + sigma * eps
    out = join_prediction(x0, eps, level, parameterization)
    expected_out = {
        "sample": x0,
        "epsilon": eps,
        "v_prediction": alpha * eps - sigma * x0,
        "flow": eps - x0,
    }[parameterization]
    torch.testing.assert_close(out, expected_out, rtol=0, atol=1e-12)
    x0_hat, eps_hat = split_prediction(out, x_t, level, parameterization)
    torch.testing.assert_close(x0_hat, x0, rtol=0, atol=1e-9)
    torch.testing.assert_close(eps_hat, eps, rtol=0, atol=1e-9)
    torch.testing.assert_close(join_prediction(x0_hat, eps_hat, level, parameterization), out, rtol=0, atol=1e-9)


def test_split_prediction_edges_and_errors():
    x = torch.ones(1, 1, 2, 2, dtype=torch.float64)
    x0, eps = split_prediction(x, x, NoiseLevel(0.0, 1.0, 0.0), "sample")
    assert torch.equal(eps, torch.zeros_like(x))
    x0, eps = split_prediction(x, x, NoiseLevel(999.0, 0.0, 1.0), "epsilon")
    assert torch.equal(x0, torch.zeros_like(x))
    with pytest.raises(ValueError, match="epsilon"):
        split_prediction(x, x, NoiseLevel(0.0, 0.5, 0.5), "score")
    with pytest.raises(ValueError, match="epsilon"):
        join_prediction(x, x, NoiseLevel(0.0, 0.5, 0.5), "score")


# ---------------------------------------------------------------------- what a model declares
def test_built_in_models_declare_what_they_can_do():
    from chromaviz import Schedule
    from chromaviz.models.base import Capabilities

    gaussian = GaussianPowerLaw(exponent=3.0, size=32)
    np.testing.assert_array_equal(gaussian.data_power(16, 32), gaussian.power(16, 32))
    assert gaussian.capabilities() == Capabilities(latent=False, exact_spectrum=True, decoder="to_rgb",
                                                   default_scheduler="ddim",
                                                   data="the model's own Gaussian data (exact)")
    assert gaussian.latent_size(24, 40) == (24, 40)
    assert GaussianPowerLaw(schedule=Schedule.flow_matching(3.0)).default_scheduler == "flow_euler"
    mixture = ExemplarMixture(size=16)
    assert mixture.data_power(16, 16) is None  # a mixture of photographs: no exact spectrum to give
    assert not mixture.capabilities().exact_spectrum
    assert mixture.capabilities().data != "none" and mixture.data.exact  # its own photographs: an exact posterior
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    assert torch.equal(mixture.decode(x), mixture.to_rgb(x))


def test_diffusers_models_declare_latents_their_vae_and_their_own_scheduler(tmp_path):
    import diffusers_models as tiny
    from chromaviz.models.diffusers.adapter import load_pipeline

    sd = load_pipeline(tiny.save_sd(tmp_path / "sd", scheduler="EulerDiscreteScheduler"))
    caps = sd.capabilities()
    assert caps.latent and caps.decoder == "vae" and not caps.exact_spectrum and caps.data == "none"
    assert caps.default_scheduler == "EulerDiscreteScheduler"
    f = sd.vae_scale_factor
    assert sd.latent_size(8 * f, 4 * f) == (8, 4)
    z = torch.zeros(1, sd.channels, 4, 4)
    assert sd.decode(z).shape == (1, 3, 4 * f, 4 * f)
    ddpm = load_pipeline(tiny.save_ddpm(tmp_path / "ddpm"))
    assert not ddpm.capabilities().latent and ddpm.latent_size(16, 16) == (16, 16)
    assert ddpm.capabilities().default_scheduler == type(ddpm.scheduler).__name__
