"""The layout model (:class:`chromaviz.models.LayoutTexture`): its posterior is exact, its data is what
it declares, and it refuses what it cannot do before any work.

The exactness checks compute the posterior independently: a dense Gaussian mixture with the full
(3·H·W)² covariance matrix built from the spectrum, and, for a prompt naming one component, the
Wiener filter of :class:`~chromaviz.models.GaussianPowerLaw` around the component's mean.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from chromaviz import sample
from chromaviz.analysis import compare
from chromaviz.models import EXPLORER_MODEL, GaussianPowerLaw, LayoutTexture, load_builtin, load_model
from chromaviz.models.layout import COLOURS, LAYOUTS, PATTERNS
from chromaviz.models.registry import MODELS
from chromaviz.noise.plan import NoiseLevel

H = 8


@pytest.fixture(scope="module")
def small() -> LayoutTexture:
    return LayoutTexture(size=H)


def dense_posterior(model: LayoutTexture, x: np.ndarray, spec, alpha: float, sigma: float) -> np.ndarray:
    """E[x0 | x_t] of the mixture Σ_j π_j N(μ_j, Σ) by dense linear algebra, x of shape (3, H, W)."""
    h, w = x.shape[-2:]
    n = h * w
    basis = np.fft.fft2(np.eye(n).reshape(n, h, w), norm="ortho").reshape(n, n).T  # F, orthonormal
    cov1 = (basis.conj().T @ np.diag(model.power(h, w).ravel()) @ basis).real  # one channel: F⁻¹ diag(P) F
    cov = np.kron(np.eye(3), cov1)
    inv = np.linalg.inv(alpha**2 * cov + sigma**2 * np.eye(3 * n))
    means = model.means(h, w).reshape(len(model.components), -1)
    d = x.ravel()[None] - alpha * means
    log_w = -0.5 * np.einsum("ji,ik,jk->j", d, inv, d)
    log_w[~model.allowed(spec)] = -np.inf
    weights = np.exp(log_w - log_w.max())
    weights /= weights.sum()
    gain = alpha * cov @ inv
    return sum(wj * (mj + gain @ (x.ravel() - alpha * mj)) for wj, mj in zip(weights, means)).reshape(x.shape)


@pytest.mark.parametrize("alpha, sigma", [(0.3, 0.95), (0.9, 0.45)])
@pytest.mark.parametrize("prompt", [None, "a cat", "blue checks", "a horse with red stripes"])
def test_posterior_mean_is_the_exact_mixture_posterior(small, prompt, alpha, sigma):
    x = torch.randn(1, 3, H, H, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2
    spec = None if prompt is None else small.parse(prompt)
    got = small(x, NoiseLevel(500, alpha, sigma), small.encode([prompt]))[0].numpy()
    assert np.abs(got - dense_posterior(small, x[0].numpy(), spec, alpha, sigma)).max() < 1e-9


def test_one_component_is_the_wiener_filter_around_its_mean(small):
    """A prompt naming layout, colour and pattern is one Gaussian N(μ, Σ): x̂0 = μ + Wiener(x_t − α·μ)."""
    prompt = "a cameraman with yellow dots"
    mu = torch.from_numpy(small.means(H, H)[small.components.index(small.parse(prompt))])[None]
    wiener = GaussianPowerLaw(exponent=small.exponent, amplitude=small.amplitude, size=H)
    x = torch.randn(3, 3, H, H, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    noise = NoiseLevel(300, 0.7, 0.714)
    expected = mu + wiener(x - noise.alpha * mu, noise)
    assert torch.allclose(small(x, noise, small.encode([prompt] * 3)), expected, atol=1e-10)


def test_the_data_has_the_moments_the_model_declares(small):
    gen = torch.Generator().manual_seed(0)
    for prompt in ("a horse with red stripes", "a cat"):
        mean, power = small.data_moments(prompt, H, H)
        x = small.draw_data(prompt, 4000, (H, H), gen).double()
        assert np.abs(x.mean(0).numpy() - mean).max() < 0.25
        measured = torch.fft.fft2(x - torch.from_numpy(mean), norm="ortho").abs().square().mean(0).numpy()
        assert np.median(np.abs(measured / power - 1)) < 0.06
    _, power = small.data_moments("a horse with red stripes", H, H)
    assert np.allclose(power, small.data_power(H, H)[None])  # one component: the shared spectrum exactly


def test_a_run_of_one_component_is_predicted_exactly():
    """With one prompt and no guidance, x̂0 about the batch mean is the shared Gaussian's: the as-sampled
    prediction from the declared spectrum matches the measurement."""
    model = LayoutTexture(size=16)
    traj = sample(model, model.example_prompts[0], num_inference_steps=12, batch_size=3, device="cpu", record=("x0",))
    c = compare(traj, model)
    assert c.power_source == "model"
    assert np.abs(c.measured - c.predicted).max() < 1e-4


@pytest.mark.parametrize("steps", [25, 30])
def test_one_sample_is_measured_about_its_prompts_data_mean(steps):
    """One sample about zero held the prompt's layout (G of 0.6–0.9 at the first step, where x̂0 is the
    mean itself) while the replay and the ideal process were of the part about the mean. About the mean,
    the replay is exact and the run lies in its band; at 30 steps DDIM lands 1000/30 timesteps below each
    one it evaluates, so the run carries the mean only to 2 % (mean_gains), which both now include."""
    from chromaviz.analysis import StepwiseComparison, planned_theory
    from chromaviz.noise import plan_steps
    from chromaviz.prediction import mean_gains

    model, prompt = LayoutTexture(size=32), "a horse with red stripes"
    plan = plan_steps(model.schedule, steps, "ddim")
    carried = mean_gains(plan.scheduler, plan.noise, np.unique(model.data_power(32, 32)))
    assert (np.abs(carried - 1).max() < 1e-4) == (steps == 25)
    traj = sample(model, prompt, num_inference_steps=steps, batch_size=1, device="cpu", plan=plan)
    c = compare(traj, model, ideal=False)
    assert np.abs(c.measured[0]).max() < 1e-6  # x̂0 of pure noise is the mean
    assert c.prediction_kind == "exact" and np.abs(c.measured - c.predicted).max() < 1e-5
    assert c.agreement.inside and c.agreement.coverage >= 0.9
    planned = planned_theory(plan, model, 32, 32, batch_size=1, prompt=prompt)
    np.testing.assert_allclose(planned.expected, c.expected, rtol=1e-9)
    live = StepwiseComparison(model)
    live.extend(traj.steps)
    np.testing.assert_allclose(live.comparison(traj.final).measured, c.measured, rtol=1e-6, atol=1e-9)


def test_a_switched_sample_is_predicted_with_the_mean_each_level_keeps():
    """After a switch the levels formed before it keep part of A's mean (mean_gains): about B's mean their
    energy is that offset's, which the band and the replay include, so the composition is predicted."""
    from chromaviz.analysis import planned_theory
    from chromaviz.noise import plan_steps

    model, prompt = LayoutTexture(size=32), "[a horse with red stripes:a cat with blue dots:m=4]"
    plan = plan_steps(model.schedule, 20)
    c = compare(sample(model, prompt, num_inference_steps=20, batch_size=1, device="cpu", plan=plan), model, ideal=False)
    assert c.measured_final[-1] > 2  # the coarsest band holds A's layout, several times B's data power about B's mean
    assert c.prediction_kind == "exact" and np.abs(c.measured - c.predicted).max() < 1e-4
    assert c.agreement.inside and c.agreement.max_z < 4  # seeds 0–11: coverage 0.70–1.00, mean 0.91; z ≤ 3.2
    planned = planned_theory(plan, model, 32, 32, batch_size=1, prompt=prompt)
    np.testing.assert_allclose(planned.expected, c.expected, rtol=1e-9)


