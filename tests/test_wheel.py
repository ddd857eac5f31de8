"""The wheel carries everything the main job needs: built, installed (not editable) into a fresh virtual
environment, and `chromaviz report` run from a folder outside the source tree.

The fresh environment takes its third-party packages (torch, diffusers, papermill, ...) from the
environment running the tests, through a ``.pth`` path entry, so that the test installs nothing from
the network; chromaviz itself comes only from the wheel (the editable install's finder is not
activated by a path entry, and the source tree is not on the path). Their data files (nbconvert's
templates) are found through ``JUPYTER_PATH``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(ROOT)],
                   check=True, cwd=out)
    (path,) = out.glob("chromaviz-*.whl")
    return path


def test_wheel_ships_the_report_notebook_and_the_weights(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "chromaviz/notebook/report.ipynb" in names
    assert "chromaviz/models/shapes/weights/shapes32/unet/diffusion_pytorch_model.safetensors" in names
    assert "chromaviz/widgets/__init__.py" in names and not any(n.startswith("widgets/") for n in names)
    assert not any(n.startswith(("tests/", "notebooks/", "benchmarks/")) for n in names)


def _fresh_environment(where: Path) -> Path:
    venv.EnvBuilder(with_pip=False).create(where)
    python = where / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    (Path(site) / "test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def test_report_runs_from_the_installed_wheel(wheel, tmp_path):
    python = _fresh_environment(tmp_path / "env")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--quiet", str(wheel)],
                   check=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{python.parent}{os.pathsep}{env.get('PATH', '')}"
    env["JUPYTER_PATH"] = str(Path(sys.prefix) / "share" / "jupyter")  # the borrowed packages' data files (nbconvert templates)
    where = subprocess.run([python, "-c", "import chromaviz, chromaviz.widgets as w; print(chromaviz.__file__, w.__file__)"],
                           check=True, capture_output=True, text=True, cwd=elsewhere, env=env).stdout
    assert str(ROOT) not in where and str(tmp_path / "env") in where, where
    result = subprocess.run(
        [python.parent / "chromaviz", "report", "-o", "out", "-p", "steps", "8", "-p", "size", "32", "-p", "batch", "2",
         "--quiet"],
        capture_output=True, text=True, cwd=elsewhere, env=env, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (elsewhere / "out" / "report.html").stat().st_size > 0
    assert (elsewhere / "out" / "report.ipynb").stat().st_size > 0
