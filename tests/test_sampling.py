"""Tests for chromaviz.sampling: determinism, every scheduler, recorded quantities, cancellation,
failures, argument checking, prompt schedules, classifier-free guidance and step callbacks.

All runs are on the CPU and small (32×32, a few steps) except where a test says otherwise.
"""

from __future__ import annotations

import math
import re
import threading
import time
from typing import Any

import numpy as np
import pytest
import torch

from chromaviz.models import Denoiser, ExemplarMixture, GaussianPowerLaw
from chromaviz.models.photos import PHOTOS
from chromaviz.prompts import Boundary, PromptSchedule
from chromaviz.sampling import SamplingError, sample
from chromaviz.noise import FLOW_SCHEDULERS, SCHEDULERS, make_scheduler, noise_levels
from chromaviz.noise.schedules import Schedule
from chromaviz.sampling.trajectory import RECORDABLE, StepRecord, Trajectory

SIZE = 32
FLOW = Schedule.flow_matching(3.0)


# ---------------------------------------------------------------------- fixtures and helpers
@pytest.fixture(scope="module")
def gaussian() -> GaussianPowerLaw:
    return GaussianPowerLaw(size=SIZE)


@pytest.fixture(scope="module")
def exemplars() -> ExemplarMixture:
    # Shared so that its per-photograph FFT banks are built once for the whole module.
    return ExemplarMixture(size=SIZE)


class Spy(Denoiser):
    """Wraps a model, records every call, and can sleep, return NaN or raise on given calls.

    ``calls`` holds (x_t, level, cond, output) per model evaluation, cloned.
    """

    def __init__(self, inner: Denoiser, *, delay: float = 0.0) -> None:
        self.inner = inner
        self.delay = delay
        self.calls: list[tuple[torch.Tensor, Any, Any, torch.Tensor]] = []
        for attr in ("name", "parameterization", "schedule", "channels", "default_size", "vocabulary", "conditional", "dtype"):
            setattr(self, attr, getattr(inner, attr))

    def check_prompt(self, prompt):
        return self.inner.check_prompt(prompt)

    def check_size(self, height, width):
        self.inner.check_size(height, width)

    def encode(self, prompts):
        return self.inner.encode(prompts)

    def describe(self):
        return self.inner.describe()

    # `to` is not forwarded: ExemplarMixture.to() drops its caches, and every test runs on the CPU.

    def __call__(self, x_t, level, cond):
        if self.delay:
            time.sleep(self.delay)
        out = self.inner(x_t, level, cond)
        self.calls.append((x_t.clone(), level, list(cond) if isinstance(cond, list) else cond, out.clone()))
        return out


