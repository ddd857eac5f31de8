"""Tests for chromaviz.apps.schedule_design: schedules built from targets, compared by step, and measured.

Expected values come from the definitions (a birth is λ = −2·ln m; diffusers' "trailing" spacing puts
step i at t = round(T − i·T/N) − 1), from diffusers' own schedulers, and from sampling the exact
Gaussian model, whose measured signal fractions must follow the theory.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from chromaviz import GaussianPowerLaw, Schedule, compare, sample, theory
from chromaviz.apps.schedule_design import (
    comparison_table,
    compare_schedules,
    from_births,
    measured_inheritance,
    resolution_shift,
    shift_for_birth,
    step_timings,
)
from chromaviz.noise import make_scheduler, plan_steps
from chromaviz.noise.levels import born_steps

TARGETS = {8: 0.2, 1: 0.8}
T = 1000


@pytest.fixture(scope="module")
def designed() -> Schedule:
    return from_births(TARGETS)


@pytest.fixture(scope="module")
def sd() -> Schedule:
    return Schedule.preset("scaled_linear")


# ---------------------------------------------------------------------- building from targets
@pytest.mark.parametrize("scheduler", ["ddim", "ddpm", "euler", "dpmsolver++"])
@pytest.mark.parametrize("num_steps", [10, 30, 37, 50])
def test_levels_are_born_where_requested_within_a_step(designed, scheduler, num_steps):
    st = step_timings(designed, list(TARGETS), num_steps, scheduler)
    for m, f in TARGETS.items():
        step = st.birth_steps[st.levels.index(m)]
        assert abs(step - f * num_steps) <= 1, (m, f, step)
        assert step >= math.floor(f * num_steps)  # never early: a birth is λ_i ≥ −2·ln m
        if (f * num_steps).is_integer():  # a birth requested on a step lands on it, float32 σ or not
            assert step == f * num_steps, (m, f, step)


@pytest.mark.parametrize("scheduler", ["ddim", "euler", "dpmsolver++"])
def test_step_timings_composing_and_the_sampler_name_the_same_birth_step(designed, scheduler):
    """One birth rule: schedule design, composing's plan and the sampler's level switch agree.

    Euler and DPM-Solver keep σ in float32, so a birth placed exactly on a step (level 8 at 0.2 of
    10 steps) has λ_i a few 1e-7 below −2·ln 8; all three must still call it that step.
    """
    from chromaviz import ExemplarMixture
    from chromaviz.apps.composing import by_resolution, plan

    n = 10
    steps = plan_steps(designed, n, scheduler)
    model = ExemplarMixture(size=16, margin=0, flips=False, schedule=designed)
    for m in TARGETS:
        birth = step_timings(designed, [m], plan=steps).birth_steps[0]
        assert birth == TARGETS[m] * n  # on the step asked for
        assert birth == step_timings(designed, [m], n, scheduler).birth_steps[0]
        composed = by_resolution(coarse="cat", fine="moon", level=m)
        assert plan(composed, designed, step_plan=steps)[0].step == birth == plan(composed, model, n, scheduler)[0].step
        traj = sample(model, composed, num_inference_steps=n, scheduler=scheduler, batch_size=1, device="cpu", record=())
        assert traj.prompts.index("moon") == birth


def test_births_sit_on_the_trailing_timesteps(designed):
    # fraction f ↔ t = T − 1 − f·T; the schedule's own inverse finds the birth there
    for lt in theory.level_timings(designed, list(TARGETS)):
        assert lt.birth_timestep == pytest.approx(T - 1 - TARGETS[lt.level] * T, abs=1.0)
    assert designed.scheduler_config["timestep_spacing"] == "trailing"


def test_built_schedule_is_monotone_and_ends_where_asked(designed):
    abar = designed.signal_variance
    assert np.all(np.diff(abar) < 0)  # strictly decreasing in t: λ strictly falls
    assert abar[-1] == 0 and designed.log_snr(T - 1) == -np.inf  # zero terminal SNR by default
    assert designed.log_snr(0) == pytest.approx(Schedule.preset("scaled_linear").log_snr(0), abs=1e-9)
    finite = from_births({16: 0.1, 4: 0.4, 1: 0.9}, terminal_log_snr=-7.0, final_log_snr=9.0)
    assert finite.log_snr(T - 1) == pytest.approx(-7.0, abs=1e-9)
    assert finite.log_snr(0) == pytest.approx(9.0, abs=1e-9)
    assert "rescale_betas_zero_snr" not in finite.scheduler_config
    assert np.all(np.diff(finite.log_snr(np.arange(T))) < 0)


def test_log_snr_is_linear_in_run_fraction_between_targets(designed):
    # halfway (in u) between the two targets, λ is halfway between −2·ln 8 and 0
    u = np.array([0.35, 0.5, 0.65])
    t = T - 1 - u * T
    expected = -2 * np.log(8) * (0.8 - u) / 0.6
    np.testing.assert_allclose(designed.log_snr(t), expected, atol=1e-9)
    # from pure noise to the first target, √ᾱ is linear in u
    sqrt_abar = np.sqrt(designed.signal_variance_at(T - 1 - np.array([0.05, 0.1, 0.15]) * T))
    np.testing.assert_allclose(sqrt_abar / sqrt_abar[0], [1, 2, 3], rtol=1e-9)


@pytest.mark.parametrize("name", ["ddim", "ddpm", "euler", "dpmsolver++"])
def test_diffusers_realises_the_built_schedule(designed, name):
    sched = make_scheduler(name, designed)
    ref = sched.alphas_cumprod.double().numpy()
    np.testing.assert_allclose(ref[:-1], designed.signal_variance[:-1], atol=2e-6)
    assert ref[-1] in (0.0, 2.0**-24)  # Euler and DPM-Solver keep σ finite at the last timestep


@pytest.mark.parametrize("scheduler", ["ddim", "euler"])
def test_samples_and_measured_fractions_follow_theory(designed, scheduler):
    model = GaussianPowerLaw(size=32, schedule=designed)
    traj = sample(model, num_inference_steps=30, scheduler=scheduler, batch_size=8, seed=0, device="cpu", record=("x0",))
    assert traj.metadata["status"] == "complete" and bool(traj.sample.isfinite().all())
    c = compare(traj, model)
    assert c.max_deviation < 0.1, c.format_table()
    assert np.all(c.measured[0] < 1e-3)  # zero terminal SNR: nothing at step 0
    measured, expected = born_steps(c.measured), born_steps(c.spectrum_aware)
    assert all(abs(a - b) <= 1 for a, b in zip(measured, expected)), (measured, expected)


# ---------------------------------------------------------------------- shifts
@pytest.mark.parametrize("schedule", [Schedule.preset("scaled_linear"), Schedule.flow_matching(1.0)], ids=["vp", "flow"])
@pytest.mark.parametrize("fraction", [0.1, 0.3])
def test_shift_for_birth_moves_the_birth_there(schedule, fraction):
    s = shift_for_birth(schedule, 16, fraction, num_inference_steps=30)
    st = step_timings(schedule.shifted(s), [16], 30)
    assert abs(st.birth_steps[0] - fraction * 30) <= 1
    # a shift lowers every step's λ by 2·ln s: exactly for VP (same timesteps, new ᾱ); for flow
    # matching diffusers also moves the clean end of its sigma grid, so only the first half agrees
    expected = plan_steps(schedule, 30).log_snr - 2 * np.log(s)
    if schedule.kind == "vp":
        np.testing.assert_allclose(st.log_snr, expected, atol=1e-9)
    else:
        np.testing.assert_allclose(st.log_snr[:15], expected[:15], atol=0.05)


def test_resolution_shift():
    assert resolution_shift(256, 1024) == 4.0
    assert resolution_shift((64, 64), (128, 32)) == 1.0
    with pytest.raises(ValueError):
        resolution_shift(0, 64)


# ---------------------------------------------------------------------- comparing
def test_compare_schedules_side_by_side(sd, designed):
    timings = compare_schedules({"sd": sd, "zero": sd.zero_terminal_snr(), "designed": designed}, num_inference_steps=30)
    for st in timings.values():
        assert sum(st.steps_per_level) == st.num_steps == 30
        # births never go backwards: coarse before fine
        born = [b for b in st.birth_steps if b is not None]
        assert born == sorted(born, reverse=True)
    # SD with DDIM's leading spacing starts at t = 957, λ = −4.87: m ≥ 16 are already half formed
    assert timings["sd"].inherited == (16, 32, 64)
    assert timings["sd"].log_snr[0] == pytest.approx(float(sd.log_snr(957)))
    assert timings["zero"].inherited == () and timings["designed"].inherited == ()
    header, rows = comparison_table(timings)
    assert header[:2] == ["schedule", "λ at step 0"] and len(rows) == 3
    assert rows[0][-1] == "inherited" and rows[2][header.index("m = 8")] == "6/30 (6)"


def test_schedule_chromatograms_figure(sd, designed):
    from chromaviz.views.figures import schedule_chromatograms

    fig = schedule_chromatograms(compare_schedules({"sd": sd, "designed": designed}, [1, 4, 16], 20))
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 2


# ---------------------------------------------------------------------- measured inheritance
def test_sd_inherits_its_coarsest_level_and_zero_terminal_snr_does_not(sd):
    runs = {key: measured_inheritance(GaussianPowerLaw(size=64, schedule=s), num_inference_steps=30, batch_size=8)
            for key, s in (("sd", sd), ("zero", sd.zero_terminal_snr()))}
    inh = runs["sd"]
    assert inh.levels == (1, 2, 4, 8, 16)
    assert inh.measured[-1] > 0.45  # the coarsest band is half there before the first step
    assert np.all(np.diff(inh.measured) > 0)  # the coarser, the more is inherited
    np.testing.assert_allclose(inh.measured, inh.spectrum_aware, atol=0.03)
    assert np.all(runs["zero"].measured < 1e-3) and runs["zero"].log_snr == -np.inf


# ---------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize(
    "births, kwargs, match",
    [
        ({}, {}, "at least one target"),
        ({8: 0.0}, {}, "strictly inside"),
        ({8: 1.0}, {}, "strictly inside"),
        ({8: -0.2}, {}, "strictly inside"),
        ({8: 0.9995}, {}, "strictly inside"),
        ({1: 0.2, 8: 0.8}, {}, "coarser levels"),
        ({8: 0.3, 4: 0.3}, {}, "its own fraction"),
        ({0.5: 0.3}, {}, "≥ 1"),
        ({8: 0.3}, {"terminal_log_snr": -3.0}, "below the coarsest"),
        ({8: 0.3}, {"terminal_log_snr": float("nan")}, "below the coarsest"),
        ({1: 0.5}, {"final_log_snr": -1.0}, "above the finest"),
        ({8: 0.3}, {"base": Schedule.flow_matching(3.0)}, "variance-preserving"),
    ],
)
def test_bad_targets_raise(births, kwargs, match):
    with pytest.raises(ValueError, match=match):
        from_births(births, **kwargs)


def test_bad_shift_targets_raise(sd):
    with pytest.raises(ValueError, match="strictly inside"):
        shift_for_birth(sd, 16, 1.0)
    with pytest.raises(ValueError, match="≥ 1"):
        shift_for_birth(sd, 0.5, 0.2)


def test_bad_first_arguments_and_zero_steps_are_named():
    """They raised AttributeError or ZeroDivisionError from inside the library."""
    from chromaviz.apps.composing import by_resolution, plan

    sd = Schedule.preset("scaled_linear")
    composed = by_resolution(coarse="a", fine="b", level=4)
    for call, error, words in [
        (lambda: plan("cat", sd, 10), TypeError, "plan needs a PromptSchedule"),
        (lambda: plan(composed, None, 10), TypeError, "plan needs a model or its Schedule, got NoneType"),
        (lambda: plan(composed, sd, 0), ValueError, "num_inference_steps must be a positive integer, got 0"),
        (lambda: step_timings("x", num_inference_steps=10), TypeError, "step_timings needs a Schedule"),
        (lambda: step_timings(sd, num_inference_steps=0), ValueError, "num_inference_steps must be a positive integer"),
        (lambda: compare_schedules([sd], num_inference_steps=10), TypeError, "needs a mapping of labels to Schedules"),
    ]:
        with pytest.raises(error, match=words):
            call()
