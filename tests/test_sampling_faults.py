"""Faults at the sampler's boundary: bad arguments refused up front with specific messages, and
every stop (interrupt, callback error, model error, scheduler error, NaN) ending with the partial
trajectory, marked with why and where it stopped.

Faults are injected into real models and real diffusers schedulers (subclasses that fail at a
given step); every run is on the CPU, 16×16, a few steps.
"""

from __future__ import annotations

import math
import signal
import threading
import time
import warnings

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

import chromaviz.sampling.recorder as recorder_module
from chromaviz.models import ExemplarMixture, GaussianPowerLaw
from chromaviz.noise import make_scheduler, plan_steps
from chromaviz.sampling import SamplingError, SamplingInterrupted, sample
from chromaviz.sampling.recorder import recording_bytes
from chromaviz.sampling.trajectory import RECORDABLE, Trajectory

SIZE = 16


class Faulty(GaussianPowerLaw):
    """The Gaussian model, failing at its ``at``-th call (0-based) with ``fault``: "interrupt"
    (KeyboardInterrupt, as a notebook's interrupt inside the model), "raise" (RuntimeError) or
    "nan"; ``delay`` seconds per call."""

    def __init__(self, at: int | None = None, fault: str = "raise", delay: float = 0.0, **kwargs) -> None:
        super().__init__(size=SIZE, **kwargs)
        self.at, self.fault, self.delay, self.calls = at, fault, delay, 0

    def __call__(self, x_t, noise, cond=None):
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        if self.calls - 1 == self.at:
            if self.fault == "interrupt":
                raise KeyboardInterrupt
            if self.fault == "raise":
                raise RuntimeError("a bug in the model")
        out = super().__call__(x_t, noise, cond)
        return out * math.nan if self.calls - 1 == self.at else out


class BadEncoder(GaussianPowerLaw):
    """Conditional in name only: its prompt encoder raises."""

    conditional = True

    def check_prompt(self, prompt):
        return prompt or None

    def encode(self, prompts):
        raise RuntimeError("the text encoder is broken")


class Overflowing(ExemplarMixture):
    """Finite outputs (±3·10³⁸, the sign from the conditioning) whose guided combination overflows
    float32: ε̃ = ε_u + w·(ε_c − ε_u) with ε_c − ε_u = 6·10³⁸."""

    def __call__(self, x_t, noise, cond):
        sign = torch.tensor([1.0 if c is not None else -1.0 for c in cond]).view(-1, 1, 1, 1)
        return torch.full_like(x_t, 3e38) * sign


class FaultyDDIM(DDIMScheduler):
    """diffusers' DDIM, whose step at ``fail_at`` (its index in ``timesteps``) raises or returns NaN."""

    fail_at, fault = 2, "raise"

    def step(self, model_output, timestep, sample, *args, **kwargs):
        out = super().step(model_output, timestep, sample, *args, **kwargs)
        if int(timestep) == int(self.timesteps[self.fail_at]):
            if self.fault == "raise":
                raise IndexError("index 11 is out of bounds for dimension 0 with size 11")
            out.prev_sample = out.prev_sample * math.nan
        return out


def faulty_ddim(schedule, fault: str, at: int = 2) -> FaultyDDIM:
    sched = FaultyDDIM.from_config(make_scheduler("ddim", schedule).config)
    sched.fault, sched.fail_at = fault, at
    return sched


def run(model, prompt=None, **kwargs) -> Trajectory:
    kwargs.setdefault("num_inference_steps", 6)
    kwargs.setdefault("batch_size", 2)
    kwargs.setdefault("device", "cpu")
    return sample(model, prompt, **kwargs)


def assert_prefix_of(partial: Trajectory, full: Trajectory) -> None:
    """The partial run's steps are the full run's first steps, bit for bit."""
    assert len(partial) < len(full)
    for a, b in zip(partial.steps, full.steps):
        assert (a.index, a.timestep, a.prompt) == (b.index, b.timestep, b.prompt)
        for name in RECORDABLE:
            assert torch.equal(getattr(a, name), getattr(b, name)), (name, a.index)


