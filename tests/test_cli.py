"""`chromaviz run`: files written, table printed, clear errors."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
from PIL import Image

from chromaviz import GaussianPowerLaw, compare
from chromaviz.cli import main
from chromaviz.sampling.trajectory import Trajectory


def test_run_writes_trajectory_strip_and_chromatogram(tmp_path, capsys):
    code = main(["run", "--steps", "8", "--batch", "2", "--size", "32", "--out", str(tmp_path), "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    traj = Trajectory.load(tmp_path / "trajectory.safetensors")
    assert traj.status == "complete" and len(traj) == 8
    assert traj.x0.shape == (8, 2, 3, 32, 32)
    strip = Image.open(tmp_path / "strip.png")
    assert strip.width > strip.height > 32  # two rows (x_t, x̂0), eight columns
    assert Image.open(tmp_path / "chromatogram.png").width > 400
    header = next(line for line in out.splitlines() if line.lstrip().startswith("step"))
    assert [w for w in header.split() if w.startswith("m=")] == ["m=1", "m=2", "m=4", "m=8"]  # 32×32 → levels up to 8
    printed = float(re.search(r"max \|G − p\| over all steps and levels: ([0-9.e+-]+)", out).group(1))
    recomputed = compare(traj, GaussianPowerLaw(size=32))
    assert printed == pytest.approx(recomputed.max_deviation, rel=0.05, abs=1e-9)
    assert recomputed.max_deviation < 1e-3  # the run as sampled is predicted exactly (tests/test_prediction.py)
    continuous = float(re.search(r"max \|G − s\|: ([0-9.]+)", out).group(1))
    assert continuous == pytest.approx(recomputed.max_deviation_continuous, abs=1e-4)
    assert "missing" in out and "at start" in out  # the inheritance table


def test_run_exemplars_with_prompt_switch(tmp_path, capsys):
    code = main(["run", "--model", "exemplars", "--prompt", "[cat:moon:0.5]", "--steps", "6", "--batch", "1",
                 "--size", "32", "--out", str(tmp_path), "--quiet"])
    assert code == 0
    traj = Trajectory.load(tmp_path / "trajectory.safetensors")
    assert traj.prompts[0] == "cat" and traj.prompts[-1] == "moon"
    out = capsys.readouterr().out
    assert "model data spectrum" in out and "ideal process" in out  # each prompt's exact data power (issue 25)


@pytest.mark.parametrize("model, size", [("shapes", 32), ("gaussian", 64)])
def test_run_samples_at_the_models_own_size_unless_told(tmp_path, capsys, model, size):
    """``run --model shapes`` sampled at 64×64 a model trained at 32×32."""
    assert main(["run", "--model", model, "--steps", "2", "--batch", "2", "--out", str(tmp_path), "--quiet"]) == 0
    assert f"· {size}×{size} ·" in capsys.readouterr().out
    assert Trajectory.load(tmp_path / "trajectory.safetensors").sample.shape[-1] == size


def test_unknown_prompt_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", "--model", "exemplars", "--prompt", "a dog", "--out", str(tmp_path), "--quiet"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "'a dog' names none of the built-in photographs" in err and "astronaut" in err and "cat" in err


def test_unknown_scheduler_is_rejected_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", "--scheduler", "heun9"])
    assert exc.value.code == 2
    assert "invalid choice: 'heun9'" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("chromaviz") is None, reason="console script not installed")
def test_console_script_is_installed():
    out = subprocess.run(["chromaviz", "--version"], capture_output=True, text=True, check=True).stdout
    assert out.strip().startswith("chromaviz ")


# ---------------------------------------------------------------------- user mistakes: one line, exit 2, nothing run
def one_error_line(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    captured = capsys.readouterr()
    first, *details = captured.err.rstrip().splitlines()
    assert "error: " in first and all(line.startswith("  ") for line in details), captured.err  # details indented
    assert "Traceback" not in captured.err and captured.out == ""
    return first


@pytest.mark.parametrize("argv, expected", [
    (["run", "--steps", "0"], "argument --steps: must be a positive integer, got 0"),
    (["run", "--steps", "2.5"], "argument --steps: must be an integer, got '2.5'"),
    (["run", "--guidance", "nan"], "argument --guidance: must be ≥ 0.0, got nan"),
    (["run", "--guidance", "-3"], "argument --guidance: must be ≥ 0.0"),
    (["run", "--guidance", "three"], "argument --guidance: must be a number, got 'three'"),
    (["run", "--seed", str(2**64)], "argument --seed: must be an integer in [0, 18446744073709551615]"),
    (["run", "--batch", "-1"], "argument --batch: must be a positive integer"),
    (["run", "--device", "bogus"], "argument --device: 'bogus' is not a torch device"),
    (["run", "--size", "100000"], "--size 100000 with --batch 8 and --steps 50 needs about"),
    (["report", "--cell-timeout", "2.5"], "argument --cell-timeout: must be an integer, got '2.5'"),
    (["report", "--cell-timeout", "0"], "argument --cell-timeout: must be a positive integer, got 0"),
    (["run", "--model", "nope"], "argument --model: invalid choice: 'nope'"),
    (["run", "--method", "pyramid", "--size", "36"],
     "height 36 is not divisible by 8, the coarsest level of the pyramid; use a size that is a multiple of 8 or method rings"),
    (["report", "-p", "model", "gausian"], "model 'gausian' is neither a built-in model (gaussian, exemplars, layout, shapes)"),
    (["report", "-p", "scheduler", "heun"], "unknown scheduler 'heun'; choose 'default' or one of"),
    (["report", "-p", "method", "wavelets"], "unknown decomposition method 'wavelets'; use 'rings'"),
    (["report", "-p", "steps", "0"], "steps must be a positive integer, got 0"),
    (["report", "-p", "guidance", "nan"], "guidance must be ≥ 0, got nan"),
    (["report", "-p", "guidance", "-1"], "guidance must be ≥ 0, got -1"),
    (["report", "-p", "method", "pyramid", "-p", "size", "30"],
     "height 30 is not divisible by 4, the coarsest level of the pyramid; use a size that is a multiple of 4 or method rings"),
    (["report", "-p", "dtype", "bogus"], "dtype 'bogus' is not a torch dtype; use float16, bfloat16 or float32"),
    (["report", "-p", "seed", "-1"], "seed must be"),
    (["report", "-p", "model", ""], "model is empty; give a built-in model"),
    (["report", "-p", "model", "exemplars", "-p", "prompt", "[cat:moon"], "[cat:moon"),
    (["sweep", "-p", "steps", "0", "3"], "steps must be a positive integer, got 0 (in the cell steps-0)"),
    (["report", "-p", "device", "bogus"], "device must be a device name such as 'cpu', 'cuda' or 'cuda:1', got 'bogus'"),
    # a built-in model's run, checked as sample() checks it (these failed in the notebook's third cell)
    (["report", "-p", "size", "7"], "size 7×7 is too small; use at least 8×8"),
    (["report", "-p", "prompt", "cat"], "model gaussian is unconditional and takes no prompt (got -p prompt 'cat')"),
    (["report", "-p", "prompt", "[cat:moon:0.5]"], "takes no prompt (got -p prompt '[cat:moon:0.5]'); leave prompt empty"),
    (["report", "-p", "guidance", "7.5"], "model gaussian is unconditional: -p guidance 7.5 would change nothing"),
    (["run", "--guidance", "7.5"], "model gaussian is unconditional: --guidance 7.5 would change nothing"),
    (["run", "--prompt", "cat"], "model gaussian is unconditional and takes no prompt (got --prompt 'cat')"),
    (["run", "--model", "shapes", "--schedule", "linear"], "model shapes keeps the schedule it was trained with; --schedule"),
    (["report", "-p", "model", "shapes", "-p", "schedule", "linear"], "model shapes keeps the schedule it was trained with"),
    (["report", "-p", "dtype", "float16"], "-p dtype applies to diffusers pipelines"),
    (["run", "--steps", "100000"], "DDIMScheduler cannot take 100000 steps: at most 1000"),
    (["sweep", "-p", "prompt", "", "cat"], "takes no prompt (got -p prompt 'cat'); leave prompt empty, or use a conditional model (exemplars, layout, shapes) (in the cell prompt-cat)"),
    (["report", "-p", "schedule", "bogus"], "unknown schedule preset 'bogus'"),
    (["report", "-p", "steps", "100000"], "DDIMScheduler cannot take 100000 steps: at most 1000, the schedule's training"),
    (["report", "-p", "size", "100000"], "-p size 100000 with -p batch 8 and -p steps 50 needs about"),
    (["report", "-p", "model", "exemplars", "-p", "prompt", "dog"], "prompt 'dog' names none of the built-in photographs"),
    (["report", "-p", "model", "shapes", "-p", "size", "30"], "size 30×30 does not fit shapes"),
    (["sweep", "-p", "size", "32", "7"], "size 7×7 is too small; use at least 8×8 (in the cell size-7)"),
    (["run", "--steps", "2000"], "DDIMScheduler cannot take 2000 steps: at most 1000, the schedule's training timesteps"),
])
def test_bad_options_are_one_line_and_exit_2(capsys, argv, expected):
    assert expected in one_error_line(capsys, argv)


def test_cuda_without_cuda_is_refused(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert "sees no CUDA device" in one_error_line(capsys, ["run", "--device", "cuda"])
    assert "device='cuda', but CUDA is not available on this machine; use 'cpu'" in one_error_line(
        capsys, ["report", "-p", "device", "cuda"])


@pytest.mark.parametrize("command", ["run", "report"])
def test_out_at_a_file_or_inside_one_is_refused_before_any_work(tmp_path, capsys, command):
    afile = tmp_path / "taken.txt"
    afile.write_text("keep me")
    line = one_error_line(capsys, [command, "-o", str(afile), "--quiet"])
    assert f"{afile}: that is an existing file, not a folder" in line
    line = one_error_line(capsys, [command, "--out", str(afile / "sub"), "--quiet"])
    assert f"{afile} is a file, so no folder can be made inside it" in line
    assert afile.read_text() == "keep me"


def test_unwritable_out_is_refused_before_sampling(tmp_path, capsys):
    import os

    if os.geteuid() == 0:  # root writes anywhere chmod allows nothing: use a place no one can write
        target = "/proc/chromaviz-out"
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        target = str(locked / "out")
    line = one_error_line(capsys, ["run", "--steps", "500", "--out", target, "--quiet"])
    assert f"--out {target}: cannot write in" in line


def test_quiet_prints_no_library_noise(tmp_path):
    # the shapes model loads a diffusers pipeline with a transformers text encoder: loading messages and bars
    result = subprocess.run(
        [sys.executable, "-m", "chromaviz.cli", "run", "--model", "shapes", "--steps", "2", "--batch", "1",
         "--size", "32", "-o", str(tmp_path), "--quiet"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "Loading" not in result.stdout and "[transformers]" not in result.stdout


# ---------------------------------------------------------------------- Ctrl-C keeps what was recorded
@pytest.mark.parametrize("signum, status, word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_ctrl_c_or_sigterm_during_run_writes_the_partial_run(tmp_path, signum, status, word):
    """SIGTERM (kill, timeout, SLURM, docker stop) keeps the recorded steps as Ctrl-C does; the exit
    status is 128 + the signal's number, as shells report it."""
    child = subprocess.Popen(
        [sys.executable, "-m", "chromaviz.cli", "run", "--model", "exemplars", "--prompt", "cat", "--steps", "1000",
         "--batch", "2", "--size", "32", "--out", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # not ignored, even under a background shell
    )
    seen = b""
    deadline = time.monotonic() + 300
    while not re.search(rb"\| *([3-9]|\d\d+)/1000", seen):  # the progress bar shows 3 or more steps done
        chunk = os.read(child.stderr.fileno(), 4096)
        assert chunk and time.monotonic() < deadline, seen.decode(errors="replace")
        seen += chunk
    child.send_signal(signum)
    out, err = child.communicate(timeout=300)
    err = (seen + err).decode(errors="replace")
    assert child.returncode == status, err
    assert "Traceback" not in err and f"{word} after" in err
    traj = Trajectory.load(tmp_path / "trajectory.safetensors")
    assert traj.status == "interrupted" and 3 <= len(traj) < 1000
    assert (tmp_path / "strip.png").is_file() and (tmp_path / "chromatogram.png").is_file()


# ---------------------------------------------------------------------- report parameters
def write_notebook(path, parameters: str, body: str):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "Python 3"}
    cell = nbformat.v4.new_code_cell(parameters)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, nbformat.v4.new_code_cell(body)]
    nbformat.write(nb, str(path))
    return path


