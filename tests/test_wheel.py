"""The distributions, installed as people install them.

- The wheel carries everything the main job needs: installed (not editable) into a fresh virtual
  environment, `chromaviz report` runs from a folder outside the source tree. That environment takes
  its third-party packages (torch, diffusers, papermill, ...) from the environment running the tests,
  through a ``.pth`` path entry, so that it installs nothing from the network; chromaviz itself comes
  only from the wheel (the editable install's finder is not activated by a path entry, and the source
  tree is not on the path). Their data files (nbconvert's templates) are found through ``JUPYTER_PATH``.
- The base install: the wheel with its base requirements only (no extra), resolved from the package
  index with the versions of constraints.txt, as ``pip install chromaviz`` does (about 1–2 minutes,
  most of it downloading torch; pip's cache makes later runs faster). It imports, runs
  ``chromaviz run`` and the Python API, and names the extra a missing part needs.
- The sdist builds, holds its tests, and a test module runs from the unpacked sdist.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def _clean_env(python: Path) -> dict[str, str]:
    """The environment of a command run with ``python``'s virtual environment first on PATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = f"{python.parent}{os.pathsep}{env.get('PATH', '')}"
    return env


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
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)


def _borrowing_environment(where: Path) -> Path:
    venv.EnvBuilder(with_pip=False).create(where)
    python = where / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    (Path(site) / "test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def test_report_runs_from_the_installed_wheel(wheel, tmp_path):
    python = _borrowing_environment(tmp_path / "env")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--quiet", str(wheel)],
                   check=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = _clean_env(python)
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


# --- the base install: the wheel and its base requirements, nothing else -----------------------------

@pytest.fixture(scope="module")
def base(wheel, tmp_path_factory) -> tuple[Path, Path]:
    """(python of a fresh venv holding the wheel with its base requirements only, an empty folder outside the source tree)."""
    where = tmp_path_factory.mktemp("base")
    venv.EnvBuilder(with_pip=True).create(where / "env")
    python = where / "env" / "bin" / "python"
    install = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-c", str(ROOT / "constraints.txt"),
         str(wheel)], capture_output=True, text=True, env=_clean_env(python), timeout=1800)
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    (where / "work").mkdir()
    return python, where / "work"


def _run(base: tuple[Path, Path], *argv: str | Path, timeout: float = 300) -> subprocess.CompletedProcess:
    python, work = base
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, cwd=work, env=_clean_env(python),
                          timeout=timeout)


def test_the_base_install_is_consistent_and_holds_no_extra(base):
    python, _ = base
    check = _run(base, python, "-m", "pip", "check")
    assert check.returncode == 0, check.stdout + check.stderr
    found = _run(base, python, "-c", "import importlib.util as u; print([m for m in ('papermill', 'nbconvert', "
                 "'jupyter_client', 'ipykernel', 'bokeh', 'ipywidgets', 'jupyter_bokeh', 'dask', 'distributed') "
                 "if u.find_spec(m)])")
    assert found.stdout.strip() == "[]", found.stdout + found.stderr


def test_the_base_install_runs_the_command_line(base):
    python, work = base
    chromaviz = python.parent / "chromaviz"
    version = _run(base, chromaviz, "--version")
    assert version.returncode == 0 and version.stdout.startswith("chromaviz "), version.stderr
    assert _run(base, chromaviz, "--help").returncode == 0
    assert _run(base, chromaviz, "run", "--help").returncode == 0
    run = _run(base, chromaviz, "run", "--steps", "4", "--batch", "2", "--size", "32", "--quiet", "-o", "out")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    for name in ("trajectory.safetensors", "strip.png", "chromatogram.png", "chromatogram.svg"):
        assert (work / "out" / name).stat().st_size > 0, name


def test_the_base_install_runs_the_python_api(base):
    python, _ = base
    code = """
import chromaviz
from chromaviz import GaussianPowerLaw, compare, sample
from chromaviz.sweep import make_grid  # the sweep's modules import without their extra
import chromaviz.notebook.report, chromaviz.widgets.worker
model = GaussianPowerLaw(size=16)
traj = sample(model, num_inference_steps=3, batch_size=2, seed=0)
print(len(traj), compare(traj, model).max_deviation < 1e-3, chromaviz.__version__)
"""
    result = _run(base, python, "-c", code)
    assert result.returncode == 0, result.stderr[-3000:]
    steps, close, version = result.stdout.split()
    assert (steps, close) == ("3", "True") and version == _run(base, python.parent / "chromaviz", "--version").stdout.split()[1]