@pytest.fixture(scope="module")
def exemplars() -> ExemplarMixture:
    return ExemplarMixture(size=SIZE)


@pytest.fixture
def deferred(request, monkeypatch):
    """Run the test both ways: records handed out at once (CPU) and one step late (as on CUDA)."""
    if request.param:
        monkeypatch.setattr(recorder_module, "DEFER_ON", ("cpu", "cuda"))
    return request.param


both_ways = pytest.mark.parametrize("deferred", [False, True], ids=["immediate", "deferred"], indirect=True)


# ---------------------------------------------------------------------- bad arguments
BAD = [
    ({"model": None}, TypeError, r"model must be a chromaviz Denoiser .*got None \(NoneType\)"),
    ({"model": "gaussian"}, TypeError, r"model must be a chromaviz Denoiser .*got 'gaussian' \(str\)"),
    ({"guidance": "3"}, TypeError, r"guidance must be a number ≥ 0, got '3' \(str\)"),
    ({"guidance": math.inf}, ValueError, r"guidance must be finite and ≥ 0, got inf"),
    ({"eta": math.nan}, ValueError, r"eta must be in \[0, 1\], got nan \(not a number\)"),
    ({"eta": -5}, ValueError, r"eta must be in \[0, 1\], got -5"),
    ({"guidance_rescale": 1.5}, ValueError, r"guidance_rescale must be in \[0, 1\], got 1.5"),
    ({"guidance_rescale": -0.1}, ValueError, r"guidance_rescale must be in \[0, 1\]"),
    ({"record": "x0"}, TypeError, r"record must be a list or tuple of names from \['x_t', 'x0', 'eps'\], got 'x0'"),
    ({"record": ["x0", "noise"]}, ValueError, r"cannot record \['noise'\]"),
    ({"scheduler": object()}, TypeError, r"scheduler must be a scheduler name .* or a diffusers scheduler instance"),
    ({"scheduler": "heun"}, ValueError, r"unknown scheduler 'heun'"),
    ({"stop": True}, TypeError, r"stop must be a threading.Event .*got True \(bool\)"),
    ({"callback": 42}, TypeError, r"callback must be a function of a StepRecord, or None; got 42 \(int\)"),
    ({"seed": 2**64}, ValueError, r"seed must be an integer in \[0, 18446744073709551615\], got 18446744073709551616"),
    ({"seed": -1}, ValueError, r"seed must be an integer in \[0, 18446744073709551615\], got -1"),
    ({"seed": 1.5}, TypeError, r"seed must be an integer"),
    ({"num_inference_steps": 2.5}, TypeError, r"num_inference_steps must be a positive integer, got 2.5 \(float\)"),
    ({"num_inference_steps": True}, TypeError, r"num_inference_steps must be a positive integer, got True"),
    ({"num_inference_steps": 0}, ValueError, r"num_inference_steps must be a positive integer, got 0"),
    ({"batch_size": np.int64(-2)}, ValueError, r"batch_size must be a positive integer, got -2"),
    ({"height": "32"}, TypeError, r"height must be a positive integer"),
    ({"progress": "yes"}, TypeError, r"progress must be True or False, got 'yes'"),
    ({"device": "bogus"}, ValueError, r"device must be a device name such as 'cpu', 'cuda' or 'cuda:1', got 'bogus'"),
    ({"device": 3.0}, TypeError, r"device must be a device name"),
    ({"generator_device": "nowhere"}, ValueError, r"generator_device must be a device name"),
    ({"record_scale": 3}, ValueError, r"record_scale=3 must divide the sample size 16×16"),
    ({"prompt": 42}, TypeError, r"prompt must be a str, a PromptSchedule, a function .*got 42 \(int\)"),
    ({"prompt": lambda i: "cat"}, TypeError, r"a live prompt function must take \(i, noise\) or \(i, noise, plan\)"),
    ({"negative_prompt": 3}, TypeError, r"negative_prompt must be a str or None, got 3 \(int\)"),
    ({"num_steps": 4}, TypeError, r"unexpected keyword argument .num_steps."),
]


