"""Tests for chromaviz.noise.schedules (and the scheduler glue of a run's step plan, ``plan_steps``).

Every expected value is computed here independently: from diffusers' own schedulers, from the
closed forms of THEORY.md §1, or from first principles in numpy.
"""

from __future__ import annotations

import math

import diffusers
import numpy as np
import pytest
import torch

from chromaviz.noise import make_scheduler, plan_steps
from chromaviz.noise.schedules import PRESETS, Schedule

T = 1000

# diffusers' defaults per preset (THEORY.md §1): DDPM linear, SD scaled_linear, cosine.
DIFFUSERS_PRESET_KWARGS = {
    "linear": dict(beta_schedule="linear", beta_start=1e-4, beta_end=0.02),
    "scaled_linear": dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
    "squaredcos_cap_v2": dict(beta_schedule="squaredcos_cap_v2"),
}
SD = DIFFUSERS_PRESET_KWARGS["scaled_linear"]


def _lam_from_abar(abar) -> np.ndarray:
    abar = np.asarray(abar, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.log(abar) - np.log(1 - abar)


@pytest.fixture(scope="module")
def sd() -> Schedule:
    return Schedule.preset("scaled_linear")


# ------------------------------------------------------------------------------------------
# presets
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["linear", "scaled_linear", "squaredcos_cap_v2"])
def test_preset_matches_diffusers_alphas_cumprod(name):
    ref = diffusers.DDPMScheduler(num_train_timesteps=T, **DIFFUSERS_PRESET_KWARGS[name]).alphas_cumprod
    ref = ref.double().numpy()
    sched = Schedule.preset(name)
    assert sched.kind == "vp"
    assert sched.signal_variance.shape == (T,)
    np.testing.assert_allclose(sched.timesteps, np.arange(T))
    np.testing.assert_allclose(sched.signal_variance, ref, rtol=0, atol=1e-6)
    # λ on the integer grid is log(ᾱ/(1 − ᾱ)) of that same ᾱ
    np.testing.assert_allclose(sched.log_snr(np.arange(T)), _lam_from_abar(sched.signal_variance), rtol=1e-12)


def test_presets_differ_from_each_other():
    # guards against a preset silently falling back to another one
    a = {n: Schedule.preset(n).signal_variance for n in PRESETS}
    assert np.abs(a["linear"] - a["scaled_linear"]).max() > 0.01
    assert np.abs(a["linear"] - a["squaredcos_cap_v2"]).max() > 0.01
    assert np.abs(a["scaled_linear"] - a["squaredcos_cap_v2"]).max() > 0.01


def test_stable_diffusion_terminal_values(sd):
    assert math.sqrt(sd.signal_variance[-1]) == pytest.approx(0.068265, abs=1e-6)
    assert float(sd.log_snr(999)) == pytest.approx(-5.36, abs=0.01)
    # λ = 2·ln(√ᾱ/√(1 − ᾱ)) with √ᾱ = 0.068265
    assert float(sd.log_snr(999)) == pytest.approx(2 * math.log(0.068265 / math.sqrt(1 - 0.068265**2)), abs=1e-4)
    lo, hi = sd.log_snr_range
    assert lo == pytest.approx(float(sd.log_snr(999)))
    assert hi == pytest.approx(math.log((1 - 0.00085) / 0.00085), abs=1e-9)  # ᾱ_0 = 1 − β_0


# ------------------------------------------------------------------------------------------
# from a scheduler instance vs from its config
# ------------------------------------------------------------------------------------------


SCHEDULER_CASES = [
    ("DDPMScheduler", SD, "vp"),
    ("DDIMScheduler", SD, "vp"),
    ("PNDMScheduler", SD, "vp"),
    ("EulerDiscreteScheduler", SD, "vp"),
    ("DPMSolverMultistepScheduler", SD, "vp"),
    ("FlowMatchEulerDiscreteScheduler", {"shift": 3.0}, "flow"),
]


