"""`chromaviz run`: files written, table printed, clear errors."""

import re
import shutil
import subprocess

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
    assert header.split()[3:] == ["m=1", "m=2", "m=4", "m=8"]  # 32×32 → levels up to 8
    printed = float(re.search(r"max \|G − s\| over all steps and levels: ([0-9.]+)", out).group(1))
    recomputed = compare(traj, GaussianPowerLaw(size=32)).max_deviation
    assert printed == pytest.approx(recomputed, abs=1e-4)
    assert recomputed < 0.35  # 8 DDIM steps are coarse; 50 and 200 steps are checked in the agreement tests


def test_run_exemplars_with_prompt_switch(tmp_path, capsys):
    code = main(["run", "--model", "exemplars", "--prompt", "[cat:moon:0.5]", "--steps", "6", "--batch", "1",
                 "--size", "32", "--out", str(tmp_path), "--quiet"])
    assert code == 0
    traj = Trajectory.load(tmp_path / "trajectory.safetensors")
    assert traj.prompts[0] == "cat" and traj.prompts[-1] == "moon"
    assert "samples spectrum" in capsys.readouterr().out


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
