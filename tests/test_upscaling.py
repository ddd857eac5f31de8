"""Upsample guidance (chromaviz.apps.upscaling): the time and intensity mapping, the guidance formula,
and what it does to the spectrum where the truth is known.

The measurement: GaussianPowerLaw built at 16×16 is sampled at 2× and 4× that size, plain and with
guidance, and the power of the samples in each octave ring is compared with the true process at
the target size (:func:`chromaviz.apps.upscaling.upscaled_truth`). Runs use the zero-terminal-SNR
version of Stable Diffusion's schedule and 100 DDIM steps, so that no coarse level is inherited
from the initial noise and the sampler itself is within about 0.1 (in ln power) of the truth; the
truth model run through the same sampler is the floor every comparison is reported against.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from chromaviz import GaussianPowerLaw, Schedule, sample, spectral, theory
from chromaviz.analysis import compare, expected
from chromaviz.models.base import Denoiser, Wrapper, split_prediction
from chromaviz.models.diffusers.adapter import load_pipeline
from chromaviz.noise import NoiseLevel
from chromaviz.apps.upscaling import UpsampleGuided, adjusted_level, band_log_ratio, guidance_weight, upscale, upscaled_truth

import diffusers_models as tiny

DESIGN = 16  # the Gaussian model's design size in pixels
STEPS, BATCH = 100, 16
ZERO_SNR = Schedule.preset("scaled_linear").zero_terminal_snr()


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tensors are small: one thread avoids thread contention on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Recording(Wrapper):
    """A real denoiser wrapper that keeps every (input, noise level) it was asked about; the rest of
    the contract (sizes, decoding, spectrum) is the wrapped model's, forwarded by name."""

    def __init__(self, model: Denoiser) -> None:
        super().__init__(model)
        self.calls = []

    def __call__(self, x_t, noise, cond):
        self.calls.append((x_t.detach().clone(), noise))
        return self.model(x_t, noise, cond)


# ---------------------------------------------------------------------- τ and ρ
@pytest.mark.parametrize("m", [2, 3, 4])
def test_adjusted_level_is_the_time_adjustment(m):
    schedule = Schedule.preset("scaled_linear")
    for t in (999.0, 800.0, 500.5, 200.0, 60.0):
        a, s = (float(v) for v in schedule.alpha_sigma(t))
        small, rho = adjusted_level(schedule, NoiseLevel(t, a, s), m)
        tau, rho_theory = theory.time_adjustment(schedule, t, m)
        assert small.timestep == pytest.approx(float(tau), abs=1e-6)
        assert rho == pytest.approx(math.sqrt(a**2 + s**2 / m**2), rel=1e-12) == pytest.approx(float(rho_theory))
        assert (small.alpha, small.sigma) == pytest.approx((a / rho, s / (m * rho)), rel=1e-12)
        assert small.alpha**2 + small.sigma**2 == pytest.approx(1.0)  # on the VP family
        assert small.log_snr == pytest.approx(math.log(a**2 / s**2) + 2 * math.log(m), abs=1e-9)
        assert schedule.log_snr(small.timestep) == pytest.approx(small.log_snr, abs=1e-6)  # τ is where λ + 2 ln m is


def test_adjusted_level_flow_and_out_of_range():
    flow = Schedule.flow_matching()
    level = NoiseLevel(600.0, 0.4, 0.6)
    small, rho = adjusted_level(flow, level, 2)
    assert rho == pytest.approx(0.4 + 0.3)
    assert small.alpha + small.sigma == pytest.approx(1.0)  # on the flow family α + σ = 1
    assert small.log_snr == pytest.approx(level.log_snr + 2 * math.log(2))
    assert flow.log_snr(small.timestep) == pytest.approx(small.log_snr)
    vp = Schedule.preset("scaled_linear")
    a, s = (float(v) for v in vp.alpha_sigma(1.0))
    assert adjusted_level(vp, NoiseLevel(1.0, a, s), 2) is None  # λ + 2 ln 2 beyond the least noisy timestep
    assert adjusted_level(vp, NoiseLevel(999.0, 0.0, 1.0), 2) is None  # α = 0: no τ