@pytest.mark.parametrize(("kwargs", "error", "match"), BAD, ids=[str(sorted(k.items()))[:60] for k, _, _ in BAD])
def test_bad_arguments_are_refused_before_any_step(kwargs, error, match):
    model = Faulty()
    kwargs = dict(kwargs)
    target = kwargs.pop("model", model)
    prompt = kwargs.pop("prompt", None)
    with pytest.raises(error, match=match):
        run(target, prompt, **kwargs)
    assert model.calls == 0


def test_cuda_refused_where_there_is_none():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match=r"device='cuda', but CUDA is not available on this machine; use 'cpu'"):
        run(Faulty(), device="cuda")


@pytest.mark.parametrize("move", [
    lambda: GaussianPowerLaw(size=SIZE).to("cuda"),
    lambda: ExemplarMixture().to("cuda"),
    pytest.param(lambda: __import__("chromaviz.models", fromlist=["load_shapes"]).load_shapes(device="cuda"), id="load_shapes"),
])
def test_models_refuse_a_device_this_machine_lacks_with_the_samplers_words(move):
    """``model.to("cuda")`` and ``load_shapes(device="cuda")`` on a CPU build raised torch's AssertionError."""
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match=r"device='cuda', but CUDA is not available on this machine; use 'cpu'"):
        move()


@pytest.mark.parametrize("model", [lambda: GaussianPowerLaw(size=SIZE), ExemplarMixture])
def test_to_a_dtype_says_where_a_dtype_is_chosen(model):
    with pytest.raises(TypeError, match=r"got torch.float16 \(dtype\) \(a model's dtype is chosen when it is loaded"):
        model().to(torch.float16)


def test_numpy_and_torch_integers_are_accepted():
    model = GaussianPowerLaw(size=SIZE)
    reference = run(model, num_inference_steps=5, batch_size=2, seed=3)
    for steps, batch, seed in [(np.int64(5), np.int32(2), np.uint64(3)), (torch.tensor(5), torch.tensor(2), torch.tensor(3))]:
        traj = run(model, num_inference_steps=steps, batch_size=batch, seed=seed)
        assert traj.metadata["num_inference_steps"] == 5 and type(traj.metadata["seed"]) is int
        assert torch.equal(traj.final, reference.final)
    assert run(model, num_inference_steps=2, seed=2**64 - 1).status == "complete"


def test_metadata_counts_inference_steps_and_evaluations():
    """PNDM evaluates the model more often than N (S > N): both are recorded."""
    traj = run(GaussianPowerLaw(size=SIZE), scheduler="pndm", num_inference_steps=5)
    plan = plan_steps(GaussianPowerLaw(size=SIZE).schedule, 5, "pndm")
    assert plan.num_evaluations > 5
    assert traj.metadata["num_inference_steps"] == 5
    assert traj.metadata["num_evaluations"] == traj.metadata["num_steps"] == len(traj) == plan.num_evaluations
    assert all(s.num_steps == plan.num_evaluations for s in traj.steps)


def test_live_prompt_may_see_the_plan(exemplars):
    seen = []

    def live(i, noise, plan):
        seen.append((i, noise, plan.num_inference_steps, plan.num_evaluations, plan.noise[i]))
        return "cat" if i < plan.num_inference_steps // 2 else "moon"

    traj = run(exemplars, live, num_inference_steps=6)
    assert traj.prompts == ["cat"] * 3 + ["moon"] * 3
    assert [s[0] for s in seen] == list(range(6))
    assert all(n == 6 and s == 6 and noise == planned for _, noise, n, s, planned in seen)


# ---------------------------------------------------------------------- interrupts
@both_ways
def test_keyboard_interrupt_inside_the_model_keeps_the_partial_run(deferred):
    full = run(Faulty(), num_inference_steps=8)
    with pytest.raises(KeyboardInterrupt) as info:
        run(Faulty(at=4, fault="interrupt"), num_inference_steps=8)
    assert isinstance(info.value, SamplingInterrupted)
    traj = info.value.trajectory
    assert traj.status == "interrupted"
    assert "interrupted at step 4 of 8 (in the model)" in traj.message == str(info.value)
    assert len(traj) == 4 and traj.final is None
    assert_prefix_of(traj, full)
    assert torch.equal(traj.sample, full.steps[3].x0)