@pytest.mark.parametrize(("cls_name", "kwargs", "kind"), SCHEDULER_CASES, ids=[c[0] for c in SCHEDULER_CASES])
def test_from_scheduler_equals_from_config(cls_name, kwargs, kind):
    scheduler = getattr(diffusers, cls_name)(**kwargs)
    a = Schedule.from_scheduler(scheduler)
    b = Schedule.from_config(scheduler.config)
    c = Schedule.coerce(scheduler)
    assert a.kind == b.kind == c.kind == kind
    grid = np.linspace(a.t_min, a.t_max, 257)
    grid = np.concatenate([grid, [0.5, 1.25, 17.3, 499.9]])
    la, lb, lc = a.log_snr(grid), b.log_snr(grid), c.log_snr(grid)
    np.testing.assert_array_equal(la, lb)
    np.testing.assert_array_equal(la, lc)
    if kind == "vp":
        # and both are the scheduler's own noise
        ref = scheduler.alphas_cumprod.double().numpy()
        np.testing.assert_allclose(a.signal_variance, ref, atol=1e-6, rtol=0)
        assert (a.t_min, a.t_max) == (0.0, 999.0)
    else:
        assert a.scheduler_config["shift"] == 3.0
        assert (a.t_min, a.t_max) == (0.0, 1000.0)
        t = grid[(grid > 0) & (grid < T)]
        np.testing.assert_allclose(la[(grid > 0) & (grid < T)], 2 * np.log((T - t) / t), rtol=1e-12, atol=1e-12)


def test_coerce_preset_name_and_errors(sd):
    assert Schedule.coerce(sd) is sd
    np.testing.assert_array_equal(Schedule.coerce("scaled_linear").signal_variance, sd.signal_variance)
    np.testing.assert_array_equal(Schedule.coerce(dict(SD)).signal_variance, Schedule.from_config(SD).signal_variance)
    with pytest.raises(TypeError):
        Schedule.coerce(3.0)


# ------------------------------------------------------------------------------------------
# constructors and inverse
# ------------------------------------------------------------------------------------------


