"""Prompt composing by resolution: the schedule, where it switches, and what each level takes.

Issue 26's check runs on the explorer's default model (the layout model, ``EXPLORER_MODEL``) with
its ``example_prompts``, and its per-mode switch law (:func:`switch_law`) is checked against the
composed runs. The older measurements use the exemplar mixture with one window per photograph
(``margin=0``, ``flips=False``) and a unit-variance texture: for each prompt, a photograph plus a
Gaussian power-law texture, a model that generalises. Runs with the same seed share the noise, so
provenance is measured with the joint band fit (``weight_a``, ``weight_b``) as well as plain
correlations.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from chromaviz import ExemplarMixture, PromptSchedule, Schedule, sample
from chromaviz.apps.composing import (
    Provenance, band_provenance, band_weights, by_fraction, by_resolution, crossover_level, equivalent_fraction,
    measure_switch, naive_fractions, plan, switch_law,
)
from chromaviz.models import EXPLORER_MODEL, GaussianPowerLaw, load_builtin
from chromaviz.noise import plan_steps
from chromaviz.prompts import Boundary
from chromaviz.theory import birth_log_snr

A, B = "cat", "moon"
SIZE, STEPS, BATCH = 64, 30, 2


def hybrid_model(schedule="scaled_linear") -> ExemplarMixture:
    return ExemplarMixture(size=SIZE, margin=0, flips=False, texture_std=1.0, schedule=schedule)


def run(model, prompt, scheduler="default"):
    return sample(model, prompt, num_inference_steps=STEPS, seed=0, batch_size=BATCH, device="cpu", record=(), scheduler=scheduler)


@pytest.fixture(scope="module")
def ztsnr():
    """Zero-terminal-SNR scaled_linear: no level is inherited from the initial noise, so m = 8 has coarser levels to give A."""
    model = hybrid_model(Schedule.preset("scaled_linear").zero_terminal_snr())
    return model, run(model, A), run(model, B)


# ---------------------------------------------------------------------- issue 26: the explorer's default model composes
@pytest.fixture(scope="module")
def default_model():
    return load_builtin(EXPLORER_MODEL)


@pytest.mark.parametrize("m", [4, 8])
def test_on_the_explorers_default_model_a_keeps_the_coarse_bands_and_b_supplies_the_fine(default_model, m):
    """A switch at the birth of level m with the model's example prompts, 50 DDIM steps: A holds at least
    0.7 of the coarsest band, B at least 0.7 of the finest, the crossover lies within one level of m,
    and A's share grows with the level."""
    a, b = default_model.example_prompts
    p, runs = measure_switch(default_model, a, b, m, num_inference_steps=50, batch_size=4)
    assert p.levels == (1, 2, 4, 8, 16)
    assert p.weight_a[-1] >= 0.7, f"A holds {p.weight_a[-1]:.2f} of the coarsest band"
    assert p.weight_b[0] >= 0.7, f"B holds {p.weight_b[0]:.2f} of the finest band"
    x = p.crossover()
    assert m / 2 <= x <= 2 * m, f"crossover {x:.2f} is more than one level from m = {m}"
    assert np.all(np.diff(p.weight_a) > 0) and np.all(np.diff(p.weight_b) < 0)
    (sw,) = plan(by_resolution(coarse=a, fine=b, level=m), default_model, 50)
    ca, cb = default_model.check_prompt(a), default_model.check_prompt(b)
    assert runs["composed"].prompts == [ca] * sw.step + [cb] * (50 - sw.step)