def test_ctrl_c_from_outside_keeps_the_partial_run():
    """A real SIGINT to the main thread mid-run (what Ctrl-C and a notebook's interrupt send)."""
    if not hasattr(signal, "pthread_kill") or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("needs SIGINT to raise KeyboardInterrupt in the main thread")
    steps = 200
    full = run(Faulty(), num_inference_steps=steps, record=("x0",))
    started, main = threading.Event(), threading.main_thread().ident

    def interrupter() -> None:
        assert started.wait(timeout=60)
        signal.pthread_kill(main, signal.SIGINT)

    thread = threading.Thread(target=interrupter)
    thread.start()
    try:
        with pytest.raises(SamplingInterrupted) as info:
            run(Faulty(delay=0.02), num_inference_steps=steps, record=("x0",),
                callback=lambda rec: rec.index == 1 and started.set())
    finally:
        thread.join(timeout=60)
    traj = info.value.trajectory
    assert traj.status == "interrupted" and "interrupted at step" in traj.message
    assert 2 <= len(traj) < steps
    for a, b in zip(traj.steps, full.steps):
        assert torch.equal(a.x0, b.x0)


def test_keyboard_interrupt_in_the_callback():
    def callback(rec):
        if rec.index == 2:
            raise KeyboardInterrupt

    with pytest.raises(SamplingInterrupted, match=r"interrupted at step 2 of 6 \(in the step callback\)") as info:
        run(Faulty(), callback=callback)
    assert len(info.value.trajectory) == 3  # step 2 was recorded before its callback ran


def test_an_interrupted_run_saves_and_loads(tmp_path):
    with pytest.raises(SamplingInterrupted) as info:
        run(Faulty(at=3, fault="interrupt"))
    path = info.value.trajectory.save(tmp_path / "partial.safetensors")
    back = Trajectory.load(path)
    assert back.status == "interrupted" and len(back) == 3
    assert torch.equal(back.x0, info.value.trajectory.x0)


# ---------------------------------------------------------------------- errors, by the part that failed
@both_ways
def test_a_raising_callback_is_a_sampling_error_with_the_partial_run(deferred):
    def callback(rec):
        if rec.index == 3:
            raise ValueError("the UI went away")

    with pytest.raises(SamplingError, match=r"step 3 \(t=\d+\) failed in the step callback: ValueError: the UI went away") as info:
        run(Faulty(), callback=callback)
    traj = info.value.trajectory
    assert traj.status == "failed" and isinstance(info.value.__cause__, ValueError)
    # Deferred, step 4 was in flight when step 3's record was handed out: it is complete and kept.
    assert [s.index for s in traj.steps] == [0, 1, 2, 3] + ([4] if deferred else [])


def test_a_raising_stop_signal_is_named_at_the_step_it_raised_in():
    """It was reported as a failure in the previous step's recording."""
    class Stop:
        calls = 0

        def is_set(self):
            Stop.calls += 1
            if Stop.calls == 3:
                raise RuntimeError("the UI went away")
            return False

    with pytest.raises(SamplingError, match=r"step 2 \(t=\d+\) failed in the stop signal \(stop.is_set\(\)\): "
                                            r"RuntimeError: the UI went away") as info:
        run(Faulty(), stop=Stop())
    assert len(info.value.trajectory) == 2


@both_ways
def test_model_error_names_the_model(deferred):
    with pytest.raises(SamplingError, match=r"step 2 \(t=\d+\) failed in the model: RuntimeError: a bug in the model") as info:
        run(Faulty(at=2, fault="raise"))
    assert info.value.trajectory.status == "failed" and len(info.value.trajectory) == 2


