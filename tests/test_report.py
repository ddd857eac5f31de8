"""`chromaviz report`: parameters and their errors, recorded figures, and one real report, timed."""

from __future__ import annotations

import json
import math
import re
import time

import nbformat
import pytest

from chromaviz.cli import main
from chromaviz.notebook.report import (
    FIGURE_MIME, REPORT_NOTEBOOK, Parameter, ReportError, crossing_steps, markdown_table, notebook_parameters,
    parse_parameters, read_figures, record,
)

REPORT_BUDGET_S = 60  # the budget for the default report


# ---------------------------------------------------------------------- parameters
def test_report_parameters_and_their_types():
    params = notebook_parameters(REPORT_NOTEBOOK)
    expected = {"model": "str", "prompt": "str", "scheduler": "str", "schedule": "str", "steps": "int", "seed": "int",
                "size": "int", "batch": "int", "guidance": "float", "method": "str", "device": "str", "dtype": "str",
                "save_trajectory": "bool", "output_dir": "str"}
    assert {name: p.type for name, p in params.items()} == expected
    assert params["steps"].default == "50" and params["model"].default == '"gaussian"'
    assert "gaussian" in params["model"].help


def test_list_prints_the_parameters(capsys):
    assert main(["report", "--list"]) == 0
    out = capsys.readouterr().out
    assert "steps (int, default 50): inference steps" in out
    assert "output_dir" not in out  # set by the command from -o


def _usage_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


def test_unknown_parameter_lists_the_report_parameters(capsys, tmp_path):
    err = _usage_error(["report", "-p", "stpes", "10", "-o", str(tmp_path)], capsys)
    assert "'stpes' is not a parameter of this report (did you mean 'steps'?)" in err
    for line in ('model (str, default "gaussian")', "steps (int, default 50)", "guidance (float, default 1.0)",
                 "save_trajectory (bool, default False)"):
        assert line in err
    assert not any(tmp_path.iterdir()), "nothing may run or be written before the parameters are checked"


def test_value_of_the_wrong_type_says_what_was_expected(capsys, tmp_path):
    err = _usage_error(["report", "-p", "steps", "ten", "-o", str(tmp_path)], capsys)
    assert "parameter 'steps' expects an integer (int, default 50), got 'ten'" in err
    err = _usage_error(["report", "-p", "guidance", "strong", "-o", str(tmp_path)], capsys)
    assert "parameter 'guidance' expects a number (float, default 1.0), got 'strong'" in err
    err = _usage_error(["report", "-p", "save_trajectory", "maybe", "-o", str(tmp_path)], capsys)
    assert "expects true or false" in err


def test_output_dir_is_set_by_the_command(capsys, tmp_path):
    err = _usage_error(["report", "-p", "output_dir", "elsewhere", "-o", str(tmp_path)], capsys)
    assert "'output_dir' is set by the command itself (use -o DIR)" in err


def test_missing_notebook_is_a_clear_error(capsys, tmp_path):
    err = _usage_error(["report", "--notebook", str(tmp_path / "nope.ipynb"), "-o", str(tmp_path)], capsys)
    assert "nope.ipynb" in err


@pytest.mark.parametrize("kind, text, value", [
    ("int", "12", 12), ("float", "2.5", 2.5), ("float", "3", 3.0), ("bool", "true", True), ("bool", "No", False),
    ("str", "[cat:moon:m=4]", "[cat:moon:m=4]"), ("list", "[1, 2]", [1, 2]), ("any", "None", None), ("any", "moon", "moon"),
])
def test_values_convert_to_the_parameter_type(kind, text, value):
    assert Parameter("x", kind, "0").convert(text) == value


def test_parse_parameters_types_each_pair():
    params = notebook_parameters(REPORT_NOTEBOOK)
    values = parse_parameters([("steps", "8"), ("prompt", "[cat:moon:m=4]"), ("guidance", "3")], params)
    assert values == {"steps": 8, "prompt": "[cat:moon:m=4]", "guidance": 3.0}
    with pytest.raises(ReportError, match="expects a list"):
        Parameter("levels", "list", "[1, 2]").convert("(1, 2)")


# ---------------------------------------------------------------------- recorded figures
def test_figures_read_back_from_display_outputs():
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("")
    cell.outputs = [
        nbformat.v4.new_output("display_data", {FIGURE_MIME: {"name": "a", "value": 0.5}, "text/plain": "a = 0.5"}),
        nbformat.v4.new_output("stream", text="hello"),
        nbformat.v4.new_output("display_data", {FIGURE_MIME: {"name": "b", "value": [16, "nan"]}, "text/plain": ""}),
        nbformat.v4.new_output("display_data", {FIGURE_MIME: {"name": "a", "value": 0.7}, "text/plain": ""}),
    ]
    nb.cells = [cell]
    figures = read_figures(nb)
    assert list(figures) == ["a", "b"] and figures["a"] == 0.7  # a later record of a name wins
    assert figures["b"][0] == 16 and math.isnan(figures["b"][1])


def test_record_outside_a_kernel_prints(capsys):
    import numpy as np

    record("birth", np.array([744.2, np.nan]))
    assert capsys.readouterr().out.strip() == 'birth = [744.2, "nan"]'
    with pytest.raises(TypeError, match="cannot record a object"):
        record("x", object())