@pytest.mark.parametrize("m", [2, 4, 8])
def test_the_per_mode_switch_law_predicts_the_composed_run(default_model, m):
    """switch_law predicts each mode of the composed samples from the A-only and B-only runs and the
    model's declared spectrum alone; measured through the same band fit, it agrees with the composed run
    (it could fail: the law uses the λ of the switch step, not the composed samples)."""
    a, b = default_model.example_prompts
    p, runs = measure_switch(default_model, a, b, m, num_inference_steps=50, batch_size=4)
    step_plan = plan_steps(default_model.schedule, 50)
    (sw,) = plan(by_resolution(coarse=a, fine=b, level=m), default_model, step_plan=step_plan)
    law = switch_law(runs["A"], runs["B"], default_model.data_power(64, 64), step_plan.log_snr[sw.step],
                     step_plan.log_snr[0])
    q = band_provenance(law, runs["A"], runs["B"])
    assert np.abs(q.weight_a - p.weight_a).max() < 0.05 and np.abs(q.weight_b - p.weight_b).max() < 0.05
    assert abs(math.log2(q.crossover() / p.crossover())) < 0.25
    with pytest.raises(ValueError, match="before the first step"):
        switch_law(runs["A"], runs["B"], default_model.data_power(64, 64), -3.0, 0.0)


def test_switch_law_reads_the_signal_fraction_of_each_mode():
    """x0 = x0_A + (1 − √r_s)/(1 − √r_T)·(x0_B − x0_A) per mode: at SNR·P = 1 (r = 1/2) the share of B is
    1 − √½; a mode with r = 1/4 at the switch is shared equally; nothing decided at the first step moves."""
    a, b = torch.zeros(2, 1, 8, 8), torch.ones(2, 1, 8, 8)  # only the DC mode differs
    assert float(switch_law(a, b, np.ones((8, 8)), 0.0).mean()) == pytest.approx(1 - math.sqrt(0.5))
    assert float(switch_law(a, b, np.full((8, 8), 1 / 3), 0.0).mean()) == pytest.approx(0.5)
    assert float(switch_law(a, b, np.ones((8, 8)), 0.0, first_log_snr=0.0).mean()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="power has shape"):
        switch_law(a, b, np.ones((4, 4)), 0.0)


def test_measure_switch_refuses_before_sampling():
    with pytest.raises(ValueError, match="prompt-conditional"):
        measure_switch(GaussianPowerLaw(size=16), "a", "b", 4)
    model = load_builtin(EXPLORER_MODEL, size=16)
    with pytest.raises(ValueError, match="never taught 'dog'"):
        measure_switch(model, "a dog", "a cat", 4)
    with pytest.raises(ValueError, match="power of two"):
        measure_switch(model, "a horse", "a cat", 3)


# ---------------------------------------------------------------------- the schedule
def test_two_forms_are_one_schedule_of_level_boundaries():
    two = by_resolution(coarse=A, fine=B, level=4)
    assert two == by_resolution([A, B], [4]) == PromptSchedule.switch(A, B, Boundary.level(4))
    three = by_resolution(["a", None, "c"], levels=[8, 2])
    assert [s.prompt for s in three.segments] == ["a", None, "c"]
    assert [(b.unit, b.value) for b in three.boundaries] == [("level", 8), ("level", 2)]


@pytest.mark.parametrize("kwargs, message", [
    ({"prompts": [A, B, "coffee"], "levels": [2, 8]}, "strictly decreasing"),
    ({"prompts": [A, B], "levels": [4, 4]}, "2 prompts need 1 level"),
    ({"prompts": [A, B, "coffee"], "levels": [4, 4]}, "strictly decreasing"),
    ({"prompts": [A, B], "levels": []}, "need 1 level"),
    ({"prompts": [A, B], "levels": [0]}, "power of two"),
    ({"prompts": [A, B], "levels": [-4]}, "power of two"),
    ({"prompts": [A, B], "levels": [3]}, "power of two"),
    ({"prompts": [A, B], "levels": [2.0]}, "power of two"),
    ({"prompts": [A], "levels": []}, "at least two prompts"),
    ({"prompts": "cat moon", "levels": [4]}, "list of prompts"),
    ({"coarse": A, "level": 4}, "coarse=, fine= and level="),
    ({"prompts": [A, B], "levels": [4], "level": 4}, "not both"),
    ({}, "needs prompts and levels"),
])
def test_bad_input_says_what_is_wrong(kwargs, message):
    with pytest.raises(ValueError, match=message):
        by_resolution(**kwargs)