# ---------------------------------------------------------------------- prompts and bad input
def test_prompts_are_canonical_and_name_what_they_mix(small):
    assert small.check_prompt("A photo of the Horse, with RED stripes") == "a horse with red stripes"
    assert small.check_prompt("stripes") == "stripes" and small.check_prompt("a coffee") == "a coffee"
    assert small.check_prompt("") is None and small.check_prompt(None) is None
    for p in ("a cat with blue checks", "green dots", "a cameraman with yellow"):
        assert small.check_prompt(small.check_prompt(p)) == small.check_prompt(p)
    assert small.allowed(None).sum() == len(LAYOUTS) * len(COLOURS) * len(PATTERNS)
    assert small.allowed(small.parse("a cat")).sum() == len(COLOURS) * len(PATTERNS)
    assert small.allowed(small.parse("a cat with blue checks")).sum() == 1


@pytest.mark.parametrize("prompt, words", [
    ("a dog with red stripes", "never taught 'dog'"),
    ("a cat with purple stripes", "never taught 'purple'"),
    ("a cat and a horse", "names 2 layouts (cat, horse)"),
    ("red and blue stripes", "names 2 colours"),
    ("a photo of the", "names no layout, colour or pattern"),
])
def test_unknown_words_are_refused_before_sampling(prompt, words):
    model = LayoutTexture(size=16)
    with pytest.raises(ValueError, match=re.escape(words)) as info:
        sample(model, prompt, num_inference_steps=5, device="cpu")
    assert "it knows the layouts" in str(info.value) or "name at most one" in str(info.value) or "e.g." in str(info.value)