def test_crossing_steps_per_level():
    import numpy as np

    fractions = np.array([[0.1, 0.6], [0.4, 0.9], [0.5, 1.0]])
    assert crossing_steps(fractions) == [2, 0]
    assert crossing_steps(fractions, threshold=0.95) == [None, 2]


def test_markdown_table_escapes_and_formats():
    table = markdown_table(["m", "max |G − s|"], [[1, 0.123456], [2, float("nan")], [4, -0.0]])
    assert table.splitlines() == ["| m | max \\|G − s\\| |", "|---|---|", "| 1 | 0.123 |", "| 2 | – |", "| 4 | 0 |"]


# ---------------------------------------------------------------------- real reports
@pytest.fixture(scope="module")
def default_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    start = time.perf_counter()
    code = main(["report", "-o", str(out), "--quiet"])
    return code, out, time.perf_counter() - start


@pytest.mark.notebook
@pytest.mark.slow
def test_default_report_end_to_end(default_report, capsys):
    code, out, elapsed = default_report
    assert code == 0
    assert elapsed < REPORT_BUDGET_S, f"the default report took {elapsed:.1f} s (budget {REPORT_BUDGET_S} s)"
    for name in ("report.ipynb", "report.html", "run.html", "strip.png", "samples.png", "chromatogram.png",
                 "theory.png", "rapsd.png", "level_timings.csv", "signal_fractions.csv"):
        assert (out / name).is_file(), f"{name} missing from the report folder"
    figures = read_figures(out / "report.ipynb")
    assert figures["status"] == "complete" and figures["steps_recorded"] == 50
    assert figures["levels"] == [1, 2, 4, 8, 16] and figures["inherited_levels"] == [16]
    assert figures["max_deviation"] == pytest.approx(0.054, abs=0.005)  # 50 DDIM steps, see docs/chromatography.md
    html = (out / "report.html").read_text(encoding="utf-8")
    assert re.search(r'<iframe [^>]*src="run.html"', html) and 'href="run.html"' in html  # the kernel-free scrubber
    assert html.count("data:image/png;base64") >= 5  # figures are inside the page
    executed = json.loads((out / "report.ipynb").read_text(encoding="utf-8"))
    assert any("injected-parameters" in c["metadata"].get("tags", []) for c in executed["cells"])
    assert (out / "signal_fractions.csv").read_text().count("\n") == 51  # header + one row per step


@pytest.mark.notebook
@pytest.mark.slow
def test_a_failing_report_cell_exits_1_and_keeps_the_executed_notebook(tmp_path, capsys):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell('steps: int = 3\noutput_dir: str = "."')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("raise RuntimeError(f'bad steps: {steps}')")]
    nbformat.write(nb, tmp_path / "broken.ipynb")
    code = main(["report", "--notebook", str(tmp_path / "broken.ipynb"), "-p", "steps", "7", "-o", str(tmp_path / "out"), "--quiet"])
    assert code == 1
    err = capsys.readouterr().err
    assert re.search(r"cell \d+ of the report failed: RuntimeError: bad steps: 7", err)
    assert (tmp_path / "out" / "report.ipynb").is_file() and (tmp_path / "out" / "report.html").is_file()


@pytest.mark.notebook
@pytest.mark.slow
def test_report_on_a_diffusers_pipeline(tmp_path):
    """``-p model FOLDER``: a pipeline written by save_pretrained (tiny, random weights), measured on its latents."""
    import diffusers_models as tiny

    from chromaviz import spectral

    folder = tiny.save_sd(tmp_path / "sd")
    code = main(["report", "-p", "model", str(folder), "-p", "prompt", "[a photo of a cat:a red house:0.5]", "-p", "steps", "4",
                 "-p", "size", "32", "-p", "batch", "2", "-p", "guidance", "3", "-o", str(tmp_path / "out"), "--quiet"])
    assert code == 0
    figures = read_figures(tmp_path / "out" / "report.ipynb")
    assert figures["status"] == "complete" and figures["steps_recorded"] == 4
    assert figures["levels"] == list(spectral.levels_for(16, 16))  # the tiny VAE halves 32 pixels to 16 latents
    assert (tmp_path / "out" / "run.html").is_file() and (tmp_path / "out" / "samples.png").is_file()


@pytest.mark.browser
@pytest.mark.slow
def test_scrubber_works_inside_report_html(default_report):
    from browser_support import browser_available, chromium_page

    reason = browser_available()
    if reason:
        pytest.skip(reason)
    code, out, _ = default_report
    assert code == 0
    with chromium_page(1200, 1000) as page:
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto((out / "report.html").as_uri())
        frame = next(f for f in page.frames if f.url.endswith("run.html"))
        frame.wait_for_selector(".chromaviz-caption", timeout=30_000)
        assert "step 1/50" in frame.inner_text(".chromaviz-caption")
        frame.locator(".noUi-handle").focus()
        for _ in range(7):
            page.keyboard.press("ArrowRight")
        deadline = time.time() + 10
        while "step 8/50" not in frame.inner_text(".chromaviz-caption") and time.time() < deadline:
            page.wait_for_timeout(50)
        assert "step 8/50" in frame.inner_text(".chromaviz-caption")
        assert not errors, errors
