"""One run spec (chromaviz.runs): its checks, one plan per run, one comparison per run, and sample(plan=)."""

from __future__ import annotations

import dataclasses
import json
import threading

import pytest
import torch
from diffusers import DDIMScheduler

from chromaviz import GaussianPowerLaw, compare, sample
from chromaviz.models import LayoutTexture
from chromaviz.models.registry import MODELS, TRAINED, is_builtin, load_builtin, load_model
from chromaviz.noise import Schedule
from chromaviz.runs import SETTINGS, Run, RunSpec, check_settings
from chromaviz.sampling import SamplingError, check_sample


@pytest.fixture
def set_timesteps_calls(monkeypatch):
    """Counts DDIMScheduler.set_timesteps calls (the real method, wrapped)."""
    calls = []
    original = DDIMScheduler.set_timesteps

    def counted(self, *args, **kwargs):
        calls.append(args)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(DDIMScheduler, "set_timesteps", counted)
    return calls


# ---------------------------------------------------------------------- one plan, one comparison
def test_one_chromaviz_run_plans_once(tmp_path, capsys, set_timesteps_calls):
    from chromaviz.cli import main

    assert main(["run", "--steps", "6", "--batch", "2", "--size", "16", "--out", str(tmp_path), "--quiet"]) == 0
    assert len(set_timesteps_calls) == 1  # was 3: check_sample, sample and compare's prediction each planned the run
    assert "max |G − p|" in capsys.readouterr().out


def test_a_run_plans_once_and_compares_once(set_timesteps_calls, monkeypatch):
    import chromaviz.analysis as analysis

    compared = []
    original = analysis.compare
    monkeypatch.setattr(analysis, "compare", lambda *a, **k: compared.append(1) or original(*a, **k))
    run = RunSpec(steps=5, batch=2, size=16).run()
    assert isinstance(run, Run) and run.status == "complete" and len(run.trajectory) == 5
    assert run.comparison is run.comparison and run.comparison.measured.shape == (5, 3)
    assert len(compared) == 1 and len(set_timesteps_calls) == 1
    # the plan's comparison is compare()'s own (which plans the run again from the metadata)
    again = original(run.trajectory, run.model, method="rings")
    assert (again.predicted == run.comparison.predicted).all() and again.prediction_kind == "exact"


def test_a_spec_may_hold_a_loaded_model(set_timesteps_calls):
    """The explorer's runs: a spec of a model object, used as it is, sampled with a live prompt."""
    model = GaussianPowerLaw(size=16)
    spec = RunSpec(model=model, steps=4, batch=2, size=16)
    assert spec.loaded is model and not spec.builtin and spec.load() is model and spec.given()[0] == "model"
    plan = spec.check()
    run = spec.run(plan=plan, prompt=lambda i, noise: None)
    assert run.model is model and run.plan is plan and run.status == "complete" and len(set_timesteps_calls) == 1
    with pytest.raises(ValueError, match="already loaded and keeps its own schedule.*schedule applies"):
        RunSpec(model=model, schedule="squaredcos_cap_v2").check()
    RunSpec(model=model, schedule="squaredcos_cap_v2", size=16, batch=2).check(given=())  # a UI's values: none refused
    with pytest.raises(TypeError, match=r"model must be text \(str\), got 3 \(int\); or a loaded model"):
        RunSpec(model=3).check()


