"""Every notebook in notebooks/ executed with papermill; its recorded figures checked against baselines.

Baselines live in ``tests/notebook_baselines.json``: notebook → figure → ``{"value": …, "abs": tol}``
or ``{"value": …, "rel": tol}`` (numbers and lists of numbers compare within the tolerance, element by
element; strings, booleans and None compare exactly). Executed notebooks are kept in
``test-artifacts/notebooks/`` for inspection. ``CHROMAVIZ_UPDATE_BASELINES=1`` rewrites the baseline
values from the current run, keeping each figure's tolerance (new figures get ``rel`` 1e-6: loosen
them by hand where a figure depends on sampling).

Select with ``-m notebook``; each executing test is also ``slow``.
"""

from __future__ import annotations

import ast
import json
import math
import os
from pathlib import Path

import nbformat
import pytest

from chromaviz.notebook.report import REPORT_NOTEBOOK, kernel_for_this_python, notebook_parameters, read_figures

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted([*(ROOT / "notebooks").glob("*.ipynb"), REPORT_NOTEBOOK])  # the report ships in the package
BASELINES_PATH = ROOT / "tests" / "notebook_baselines.json"
ARTIFACTS = ROOT / "test-artifacts" / "notebooks"
CELL_TIMEOUT = 300  # seconds any one cell may run

# Parameters the tests change from a notebook's defaults (the defaults themselves are small enough
# for CI). The default report is run end to end, and timed, in test_report.py.
OVERRIDES = {
    "explorer": {"autorun": True, "steps": 10, "size": 32},
    "report": {"model": "exemplars", "prompt": "[cat:moon:0.5]", "steps": 12, "size": 32, "batch": 2},
    "sweep": {"steps": [5, 10], "size": 32, "batch": 2},
}


def load_baselines() -> dict:
    return json.loads(BASELINES_PATH.read_text(encoding="utf-8"))


# ---------------------------------------------------------------------- comparison
def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def matches(actual, expected, abs_tol: float = 0.0, rel_tol: float = 0.0) -> bool:
    """Numbers within max(abs_tol, rel_tol·|expected|) (NaN matches NaN); lists element-wise; others exactly."""
    if _is_number(actual) and _is_number(expected):
        if math.isnan(expected) or math.isnan(actual):
            return math.isnan(expected) and math.isnan(actual)
        if math.isinf(expected) or math.isinf(actual):
            return actual == expected
        return abs(actual - expected) <= max(abs_tol, rel_tol * abs(expected))
    if isinstance(actual, list) and isinstance(expected, list):
        return len(actual) == len(expected) and all(matches(a, e, abs_tol, rel_tol) for a, e in zip(actual, expected))
    if isinstance(actual, dict) and isinstance(expected, dict):
        return actual.keys() == expected.keys() and all(matches(actual[k], expected[k], abs_tol, rel_tol) for k in actual)
    return type(actual) is type(expected) and actual == expected


def figure_problems(notebook: str, actual: dict, baseline: dict) -> list[str]:
    """One line per figure that is missing, differs from its baseline, or has no baseline."""
    problems = []
    for name, spec in baseline.items():
        tol = ", ".join(f"{k} {spec[k]:g}" for k in ("abs", "rel") if k in spec) or "exact"
        if name not in actual:
            problems.append(f"{notebook}: figure {name!r} was not recorded (expected {spec['value']!r})")
        elif not matches(actual[name], spec["value"], spec.get("abs", 0.0), spec.get("rel", 0.0)):
            problems.append(f"{notebook}: figure {name!r}: expected {spec['value']!r} ({tol}), actual {actual[name]!r}")
    for name in actual.keys() - baseline.keys():
        problems.append(f"{notebook}: figure {name!r} = {actual[name]!r} has no baseline in {BASELINES_PATH.name}")
    return problems


def update_baselines(notebook: str, actual: dict) -> None:
    baselines = load_baselines()
    old = baselines.get(notebook, {})
    new = {}
    for name, value in actual.items():
        tolerance = {k: v for k, v in old.get(name, {"rel": 1e-6}).items() if k in ("abs", "rel")}
        new[name] = {"value": value, **tolerance}
    baselines[notebook] = new
    text = json.dumps(baselines, indent=1, ensure_ascii=False, allow_nan=True)
    BASELINES_PATH.write_text(text + "\n", encoding="utf-8")


# ---------------------------------------------------------------------- execution
@pytest.fixture(scope="session")
def kernel() -> str:
    """The ``python3`` kernel of this environment (ipykernel installs it under sys.prefix)."""
    return kernel_for_this_python()