def test_fraction_helpers():
    assert naive_fractions(2) == [0.5] and naive_fractions(4) == [0.25, 0.5, 0.75]
    assert str(by_fraction([A, B], [0.5])) == str(PromptSchedule.parse(f"[{A}:{B}:0.5]"))
    with pytest.raises(ValueError, match="non-decreasing"):
        by_fraction([A, B, "coffee"], [0.6, 0.2])
    with pytest.raises(ValueError, match="need 2 fraction"):
        by_fraction([A, B, "coffee"], [0.6])
    with pytest.raises(ValueError, match="integer ≥ 2"):
        naive_fractions(1)
    for n in (7, 30, 50):  # the A1111 fraction switches exactly at the step asked for
        for k in [0, *range(2, n + 2)]:
            assert Boundary.fraction(equivalent_fraction(k, n)).switch_index(n) == (k if k < n else n + 1)
        assert Boundary.fraction(equivalent_fraction(1, n)).switch_index(n) == 2  # step 1 is not expressible: one late


@pytest.mark.parametrize("scheduler", ["ddim", "euler", "dpmsolver++_karras"])
def test_switch_step_is_the_first_step_past_the_level_birth(scheduler):
    model = hybrid_model()
    run_plan = plan_steps(model.schedule, STEPS, scheduler)
    timesteps, lam = run_plan.timesteps, run_plan.log_snr
    schedule = by_resolution([A, B, "coffee"], levels=[4, 1])
    switches = plan(schedule, model, STEPS, scheduler)
    births = birth_log_snr([4, 1])
    steps = []
    for sw, birth in zip(switches, births):
        k = sw.step
        assert sw.log_snr == pytest.approx(birth) and 0 < k < STEPS
        assert lam[k - 1] < birth <= lam[k]  # the first step whose λ reaches −2·ln m
        assert sw.step_timestep == timesteps[k]
        assert timesteps[k] <= sw.timestep <= timesteps[k - 1]  # the theory's birth time lies in that step
        steps.append(k)
    expected = [A] * steps[0] + [B] * (steps[1] - steps[0]) + ["coffee"] * (STEPS - steps[1])
    assert schedule.prompts_for_steps(timesteps, lam) == expected
    # the fixed fraction plan() reports reproduces the same run in A1111 syntax
    text = f"[{A}:{B}:{switches[0].fraction!r}]"
    assert PromptSchedule.parse(text).prompts_for_steps(timesteps) == expected[: steps[1]] + [B] * (STEPS - steps[1])


def test_plan_on_scaled_linear_ddim_and_the_sampler_agrees():
    model = hybrid_model()
    (sw,) = plan(by_resolution(coarse=A, fine=B, level=4), model, STEPS)
    assert sw.step == 7 and sw.fraction == pytest.approx(0.2) and sw.timestep == pytest.approx(744.24, abs=0.01)
    traj = sample(model, by_resolution(coarse=A, fine=B, level=4), num_inference_steps=STEPS, batch_size=1, device="cpu", record=())
    assert traj.prompts == [A] * 7 + [B] * (STEPS - 7)
    with pytest.raises(ValueError, match="level boundaries"):
        plan(PromptSchedule.parse(f"[{A}:{B}:0.5]"), model, STEPS)