@pytest.mark.notebook
def test_a_report_compares_its_run_once(tmp_path):
    """The report notebook, with a cell that counts compare() and set_timesteps in its kernel."""
    from chromaviz.notebook.report import REPORT_NOTEBOOK, read_figures, run_report

    nb = json.loads(REPORT_NOTEBOOK.read_text(encoding="utf-8"))
    count = ("import chromaviz.analysis, diffusers\n"
             "_calls = {'compare': 0, 'set_timesteps': 0}\n"
             "def _counted(kind, f):\n"
             "    def wrapped(*a, **k):\n"
             "        _calls[kind] += 1\n"
             "        return f(*a, **k)\n"
             "    return wrapped\n"
             "chromaviz.analysis.compare = _counted('compare', chromaviz.analysis.compare)\n"
             "diffusers.DDIMScheduler.set_timesteps = _counted('set_timesteps', diffusers.DDIMScheduler.set_timesteps)")
    record = "record('compare_calls', _calls['compare'])\nrecord('set_timesteps_calls', _calls['set_timesteps'])"
    cell = {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": []}
    nb["cells"].insert(2, {**cell, "id": "count0", "source": count})
    nb["cells"].append({**cell, "id": "count1", "source": record})
    notebook = tmp_path / "report.ipynb"
    notebook.write_text(json.dumps(nb), encoding="utf-8")
    files = run_report([("steps", "4"), ("batch", "2"), ("size", "16")], tmp_path / "out", notebook=notebook,
                       progress=False)
    figures = read_figures(files.notebook)
    assert figures["compare_calls"] == 1  # was 3: the notebook, and twice inside run_page
    assert figures["set_timesteps_calls"] == 1  # was 4: sample, and each compare's prediction
    assert figures["steps_recorded"] == 4


# ---------------------------------------------------------------------- checks before any work
@pytest.mark.parametrize("changes, expected", [
    ({"steps": 0}, "steps must be a positive integer, got 0"),
    ({"batch": -1}, "batch must be a positive integer, got -1"),
    ({"size": 0}, "size must be a positive integer, got 0"),
    ({"seed": -1}, "seed must be an integer in [0, 18446744073709551615]"),
    ({"guidance": float("nan")}, "guidance must be ≥ 0, got nan"),
    ({"scheduler": "heun"}, "unknown scheduler 'heun'; choose 'default' or one of"),
    ({"schedule": "bogus"}, "unknown schedule preset 'bogus'"),
    ({"method": "wavelets"}, "unknown decomposition method 'wavelets'; use 'rings'"),
    ({"model": ""}, "model is empty; give a built-in model (gaussian, exemplars, layout, shapes)"),
    ({"model": "gausian"}, "model 'gausian' is neither a built-in model (gaussian, exemplars, layout, shapes)"),
    ({"dtype": "bogus"}, "dtype 'bogus' is not a torch dtype; use float16, bfloat16 or float32"),
    ({"device": "bogus"}, "device must be a device name such as 'cpu', 'cuda' or 'cuda:1', got 'bogus'"),
    ({"prompt": "[cat:moon"}, "[cat:moon"),
    ({"prompt": "cat"}, "model gaussian is unconditional and takes no prompt (got prompt 'cat')"),
    ({"guidance": 7.5}, "model gaussian is unconditional: guidance 7.5 would change nothing"),
    ({"model": "shapes", "schedule": "linear"}, "model shapes keeps the schedule it was trained with; schedule applies to "
                                                "the exact built-in models (gaussian, exemplars, layout)"),
    ({"dtype": "float16"}, "dtype applies to diffusers pipelines; the built-in model gaussian runs in float32"),
    ({"method": "pyramid", "size": 36}, "height 36 is not divisible by 8, the coarsest level of the pyramid"),
    ({"steps": 2000}, "DDIMScheduler cannot take 2000 steps: at most 1000"),
    ({"size": 100000}, "size 100000 with batch 8 and steps 50 needs about"),
    ({"model": "exemplars", "prompt": "dog"}, "prompt 'dog' names none of the built-in photographs"),
])
def test_bad_settings_are_a_value_error_naming_them_before_any_sampling(changes, expected):
    spec = RunSpec(**changes)
    with pytest.raises(ValueError) as check:
        spec.check()
    assert expected in str(check.value)
    recorded = []
    with pytest.raises(ValueError) as run:
        spec.run(callback=recorded.append)
    assert str(run.value) == str(check.value) and recorded == []


def test_a_setting_of_the_wrong_type_is_a_type_error():
    with pytest.raises(TypeError, match=r"model must be text \(str\), got 3 \(int\)"):
        RunSpec(model=3).check()


def test_check_spells_settings_as_the_caller_writes_them():
    for option, spelt in (("", "guidance 7.5"), ("--", "--guidance 7.5"), ("-p ", "-p guidance 7.5")):
        with pytest.raises(ValueError, match=f"unconditional: {spelt} would change nothing"):
            RunSpec(guidance=7.5).check(option=option)


def test_values_a_model_ignores_are_refused_only_when_given(tmp_path):
    assert RunSpec(guidance=7.5).check(given=()).num_inference_steps == 50  # a sweep's grid may pair them
    assert RunSpec(model="shapes", schedule="linear", size=32).check(given=()) is not None
    assert RunSpec(model="shapes", size=32).check() is not None  # its default schedule is not "given"
    with pytest.raises(ValueError, match="keeps the schedule it was trained with"):
        RunSpec(model="shapes", size=32).check(given=["schedule"])
    folder = str(tmp_path)  # a pipeline folder is not loaded to check its settings
    assert RunSpec(model=folder).check() is None
    with pytest.raises(ValueError, match="is a diffusers pipeline and keeps the schedule it was trained with"):
        RunSpec(model=folder, schedule="linear").check()


def test_a_sweep_on_another_machine_does_not_check_the_device_here():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="CUDA is not available"):
        RunSpec(device="cuda").check()
    assert RunSpec(device="cuda").check(local=False) is not None