def test_from_betas_and_from_alphas_cumprod_agree():
    rng = np.random.default_rng(0)
    betas = np.sort(rng.uniform(1e-4, 0.05, 200))
    abar = np.cumprod(1 - betas)
    a = Schedule.from_betas(betas)
    b = Schedule.from_alphas_cumprod(abar)
    t = np.concatenate([np.arange(200.0), rng.uniform(0, 199, 100)])
    np.testing.assert_allclose(a.log_snr(t), b.log_snr(t), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(a.signal_variance, abar, rtol=1e-14)
    # the generated diffusers config carries the betas back
    np.testing.assert_allclose(b.scheduler_config["trained_betas"], betas, rtol=1e-10)
    np.testing.assert_allclose(a.scheduler_config["trained_betas"], betas, rtol=0)
    assert a.scheduler_config["num_train_timesteps"] == b.scheduler_config["num_train_timesteps"] == 200
    # linear interpolation of ᾱ between integer timesteps
    assert float(a.signal_variance_at(10.25)) == pytest.approx(0.75 * abar[10] + 0.25 * abar[11], rel=1e-14)


def test_non_monotone_betas_give_a_valid_schedule():
    # Any β in (0, 1) makes ᾱ = Π(1 − β) strictly decreasing, so non-monotone betas are legitimate.
    betas = np.array([0.01, 0.2, 0.05, 0.3, 0.02])
    s = Schedule.from_betas(betas)
    np.testing.assert_allclose(s.signal_variance, [0.99, 0.99 * 0.8, 0.99 * 0.8 * 0.95, 0.99 * 0.8 * 0.95 * 0.7,
                                                  0.99 * 0.8 * 0.95 * 0.7 * 0.98], rtol=1e-14)
    assert np.all(np.diff(s.log_snr(np.arange(5.0))) < 0)


def test_errors():
    with pytest.raises(ValueError, match="unknown schedule preset 'nope'"):
        Schedule.preset("nope")
    with pytest.raises(ValueError, match="betas"):
        Schedule.from_betas(np.array([0.1, 0.0, 0.2]))
    with pytest.raises(ValueError, match="betas"):
        Schedule.from_betas(np.array([0.1, 1.0, 0.2]))
    # non-monotone ᾱ (what non-monotone signal would mean) is rejected
    with pytest.raises(ValueError, match="not increase"):
        Schedule.from_alphas_cumprod(np.array([0.99, 0.9, 0.95, 0.5]))
    with pytest.raises(ValueError):
        Schedule.from_alphas_cumprod(np.array([1.2, 0.9, 0.5]))
    with pytest.raises(ValueError, match="strictly increasing"):
        Schedule(np.array([0.0, 2.0, 1.0]), np.array([0.9, 0.5, 0.1]))
    with pytest.raises(ValueError, match="kind"):
        Schedule(np.array([0.0, 1.0]), np.array([0.9, 0.5]), kind="ve")
    with pytest.raises(ValueError):
        Schedule.flow_matching(shift=0.0)
    with pytest.raises(ValueError, match="outside"):
        Schedule.preset("linear").log_snr(1000.0)


def test_unknown_scheduler_name_lists_choices(sd):
    with pytest.raises(ValueError) as info:
        plan_steps(sd, 10, "heun")
    msg = str(info.value)
    assert "heun" in msg
    for name in ("ddim", "ddpm", "pndm", "euler", "dpmsolver++", "flow_euler"):
        assert repr(name) in msg


def test_flow_scheduler_on_vp_schedule_and_vice_versa(sd):
    with pytest.raises(ValueError, match="flow_euler"):
        plan_steps(sd, 10, "flow_euler")
    with pytest.raises(ValueError, match="ddim"):
        plan_steps(Schedule.flow_matching(3.0), 10, "ddim")
    from chromaviz.noise import make_scheduler

    with pytest.raises(ValueError):
        make_scheduler(diffusers.FlowMatchEulerDiscreteScheduler(), sd)
    with pytest.raises(ValueError):
        make_scheduler(diffusers.DDIMScheduler(**SD), Schedule.flow_matching())
    with pytest.raises(ValueError):
        Schedule.flow_matching().zero_terminal_snr()


@pytest.mark.parametrize("name", ["linear", "scaled_linear", "squaredcos_cap_v2", "zero_snr"])
def test_t_of_log_snr_inverts_log_snr(name):
    s = Schedule.preset("scaled_linear").zero_terminal_snr() if name == "zero_snr" else Schedule.preset(name)
    rng = np.random.default_rng(1)
    t = np.concatenate([rng.uniform(0, 999, 500), [0.0, 0.5, 998.5, 123.0]])
    if name == "zero_snr":
        t = t[t < 998.999]  # λ(999) = −∞ maps back to 999 but not from a finite λ
    back = s.t_of_log_snr(s.log_snr(t))
    np.testing.assert_allclose(back, t, rtol=0, atol=1e-6)
    lo, hi = s.log_snr_range
    out = s.t_of_log_snr(np.array([hi + 0.01, hi + 5.0, np.inf] + ([] if name == "zero_snr" else [lo - 0.01, lo - 3.0])))
    assert np.all(np.isnan(out))
    inside = s.t_of_log_snr(np.array([hi - 1e-3, 0.0]))
    assert not np.any(np.isnan(inside))


def test_t_of_log_snr_flow():
    s = Schedule.flow_matching()
    t = np.random.default_rng(2).uniform(0.01, 999.99, 300)
    np.testing.assert_allclose(s.t_of_log_snr(s.log_snr(t)), t, rtol=1e-10)
    # λ(t) = 2 ln((T − t)/t) ⇒ t = T / (1 + e^{λ/2})
    np.testing.assert_allclose(s.t_of_log_snr(np.array([0.0, 2 * math.log(3)])), [500.0, 250.0], rtol=1e-12)


# ------------------------------------------------------------------------------------------
# zero terminal SNR
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["linear", "scaled_linear", "squaredcos_cap_v2"])
def test_zero_terminal_snr_matches_diffusers(name):
    base = Schedule.preset(name)
    z = base.zero_terminal_snr()
    ref = diffusers.DDPMScheduler(rescale_betas_zero_snr=True, **DIFFUSERS_PRESET_KWARGS[name]).alphas_cumprod
    np.testing.assert_allclose(z.signal_variance, ref.double().numpy(), rtol=0, atol=1e-6)
    assert z.signal_variance[0] == pytest.approx(base.signal_variance[0], rel=1e-12)
    assert z.signal_variance[-1] == 0.0
    assert float(z.log_snr(999)) == -np.inf
    assert np.all(np.isfinite(z.log_snr(np.arange(999.0))))
    assert z.scheduler_config["rescale_betas_zero_snr"] is True
    # the same schedule through a config carrying the flag
    via_config = Schedule.from_config({**DIFFUSERS_PRESET_KWARGS[name], "rescale_betas_zero_snr": True})
    np.testing.assert_allclose(via_config.signal_variance, z.signal_variance, atol=1e-6)


