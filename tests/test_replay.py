"""The replay (``Comparison.predicted``) is exact for every scheduler chromaviz accepts, stochastic ones
included; wrong runs are refused or flagged; dynamic-shift flow schedules sample (issue 25, items 2, 3, 7).

The replay steps the run's own scheduler mode by mode with the Wiener gain as the model, from the run's
own initial noise and, for stochastic samplers, the noise each step injected, replayed from the seed by
the scheduler itself at the run's shape and dtype. For the Gaussian model it must equal the measurement
to float rounding: ``python benchmarks/replay_residual.py`` prints the residual per scheduler.
"""

from __future__ import annotations

import diffusers
import numpy as np
import pytest

from chromaviz.analysis import SuspectRunWarning, compare
from chromaviz.models import GaussianPowerLaw
from chromaviz.noise import SCHEDULERS, Schedule, plan_steps
from chromaviz.noise.schedulers import scheduler_from_config
from chromaviz.sampling import sample

SD = Schedule.preset("scaled_linear")
FLOW = Schedule.flow_matching(3.0)

# Every diffusers scheduler class chromaviz accepts for these schedules (the others are refused: noise
# levels of their own, a step that takes other arguments, or a missing optional library).
ACCEPTED_CLASSES = [
    "DDIMInverseScheduler", "DDIMParallelScheduler", "DDIMScheduler", "DDPMParallelScheduler", "DDPMScheduler",
    "DEISMultistepScheduler", "DPMSolverMultistepInverseScheduler", "DPMSolverMultistepScheduler",
    "DPMSolverSinglestepScheduler", "EulerAncestralDiscreteScheduler", "EulerDiscreteScheduler",
    "FlowMatchEulerDiscreteScheduler", "FlowMatchHeunDiscreteScheduler", "FlowMatchLCMScheduler",
    "HeunDiscreteScheduler", "KDPM2AncestralDiscreteScheduler", "KDPM2DiscreteScheduler",
    "LCMScheduler", "LMSDiscreteScheduler", "PNDMScheduler", "SASolverScheduler", "TCDScheduler",
    "UniPCMultistepScheduler",
]


def _case(name):
    """(scheduler argument, schedule, extra sample() options) of a case name."""
    if name in SCHEDULERS:
        return name, FLOW if name == "flow_euler" else SD, {}
    if name == "ddim-eta1":
        return "ddim", SD, {"eta": 1.0}
    if name == "sde-dpmsolver++":
        return scheduler_from_config("DPMSolverMultistepScheduler", {**SD.scheduler_config, "algorithm_type": name}), SD, {}
    if name == "flow-stochastic":
        return scheduler_from_config("FlowMatchEulerDiscreteScheduler", {**FLOW.scheduler_config,
                                                                         "stochastic_sampling": True}), FLOW, {}
    schedule = FLOW if name.startswith("Flow") else SD
    return scheduler_from_config(name, schedule.scheduler_config), schedule, {}


CASES = [*SCHEDULERS, "ddim-eta1", "sde-dpmsolver++", "flow-stochastic", *ACCEPTED_CLASSES]


@pytest.mark.filterwarnings("ignore::chromaviz.sampling.trajectory.SuspectRunWarning")  # inverse and 4-step runs are rightly suspect; the replay is what is tested
@pytest.mark.parametrize("name", CASES)
def test_the_replay_is_exact_for_every_accepted_scheduler(name):
    scheduler, schedule, options = _case(name)
    model = GaussianPowerLaw(schedule=schedule)
    traj = sample(model, scheduler=scheduler, num_inference_steps=10, batch_size=2, height=16, width=16,
                  device="cpu", record=("x0",), **options)  # 2·3·16·16 elements: the dtype of a draw matters
    c = compare(traj, model, method="pyramid" if name in ("ddpm", "sde-dpmsolver++") else "rings")
    assert c.prediction_kind == "exact", c.prediction_note
    residual = max(np.abs(c.measured - c.predicted).max(), np.abs(c.measured_final - c.predicted_final).max())
    assert residual <= 1e-5, f"replay residual {residual:.2e}"
    np.testing.assert_array_equal(c.batch_noise, 0.0)


@pytest.mark.filterwarnings("ignore::chromaviz.sampling.trajectory.SuspectRunWarning")  # inverse and 4-step runs are rightly suspect; the replay is what is tested
def test_the_replay_list_covers_every_scheduler_diffusers_ships_that_chromaviz_accepts():
    """A diffusers scheduler class chromaviz plans for SD's (or a flow) schedule is in ACCEPTED_CLASSES."""
    accepted = []
    for name in dir(diffusers):
        cls = getattr(diffusers, name)
        if not (name.endswith("Scheduler") and isinstance(cls, type)):
            continue
        schedule = FLOW if name.startswith("Flow") else SD
        try:
            sample(GaussianPowerLaw(schedule=schedule), scheduler=scheduler_from_config(name, schedule.scheduler_config),
                   num_inference_steps=4, batch_size=1, height=8, width=8, record=("x0",))
        except Exception:  # refused, or not constructible from a schedule's config, or it fails to step
            continue
        accepted.append(name)
    missing = sorted(set(accepted) - set(ACCEPTED_CLASSES))
    assert not missing, f"schedulers chromaviz accepts but the replay test does not run: {missing}"