def test_a_live_prompt_returning_a_non_string_names_the_prompt(exemplars):
    with pytest.raises(SamplingError, match=r"step 2 .*failed in the prompt: TypeError: the live prompt function "
                                            r"returned 42 \(int\); it must return a str or None") as info:
        run(exemplars, lambda i, noise: "cat" if i < 2 else 42)
    assert info.value.trajectory.prompts == ["cat", "cat"]


def test_prompt_encoder_error_names_the_encoder():
    with pytest.raises(SamplingError, match=r"step 0 .*failed in the prompt encoder: RuntimeError: the text encoder is broken"):
        run(BadEncoder(size=SIZE), "anything")


@both_ways
def test_scheduler_error_names_the_scheduler_step(deferred):
    model = Faulty()
    with pytest.raises(SamplingError, match=r"step 2 .*failed in the scheduler step \(FaultyDDIM.step\): IndexError") as info:
        run(model, scheduler=faulty_ddim(model.schedule, "raise"))
    assert len(info.value.trajectory) == 2 and info.value.trajectory.status == "failed"


# ---------------------------------------------------------------------- NaN blamed on what produced it
@both_ways
def test_nan_from_the_model_is_blamed_on_the_model(deferred):
    with pytest.raises(SamplingError, match=r"^the model returned NaN or infinity at step 3 .*the 3 earlier steps are kept"):
        run(Faulty(at=3, fault="nan"))


@both_ways
def test_nan_from_the_scheduler_step_is_blamed_on_it(deferred):
    model = Faulty()
    with pytest.raises(SamplingError) as info:
        run(model, scheduler=faulty_ddim(model.schedule, "nan", at=2))
    assert str(info.value).startswith("the scheduler step (FaultyDDIM.step) returned NaN or infinity at step 2 ")
    assert "from a finite model output" in str(info.value)
    assert model.calls == (4 if deferred else 3)  # the model never saw the NaN input
    assert len(info.value.trajectory) == 2


def test_overflowing_guidance_is_blamed_on_guidance():
    model = Overflowing(size=SIZE)
    with pytest.raises(SamplingError, match=r"^classifier-free guidance \(guidance=3.0, guidance_rescale=0.0\) turned "
                                            r"the model's finite outputs into NaN or infinity at step 0"):
        run(model, "cat", guidance=3.0)


def test_dpmsolver_at_1000_steps_is_not_blamed_on_the_model():
    """diffusers' dpmsolver++ repeats a timestep at 1000 steps: refused before the first step, or
    if it runs, the failure names the scheduler step, never the model."""
    model = GaussianPowerLaw(size=8)
    try:
        traj = sample(model, num_inference_steps=1000, scheduler="dpmsolver++", device="cpu", record=())
    except ValueError as exc:  # refused by the plan
        assert "dpmsolver" in str(exc).lower() or "timestep" in str(exc).lower()
        return
    except SamplingError as exc:
        assert str(exc).startswith("the scheduler step (DPMSolverMultistepScheduler.step)"), str(exc)
        assert "model returned" not in str(exc)
        return
    assert traj.status == "complete" and torch.isfinite(traj.final).all()


# ---------------------------------------------------------------------- memory
def test_a_recording_too_big_for_memory_is_refused_at_once():
    model = Faulty()
    start = time.perf_counter()
    with pytest.raises(ValueError) as info:
        sample(model, num_inference_steps=1000, batch_size=100_000, height=256, width=256, device="cpu")
    assert time.perf_counter() - start < 5
    message = str(info.value)
    expected = recording_bytes(1000, (100_000, 3, 256, 256), RECORDABLE, 1, torch.float32) / 2**30
    assert f"needs about {expected:.3g} GiB of host memory" in message
    for way_out in ("record=('x0',)", "record_scale", "num_inference_steps", "batch_size"):
        assert way_out in message
    assert model.calls == 0


