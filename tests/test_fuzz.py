"""The public boundary, fuzzed (hypothesis) and tried with hostile files.

Whatever comes in through the prompt grammar, a trajectory file, the command line, ``sample()``'s
arguments or a pipeline folder ends in one of two ways: it works, or it is refused with a
``ValueError``/``TypeError`` (exit status 2 and one ``error:`` line for the CLI) before any work,
naming what was wrong. Never another exception type, a hang, or a half-loaded result.

Every fuzz test has a bounded number of examples and a deadline per example; the module prints
its examples and total time at the end (``-s`` not needed: it goes to the terminal summary).
"""

from __future__ import annotations

import functools
import json
import math
import struct
import subprocess
import sys
import threading
import time
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from chromaviz.cli import main
from chromaviz.models import GaussianPowerLaw
from chromaviz.prompts import Boundary, PromptSchedule
from chromaviz.sampling import sample
from chromaviz.sampling.trajectory import SuspectRunWarning, Trajectory

FUZZ = settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
"""Examples and per-example deadline (ms) of the cheap fuzz tests."""

_STATS = {"examples": 0, "started": time.perf_counter()}


@pytest.fixture(scope="module", autouse=True)
def report_size_and_time(request):
    _STATS.update(examples=0, started=time.perf_counter())
    yield
    elapsed = time.perf_counter() - _STATS["started"]
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():  # to the terminal, not into the captured teardown output
            reporter.ensure_newline()
            reporter.write_line(f"fuzz suite: {_STATS['examples']} generated examples in {elapsed:.1f} s")