def test_zero_terminal_snr_is_lin_et_al_algorithm_1(sd):
    # Lin et al. (2023): √ᾱ' = (√ᾱ − √ᾱ_T)·√ᾱ_0/(√ᾱ_0 − √ᾱ_T), an affine map of √ᾱ.
    z = sd.zero_terminal_snr()
    x, y = np.sqrt(sd.signal_variance), np.sqrt(z.signal_variance)
    slope, intercept = np.polyfit(x, y, 1)
    np.testing.assert_allclose(y, slope * x + intercept, atol=1e-12)
    assert slope * x[-1] + intercept == pytest.approx(0, abs=1e-12)


# ------------------------------------------------------------------------------------------
# flow matching
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_flow_matching_closed_form(shift):
    s = Schedule.flow_matching(shift)
    assert s.kind == "flow" and (s.t_min, s.t_max) == (0.0, 1000.0)
    t = np.concatenate([np.random.default_rng(3).uniform(0, 1000, 300), [1.0, 500.0, 999.0]])
    np.testing.assert_allclose(s.log_snr(t), 2 * np.log((T - t) / t), rtol=1e-12, atol=1e-12)
    a, sig = s.alpha_sigma(t)
    np.testing.assert_allclose(a, 1 - t / T, rtol=1e-14)
    np.testing.assert_allclose(sig, t / T, rtol=1e-14)
    assert float(s.log_snr(0.0)) == np.inf
    assert float(s.log_snr(1000.0)) == -np.inf
    assert float(s.log_snr(500.0)) == 0.0
    # exact even where 1 − ᾱ underflows (t → 0)
    tiny = np.array([1e-3, 1e-6, 1e-9])
    np.testing.assert_allclose(s.log_snr(tiny), 2 * np.log((T - tiny) / tiny), rtol=1e-12)
    np.testing.assert_allclose(s.snr(t), ((T - t) / t) ** 2, rtol=1e-9)


@pytest.mark.parametrize("kind", ["vp", "flow"])
def test_d_log_snr_dt_is_the_derivative(kind):
    s = Schedule.preset("squaredcos_cap_v2") if kind == "vp" else Schedule.flow_matching()
    t = np.arange(3, 990, 37) + 0.5  # mid-segment: ᾱ is linear there for the discrete schedule
    h = 1e-3
    numeric = (s.log_snr(t + h) - s.log_snr(t - h)) / (2 * h)
    np.testing.assert_allclose(s.d_log_snr_dt(t), numeric, rtol=1e-5)
    assert np.all(s.d_log_snr_dt(t) < 0)
    if kind == "flow":
        np.testing.assert_allclose(s.d_log_snr_dt(t), -2 * T / (t * (T - t)), rtol=1e-12)
        assert np.all(s.d_log_snr_dt(np.array([0.0, 1000.0])) == -np.inf)