def execute(source: Path, target: Path, kernel: str, parameters: dict | None = None, cwd: Path | None = None) -> dict:
    """Run ``source`` into ``target`` with papermill; its recorded figures.

    A failing cell fails the test with the notebook's name, the cell and its traceback.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        papermill.execute_notebook(
            str(source), str(target), parameters=parameters or {}, kernel_name=kernel,
            cwd=str(cwd or target.parent), execution_timeout=CELL_TIMEOUT, start_timeout=120,
            progress_bar=False, log_output=False,
        )
    except PapermillExecutionError as err:
        pytest.fail(
            f"notebook {source.name} failed in cell {err.cell_index} (In [{err.exec_count}]): {err.ename}: {err.evalue}\n"
            f"{err}\nexecuted notebook: {target}",
            pytrace=False,
        )
    return read_figures(target)


# ---------------------------------------------------------------------- fast checks (no kernel)
def test_every_notebook_has_parameters_and_baselines():
    names = {nb.stem for nb in NOTEBOOKS}
    assert {"theory", "explorer", "measurement", "prompt_composing", "upscaling", "schedule_design", "report"} <= names
    assert set(load_baselines()) == names, "tests/notebook_baselines.json must have one entry per notebook"
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{path.name}: needs exactly one cell tagged 'parameters'"
        assert nb.metadata.kernelspec.name == "python3", f"{path.name}: kernel must be python3"
        assert all(c.get("outputs", []) == [] for c in nb.cells if c.cell_type == "code"), f"{path.name}: committed with outputs"
        # Every assignment must be one papermill can see and override (it skips lines with two '=').
        tree = ast.parse(tagged[0].source)
        assigned = [t.id for node in tree.body for t in ([node.target] if isinstance(node, ast.AnnAssign) else node.targets)]
        assert assigned == list(notebook_parameters(path)), f"{path.name}: papermill cannot read every parameter"
        unknown = set(OVERRIDES.get(path.stem, {})) - set(assigned)
        assert not unknown, f"{path.name}: the tests override parameters it does not have: {unknown}"


def test_figure_comparison_names_notebook_figure_expected_and_actual():
    baseline = {"a": {"value": 0.054, "abs": 0.005}, "b": {"value": [16, 32], "abs": 0}, "c": {"value": "complete"},
                "d": {"value": [1.0, float("nan")], "rel": 1e-6}}
    assert figure_problems("nb", {"a": 0.057, "b": [16, 32], "c": "complete", "d": [1.0, float("nan")]}, baseline) == []
    problems = figure_problems("nb", {"a": 0.07, "b": [16], "e": 1}, baseline)
    assert "nb: figure 'a': expected 0.054 (abs 0.005), actual 0.07" in problems
    assert "nb: figure 'b': expected [16, 32] (abs 0), actual [16]" in problems
    assert "nb: figure 'c' was not recorded (expected 'complete')" in problems
    assert any("figure 'e' = 1 has no baseline" in p for p in problems)
    assert not matches(True, 1) and not matches(1, 1.5, abs_tol=0.4) and matches(1, 1.5, abs_tol=0.5)


# ---------------------------------------------------------------------- the notebooks
def test_python3_kernel_runs_this_environment(kernel):
    from jupyter_client.kernelspec import KernelSpecManager

    import sys

    spec = KernelSpecManager().get_kernel_spec(kernel)
    assert Path(spec.resource_dir).resolve().is_relative_to(Path(sys.prefix).resolve()), (
        f"the python3 kernel comes from {spec.resource_dir}, not from this environment ({sys.prefix})"
    )


@pytest.mark.notebook
@pytest.mark.slow
@pytest.mark.parametrize("name", [nb.stem for nb in NOTEBOOKS])
def test_notebook(name, kernel, tmp_path):
    target = ARTIFACTS / f"{name}.ipynb"
    figures = execute(next(nb for nb in NOTEBOOKS if nb.stem == name), target, kernel, OVERRIDES.get(name), cwd=tmp_path)
    if os.environ.get("CHROMAVIZ_UPDATE_BASELINES"):
        update_baselines(name, figures)
    problems = figure_problems(f"{name}.ipynb", figures, load_baselines().get(name, {}))
    assert not problems, "\n".join(problems) + f"\n(executed notebook: {target})"


@pytest.mark.notebook
@pytest.mark.slow
def test_measurement_of_a_diffusers_pipeline(kernel, tmp_path):
    """measurement.ipynb with ``pipeline`` set: a tiny random-weight SD pipeline, latents and decoded RGB."""
    import diffusers_models as tiny

    folder = tiny.save_sd(tmp_path / "sd")
    small = {"size": 32, "batch": 2, "steps": 6, "exemplar_size": 16, "exemplar_batch": 1, "pipeline": str(folder),
             "pipeline_prompt": "a photo of a cat", "pipeline_size": 32, "pipeline_batch": 2, "pipeline_guidance": 3.0}
    figures = execute(ROOT / "notebooks" / "measurement.ipynb", ARTIFACTS / "measurement-pipeline.ipynb", kernel, small, cwd=tmp_path)
    assert figures["pipeline_status"] == "complete"
    # random weights and no data: a spectrum could only be fitted to the run itself, so no agreement is claimed
    assert math.isnan(figures["pipeline_max_dev_latent"]) and math.isnan(figures["pipeline_max_dev_rgb"])


@pytest.mark.notebook
@pytest.mark.slow
def test_a_failing_cell_fails_with_its_traceback(kernel, tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("def f():\n    return 1 / 0\n\nf()")]
    nbformat.write(nb, tmp_path / "broken.ipynb")
    with pytest.raises(pytest.fail.Exception) as failure:
        execute(tmp_path / "broken.ipynb", tmp_path / "out" / "broken.ipynb", kernel)
    message = str(failure.value)
    assert "notebook broken.ipynb failed in cell 1" in message and "ZeroDivisionError: division by zero" in message
    assert "return 1 / 0" in message  # the traceback itself, down to the failing line