@pytest.mark.notebook
def test_a_parameter_whose_default_holds_an_equals_sign_can_be_set(tmp_path, capsys):
    # papermill.inspect_notebook skips `prompt: str = "[cat:moon:m=4]"`; chromaviz reads the cell with ast
    notebook = write_notebook(
        tmp_path / "params.ipynb",
        'prompt: str = "[cat:moon:m=4]"  # a prompt schedule\nsteps: int = 3\nscale = {"a": 1}\n',
        "from chromaviz.notebook.report import record\nrecord('prompt', prompt)\nrecord('steps', steps)",
    )
    assert main(["report", "--notebook", str(notebook), "--list"]) == 0
    listing = capsys.readouterr().out
    assert 'prompt (str, default "[cat:moon:m=4]"): a prompt schedule' in listing
    assert "steps (int, default 3)" in listing and "scale (dict" in listing
    out = tmp_path / "out"
    assert main(["report", "--notebook", str(notebook), "-p", "prompt", "[dog:moon:m=2]", "-p", "steps", "5",
                 "-o", str(out), "--quiet"]) == 0
    from chromaviz.notebook.report import read_figures

    assert read_figures(out / "report.ipynb") == {"prompt": "[dog:moon:m=2]", "steps": 5}


def test_a_parameters_cell_that_is_not_python_is_named(tmp_path, capsys):
    notebook = write_notebook(tmp_path / "broken.ipynb", "steps: int = (3\n", "pass")
    line = one_error_line(capsys, ["report", "--notebook", str(notebook), "--list"])
    assert f"the parameters cell of {notebook} is not valid Python" in line


@pytest.mark.notebook
def test_report_that_fails_mid_way_writes_the_partial_trajectory(tmp_path, capsys):
    # guidance 1e30 overflows the shapes model's input at step 1: step 0 is recorded, then the run fails
    code = main(["report", "-p", "model", "shapes", "-p", "prompt", "a red circle", "-p", "guidance", "1e30",
                 "-p", "steps", "4", "-p", "size", "32", "-p", "batch", "1", "-p", "save_trajectory", "true",
                 "-o", str(tmp_path), "--quiet"])
    assert code == 1
    assert "the model returned NaN or infinity at step 1" in capsys.readouterr().err
    traj = Trajectory.load(tmp_path / "trajectory.safetensors")
    assert traj.status == "failed" and len(traj) == 1 and traj.metadata["num_steps"] == 4
    assert (tmp_path / "report.html").is_file()  # the executed notebook, with the error in context