@pytest.mark.parametrize("command, extra", [(["report"], "report"), (["report", "--list"], "report"),
                                            (["sweep", "-p", "steps", "5", "10"], "sweep")])
def test_a_command_without_its_extra_names_it_in_one_line(base, command, extra):
    python, work = base
    result = _run(base, python.parent / "chromaviz", *command)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f'chromaviz {command[0]} needs the {extra} extra: pip install "chromaviz[{extra}]" (missing: ')
    assert not (work / f"chromaviz-{command[0]}").exists()


@pytest.mark.parametrize("statement, extra, what", [
    ("from chromaviz.widgets import Explorer", "explorer", "chromaviz.widgets.Explorer"),
    ("from chromaviz.widgets import export_html", "explorer", "chromaviz.widgets.export_html"),
    ("from chromaviz.notebook.report import run_report; run_report()", "report", "chromaviz.notebook.report.run_report"),
    ("from chromaviz.sweep import sweep; sweep({'steps': [5]}, 'out')", "sweep", "chromaviz.sweep.sweep"),
])
def test_python_without_an_extra_raises_an_import_error_naming_it(base, statement, extra, what):
    python, _ = base
    code = f"""
try:
    {statement}
except ImportError as err:
    print(type(err).__name__, err, sep=": ")
"""
    result = _run(base, python, "-c", code)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith(f'MissingExtra: {what} needs the {extra} extra: pip install "chromaviz[{extra}]" '
                                    "(missing: "), result.stdout


# --- the sdist -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sdist(tmp_path_factory) -> Path:
    """The sdist, built without build isolation (with this environment's setuptools) and unpacked."""
    out = tmp_path_factory.mktemp("sdist")
    subprocess.run([sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(out), str(ROOT)],
                   check=True, capture_output=True, cwd=out)
    (archive,) = out.glob("chromaviz-*.tar.gz")
    with tarfile.open(archive) as tar:
        tar.extractall(out / "unpacked", filter="data")
    (tree,) = (out / "unpacked").iterdir()
    return tree


def test_the_sdist_holds_the_tests_and_what_they_read(sdist):
    for path in ("LICENSE", "README.md", "constraints.txt", "environment.yml", "pyproject.toml",
                 "tests/browser_support.py", "tests/diffusers_models.py", "tests/notebook_baselines.json",
                 "notebooks/explorer.ipynb", "chromaviz/notebook/report.ipynb", "widgets/__init__.py", "docs/prompts.md"):
        assert (sdist / path).is_file(), path
    assert not list(sdist.rglob("__pycache__"))


def test_tests_run_from_the_unpacked_sdist(sdist, tmp_path):
    """A wheel built from the sdist, installed into a fresh environment (third-party packages borrowed as
    above), runs test modules from the unpacked sdist, one of them importing a helper module of tests/.
    ``python -P`` keeps the unpacked tree's own ``chromaviz/`` folder off the path, so the tests import the
    installed package, as they would in a distribution's build of it."""
    built = tmp_path / "built"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w",
                    str(built), str(sdist)], check=True, cwd=tmp_path)
    (wheel_from_sdist,) = built.glob("chromaviz-*.whl")
    python = _borrowing_environment(tmp_path / "env")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--quiet",
                    str(wheel_from_sdist)], check=True)
    test = sdist / "tests" / "test_zz_sdist_probe.py"
    test.write_text("import chromaviz\nimport diffusers_models  # a helper module of tests/\n\n\n"
                    "def test_imports():\n    print(chromaviz.__file__)\n    assert diffusers_models.WORDS\n")
    try:
        result = subprocess.run(
            [python, "-P", "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "tests/test_levels.py", test.relative_to(sdist)],
            capture_output=True, text=True, cwd=sdist, env=_clean_env(python), timeout=600)
    finally:
        test.unlink()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert str(tmp_path / "env") in result.stdout and str(sdist / "chromaviz") not in result.stdout, result.stdout[-3000:]