def test_guidance_weight_is_theta_for_the_first_fraction_eta():
    schedule = Schedule.preset("scaled_linear")
    w = [guidance_weight(schedule, NoiseLevel(t, 0.5, 0.5), 1.2, 0.3) for t in (999.0, 700.0, 699.0, 0.0)]
    assert w == [1.2, 1.2, 0.0, 0.0]
    assert guidance_weight(schedule, NoiseLevel(0.0, 1, 0.01), 1.0, 1.0) == 1.0
    assert guidance_weight(schedule, NoiseLevel(999.0, 0.1, 1), 1.0, 0.0) == 0.0


# ---------------------------------------------------------------------- the guidance formula
def test_guided_prediction_is_the_epsilon_formula():
    """ε̃ = ε + θ·U_m[(1/m)·ε(D_m[x_t]/ρ, τ) − D_m[ε]], recomputed from two calls of the base model."""
    m, theta = 2, 1.3
    base = GaussianPowerLaw(exponent=2.5, size=DESIGN)
    guided = UpsampleGuided(base, factor=m, theta=theta, guidance_fraction=1.0)
    t = 600.0
    a, s = (float(v) for v in base.schedule.alpha_sigma(t))
    level = NoiseLevel(t, a, s)
    x_t = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    _, eps = split_prediction(base(x_t, level), x_t, level, "sample")
    tau, rho = (float(v) for v in theory.time_adjustment(base.schedule, t, m))
    small_level = NoiseLevel(tau, a / rho, s / (m * rho))
    y = spectral.pool(x_t, m) / rho
    _, eps_small = split_prediction(base(y, small_level), y, small_level, "sample")
    expected = eps + theta * spectral.upsample(eps_small / m - spectral.pool(eps, m), m)
    _, eps_guided = split_prediction(guided(x_t, level, None), x_t, level, "sample")
    assert torch.allclose(eps_guided, expected, atol=1e-9)
    assert not torch.allclose(eps_guided, eps, atol=1e-3)  # the guidance term is not negligible here
    # with θ = 1 the pooled x̂0 is the small model's prediction at τ, and the pooled ε̂ is its ε̂ / m
    x0_1, eps_1 = split_prediction(UpsampleGuided(base, m, 1.0, 1.0)(x_t, level, None), x_t, level, "sample")
    x0_small, _ = split_prediction(base(y, small_level), y, small_level, "sample")
    assert torch.allclose(spectral.pool(x0_1, m), x0_small, atol=1e-9)
    assert torch.allclose(spectral.pool(eps_1, m), eps_small / m, atol=1e-9)


def test_theta_zero_is_the_plain_model_at_the_large_size():
    base = GaussianPowerLaw(size=DESIGN)
    plain = sample(base, num_inference_steps=10, batch_size=2, height=32, width=32, device="cpu", seed=1).final
    run = upscale(base, factor=2, theta=0.0, guidance_fraction=1.0, num_inference_steps=10, batch_size=2, device="cpu", seed=1)
    assert run.final.shape == (2, 3, 32, 32)
    assert torch.equal(run.final, plain)
    guided = upscale(base, factor=2, theta=1.0, guidance_fraction=1.0, num_inference_steps=10, batch_size=2, device="cpu", seed=1).final
    assert not torch.allclose(guided, plain, atol=1e-3)


def test_eta_switches_guidance_off_and_the_second_call_with_it():
    base = Recording(GaussianPowerLaw(size=DESIGN))
    run = upscale(base, factor=2, theta=1.0, guidance_fraction=0.5, num_inference_steps=10, device="cpu")
    sizes = [(x.shape[-1], lv.timestep) for x, lv in base.calls]
    large = [t for n, t in sizes if n == 32]
    small = [t for n, t in sizes if n == 16]
    assert len(large) == 10 == len(run.steps)
    assert len(small) == sum(t >= 499.5 for t in large) == 5  # DDIM's 10 timesteps 900, 800, …, 0: t ≥ 499.5