def counted(fn):
    """Count one generated example."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        _STATS["examples"] += 1
        return fn(*args, **kwargs)

    return wrapper


# ---------------------------------------------------------------------- the prompt grammar and Boundary
GRAMMAR = st.lists(st.sampled_from(list("[]():|,.=-+0123456789 catmoon\\\"'") + ["AND", "m=", "t=", "λ=", "e9"]),
                   max_size=40).map("".join)


@FUZZ
@given(text=st.one_of(GRAMMAR, st.text(max_size=60)))
@counted
def test_prompt_grammar_raises_only_value_or_type_errors(text):
    start = time.perf_counter()
    try:
        schedule = PromptSchedule.parse(text)
    except (ValueError, TypeError):
        return
    finally:
        assert time.perf_counter() - start < 1.0, f"parsing {text!r} took too long"
    schedule.to_text()  # what parses can be written back


BOUNDARY_VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**30, 10**30), st.text(max_size=5), st.none(),
    st.booleans(), st.lists(st.integers(), max_size=2), st.just(np.float64("nan")), st.just(np.int64(4)),
    st.just(torch.tensor(2.0)),
)


@FUZZ
@given(value=BOUNDARY_VALUES, unit=st.one_of(st.sampled_from(["fraction", "step", "timestep", "log_snr", "level"]),
                                             st.text(max_size=8), st.none(), st.integers()))
@counted
def test_boundary_raises_only_value_or_type_errors(value, unit):
    try:
        boundary = Boundary(value, unit)
    except (ValueError, TypeError):
        return
    assert math.isfinite(float(boundary.value))
    assert boundary.describe()


@FUZZ
@given(text=st.text(max_size=30))
@counted
def test_boundary_parse_raises_only_value_or_type_errors(text):
    try:
        Boundary.parse(text)
    except (ValueError, TypeError):
        pass


# ---------------------------------------------------------------------- trajectory files, mutated
@pytest.fixture(scope="module")
def trajectory_bytes(tmp_path_factory) -> bytes:
    traj = sample(GaussianPowerLaw(size=8), num_inference_steps=3, batch_size=1, device="cpu", scheduler="dpmsolver++")
    return traj.save(tmp_path_factory.mktemp("fuzz") / "good.safetensors").read_bytes()


def _split(raw: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def _join(header: dict, payload: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + payload


def assert_loads_or_refuses(path) -> None:
    try:
        traj = Trajectory.load(path)
    except ValueError as err:
        assert str(path) in str(err) or "safetensors" in str(err), str(err)
        return
    # a load that succeeds is whole: one record per prompt, every per-step tensor aligned
    assert len(traj.steps) == len(traj.prompts) and len(traj.timesteps) == len(traj)
    if traj.status == "complete":
        assert traj.metadata.get("num_steps") == len(traj) and traj.final is not None


JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-3, 10), st.floats(allow_nan=False, allow_infinity=False),
              st.text(max_size=6)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=10,
)


@FUZZ
@given(data=st.data())
@counted
def test_trajectory_load_with_a_mutated_document(tmp_path_factory, trajectory_bytes, data):
    header, payload = _split(trajectory_bytes)
    doc = json.loads(header["__metadata__"]["chromaviz"])
    key = data.draw(st.sampled_from(["metadata", "prompts", "num_steps", "status", "planned", "drop", "whole"]))
    if key == "whole":
        doc = data.draw(JSON_VALUES)
    elif key == "drop":
        doc.pop(data.draw(st.sampled_from(sorted(doc))))
    elif key == "status":
        doc["metadata"]["status"] = data.draw(st.one_of(st.sampled_from(["complete", "cancelled", "failed"]), JSON_VALUES))
    elif key == "planned":
        doc["metadata"]["num_steps"] = data.draw(JSON_VALUES)
    else:
        doc[key] = data.draw(JSON_VALUES)
    header["__metadata__"]["chromaviz"] = json.dumps(doc)
    path = tmp_path_factory.mktemp("doc") / "mutated.safetensors"
    path.write_bytes(_join(header, payload))
    assert_loads_or_refuses(path)


@FUZZ
@given(data=st.data())
@counted
def test_trajectory_load_with_mutated_bytes(tmp_path_factory, trajectory_bytes, data):
    raw = bytearray(trajectory_bytes)
    for _ in range(data.draw(st.integers(1, 4))):
        how = data.draw(st.sampled_from(["flip", "truncate", "insert"]))
        at = data.draw(st.integers(0, len(raw) - 1))
        if how == "flip":
            raw[at] = data.draw(st.integers(0, 255))
        elif how == "truncate":
            del raw[at:]
            if not raw:
                break
        else:
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=8))
    path = tmp_path_factory.mktemp("bytes") / "mutated.safetensors"
    path.write_bytes(bytes(raw))
    assert_loads_or_refuses(path)


# ---------------------------------------------------------------------- the command line
BAD_OR_GOOD = {
    "--steps": st.one_of(st.sampled_from(["0", "-1", "2.5", "x", "", "1e3"]), st.integers(1, 3).map(str)),
    "--guidance": st.one_of(st.sampled_from(["nan", "inf", "-1", "x", "-inf"]), st.sampled_from(["0", "1", "3.5"])),
    "--seed": st.one_of(st.sampled_from(["-1", str(2**64), "1.5", "seed"]), st.integers(0, 2**64 - 1).map(str)),
    "--batch": st.one_of(st.sampled_from(["0", "-3", "two"]), st.sampled_from(["1", "2"])),
    "--size": st.one_of(st.sampled_from(["0", "100000", "-8", "8.0"]), st.sampled_from(["8", "16"])),
    "--rows": st.one_of(st.sampled_from(["0", "many"]), st.sampled_from(["2", "6"])),
    "--device": st.one_of(st.sampled_from(["bogus", "cuda:99", "", "cpu:x", "meta"]), st.just("cpu")),
    "--scheduler": st.one_of(st.sampled_from(["heun9", ""]), st.sampled_from(["ddim", "euler", "dpmsolver++"])),
    "--method": st.one_of(st.just("rings2"), st.sampled_from(["rings", "pyramid"])),
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(options=st.fixed_dictionaries({}, optional=BAD_OR_GOOD))
@counted
def test_cli_run_options_exit_2_with_one_line_or_run_cleanly(tmp_path_factory, capsys, options):
    out = tmp_path_factory.mktemp("cli")
    defaults = {"--steps": "2", "--batch": "1", "--size": "8", "--device": "cpu"}
    argv = ["run", "--quiet", "-o", str(out)] + [x for k, v in {**defaults, **options}.items() for x in (k, v)]
    try:
        with warnings.catch_warnings():  # a one-step run is rightly flagged as not a sample: allowed here
            warnings.filterwarnings("ignore", category=SuspectRunWarning)
            code = main(argv)
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    if code == 2:
        first, *details = captured.err.rstrip().splitlines()
        assert "error: " in first and all(line.startswith("  ") for line in details), captured.err
        assert not any(out.iterdir()), "a refused run wrote files"
    else:
        assert code in (0, 1), captured.err  # 1: a run that failed mid-way (its steps are still written)
        assert "Traceback" not in captured.err
        assert Trajectory.load(out / "trajectory.safetensors").status in ("complete", "failed")


WRONG_PAIRS = st.one_of(
    st.tuples(st.sampled_from(["steps", "seed", "size", "batch"]), st.sampled_from(["ten", "2.5", "", "1e3", "[1]"])),
    st.tuples(st.just("guidance"), st.sampled_from(["strong", "", "1,5"])),
    st.tuples(st.just("save_trajectory"), st.sampled_from(["maybe", "2", ""])),
    st.tuples(st.text(min_size=1, max_size=8).filter(lambda n: n not in REPORT_NAMES), st.text(max_size=8)),
    st.tuples(st.just("output_dir"), st.text(max_size=8)),
)
REPORT_NAMES = ("model", "prompt", "scheduler", "schedule", "steps", "seed", "size", "batch", "guidance", "method",
                "device", "dtype", "save_trajectory", "output_dir")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(wrong=st.lists(WRONG_PAIRS, min_size=1, max_size=3),
       fine=st.lists(st.tuples(st.sampled_from(["prompt", "scheduler", "method"]), st.text(max_size=8)), max_size=2),
       timeout=st.one_of(st.none(), st.sampled_from(["2.5", "0", "-1", "x", "30"])))
@counted
def test_cli_report_with_a_wrong_parameter_exits_2_before_running(tmp_path_factory, capsys, wrong, fine, timeout):
    out = tmp_path_factory.mktemp("report") / "out"
    argv = ["report", "-o", str(out), "--quiet"] + [x for name, value in [*fine, *wrong] for x in ("-p", name, value)]
    argv += ["--cell-timeout", timeout] if timeout is not None else []
    with pytest.raises(SystemExit) as exc:
        main(argv)
    captured = capsys.readouterr()
    first, *details = captured.err.rstrip().splitlines()
    assert exc.value.code == 2 and "error: " in first and all(line.startswith("  ") for line in details), captured.err
    assert not out.exists(), "a refused report wrote files"


@pytest.mark.parametrize("argv", [
    ["run", "--steps", "0"], ["run", "--device", "bogus"], ["run", "--size", "100000"],
    ["report", "--cell-timeout", "2.5"],
])
def test_cli_mistakes_in_a_real_process(argv, tmp_path):
    result = subprocess.run([sys.executable, "-m", "chromaviz.cli", *argv, "-o", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and "error: " in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------- sample()'s arguments
BAD_ARGUMENTS = {  # num_inference_steps=None is not among them: it is the default, 50 steps
    "num_inference_steps": st.one_of(st.integers(max_value=0), st.floats(), st.text(max_size=3), st.booleans()),
    "guidance": st.one_of(st.floats(max_value=-1e-9), st.just(math.nan), st.just(math.inf), st.text(max_size=3), st.none()),
    "seed": st.one_of(st.integers(max_value=-1), st.integers(min_value=2**64), st.floats(), st.text(max_size=3)),
    "batch_size": st.one_of(st.integers(max_value=0), st.floats(), st.just("2")),
    "record": st.one_of(st.just("x0"), st.lists(st.text(max_size=4).filter(lambda s: s not in ("x_t", "x0", "eps")),
                                                min_size=1, max_size=3), st.integers()),
    "scheduler": st.one_of(st.just(object()), st.sampled_from(["bogus", "flow_euler"]), st.integers()),
    "callback": st.one_of(st.integers(), st.text(max_size=3)),
    "stop": st.one_of(st.booleans(), st.integers()),
    "eta": st.one_of(st.floats(max_value=-1e-9), st.floats(min_value=1.0001), st.just(math.nan)),
    "device": st.one_of(st.sampled_from(["bogus", "cuda:99"]), st.integers()),
    "record_scale": st.one_of(st.integers(max_value=0), st.just(3)),  # 3 does not divide 8
    "prompt": st.one_of(st.integers(), st.lists(st.text(max_size=3), max_size=2)),
}


@pytest.fixture(scope="module")
def tiny_model() -> GaussianPowerLaw:
    return GaussianPowerLaw(size=8)


@FUZZ
@given(bad=st.fixed_dictionaries({}, optional=BAD_ARGUMENTS).filter(bool))
@counted
def test_sample_refuses_bad_arguments_before_any_step(tiny_model, bad):
    steps = []
    kwargs = {"num_inference_steps": 2, "device": "cpu", "callback": steps.append, **bad}
    prompt = kwargs.pop("prompt", None)
    with pytest.raises((ValueError, TypeError)):
        sample(tiny_model, prompt, **kwargs)
    assert steps == [], "a step ran before the arguments were refused"


@pytest.mark.parametrize("model", [None, "gaussian", 42])
def test_sample_refuses_a_model_that_is_not_one(model):
    with pytest.raises(TypeError, match="model must be a chromaviz Denoiser"):
        sample(model, num_inference_steps=2)


# ---------------------------------------------------------------------- pipeline folders
@pytest.fixture(scope="module")
def ddpm_folder(tmp_path_factory):
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    import diffusers_models as tiny

    return tiny.save_ddpm(tmp_path_factory.mktemp("ddpm") / "ddpm")


def _copy(folder, tmp_path):
    import shutil

    return shutil.copytree(folder, tmp_path / "pipe")


def test_load_pipeline_names_a_corrupt_model_index(ddpm_folder, tmp_path):
    from chromaviz.models.diffusers.adapter import load_pipeline

    pipe = _copy(ddpm_folder, tmp_path)
    (pipe / "model_index.json").write_text('{"_class_name": "DDPMPipeline", ')
    with pytest.raises(ValueError, match=rf"{pipe / 'model_index.json'} is not valid JSON"):
        load_pipeline(pipe)
    (pipe / "model_index.json").write_text('["DDPMPipeline"]')
    with pytest.raises(ValueError, match="holds a JSON list"):
        load_pipeline(pipe)


def test_load_pipeline_names_a_missing_component_folder(ddpm_folder, tmp_path):
    import shutil

    from chromaviz.models.diffusers.adapter import load_pipeline

    pipe = _copy(ddpm_folder, tmp_path)
    shutil.rmtree(pipe / "unet")
    with pytest.raises(ValueError, match=rf"lists the component 'unet' \(UNet2DModel\) but the folder {pipe / 'unet'} is missing"):
        load_pipeline(pipe)


def test_load_pipeline_names_an_unknown_pipeline_class(ddpm_folder, tmp_path):
    from chromaviz.models.diffusers.adapter import load_pipeline

    pipe = _copy(ddpm_folder, tmp_path)
    index = json.loads((pipe / "model_index.json").read_text())
    (pipe / "model_index.json").write_text(json.dumps({**index, "_class_name": "NoSuchPipeline"}))
    with pytest.raises(ValueError, match="names the pipeline class 'NoSuchPipeline', which diffusers"):
        load_pipeline(pipe)


def test_load_pipeline_says_a_local_looking_folder_is_missing(tmp_path, monkeypatch):
    from chromaviz.models.diffusers.adapter import load_pipeline

    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"no folder 'models/sd15' \(the folder models/sd15 is missing\)") as exc:
        load_pipeline("models/sd15")
    assert "hub" not in str(exc.value).split(";")[0] and time.perf_counter() - start < 5


def test_load_pipeline_reads_a_dtype_given_as_text(ddpm_folder):
    from chromaviz.models.diffusers.adapter import load_pipeline

    assert load_pipeline(ddpm_folder, torch_dtype="float64").dtype == torch.float64
    with pytest.raises(ValueError, match="torch_dtype 'half16' is not a torch dtype"):
        load_pipeline(ddpm_folder, torch_dtype="half16")


def test_learned_variance_ddpm_pipeline(tmp_path):
    """UNet2DModel(out_channels=6) with variance_type='learned_range': refused up front with its own
    scheduler (the step needs the predicted variance), sampled from the mean prediction by DDIM."""
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    from chromaviz.models.diffusers.adapter import load_pipeline

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=3, out_channels=6, layers_per_block=1, block_out_channels=(8, 16),
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=4)
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(variance_type="learned_range")).save_pretrained(tmp_path / "iddpm")
    model = load_pipeline(tmp_path / "iddpm")
    calls = []
    with pytest.raises(ValueError, match=r"variance_type='learned_range' needs the model's predicted variance"):
        sample(model, num_inference_steps=3, device="cpu", callback=calls.append)
    assert calls == []
    traj = sample(model, num_inference_steps=3, scheduler="ddim", device="cpu")
    assert traj.status == "complete" and traj.final.shape == (1, 3, 8, 8)
    assert traj.x0.shape == (3, 1, 3, 8, 8) and torch.isfinite(traj.final).all()