@pytest.mark.parametrize("make, error, words", [
    (lambda: LayoutTexture(size=7), ValueError, "7×7"),
    (lambda: LayoutTexture(size="64"), TypeError, "size"),
    (lambda: LayoutTexture(amplitude=0), ValueError, "amplitude must be positive"),
    (lambda: LayoutTexture(layout_blur=-1), ValueError, "layout_blur"),
    (lambda: LayoutTexture(texture_levels=[3]), ValueError, "texture_levels"),
    (lambda: LayoutTexture(texture_levels="1, 2"), ValueError, "texture_levels"),
    (lambda: LayoutTexture(schedule="bogus"), ValueError, "unknown schedule preset 'bogus'"),
])
def test_bad_arguments_are_refused_when_made(make, error, words):
    with pytest.raises(error, match=words):
        make()


def test_a_wrong_size_is_refused_before_sampling():
    model = LayoutTexture(size=16)
    with pytest.raises(ValueError, match="too small"):
        sample(model, "a cat", num_inference_steps=5, height=4, width=4, device="cpu")
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.zeros(1, 1, 16, 16), NoiseLevel(500, 0.5, 0.86), [None])


# ---------------------------------------------------------------------- the registry and the defaults
def test_the_registry_loads_it_and_the_explorer_opens_with_it():
    assert EXPLORER_MODEL == "layout" and not MODELS["layout"].trained
    model = load_builtin(EXPLORER_MODEL)
    assert isinstance(model, LayoutTexture) and model.default_size == (64, 64)
    assert model.schedule.name == "zero_snr_squaredcos_cap_v2" and model.recommended_guidance == 1.0
    assert model.capabilities().exact_spectrum and model.data.exact
    other = load_model("layout", size=32, schedule="scaled_linear")
    assert other.default_size == (32, 32) and other.schedule.name == "scaled_linear"


def test_every_prompt_conditional_built_in_model_has_example_prompts_it_knows():
    for name in MODELS:
        model = load_builtin(name, size=32)
        if not model.conditional:
            assert model.example_prompts is None, name
            continue
        assert isinstance(model.example_prompts, tuple) and len(model.example_prompts) == 2, name
        a, b = model.example_prompts
        assert model.check_prompt(a) and model.check_prompt(b) and model.check_prompt(a) != model.check_prompt(b), name


def test_guided_and_unconditional_runs_sample():
    model = LayoutTexture(size=16)
    for prompt, guidance in ((None, 1.0), ("a horse with red stripes", 3.0)):
        traj = sample(model, prompt, num_inference_steps=8, guidance=guidance, batch_size=2, device="cpu", record=())
        assert traj.sample.shape == (2, 3, 16, 16) and torch.isfinite(traj.sample).all()