def test_spec_defaults_are_the_report_parameters():
    from chromaviz.notebook.report import REPORT_NOTEBOOK, notebook_defaults, notebook_parameters

    defaults = notebook_defaults(notebook_parameters(REPORT_NOTEBOOK))
    assert {name: defaults[name] for name in SETTINGS} == {f.name: f.default for f in dataclasses.fields(RunSpec)}
    assert RunSpec.from_parameters({**defaults, "steps": 7}) == RunSpec(steps=7)
    assert RunSpec(prompt=None, device=None, dtype=None) == RunSpec()


# ---------------------------------------------------------------------- partial runs
def test_a_failed_run_keeps_its_steps():
    def fail_at_two(record):
        if record.index == 2:
            raise RuntimeError("enough")

    spec = RunSpec(steps=6, batch=2, size=16)
    with pytest.raises(SamplingError) as err:
        spec.run(callback=fail_at_two)
    assert len(err.value.trajectory) == 3 and err.value.trajectory.status == "failed"
    run = spec.run(callback=fail_at_two, keep_partial=True)
    assert isinstance(run.error, SamplingError) and run.status == "failed" and len(run.trajectory) == 3
    assert run.comparison.measured.shape == (3, 3)  # compared as far as it got


def test_a_cancelled_run_before_its_first_step_has_no_comparison():
    stop = threading.Event()
    stop.set()
    run = RunSpec(steps=4, batch=1, size=16).run(stop=stop)
    assert run.status == "cancelled" and len(run.trajectory) == 0 and run.comparison is None


# ---------------------------------------------------------------------- sample(plan=)
def test_sample_with_the_checked_plan_is_the_same_run_and_plans_nothing(set_timesteps_calls):
    model = GaussianPowerLaw(size=16)
    plan = check_sample(model, num_inference_steps=5, batch_size=2)
    assert len(set_timesteps_calls) == 1
    with_plan = sample(model, batch_size=2, plan=plan)  # N from the plan
    assert len(set_timesteps_calls) == 1
    planned_here = sample(model, num_inference_steps=5, batch_size=2)
    assert torch.equal(with_plan.sample, planned_here.sample) and torch.equal(with_plan.x0, planned_here.x0)
    assert with_plan.metadata["num_inference_steps"] == 5