# ---------------------------------------------------------------------- what each level takes
@pytest.mark.parametrize("m", [2, 4, 8])
def test_coarse_bands_come_from_a_fine_bands_from_b_and_cross_over_near_m(ztsnr, m):
    model, only_a, only_b = ztsnr
    composed = run(model, by_resolution(coarse=A, fine=B, level=m))
    p = band_provenance(composed, only_a, only_b)
    assert p.levels == (1, 2, 4, 8, 16)
    assert p.weight_a[-1] > p.weight_b[-1] and p.corr_a[-1] > p.corr_b[-1]  # coarsest band: A
    assert p.weight_b[0] > p.weight_a[0] and p.corr_b[0] > p.corr_a[0]  # finest band: B
    assert np.all(np.diff(p.weight_a) > 0) and np.all(np.diff(p.weight_b) < 0)  # A's share grows with m
    assert np.allclose(p.weight_a + p.weight_b, 1, atol=0.05)  # each band is a blend of the two runs
    x = p.crossover()
    assert m / 2 <= x <= 2 * m, f"crossover {x:.2f} is more than one octave from m = {m}"
    assert m / 2 <= crossover_level(p, by="corr") <= 2 * m


def test_three_prompts_each_take_their_range_of_levels(ztsnr):
    model, only_a, only_b = ztsnr
    middle = run(model, "coffee")
    composed = run(model, by_resolution([A, "coffee", B], levels=[8, 2]))
    w = band_weights(composed, [only_a, middle, only_b])  # (levels 1…16, prompts)
    assert w.shape == (5, 3)
    assert [int(i) for i in w.argmax(1)] == [2, 2, 1, 0, 0]  # m = 1, 2: moon; 4: coffee; 8, 16: cat
    assert w[2, 1] > w[0, 1] and w[2, 1] > w[4, 1]  # the middle prompt peaks between its two levels


def test_crossover_level_interpolates_in_log2_and_reports_one_sided_runs():
    levels, zeros = (1, 2, 4, 8), np.zeros(4)
    p = Provenance(levels, zeros, zeros, np.array([0.0, 0.2, 0.6, 1.0]), np.array([1.0, 0.8, 0.4, 0.0]))
    assert p.crossover() == pytest.approx(2 ** 1.75)  # d = 0.6 at m = 2, −0.2 at m = 4: 3/4 of the octave from 4 to 2
    assert crossover_level(Provenance(levels, zeros, zeros, zeros, np.ones(4))) == math.inf
    assert crossover_level(Provenance(levels, zeros, zeros, np.ones(4), zeros)) == 0.0
    with pytest.raises(ValueError, match="'weight' or 'corr'"):
        crossover_level(p, by="share")
    with pytest.raises(ValueError, match="must match"):
        band_provenance(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 8, 8))


# ---------------------------------------------------------------------- against a fixed step fraction
def test_level_switch_follows_the_scheduler_a_fixed_fraction_does_not():
    """A fraction calibrated on DDIM (0.2 puts m = 4 at step 7) moves the crossover when the scheduler
    changes; the level boundary re-resolves and keeps it within one octave of m. The naive 0.5 leaves
    every level to A."""
    model = hybrid_model()
    schedule = by_resolution(coarse=A, fine=B, level=4)
    calibrated = plan(schedule, model, STEPS, "ddim")[0].fraction
    assert calibrated == pytest.approx(0.2)
    scheduler = "dpmsolver++_karras"
    only_a, only_b = run(model, A, scheduler), run(model, B, scheduler)
    by_level = band_provenance(run(model, schedule, scheduler), only_a, only_b).crossover()
    fixed = band_provenance(run(model, by_fraction([A, B], [calibrated]), scheduler), only_a, only_b).crossover()
    naive = band_provenance(run(model, by_fraction([A, B], naive_fractions(2)), scheduler), only_a, only_b).crossover()
    assert plan(schedule, model, STEPS, scheduler)[0].step == 9  # Karras spacing reaches level 4's birth later
    assert 2 <= by_level <= 8
    assert fixed > 8, f"the DDIM-calibrated fraction should hand level 8 to B under Karras spacing, crossover {fixed:.2f}"
    assert naive < 1  # A everywhere: the switch at half the steps comes after every level's birth


# ---------------------------------------------------------------------- a diffusers pipeline
@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    diffusers_models = pytest.importorskip("diffusers_models")
    from chromaviz.models.diffusers.adapter import load_pipeline

    return load_pipeline(diffusers_models.save_sd(tmp_path_factory.mktemp("composing") / "sd"))


