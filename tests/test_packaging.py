"""Packaging: environment.yml and pyproject.toml ask for the same packages and versions, the extras that
chromaviz checks for are the ones pyproject.toml declares, and ``import chromaviz`` and ``chromaviz
--help`` import none of the heavy packages (how long they take is measured by benchmarks/startup.py)."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

from chromaviz import _checks

ROOT = Path(__file__).resolve().parent.parent
CONDA_NAMES = {  # conda-forge name → PyPI name, where they differ
    "pytorch": "torch", "dask_core": "dask", "playwright_python": "playwright", "python_build": "build",
}
NOT_ON_CONDA_FORGE = {"compel"}
"""Requirements that environment.yml installs with pip, because conda-forge has no package of them."""
NOT_PACKAGES = {"python", "pip"}


def _split(spec: str) -> tuple[str, str]:
    name, constraint = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", spec).groups()
    return name.lower().replace("-", "_"), constraint.replace(" ", "")


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _pyproject() -> dict[str, str]:
    project = _project()
    specs = project["dependencies"] + [s for extra in project["optional-dependencies"].values() for s in extra]
    return dict(_split(s) for s in specs if not s.startswith("chromaviz"))


def _environment() -> tuple[dict[str, str], list[str]]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"], "environment.yml must use conda-forge only"
    conda, pip = {}, []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip += dep["pip"]
            continue
        name, constraint = _split(dep)
        if name == "python":
            assert constraint == "=3.11", "environment.yml must pin Python 3.11"
        if name not in NOT_PACKAGES:
            conda[CONDA_NAMES.get(name, name)] = constraint
    return conda, pip


def test_same_packages_and_constraints():
    conda, pip = _environment()
    both = {**conda, **dict(_split(s) for s in pip if s != "-e .")}
    pyproject = _pyproject()
    assert set(both) == set(pyproject), (
        f"only in environment.yml: {sorted(set(both) - set(pyproject))}; "
        f"only in pyproject.toml: {sorted(set(pyproject) - set(both))}"
    )
    differ = {n: (pyproject[n], both[n]) for n in pyproject if pyproject[n] != both[n]}
    assert not differ, f"constraints differ (pyproject, environment.yml): {differ}"


def test_pip_section_only_installs_what_conda_forge_lacks_and_the_project():
    _, pip = _environment()
    assert pip[-1] == "-e .", f"the pip section should end by installing chromaviz itself, got {pip}"
    assert {_split(s)[0] for s in pip[:-1]} == NOT_ON_CONDA_FORGE, pip


def test_the_extras_chromaviz_checks_for_are_those_pyproject_declares():
    extras = _project()["optional-dependencies"]

    def requirements(extra: str) -> set[str]:  # an extra's requirements, with those of the extras it includes
        names = set()
        for spec in extras[extra]:
            included = re.fullmatch(r"chromaviz\[(.+)\]", spec)
            names |= set().union(*(requirements(e) for e in included.group(1).split(","))) if included else {_split(spec)[0]}
        return names

    assert set(_checks.EXTRAS) <= set(extras)
    for extra, modules in _checks.EXTRAS.items():
        assert set(modules) <= requirements(extra), (extra, sorted(set(modules) - requirements(extra)))


def test_constraints_pin_every_requirement_within_its_range():
    from packaging.requirements import Requirement

    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.strip().lower().replace("-", "_")] = version.strip()
    project = _project()
    for spec in project["dependencies"] + [s for e in project["optional-dependencies"].values() for s in e]:
        req = Requirement(spec)
        if req.name == "chromaviz":
            continue
        name = req.name.lower().replace("-", "_")
        assert name in pins, f"constraints.txt pins no version of {req.name}"
        assert req.specifier.contains(pins[name], prereleases=True), f"constraints.txt's {req.name}=={pins[name]} is outside {spec}"


HEAVY = ("diffusers", "transformers", "torch", "jupyter_client", "bokeh", "dask", "distributed", "ipywidgets")


def _imported_after(code: str) -> list[str]:
    probe = f"import sys\n{code}\nprint(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return eval(result.stdout.strip().splitlines()[-1])


def test_import_chromaviz_imports_none_of_the_heavy_packages():
    assert _imported_after("import chromaviz; chromaviz.__version__; dir(chromaviz)") == []


def test_help_and_version_import_none_of_the_heavy_packages():
    for argv in (["--help"], ["--version"]):
        code = f"""
import contextlib, io
from chromaviz.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    try:
        main({argv!r})
    except SystemExit:
        pass
"""
        assert _imported_after(code) == [], argv


def test_public_names_resolve_on_first_use():
    result = subprocess.run([sys.executable, "-c", """
import types, chromaviz
assert set(chromaviz.__all__) <= set(dir(chromaviz))
missing = [n for n in chromaviz.__all__ if getattr(chromaviz, n, None) is None]
assert not missing, missing
assert isinstance(chromaviz.sweep, types.ModuleType) and callable(chromaviz.sweep.sweep)  # the subpackage, not a function
import chromaviz.sweep.grid
try:
    chromaviz.no_such_name
except AttributeError as err:
    print(err)
"""], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "module 'chromaviz' has no attribute 'no_such_name'"


def test_the_package_keeps_at_most_eight_top_level_modules():
    modules = sorted(p.stem for p in (ROOT / "chromaviz").glob("*.py"))
    assert len(modules) <= 8, modules