def test_a_stochastic_run_without_its_seed_falls_back_to_the_expectation():
    model = GaussianPowerLaw()
    sde = scheduler_from_config("DPMSolverMultistepScheduler", {**SD.scheduler_config, "algorithm_type": "sde-dpmsolver++"})
    traj = sample(model, scheduler=sde, num_inference_steps=20, batch_size=8, height=32, width=32, device="cpu")
    traj.metadata["seed"] = None  # only x_t left: the injected noise cannot be drawn again
    c = compare(traj, model)
    assert c.prediction_kind == "expectation"
    # SDE-DPM-Solver++ draws in float32: its expectation was once 32× too large (max |G − p| = 25.9)
    assert np.abs(c.measured - c.predicted).max() < 0.3
    assert (np.abs(c.measured - c.predicted) <= 5 * c.batch_noise + 1e-3).all()


def test_a_scheduler_instance_with_other_noise_levels_is_refused():
    model = GaussianPowerLaw()  # Stable Diffusion's scaled_linear schedule
    with pytest.raises(ValueError, match=r"noise levels of its own.*make_scheduler\('ddim', model.schedule\).*from_config"):
        sample(model, scheduler=diffusers.DDIMScheduler(clip_sample=False), num_inference_steps=50, height=16, width=16)
    matching = diffusers.DDIMScheduler.from_config(model.schedule.scheduler_config)  # what the message says
    traj = sample(model, scheduler=matching, num_inference_steps=10, batch_size=2, height=16, width=16)
    assert compare(traj, model).suspect == ()


def test_heun_with_two_steps_is_flagged():
    model = GaussianPowerLaw()
    heun = scheduler_from_config("HeunDiscreteScheduler", SD.scheduler_config)
    with pytest.warns(SuspectRunWarning, match="initial noise"):
        traj = sample(model, scheduler=heun, num_inference_steps=2, batch_size=4, height=32, width=32)
    with pytest.warns(SuspectRunWarning, match="several times its data power"):
        c = compare(traj, model)
    assert len(c.suspect) == 2 and c.measured_final[0] > 100  # the finest band: ≈ 210× its data power
    assert "SUSPECT RUN" in c.format_table()


def test_a_band_far_above_its_data_power_is_flagged_without_the_noise():
    """A sample scaled up (not its noise) is caught by its band energy alone."""
    model = GaussianPowerLaw()
    traj = sample(model, num_inference_steps=10, batch_size=4, height=16, width=16)
    traj.final = traj.final * 3  # 9× the data power in every band
    with pytest.warns(SuspectRunWarning, match="several times its data power"):
        c = compare(traj, model)
    assert len(c.suspect) == 1


@pytest.mark.parametrize("scheduler", ["ddim", "ddpm", "euler_ancestral", "dpmsolver++"])
@pytest.mark.parametrize("steps, batch", [(2, 1), (5, 4), (30, 1)])
def test_ordinary_runs_are_not_flagged(scheduler, steps, batch):
    model = GaussianPowerLaw()
    traj = sample(model, scheduler=scheduler, num_inference_steps=steps, batch_size=batch, height=16, width=16)
    assert compare(traj, model).suspect == ()  # no warning either: the test configuration makes it an error


FLUX_CONFIG = {  # black-forest-labs/FLUX.1-dev, scheduler/scheduler_config.json
    "_class_name": "FlowMatchEulerDiscreteScheduler", "base_image_seq_len": 256, "base_shift": 0.5,
    "max_image_seq_len": 4096, "max_shift": 1.15, "num_train_timesteps": 1000, "shift": 3.0,
    "use_dynamic_shifting": True,
}


def test_dynamic_shift_flow_schedules_are_sampled_with_the_shift_of_their_size():
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    model = GaussianPowerLaw(schedule=Schedule.from_config(FLUX_CONFIG))
    runs = {}
    for size in (16, 64):
        traj = sample(model, num_inference_steps=10, batch_size=2, height=size, width=size, record=("x0",))
        mu = calculate_shift(size * size, 256, 4096, 0.5, 1.15)  # the Flux pipeline's, patch size 1
        assert traj.metadata["mu"] == pytest.approx(mu)
        # the plan's λ is what the scheduler stepped: diffusers' own sigmas for that mu
        reference = scheduler_from_config("FlowMatchEulerDiscreteScheduler", FLUX_CONFIG)
        reference.set_timesteps(10, mu=mu)
        sigma = reference.sigmas[:10].double().numpy()
        np.testing.assert_allclose(traj.log_snr[1:], 2 * np.log((1 - sigma[1:]) / sigma[1:]), rtol=1e-6)
        c = compare(traj, model)
        assert c.prediction_kind == "exact" and np.abs(c.measured - c.predicted).max() <= 1e-5
        runs[size] = traj.log_snr
    # the larger image is shifted to more noise: λ' = λ − 2·(mu₆₄ − mu₁₆) with the exponential time shift
    np.testing.assert_allclose(runs[64][1:], runs[16][1:] - 2 * (1.15 - 0.5), atol=1e-5)
    explicit = plan_steps(model.schedule, 10, mu=0.8)  # or taken explicitly
    assert explicit.mu == 0.8
    assert sample(model, num_inference_steps=10, height=16, width=16, plan=explicit).metadata["mu"] == 0.8