@pytest.mark.filterwarnings("ignore::chromaviz.sampling.trajectory.SuspectRunWarning")  # random weights: not a sample
def test_pipeline_switches_at_its_own_schedules_level_birth_as_pipe_callback_does(tiny_sd):
    """Random weights: this checks the mechanics (where the switch falls and that it is pipe()'s own
    run with the embeddings swapped), not what the levels look like."""
    model, steps, size, guidance = tiny_sd, 6, 32, 3.0
    schedule = by_resolution(coarse="a photo of a cat", fine="a red house", level=2)
    run_plan = plan_steps(model.schedule, steps)  # the pipeline's own DDIM
    timesteps, lam = run_plan.timesteps, run_plan.log_snr
    (sw,) = plan(schedule, model, steps)
    k = sw.step
    assert lam[k - 1] < -2 * math.log(2) <= lam[k]
    traj = sample(model, schedule, num_inference_steps=steps, guidance=guidance, height=size, width=size, device="cpu")
    assert traj.prompts == ["a photo of a cat"] * k + ["a red house"] * (steps - k)
    assert np.allclose(traj.timesteps, timesteps)

    cond = model.encode(["a red house"])

    def swap(pipe, step_index, timestep, kw):  # a change after step k − 1 takes effect at step k
        if step_index == k - 1:
            negative, _ = kw["prompt_embeds"].chunk(2)  # with guidance: cat([negative, positive])
            kw["prompt_embeds"] = torch.cat([negative, cond.prompt_embeds])
        return kw

    ref = model.pipe("a photo of a cat", num_inference_steps=steps, height=size, width=size, guidance_scale=guidance,
                     generator=torch.Generator().manual_seed(0), output_type="np", callback_on_step_end=swap,
                     callback_on_step_end_tensor_inputs=["prompt_embeds"]).images
    ours = model.decode(traj.final).permute(0, 2, 3, 1).numpy()
    assert np.abs(ours - ref).max() <= 1e-4
    p = band_provenance(traj, traj, traj)  # on the latents: a run is its own A (the fit is degenerate, corr 1)
    assert p.levels == (1, 2, 4) and np.allclose(p.corr_a, 1)


def test_plan_reads_a_step_plan_and_takes_n_as_num_inference_steps():

    schedule = by_resolution(coarse=A, fine=B, level=4)
    sd = Schedule.preset("scaled_linear")
    (by_n,) = plan(schedule, sd, num_inference_steps=STEPS, scheduler="euler")
    (by_plan,) = plan(schedule, sd, step_plan=plan_steps(sd, STEPS, "euler"))
    assert by_n == by_plan
    with pytest.raises(ValueError, match="num_inference_steps"):
        plan(schedule, sd)


def test_a_switch_in_each_unit_switches_at_its_step():
    """Switch.time gives the boundary, in each unit, that sample() crosses at the switch's step; a
    level inherited from the initial noise has no birth time."""
    sd = Schedule.preset("scaled_linear")
    step_plan = plan_steps(sd, STEPS)
    (switch,) = plan(by_resolution(coarse=A, fine=B, level=4), sd, step_plan=step_plan)
    n = len(step_plan.timesteps)
    for unit in ("level", "timestep", "log_snr", "fraction"):
        boundary = Boundary(switch.time(unit), unit)
        crossed = next(i for i in range(n) if boundary.crossed(i, n, step_plan.timesteps[i], step_plan.log_snr[i]))
        assert crossed == switch.step, unit
    (inherited,) = plan(by_resolution(coarse=A, fine=B, level=32), sd, step_plan=step_plan)
    assert inherited.inherited and inherited.time("level") == 32
    with pytest.raises(ValueError, match="inherited from the initial noise"):
        inherited.time("timestep")
    with pytest.raises(ValueError, match="unit"):
        switch.time("step")