@pytest.mark.parametrize("shift", [3.0, 6.0])
def test_flow_shift_moves_visited_log_snr(shift):
    n = 12
    steps = plan_steps(Schedule.flow_matching(1.0), n, "flow_euler")
    t1, lam1 = steps.timesteps, steps.log_snr
    steps = plan_steps(Schedule.flow_matching(shift), n, "flow_euler")
    ts, lams = steps.timesteps, steps.log_snr

    def sigmas_of(sh):
        sch = diffusers.FlowMatchEulerDiscreteScheduler(shift=sh)
        sch.set_timesteps(n)
        return sch.sigmas.double().numpy()[:n]

    s1, ss = sigmas_of(1.0), sigmas_of(shift)
    # visited λ is the noise of the scheduler's own sigmas: α = 1 − σ
    with np.errstate(divide="ignore"):
        np.testing.assert_allclose(lam1, 2 * np.log((1 - s1) / s1), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(lams, 2 * np.log((1 - ss) / ss), rtol=1e-6, atol=1e-6)
    assert lam1[0] == lams[0] == -np.inf
    # Relative to shift 1 at the same step, the shift moves λ by −2·ln(shift). diffusers shifts
    # the sampling grid's lower end twice (σ_min of the shifted training grid is shifted again),
    # so the unshifted grids of the two runs differ slightly towards the end; steps 1 … n−3 sit
    # within a few hundredths, the last one does not.
    d = lams[1:-2] - lam1[1:-2]
    np.testing.assert_allclose(d, -2 * math.log(shift), atol=0.06)
    assert np.all(lams[1:] < lam1[1:])
    # Exactly: the unshifted σ₀ behind every shifted step (σ = sσ₀/(1 + (s − 1)σ₀), i.e.
    # λ = λ₀ − 2 ln s) lies on a uniform grid starting at 1.
    sigma0 = 1 / (1 + np.exp((lams + 2 * math.log(shift)) / 2))
    np.testing.assert_allclose(np.diff(sigma0), np.diff(sigma0).mean(), atol=2e-6)
    assert sigma0[0] == pytest.approx(1.0)


# ------------------------------------------------------------------------------------------
# visited: the real scheduler's timesteps and their noise
# ------------------------------------------------------------------------------------------

VISITED_CASES = {
    "ddim": ("DDIMScheduler", {}, "alphas_cumprod"),
    "ddpm": ("DDPMScheduler", {}, "alphas_cumprod"),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}, "alphas_cumprod"),
    "euler": ("EulerDiscreteScheduler", {}, "sigmas_ve"),
    "dpmsolver++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}, "sigmas_ve"),
    "flow_euler": ("FlowMatchEulerDiscreteScheduler", {"shift": 3.0}, "sigmas_flow"),
}