def test_sample_refuses_a_plan_for_another_run():
    model = GaussianPowerLaw(size=16)
    plan = check_sample(model, num_inference_steps=5)
    fix = "pass the plan check_sample\\(\\) returns for this run, or leave plan out"
    with pytest.raises(ValueError, match=f"plan= is the plan of a run of num_inference_steps=5, but this run has "
                                         f"num_inference_steps=6; {fix}"):
        sample(model, num_inference_steps=6, plan=plan)
    with pytest.raises(ValueError, match=r"plan= is the plan of scheduler 'ddim' \(DDIMScheduler\), but this run asks "
                                         r"for 'euler' \(EulerDiscreteScheduler\)"):
        sample(model, num_inference_steps=5, scheduler="euler", plan=plan)
    with pytest.raises(ValueError, match="plan= is the plan of another noise schedule: its DDIMScheduler has beta_end"):
        sample(GaussianPowerLaw(size=16, schedule="linear"), num_inference_steps=5, plan=plan)
    with pytest.raises(TypeError, match="plan must be a StepPlan"):
        sample(model, plan="ddim")
    with pytest.raises(ValueError, match="plan= is the plan of a run of num_inference_steps=5"):
        check_sample(model, num_inference_steps=6, plan=plan)


def test_compare_with_the_plan_equals_compare_without_and_refuses_another_plan():
    # zero terminal SNR: the sampler steps the plan's scheduler in v-prediction; the plan's copy must too
    model = GaussianPowerLaw(size=16, schedule=Schedule.preset("scaled_linear").zero_terminal_snr())
    plan = check_sample(model, num_inference_steps=6, batch_size=2)
    traj = sample(model, batch_size=2, plan=plan)
    assert traj.metadata["scheduler_config"]["prediction_type"] == "v_prediction"
    with_plan, without = compare(traj, model, plan=plan), compare(traj, model)
    assert with_plan.prediction_kind == without.prediction_kind == "exact"
    assert (with_plan.predicted == without.predicted).all()
    with pytest.raises(ValueError, match="plan= is the plan of a DDIMScheduler run of N=4 steps; this run was sampled "
                                         "with DDIMScheduler, N=6"):
        compare(traj, model, plan=check_sample(model, num_inference_steps=4))


# ---------------------------------------------------------------------- the model registry
def test_the_registry_loads_built_in_models_by_name():
    assert set(MODELS) == {"gaussian", "exemplars", "layout", "shapes"} and TRAINED == {"shapes"}
    assert is_builtin("gaussian") and not is_builtin("models/sd15") and not is_builtin(None)
    model = load_model("gaussian", size=16, schedule="linear")
    assert isinstance(model, GaussianPowerLaw) and model.default_size == (16, 16)
    assert model.schedule.scheduler_config["beta_schedule"] == "linear"
    assert load_builtin("exemplars", size=32).name == "exemplars"
    with pytest.raises(ValueError, match=r"unknown built-in model 'nope'; choose one of \['exemplars', 'gaussian', 'layout', 'shapes'\]"):
        load_builtin("nope")
    with pytest.raises(ValueError, match="unknown schedule preset 'bogus'"):
        load_model("gaussian", schedule="bogus")


def test_a_run_spec_keeps_the_models_own_schedule_unless_one_is_given():
    """The layout model composes on its zero-terminal-SNR cosine schedule: the CLI, the report and sweeps
    ran it on scaled_linear, the run spec's default before, without a word."""
    own = RunSpec(model="layout", size=32).load().schedule
    assert own.name == LayoutTexture(size=32).schedule.name and own.log_snr_range[0] == -float("inf")
    assert RunSpec(model="layout", size=32, schedule="scaled_linear").load().schedule.name == "scaled_linear"
    assert RunSpec(model="gaussian", size=16).load().schedule.name == "scaled_linear"
    check_settings({"schedule": "default"})


def test_run_page_takes_the_comparison_it_is_given():
    pytest.importorskip("bokeh")
    from chromaviz.widgets.export import run_document

    run = RunSpec(steps=4, batch=2, size=16).run()
    with pytest.raises(ValueError, match="measured with pyramid bands, but method='rings'"):
        run_document(run.trajectory, run.model, comparison=compare(run.trajectory, run.model, method="pyramid"))
    other = RunSpec(steps=3, batch=2, size=16).run()
    with pytest.raises(ValueError, match="has 3 steps, but the run has 4: it is another run's"):
        run_document(run.trajectory, run.model, comparison=other.comparison)
    with pytest.raises(ValueError, match=r"comparison given for run 'B', but the runs are \['A'\]"):
        run_document(run.trajectory, run.model, comparison={"B": run.comparison})