class NaNFrom(GaussianPowerLaw):
    """A Gaussian denoiser that returns NaN from its ``start``-th call on (0-based)."""

    def __init__(self, start: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.start, self.count = start, 0

    def __call__(self, x_t, level, cond=None):
        out = super().__call__(x_t, level, cond)
        self.count += 1
        if self.count - 1 >= self.start:
            out = torch.full_like(out, math.nan)
        return out


class RaisesAt(GaussianPowerLaw):
    """A Gaussian denoiser that raises RuntimeError("CUDA out of memory") at its ``at``-th call."""

    def __init__(self, at: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.at, self.count = at, 0

    def __call__(self, x_t, level, cond=None):
        self.count += 1
        if self.count - 1 == self.at:
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return super().__call__(x_t, level, cond)


def run(model, prompt=None, **kwargs) -> Trajectory:
    kwargs.setdefault("num_inference_steps", 6)
    kwargs.setdefault("batch_size", 2)
    kwargs.setdefault("device", "cpu")
    return sample(model, prompt, **kwargs)


def assert_steps_equal(a: StepRecord, b: StepRecord) -> None:
    assert (a.index, a.timestep, a.log_snr, a.alpha, a.sigma, a.prompt, a.num_steps) == (
        b.index, b.timestep, b.log_snr, b.alpha, b.sigma, b.prompt, b.num_steps,
    )
    for name in RECORDABLE:
        va, vb = getattr(a, name), getattr(b, name)
        assert (va is None) == (vb is None), name
        if va is not None:
            assert torch.equal(va, vb), f"{name} differs at step {a.index}"


def assert_same_run(a: Trajectory, b: Trajectory) -> None:
    assert len(a) == len(b)
    for sa, sb in zip(a.steps, b.steps):
        assert_steps_equal(sa, sb)
    assert (a.final is None) == (b.final is None)
    if a.final is not None:
        assert torch.equal(a.final, b.final)


# ---------------------------------------------------------------------- determinism
@pytest.mark.parametrize(
    ("model_name", "prompt", "scheduler"),
    [
        ("gaussian", None, "ddim"),
        ("exemplars", "cat", "ddim"),
        ("gaussian", None, "ddpm"),
        ("gaussian", None, "euler_ancestral"),
        ("exemplars", "cat", "euler_ancestral"),
    ],
)
def test_same_seed_same_trajectory_bit_for_bit(request, model_name, prompt, scheduler):
    model = request.getfixturevalue(model_name)
    runs = []
    for global_seed in (1, 2):
        # Disturb the global RNG: a stochastic scheduler must draw its noise from the run's seed only.
        torch.manual_seed(global_seed)
        runs.append(run(model, prompt, scheduler=scheduler, seed=7))
    a, b = runs
    assert a.status == b.status == "complete"
    assert_same_run(a, b)
    timing = {"elapsed_seconds"}  # wall-clock time of the run, not part of the trajectory's data
    assert {k: v for k, v in a.metadata.items() if k not in timing} == {k: v for k, v in b.metadata.items() if k not in timing}

    other = run(model, prompt, scheduler=scheduler, seed=8)
    assert not torch.equal(other.steps[0].x_t, a.steps[0].x_t)
    assert not torch.equal(other.final, a.final)
    assert (other.final - a.final).abs().mean() > 0.05


def test_no_step_count_means_the_default_fifty():
    from chromaviz.sampling.sampler import DEFAULT_STEPS

    traj = sample(GaussianPowerLaw(size=8), num_inference_steps=None, device="cpu", record=())
    assert DEFAULT_STEPS == 50 and traj.metadata["num_inference_steps"] == 50 and traj.status == "complete"


# ---------------------------------------------------------------------- every scheduler
@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_every_scheduler_runs(name):
    schedule = FLOW if name in FLOW_SCHEDULERS else Schedule.preset("scaled_linear")
    model = GaussianPowerLaw(schedule=schedule, size=SIZE)
    traj = run(model, scheduler=name, num_inference_steps=10)
    reference = make_scheduler(name, schedule)
    reference.set_timesteps(10)
    assert traj.status == "complete", traj.message
    assert len(traj) == len(reference.timesteps) >= 10
    assert traj.metadata["scheduler_class"] == SCHEDULERS[name][0]
    np.testing.assert_array_equal(traj.timesteps, reference.timesteps.double().numpy())
    assert torch.isfinite(traj.final).all()
    assert traj.final.shape == (2, 3, SIZE, SIZE)
    # Noisiest first: λ never decreases along the run (PNDM repeats a timestep, hence ≥).
    assert np.all(np.diff(traj.log_snr) >= 0)
    # A real sample of the data, not noise or zeros: the model's pixel variance is ≈ 1.
    assert 0.3 < traj.final.std().item() < 2.0


@pytest.mark.parametrize("name", sorted(n for n in SCHEDULERS if n not in FLOW_SCHEDULERS))
def test_vp_schedulers_refuse_flow_schedules_and_vice_versa(name):
    with pytest.raises(ValueError, match="cannot sample a 'flow' schedule"):
        run(GaussianPowerLaw(schedule=FLOW, size=SIZE), scheduler=name)
    with pytest.raises(ValueError, match="cannot sample a 'vp' schedule"):
        run(GaussianPowerLaw(size=SIZE), scheduler="flow_euler")


# ---------------------------------------------------------------------- recorded quantities
@pytest.mark.parametrize("name", ["ddim", "ddpm", "pndm", "euler", "dpmsolver++_karras", "flow_euler"])
def test_recorded_quantities_are_consistent(name):
    schedule = FLOW if name in FLOW_SCHEDULERS else Schedule.preset("scaled_linear")
    model = GaussianPowerLaw(schedule=schedule, size=SIZE)
    traj = run(model, scheduler=name, num_inference_steps=8, seed=5)
    sched = make_scheduler(name, schedule)
    sched.set_timesteps(8)
    for i, st in enumerate(traj.steps):
        # x_t = α·x̂0 + σ·ε̂ to float32 tolerance.
        torch.testing.assert_close(st.x_t, st.alpha * st.x0 + st.sigma * st.eps, atol=2e-5, rtol=1e-5)
        # λ = 2·log(α/σ).
        if st.alpha == 0:
            assert st.log_snr == -math.inf
        else:
            assert st.log_snr == pytest.approx(2 * math.log(st.alpha / st.sigma), abs=1e-12)
        # (α, σ) is the noise level diffusers itself uses for that step.
        t = int(round(st.timestep))
        if name in FLOW_SCHEDULERS:
            assert st.sigma == pytest.approx(float(sched.sigmas[i]), abs=1e-7)
            assert st.alpha + st.sigma == pytest.approx(1.0, abs=1e-12)
        elif name in ("euler", "dpmsolver++_karras"):
            assert st.sigma / st.alpha == pytest.approx(float(sched.sigmas[i]), rel=1e-6)
        else:
            assert st.alpha == pytest.approx(float(sched.alphas_cumprod[t]) ** 0.5, rel=1e-6)
            assert st.alpha**2 + st.sigma**2 == pytest.approx(1.0, abs=1e-12)
    # The first network input is the seed's noise, scaled exactly as the scheduler scales it.
    noise = torch.randn((2, 3, SIZE, SIZE), generator=torch.Generator("cpu").manual_seed(5))
    x = noise * getattr(sched, "init_noise_sigma", 1.0)
    if hasattr(sched, "scale_model_input"):
        x = sched.scale_model_input(x, sched.timesteps[0])
    torch.testing.assert_close(traj.steps[0].x_t, x, atol=1e-6, rtol=1e-6)


def test_ddim_pred_original_sample_equals_recorded_x0(gaussian):
    traj = run(gaussian, scheduler="ddim", num_inference_steps=10, seed=3)
    sched = make_scheduler("ddim", gaussian.schedule)
    sched.set_timesteps(10)
    levels = noise_levels(sched, gaussian.schedule)
    x = torch.randn((2, 3, SIZE, SIZE), generator=torch.Generator("cpu").manual_seed(3))
    for i in range(3):
        t = sched.timesteps[i]
        x_in = sched.scale_model_input(x, t)
        assert torch.equal(x_in, traj.steps[i].x_t)
        eps = (x_in - levels[i].alpha * gaussian(x_in, levels[i])) / levels[i].sigma
        out = sched.step(eps, t, x)
        # DDIM recomputes x̂0 from ε with its own float32 ᾱ: equal up to rounding (×1/α at step 0).
        torch.testing.assert_close(out.pred_original_sample, traj.steps[i].x0, atol=2e-5, rtol=1e-5)
        x = out.prev_sample
        assert torch.equal(x, traj.steps[i + 1].x_t)


def test_zero_terminal_snr_ddim_is_finite():
    """α = 0 at the first step: ε-prediction would make DDIM compute 0/0 (sampling hands it v)."""
    model = GaussianPowerLaw(schedule=Schedule.preset("scaled_linear").zero_terminal_snr(), size=SIZE)
    for name in ("ddim", "ddpm"):
        traj = run(model, scheduler=name, num_inference_steps=10)
        assert traj.status == "complete"
        assert traj.log_snr[0] == -math.inf and traj.steps[0].alpha == 0.0
        assert torch.isfinite(traj.final).all()
        assert 0.3 < traj.final.std().item() < 2.0
        assert traj.metadata["scheduler_config"]["prediction_type"] == "v_prediction"


# ---------------------------------------------------------------------- cancellation
@pytest.mark.parametrize("k", [0, 3, 8])
def test_cancel_from_callback_after_step_k(gaussian, k):
    full = run(gaussian, num_inference_steps=10, seed=11)
    stop = threading.Event()

    def callback(rec: StepRecord) -> None:
        if rec.index == k:
            stop.set()

    traj = run(gaussian, num_inference_steps=10, seed=11, stop=stop, callback=callback)
    assert traj.status == "cancelled"
    assert f"before step {k + 1}" in traj.message
    assert len(traj) == k + 1
    assert traj.final is None
    for a, b in zip(traj.steps, full.steps):
        assert_steps_equal(a, b)
    assert traj.sample is traj.steps[-1].x0
    assert torch.equal(traj.sample, full.steps[k].x0)


def test_cancel_before_the_first_step(gaussian):
    stop = threading.Event()
    stop.set()
    spy = Spy(gaussian)
    traj = run(spy, stop=stop)
    assert traj.status == "cancelled" and len(traj) == 0 and traj.final is None
    assert spy.calls == []
    with pytest.raises(ValueError, match="no sample"):
        traj.sample


def test_stop_set_after_the_last_step_completes(gaussian):
    stop = threading.Event()
    traj = run(gaussian, num_inference_steps=5, stop=stop, callback=lambda rec: rec.index == 4 and stop.set())
    assert traj.status == "complete" and len(traj) == 5 and traj.final is not None


def test_cancel_from_another_thread_while_sampling(gaussian):
    num_steps = 60
    full = run(gaussian, num_inference_steps=num_steps, seed=2)
    slow = Spy(gaussian, delay=0.02)  # ≥ 1.2 s for the whole run: ample time for the thread to stop it
    stop, running = threading.Event(), threading.Event()

    def canceller() -> None:
        assert running.wait(timeout=30)
        stop.set()

    thread = threading.Thread(target=canceller)
    thread.start()
    try:
        traj = run(slow, num_inference_steps=num_steps, seed=2, stop=stop, callback=lambda rec: rec.index == 1 and running.set())
    finally:
        thread.join(timeout=30)
    assert not thread.is_alive()
    assert traj.status == "cancelled"
    assert 2 <= len(traj) < num_steps
    assert len(slow.calls) == len(traj)  # no model call after the stop was seen
    assert traj.final is None
    for a, b in zip(traj.steps, full.steps):
        assert_steps_equal(a, b)
    assert torch.equal(traj.sample, traj.steps[-1].x0)


# ---------------------------------------------------------------------- failures
def test_nan_from_step_5_raises_with_partial_trajectory():
    model = NaNFrom(5, size=SIZE)
    with pytest.raises(SamplingError, match=r"NaN.*step 5") as info:
        run(model, num_inference_steps=10)
    traj = info.value.trajectory
    assert isinstance(info.value, RuntimeError)
    assert traj.status == "failed"
    assert "NaN" in traj.message and "step 5" in traj.message
    assert len(traj) == 5
    assert [s.index for s in traj.steps] == list(range(5))
    assert traj.final is None
    assert all(torch.isfinite(s.x0).all() and torch.isfinite(s.x_t).all() for s in traj.steps)
    # The partial run is the same as an intact model's first 5 steps.
    intact = run(GaussianPowerLaw(size=SIZE), num_inference_steps=10)
    for a, b in zip(traj.steps, intact.steps):
        assert_steps_equal(a, b)


def test_model_exception_raises_with_partial_trajectory():
    model = RaisesAt(3, size=SIZE)
    with pytest.raises(SamplingError, match="CUDA out of memory") as info:
        run(model, num_inference_steps=10)
    err = info.value
    assert isinstance(err.__cause__, RuntimeError) and "CUDA out of memory" in str(err.__cause__)
    assert "step 3" in str(err)
    assert err.trajectory.status == "failed"
    assert len(err.trajectory) == 3
    assert err.trajectory.final is None
    assert torch.equal(err.trajectory.sample, err.trajectory.steps[2].x0)


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("model_name", "prompt", "kwargs", "match"),
    [
        ("exemplars", "a photo of a dog", {}, r"names none of the built-in photographs; use exactly one of: astronaut, cat, coffee"),
        ("exemplars", "a cat on the moon", {}, r"names several \(cat, moon\)"),
        ("exemplars", "cat", {"negative_prompt": "dog"}, r"'dog' names none"),
        ("gaussian", "cat", {}, r"unconditional and takes no prompt"),
        ("gaussian", None, {"scheduler": "heun"}, r"unknown scheduler 'heun'"),
        ("gaussian", None, {"num_inference_steps": 2.5}, r"num_inference_steps must be a positive integer"),
        ("gaussian", None, {"num_inference_steps": 0}, r"num_inference_steps must be a positive integer, got 0"),
        ("gaussian", None, {"batch_size": 0}, r"batch_size must be a positive integer, got 0"),
        ("gaussian", None, {"height": 4}, r"too small"),
        ("exemplars", "cat", {"guidance": -1.0}, r"guidance must be ≥ 0, got -1.0"),
        ("exemplars", "cat", {"guidance": math.nan}, r"guidance must be ≥ 0"),
        ("gaussian", None, {"record": ("foo",)}, r"cannot record \['foo'\]"),
        ("exemplars", "[cat:moon:xyz=3]", {}, r"unknown unit 'xyz'"),
        ("exemplars", "[cat:moon:1.5]", {}, r"must lie in \[0, 1\]"),
        ("exemplars", "[cat:dog:0.5]", {}, r"'dog' names none"),
    ],
)
def test_bad_arguments_raise_before_any_step(request, model_name, prompt, kwargs, match):
    spy = Spy(request.getfixturevalue(model_name))
    with pytest.raises(ValueError, match=match):
        run(spy, prompt, **kwargs)
    assert spy.calls == []


def test_live_prompt_is_checked_per_step(exemplars):
    # A live prompt can only be checked when it is polled, mid-run. (Whether that should raise a
    # ValueError or a SamplingError that keeps the partial run is a design question; either way the
    # bad prompt must never reach the model.)
    spy = Spy(exemplars)
    with pytest.raises((ValueError, SamplingError), match="names none"):
        run(spy, lambda i, level: "cat" if i < 2 else "a dog", num_inference_steps=6)
    assert len(spy.calls) == 2


# ---------------------------------------------------------------------- prompt schedules
def test_a1111_fraction_switch(exemplars):
    spy = Spy(exemplars)
    traj = run(spy, "[cat:moon:0.5]", num_inference_steps=10)
    # A1111: W = min(N, int(0.5·N)) = 5; the first prompt for steps 0…W, the second from W + 1.
    w = min(10, int(0.5 * 10))
    expected = ["cat"] * (w + 1) + ["moon"] * (10 - w - 1)
    assert traj.prompts == expected
    assert [call[2] for call in spy.calls] == [[p, p] for p in expected]  # what the model saw
    assert traj.metadata["prompt"] == "[cat:moon:0.5]"


def test_level_switch_at_birth_of_level_4(exemplars):
    traj = run(exemplars, PromptSchedule.switch("cat", "moon", Boundary.level(4)), num_inference_steps=20)
    threshold = -2 * math.log(4)
    lam = traj.log_snr
    first = int(np.argmax(lam >= threshold))
    assert 0 < first < len(traj) - 1 and lam[first - 1] < threshold <= lam[first]
    assert traj.prompts == ["cat"] * first + ["moon"] * (len(traj) - first)
    assert traj.metadata["prompt"]["segments"][0]["until"] == Boundary.level(4).to_dict()


def test_live_callable_prompt(exemplars):
    seen: list[tuple[int, float, float]] = []

    def live(i, level):
        seen.append((i, level.timestep, level.log_snr))
        return "a photo of a cat" if i < 3 else "moon"

    spy = Spy(exemplars)
    traj = run(spy, live, num_inference_steps=8, seed=4)
    assert traj.prompts == ["cat"] * 3 + ["moon"] * 5  # canonicalised by the model, recorded per step
    assert [c[2] for c in spy.calls] == [["cat", "cat"]] * 3 + [["moon", "moon"]] * 5
    assert [s[0] for s in seen] == list(range(8))
    np.testing.assert_array_equal([s[1] for s in seen], traj.timesteps)
    np.testing.assert_array_equal([s[2] for s in seen], traj.log_snr)
    assert traj.metadata["prompt"] == "live"
    # Honoured: identical to a constant "cat" run until the switch, different from step 3 on.
    cat = run(exemplars, "cat", num_inference_steps=8, seed=4)
    for i in range(3):
        assert_steps_equal(traj.steps[i], cat.steps[i])
    assert torch.equal(traj.steps[3].x_t, cat.steps[3].x_t)
    assert not torch.allclose(traj.steps[3].x0, cat.steps[3].x0, atol=1e-2)


# ---------------------------------------------------------------------- classifier-free guidance
def test_guidance_1_calls_the_model_once_per_step(exemplars):
    spy = Spy(exemplars)
    traj = run(spy, "cat", num_inference_steps=5, batch_size=3, guidance=1.0)
    assert len(spy.calls) == len(traj) == 5
    for x_t, _, cond, out in spy.calls:
        assert x_t.shape[0] == 3 and cond == ["cat"] * 3
    assert torch.equal(spy.calls[0][3], traj.steps[0].x0)


@pytest.mark.parametrize("negative", [None, "moon"])
def test_guidance_3_batches_negative_then_positive(exemplars, negative):
    spy = Spy(exemplars)
    g = 3.0
    traj = run(spy, "cat", num_inference_steps=5, batch_size=2, guidance=g, negative_prompt=negative)
    assert len(spy.calls) == len(traj) == 5
    for i, (x_t, level, cond, _) in enumerate(spy.calls):
        assert x_t.shape[0] == 4
        assert cond == [negative] * 2 + ["cat"] * 2
        assert torch.equal(x_t[:2], x_t[2:]) and torch.equal(x_t[2:], traj.steps[i].x_t)
        assert level.timestep == traj.steps[i].timestep
    # The guided prediction, by hand, for the first step (the model predicts x̂0, so it is recorded
    # as is). Step 0: later on the unconditional posterior has already settled on the cat.
    _, _, _, both = spy.calls[0]
    uncond, cond = both[:2], both[2:]
    assert (cond - uncond).abs().max() > 0.1  # the check below is not vacuous
    torch.testing.assert_close(traj.steps[0].x0, uncond + g * (cond - uncond), atol=1e-6, rtol=1e-6)


def test_guidance_on_an_unconditional_model_is_refused_before_sampling(gaussian):
    """As a prompt is: guidance scales a prompt's effect, so on an unconditional model it would change nothing."""
    spy = Spy(gaussian)
    with pytest.raises(ValueError, match=r"unconditional: guidance=5 would change nothing.*leave it at 1"):
        run(spy, num_inference_steps=4, guidance=5.0)
    assert not spy.calls
    assert_same_run(run(gaussian, num_inference_steps=4, guidance=1.0), run(gaussian, num_inference_steps=4))


# ---------------------------------------------------------------------- callback
def test_callback_receives_each_step_in_order(exemplars):
    records: list[StepRecord] = []
    traj = run(exemplars, "[cat:moon:2]", num_inference_steps=7, callback=records.append)
    assert [r.index for r in records] == list(range(7))
    assert [r.prompt for r in records] == ["cat"] * 3 + ["moon"] * 4
    assert all(r is s for r, s in zip(records, traj.steps))
    assert all(r.num_steps == 7 for r in records)
    assert all(r.x0 is not None and r.x0.device.type == "cpu" for r in records)


def test_record_subset(gaussian):
    traj = run(gaussian, record=("x0",))
    assert all(s.x_t is None and s.eps is None and s.x0 is not None for s in traj.steps)
    with pytest.raises(ValueError, match="'x_t' was not recorded"):
        traj.x_t
    assert traj.x0.shape == (6, 2, 3, SIZE, SIZE)


# ---------------------------------------------------------------------- checking a run without running it
class _NeverCalled(GaussianPowerLaw):
    def __call__(self, x_t, noise, cond):
        raise AssertionError("check_sample evaluated the model")

    def encode(self, prompts):
        raise AssertionError("check_sample encoded a prompt")


@pytest.mark.parametrize("options", [
    {"num_inference_steps": 2000},
    {"num_inference_steps": 2000, "scheduler": "ddpm"},
    {"scheduler": "heun"},
    {"height": 7, "width": 7},
    {"height": 100_000, "width": 100_000, "batch_size": 8},
    {"guidance": float("nan")},
    {"seed": -1},
    {"record": ("x0", "logits")},
    {"num_steps": 5, "num_inference_steps": 5},
])
def test_check_sample_raises_what_sample_raises_before_its_first_step(options):
    from chromaviz.sampling import check_sample

    model = _NeverCalled()
    with pytest.raises((TypeError, ValueError)) as checked:
        check_sample(model, None, **options)
    with pytest.raises(type(checked.value)) as sampled:
        sample(model, None, **options)
    assert str(checked.value) == str(sampled.value)


@pytest.mark.parametrize("model, prompt", [(GaussianPowerLaw(), "cat"), (ExemplarMixture(size=16), "[cat:dog:0.5]")])
def test_check_sample_checks_the_prompt_of_every_step(model, prompt):
    from chromaviz.sampling import check_sample

    with pytest.raises(ValueError) as checked:
        check_sample(model, prompt, num_inference_steps=4)
    with pytest.raises(ValueError) as sampled:
        sample(model, prompt, num_inference_steps=4)
    assert str(checked.value) == str(sampled.value)


def test_check_sample_returns_the_plan_sample_follows():
    from chromaviz.sampling import check_sample

    plan = check_sample(_NeverCalled(), None, num_inference_steps=7, scheduler="euler", height=16, width=16)
    traj = sample(GaussianPowerLaw(), None, num_inference_steps=7, scheduler="euler", height=16, width=16)
    assert plan.num_evaluations == len(traj)
    np.testing.assert_allclose(plan.timesteps, [s.timestep for s in traj.steps])
    with pytest.raises(TypeError, match=r"^sample\(\) got an unexpected keyword argument 'bogus'$"):
        check_sample(_NeverCalled(), None, bogus=1)


@pytest.mark.parametrize("model, prompt, negative, guidance, words", [
    (GaussianPowerLaw(), None, "cat", 1.0, "negative_prompt: gaussian is unconditional"),
    (ExemplarMixture(size=16), "cat", "xyzzy", 3.0, "negative_prompt: prompt 'xyzzy' names none of the built-in photographs"),
])
def test_a_bad_negative_prompt_is_named_as_such(model, prompt, negative, guidance, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        sample(model, prompt, negative_prompt=negative, guidance=guidance, num_inference_steps=2)