@pytest.mark.parametrize("num_steps", [7, 25])
@pytest.mark.parametrize("name", list(VISITED_CASES))
def test_visited_matches_real_scheduler(name, num_steps):
    cls_name, extra, source = VISITED_CASES[name]
    if source == "sigmas_flow":
        schedule = Schedule.flow_matching(3.0)
        real = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)
    else:
        schedule = Schedule.preset("scaled_linear")
        real = getattr(diffusers, cls_name)(**SD, **extra)
    real.set_timesteps(num_steps)
    expected_t = real.timesteps.double().numpy()

    steps = plan_steps(schedule, num_steps, name)
    t, lam = steps.timesteps, steps.log_snr
    np.testing.assert_array_equal(t, expected_t)
    assert lam.shape == t.shape
    if name == "pndm":
        assert len(t) == num_steps + 1  # PNDM (PLMS) evaluates its second timestep twice

    if source == "alphas_cumprod":
        ab = real.alphas_cumprod.double().numpy()[expected_t.astype(int)]
        expected = 2 * np.log(np.sqrt(ab) / np.sqrt(1 - ab))
        tol = 2e-4  # diffusers keeps ᾱ in float32: at t = 0, 1 − ᾱ ≈ 8.5e-4
    elif source == "sigmas_ve":
        sig = real.sigmas.double().numpy()[: len(t)]
        sqrt_abar = 1 / np.sqrt(1 + sig**2)  # model input x/√(1 + σ²) = √ᾱ·x0 + √(1 − ᾱ)·ε
        expected = 2 * np.log(sqrt_abar / np.sqrt(1 - sqrt_abar**2))
        tol = 1e-5
    else:
        sig = real.sigmas.double().numpy()[: len(t)]
        with np.errstate(divide="ignore"):
            expected = 2 * np.log((1 - sig) / sig)
        tol = 1e-5
    finite = np.isfinite(expected)
    np.testing.assert_array_equal(np.isfinite(lam), finite)
    np.testing.assert_allclose(lam[finite], expected[finite], rtol=0, atol=tol)
    assert np.all(np.diff(lam[finite]) >= 0)  # noisiest first


def test_visited_default_and_karras(sd):
    steps = plan_steps(sd, 10)
    t_default, lam_default = steps.timesteps, steps.log_snr
    steps = plan_steps(sd, 10, "ddim")
    t_ddim, lam_ddim = steps.timesteps, steps.log_snr
    np.testing.assert_array_equal(t_default, t_ddim)
    np.testing.assert_array_equal(lam_default, lam_ddim)
    # Karras sigmas differ from the default dpmsolver++ spacing and come from the scheduler's sigmas
    real = diffusers.DPMSolverMultistepScheduler(**SD, algorithm_type="dpmsolver++", use_karras_sigmas=True)
    real.set_timesteps(10)
    steps = plan_steps(sd, 10, "dpmsolver++_karras")
    t, lam = steps.timesteps, steps.log_snr
    np.testing.assert_array_equal(t, real.timesteps.double().numpy())
    np.testing.assert_allclose(lam, -2 * np.log(real.sigmas.double().numpy()[:10]), atol=1e-5)


def test_visited_zero_terminal_snr_uses_trailing_spacing(sd):
    z = sd.zero_terminal_snr()
    steps = plan_steps(z, 10, "ddim")
    t, lam = steps.timesteps, steps.log_snr
    real = diffusers.DDIMScheduler(**SD, rescale_betas_zero_snr=True, timestep_spacing="trailing")
    real.set_timesteps(10)
    np.testing.assert_array_equal(t, real.timesteps.double().numpy())
    assert t[0] == 999 and lam[0] == -np.inf


def test_schedule_made_from_betas_is_sampled_with_those_betas():
    betas = np.linspace(1e-3, 0.03, 300)
    s = Schedule.from_betas(betas)
    steps = plan_steps(s, 6, "ddim")
    t, lam = steps.timesteps, steps.log_snr
    real = diffusers.DDIMScheduler(num_train_timesteps=300, trained_betas=betas.tolist())
    real.set_timesteps(6)
    np.testing.assert_array_equal(t, real.timesteps.double().numpy())
    abar = np.cumprod(1 - betas)[t.astype(int)]
    np.testing.assert_allclose(lam, np.log(abar / (1 - abar)), atol=1e-9)


def test_shifted_vp_schedule(sd):
    sh = sd.shifted(2.0)
    t = np.arange(1000.0)
    np.testing.assert_allclose(sh.log_snr(t), sd.log_snr(t) - 2 * math.log(2), atol=1e-9)
    fl = Schedule.flow_matching(2.0).shifted(1.5)
    assert fl.scheduler_config["shift"] == pytest.approx(3.0)