@pytest.mark.parametrize(("record", "scale"), [(RECORDABLE, 1), (("x0",), 2), ((), 1)])
def test_the_estimate_is_what_is_recorded(record, scale):
    traj = run(GaussianPowerLaw(size=SIZE), record=record, record_scale=scale, num_inference_steps=4)
    tensors = [getattr(s, n) for s in traj.steps for n in RECORDABLE if getattr(s, n) is not None] + [traj.final]
    held = sum(t.numel() * t.element_size() for t in tensors)
    assert held == recording_bytes(4, (2, 3, SIZE, SIZE), record, scale, torch.float32)


# ---------------------------------------------------------------------- one step is not a sample
def test_one_ddim_step_warns_that_it_returns_noise():
    model = GaussianPowerLaw(size=SIZE)
    with pytest.warns(UserWarning, match=r"num_inference_steps=1: DDIMScheduler's single step .* one step is not a sample"):
        traj = run(model, scheduler="ddim", num_inference_steps=1)
    assert traj.status == "complete"
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        run(model, scheduler="dpmsolver++", num_inference_steps=1)  # its one step is at t = 999: a (blurry) sample
        run(model, scheduler="ddim", num_inference_steps=2)


class WrongOutput(GaussianPowerLaw):
    """The Gaussian model, whose output at its ``at``-th call is ``make(out)`` instead."""

    def __init__(self, at: int, make) -> None:
        super().__init__(size=SIZE)
        self.at, self.make, self.calls = at, make, 0

    def __call__(self, x_t, noise, cond=None):
        out = super().__call__(x_t, noise, cond)
        self.calls += 1
        return self.make(out) if self.calls - 1 == self.at else out


@pytest.mark.parametrize("make, why", [
    (lambda out: out[:1], r"shape \(1, 3, 16, 16\) for an input of shape \(2, 3, 16, 16\)"),
    (lambda out: out[:, :, :8], r"shape \(2, 3, 8, 16\)"),
    (lambda out: out.round().to(torch.int64), "dtype torch.int64; it must return floating point"),
    (lambda out: out.numpy(), "the model returned ndarray"),
])
def test_a_model_output_of_the_wrong_shape_or_dtype_stops_the_run_at_that_step(make, why):
    """A scheduler would broadcast a batch of 1 over the run (a "complete" run that cannot be saved)
    or round an integer prediction silently; the run stops there and keeps the earlier steps."""
    with pytest.raises(SamplingError, match=why) as err:
        sample(WrongOutput(3, make), num_inference_steps=6, batch_size=2, device="cpu")
    traj = err.value.trajectory
    assert traj.status == "failed" and len(traj) == 3 and "step 3" in traj.message and "the model" in traj.message


def test_the_memory_guard_reads_the_process_address_space_limit():
    """Under ``ulimit -v`` (RLIMIT_AS) a recording that fits the host's free memory but not the
    limit is refused before the first step (it used to pass the check and die in save)."""
    import subprocess
    import sys

    code = (
        "import resource; resource.setrlimit(resource.RLIMIT_AS, (10 * 2**30, 10 * 2**30))\n"
        "from chromaviz.models import GaussianPowerLaw\n"
        "from chromaviz.sampling import check_sample\n"
        "from chromaviz.sampling.recorder import RecordingTooLarge, available_memory\n"
        "assert available_memory() < 10 * 2**30\n"
        "try:\n"
        "    check_sample(GaussianPowerLaw(size=256), num_inference_steps=50, batch_size=96, device='cpu')\n"
        "except RecordingTooLarge as err:\n"
        "    print('refused', err.needed > 10 * 2**30 > err.budget)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.strip() == "refused True", out.stderr[-2000:]


def test_a_sweep_cell_pairing_guidance_with_an_unconditional_model_runs_unguided():
    """A grid may pair guidance 3 with the unconditional Gaussian model (sample() itself refuses it): the run
    spec runs that cell unguided and its file says so."""
    from chromaviz.runs import RunSpec

    spec = RunSpec(model="gaussian", steps=2, size=SIZE, guidance=3.0, device="cpu")
    traj = spec.run(spec.load(), given=()).trajectory  # given=(): refuse no ignored value, as a sweep's cells
    assert traj.metadata["guidance"] == 1.0