def test_bad_arguments_are_refused():
    base = GaussianPowerLaw(size=DESIGN)
    for factor in (1, 0, 2.0, True, "2"):
        with pytest.raises(ValueError, match="factor"):
            UpsampleGuided(base, factor=factor)
    for theta in (-0.1, math.nan, math.inf, "1"):
        with pytest.raises(ValueError, match="theta"):
            UpsampleGuided(base, theta=theta)
    for fraction in (-0.1, 1.5, math.nan):
        with pytest.raises(ValueError, match="guidance_fraction"):
            UpsampleGuided(base, guidance_fraction=fraction)
    with pytest.raises(ValueError, match="Denoiser"):
        UpsampleGuided("gaussian")
    guided = UpsampleGuided(base, factor=4)
    assert guided.default_size == (64, 64)
    with pytest.raises(ValueError, match="not divisible by the upsampling factor 4"):
        guided.check_size(62, 64)
    with pytest.raises(ValueError, match="too small"):
        guided.check_size(16, 16)  # the base model would have to run at 4×4
    with pytest.raises(ValueError, match="GaussianPowerLaw"):
        upscaled_truth(guided, 2)


# ---------------------------------------------------------------------- the measurement
def test_upscaled_truth_pools_to_the_model_and_matches_at_alpha_2():
    base = GaussianPowerLaw(exponent=3.0, size=DESIGN)
    truth = upscaled_truth(base, 4)
    assert truth.default_size == (64, 64) and truth.amplitude == pytest.approx(base.amplitude / 4)
    # the same physical frequency k (cycles per image) has m² times the power per mode on the m× grid
    k = np.arange(1, DESIGN // 2)
    assert np.allclose(truth.power(64, 64)[0, k], 16 * base.power(DESIGN, DESIGN)[0, k])
    assert truth.power(64, 64)[0, 0] == pytest.approx(16 * base.power(DESIGN, DESIGN)[0, 0])  # DC too
    scale_free = GaussianPowerLaw(exponent=2.0, size=DESIGN)
    assert np.allclose(upscaled_truth(scale_free, 2).power(32, 32), scale_free.power(32, 32))


def _measure(base: GaussianPowerLaw, m: int, model: Denoiser) -> np.ndarray:
    size = DESIGN * m
    x = sample(model, num_inference_steps=STEPS, batch_size=BATCH, height=size, width=size, seed=0, device="cpu", record=()).final
    return band_log_ratio(x, upscaled_truth(base, m).power(size, size), spectral.levels_for(size, size))


@pytest.mark.slow
@pytest.mark.parametrize("m", [2, 4])
def test_guidance_brings_the_coarse_levels_to_the_true_spectrum(m):
    """α = 3: the plain model at m× has m^(α−2) = m times too much power at every frequency.

    Guidance (θ = 1, η = 1) brings every level coarser than m to the truth within the sampler's
    own accuracy, halves the error at level m (the small model's finest octave, which box pooling
    attenuates), and leaves the levels finer than m (which the small model cannot see) nearly as they
    were: only the block edges of the nearest-neighbour upsampled correction reach them.
    """
    base = GaussianPowerLaw(exponent=3.0, size=DESIGN, schedule=ZERO_SNR)
    levels = np.array(spectral.levels_for(DESIGN * m, DESIGN * m))
    floor = _measure(base, m, upscaled_truth(base, m))
    plain = _measure(base, m, base)
    guided = _measure(base, m, UpsampleGuided(base, factor=m, theta=1.0, guidance_fraction=1.0))
    print(f"\nm={m} levels {levels.tolist()}\n truth  {np.round(floor, 3)}\n plain  {np.round(plain, 3)}\n guided {np.round(guided, 3)}")
    assert np.all(np.abs(floor) < 0.2)  # the sampler reproduces the truth
    assert np.allclose(plain - floor, math.log(m), atol=0.2)  # the plain model is m× off everywhere
    coarse, at_m, fine = levels > m, levels == m, levels < m
    assert np.all(np.abs(guided[coarse] - floor[coarse]) < 0.1)
    assert np.all(np.abs(guided[at_m] - floor[at_m]) < 0.5 * np.abs(plain[at_m] - floor[at_m]))
    assert np.allclose(guided[fine], plain[fine], atol=0.12)


@pytest.mark.slow
@pytest.mark.parametrize("m", [2, 4])
def test_guidance_does_little_harm_where_the_plain_model_is_already_right(m):
    """α = 2 is scale invariant: the plain model at m× *is* the true process. Guidance then adds
    a little power around level m (box pooling is not an ideal low-pass filter, so the pooled
    truth has less power in the small model's finest octave than the small model expects)."""
    base = GaussianPowerLaw(exponent=2.0, size=DESIGN, schedule=ZERO_SNR)
    plain = _measure(base, m, base)  # = the truth run through the sampler
    guided = _measure(base, m, UpsampleGuided(base, factor=m, theta=1.0, guidance_fraction=1.0))
    print(f"\nm={m}\n plain  {np.round(plain, 3)}\n guided {np.round(guided, 3)}")
    assert np.all(np.abs(plain) < 0.2)
    assert np.all(np.abs(guided - plain) < 0.15)


# ---------------------------------------------------------------------- diffusers pipelines
@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipelines")
    return {"sd": tiny.save_sd(root / "sd"), "sd_v": tiny.save_sd(root / "sd_v", prediction_type="v_prediction",
            scheduler="EulerDiscreteScheduler", seed=1), "ddpm": tiny.save_ddpm(root / "ddpm")}


def _check_pooled_calls(model: Recording, m: int, large: tuple[int, int]) -> int:
    """Every second-call input is D_m[x_t]/ρ at τ(λ + 2 ln m); returns how many there were."""
    calls, n = model.calls, 0
    for (x, level), (y, small) in zip(calls, calls[1:]):
        if x.shape[-2:] != large or y.shape[-2:] == large:
            continue
        n += 1
        expected = adjusted_level(model.schedule, level, m)
        assert expected is not None
        want, rho = expected
        assert small.timestep == pytest.approx(want.timestep) and small.alpha == pytest.approx(level.alpha / rho)
        assert small.log_snr == pytest.approx(level.log_snr + 2 * math.log(m), abs=1e-9)
        assert float(model.schedule.log_snr(small.timestep)) == pytest.approx(small.log_snr, abs=1e-4)
        assert torch.allclose(y * rho, spectral.pool(x, m), atol=1e-5)
    return n


def test_pixel_unet_upscales_with_the_formula_mapping(folders):
    model = Recording(load_pipeline(folders["ddpm"]))
    assert model.default_size == (16, 16)
    run = upscale(model, factor=2, theta=1.0, guidance_fraction=0.6, num_inference_steps=5, device="cpu", seed=2)
    assert run.metadata["status"] == "complete" and run.final.shape == (1, 3, 32, 32)
    assert torch.isfinite(run.final).all()
    assert _check_pooled_calls(model, 2, (32, 32)) == 3  # DDPM's 5 timesteps 800, 600, 400, 200, 0: t ≥ 399.6
    # the DDPM levels are the schedule's own, so τ and ρ are exactly theory.time_adjustment
    levels = [lv for x, lv in model.calls if x.shape[-1] == 32][:3]
    small = [lv for x, lv in model.calls if x.shape[-1] == 16]
    tau, rho = theory.time_adjustment(model.schedule, np.array([lv.timestep for lv in levels]), 2)
    assert np.allclose([lv.timestep for lv in small], tau)
    assert np.allclose([lv.alpha for lv in small], [lv.alpha for lv in levels] / rho)
    assert model.decode(run.final).shape == (1, 3, 32, 32)


@pytest.mark.filterwarnings("ignore::chromaviz.sampling.trajectory.SuspectRunWarning")  # random-weight pipelines: rightly suspect
@pytest.mark.parametrize("kind", ["sd", "sd_v"])
def test_latent_pipeline_upscales_with_classifier_free_guidance(folders, kind):
    model = Recording(load_pipeline(folders[kind]))
    assert model.default_size == (32, 32) and model.parameterization == ("epsilon" if kind == "sd" else "v_prediction")
    run = upscale(model, "a photo of a cat", factor=2, theta=1.0, guidance_fraction=0.5, num_inference_steps=4, guidance=3.0,
                  device="cpu", seed=0, record=("x0",))
    assert run.metadata["status"] == "complete" and run.final.shape == (1, 4, 32, 32)
    assert run.metadata["width"] == 64 and run.metadata["model"]["upsample_guidance"]["factor"] == 2
    assert torch.isfinite(run.final).all()
    assert _check_pooled_calls(model, 2, (32, 32)) == 2  # the first half of 4 steps
    assert all(len(x) == 2 for x, _ in model.calls)  # [negative, positive] in both calls
    assert model.decode(run.final).shape == (1, 3, 64, 64)
    with pytest.raises(ValueError, match="multiples"):
        upscale(model, factor=2, height=36, width=36, num_inference_steps=2, device="cpu")


# ---------------------------------------------------------------------- what the wrapper declares
def test_compare_uses_the_spectrum_of_the_process_upsample_guidance_samples():
    base = GaussianPowerLaw(exponent=3.0, size=DESIGN)
    guided = UpsampleGuided(base, factor=2)
    run = sample(guided, num_inference_steps=10, batch_size=2, seed=0, device="cpu", record=("x0",))
    c = compare(run, guided)
    size = 2 * DESIGN
    truth = upscaled_truth(base, 2).power(size, size)
    assert c.power_source == "model"
    np.testing.assert_allclose(guided.data_power(size, size), truth)
    np.testing.assert_allclose(c.spectrum_aware, expected(run.log_snr, c.levels, truth)[0])
    base_theory = expected(run.log_snr, c.levels, base.power(size, size))[0]
    assert np.abs(c.spectrum_aware - base_theory).max() > 0.05  # α = 3: the base model's spectrum is m× off
    scale_free = GaussianPowerLaw(exponent=2.0, size=DESIGN)  # α = 2: the same process at every size
    np.testing.assert_allclose(UpsampleGuided(scale_free, 2).data_power(size, size), scale_free.power(size, size))


def test_the_wrapper_forwards_the_contract_by_name_and_nothing_else():
    base = GaussianPowerLaw(exponent=3.0, size=DESIGN)
    guided = UpsampleGuided(base, factor=2)
    assert not hasattr(guided, "power") and not hasattr(guided, "exponent")  # no implicit forwarding
    assert guided.latent_size(32, 32) == (32, 32) and guided.default_scheduler == base.default_scheduler == "ddim"
    caps = guided.capabilities()
    assert caps.exact_spectrum and not caps.latent and caps.decoder == "to_rgb"
    x = torch.rand(1, 3, 8, 8) * 2 - 1
    assert torch.equal(guided.decode(x), base.decode(x))


def test_guidance_fraction_has_its_own_name_and_eta_reaches_ddim():
    base = GaussianPowerLaw(exponent=3.0, size=DESIGN)
    kw = dict(factor=2, num_inference_steps=6, batch_size=1, device="cpu", seed=3, scheduler="ddim", record=())
    plain = upscale(base, guidance_fraction=0.5, **kw)
    noisy = upscale(base, guidance_fraction=0.5, eta=1.0, **kw)  # DDIM's η: fresh noise at every step
    assert noisy.metadata["model"]["upsample_guidance"]["guidance_fraction"] == 0.5
    assert not torch.allclose(plain.final, noisy.final)
    with pytest.raises(TypeError, match="eta"):
        UpsampleGuided(base, guidance_fraction=0.5, eta=0.5)
    with pytest.raises(ValueError, match="guidance_fraction"):
        UpsampleGuided(base, guidance_fraction=1.5)