def test_schedulers_that_cannot_realise_a_schedule_say_so():
    """PNDM has no zero-SNR rescale; Karras sigmas repeat timesteps when σ_max is huge."""
    from chromaviz import GaussianPowerLaw, sample

    zero = Schedule.preset("scaled_linear").zero_terminal_snr()
    with pytest.raises(ValueError, match="'pndm'.*zero-terminal-SNR.*ddim"):
        make_scheduler("pndm", zero)
    with pytest.raises(ValueError, match="repeated timesteps.*'dpmsolver\\+\\+'"):
        sample(GaussianPowerLaw(size=16, schedule=zero), num_inference_steps=30, scheduler="dpmsolver++_karras", device="cpu")
    with pytest.raises(ValueError, match="repeated timesteps"):
        plan_steps(Schedule.preset("squaredcos_cap_v2"), 30, "dpmsolver++_karras")
    assert len(plan_steps(Schedule.preset("scaled_linear"), 30, "dpmsolver++_karras").timesteps) == 30


# ---------------------------------------------------------------------- what diffusers cannot run as asked
def test_repeated_timesteps_are_refused_for_every_option_and_step_count(sd):
    # DPM-Solver++ at 1000 steps repeats timestep 500 (no Karras sigmas): diffusers' own loop goes NaN
    ref = make_scheduler("dpmsolver++", sd)
    ref.set_timesteps(1000)
    x = torch.ones(1, 1, 1, 1)
    with np.errstate(all="ignore"):
        for t in ref.timesteps:
            x = ref.step(torch.zeros_like(x), t, x).prev_sample
    assert not torch.isfinite(x).all()  # the failure the guard prevents is real
    with pytest.raises(ValueError, match=r"same σ .*timestep 500 repeated.*multistep solver"):
        plan_steps(sd, 1000, "dpmsolver++")
    # Euler finds its place by timestep: more steps than training timesteps start at a repeated first one
    with pytest.raises(ValueError, match=r"first timestep 999 occurs 2 times.*finds its place by timestep"):
        plan_steps(sd.zero_terminal_snr(), 2000, "euler")  # diffusers: IndexError at the last step
    assert len(plan_steps(sd, 999, "dpmsolver++").timesteps) == 999 and len(plan_steps(sd, 1000, "euler").timesteps) == 1000
    assert len(plan_steps(sd, 50, "pndm").timesteps) == 51  # PNDM repeats a timestep by design and counts its steps


def test_an_option_a_scheduler_does_not_implement_is_named_before_any_step():
    from chromaviz import GaussianPowerLaw, sample

    sigmoid = Schedule.from_config({"beta_schedule": "sigmoid", "beta_start": 1e-4, "beta_end": 0.02})
    with pytest.raises(ValueError, match=r"DDIMScheduler cannot realise this schedule: it does not implement "
                                         r"beta_schedule='sigmoid'.*schedulers that can: \['ddpm'\]"):
        sample(GaussianPowerLaw(size=8, schedule=sigmoid), num_inference_steps=4, scheduler="ddim", device="cpu")
    assert len(plan_steps(sigmoid, 4, "ddpm").timesteps) == 4


def test_learned_variance_schedulers_are_refused_with_the_option_named():
    learned = Schedule.from_config({"beta_schedule": "linear", "variance_type": "learned_range",
                                    "_class_name": "DDPMScheduler"})
    with pytest.raises(ValueError, match=r"variance_type='learned_range' needs the model's predicted variance"):
        make_scheduler("ddpm", learned)
    assert type(make_scheduler("ddim", learned)).__name__ == "DDIMScheduler"
    with pytest.raises(ValueError, match=r"variance_type='learned' needs"):  # a scheduler instance too
        make_scheduler(diffusers.DDPMScheduler(variance_type="learned"), Schedule.preset("linear"))


