"""environment.yml and pyproject.toml must ask for the same packages and versions."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CONDA_NAMES = {"pytorch": "torch", "dask_core": "dask"}  # conda-forge name → PyPI name
NOT_PACKAGES = {"python", "pip"}


def _split(spec: str) -> tuple[str, str]:
    name, constraint = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", spec).groups()
    return name.lower().replace("-", "_"), constraint.replace(" ", "")


def _pyproject() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
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
    conda, _ = _environment()
    pyproject = _pyproject()
    assert set(conda) == set(pyproject), (
        f"only in environment.yml: {sorted(set(conda) - set(pyproject))}; "
        f"only in pyproject.toml: {sorted(set(pyproject) - set(conda))}"
    )
    differ = {n: (pyproject[n], conda[n]) for n in pyproject if pyproject[n] != conda[n]}
    assert not differ, f"constraints differ (pyproject, environment.yml): {differ}"


def test_pip_section_only_installs_the_project():
    _, pip = _environment()
    assert pip == ["-e ."], f"the pip section should only install chromaviz itself, got {pip}"