FLUX_CONFIG = {"_class_name": "FlowMatchEulerDiscreteScheduler", "base_image_seq_len": 256, "base_shift": 0.5,
               "max_image_seq_len": 4096, "max_shift": 1.15, "num_train_timesteps": 1000, "shift": 3.0,
               "use_dynamic_shifting": True}


def test_dynamic_shifting_uses_mu_as_diffusers_or_is_refused():
    from diffusers import FlowMatchEulerDiscreteScheduler

    from chromaviz.noise.schedulers import dynamic_shift_mu

    schedule = Schedule.from_config(FLUX_CONFIG)
    with pytest.raises(ValueError, match=r"use_dynamic_shifting=True: its shift depends on the image size"):
        plan_steps(schedule, 28)
    # Flux's mu: linear in the token count, base_shift at 256 tokens, max_shift at 4096
    assert dynamic_shift_mu(FLUX_CONFIG, 256) == pytest.approx(0.5) and dynamic_shift_mu(FLUX_CONFIG, 4096) == pytest.approx(1.15)
    mu = dynamic_shift_mu(FLUX_CONFIG, (768 // 16) ** 2)
    plan = plan_steps(schedule, 28, mu=mu)
    ref = FlowMatchEulerDiscreteScheduler.from_config(FLUX_CONFIG)
    ref.set_timesteps(28, mu=mu)
    sigma = ref.sigmas[:-1].double().numpy()
    np.testing.assert_allclose(plan.timesteps, ref.timesteps.double().numpy(), rtol=1e-6)
    with np.errstate(divide="ignore"):  # σ = 1 at step 0: λ = −∞
        expected = 2 * np.log((1 - sigma) / sigma)
    np.testing.assert_allclose(plan.log_snr, expected, atol=1e-4)
    fixed = plan_steps(Schedule.flow_matching(3.0), 28).log_snr  # what keeping only `shift` gave: off by up to 3–5 in λ
    assert np.max(np.abs(fixed[1:] - plan.log_snr[1:])) > 1  # step 0: λ = −∞ in both


def test_shift_terminal_is_honoured_as_diffusers():
    from diffusers import FlowMatchEulerDiscreteScheduler

    config = {"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 3.0, "shift_terminal": 0.1}
    ref = FlowMatchEulerDiscreteScheduler.from_config(config)
    ref.set_timesteps(28)
    steps = plan_steps(Schedule.from_config(config), 28)
    timesteps, log_snr = steps.timesteps, steps.log_snr
    sigma = ref.sigmas[:-1].double().numpy()
    np.testing.assert_allclose(timesteps, ref.timesteps.double().numpy(), rtol=1e-6)
    with np.errstate(divide="ignore"):  # σ = 1 at step 0: λ = −∞
        expected = 2 * np.log((1 - sigma) / sigma)
    np.testing.assert_allclose(log_snr, expected, atol=1e-4)
    assert np.max(np.abs(plan_steps(Schedule.flow_matching(3.0), 28).log_snr[1:] - log_snr[1:])) > 1


@pytest.mark.parametrize("config, words", [
    ({"betas": [0.1, 0.2]}, r"has no \['betas'\]: give β as 'trained_betas'"),
    ({"alphas_cumprod": [0.9, 0.5]}, r"has no \['alphas_cumprod'\]"),
    ({"trained_betas": [math.nan] * 10}, r"every value in \(0, 1\) \(no NaN\)"),
    ({"trained_betas": [0.1, 1.5]}, r"every value in \(0, 1\)"),
])
def test_a_config_that_would_be_ignored_or_nan_is_refused(config, words):
    """``{"betas": ...}`` silently gave diffusers' default schedule; NaN betas were blamed on the model later."""
    with pytest.raises(ValueError, match=words):
        Schedule.coerce(config)
    with pytest.raises(ValueError, match=r"\[0, 1\] \(no NaN\)"):
        Schedule.from_alphas_cumprod([1.0, math.nan, 0.5])
