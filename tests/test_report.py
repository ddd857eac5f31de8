"""`chromaviz report`: parameters and their errors, recorded figures, and one real report, timed."""

from __future__ import annotations

import json
import math
import re
import subprocess
import time

import nbformat
import pytest

from chromaviz.cli import main
from chromaviz.notebook.report import (
    FIGURE_MIME, REPORT_NOTEBOOK, Parameter, ReportError, markdown_table, notebook_parameters,
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


def test_markdown_table_escapes_and_formats():
    table = markdown_table(["m", "max |G − s|"], [[1, 0.123456], [2, float("nan")], [4, -0.0]])
    assert table.splitlines() == ["| m | max \\|G − s\\| |", "|---|---|", "| 1 | 0.123 |", "| 2 | – |", "| 4 | 0 |"]


HOSTILE = [
    "red` <script>document.title='PWNED-'+document.title</script> `",
    "<img src=x onerror=alert(1)>",
    "a\n| injected | row |\n<b>bold</b>",
    "[link](javascript:alert(1)) *em* _em_ \\` ``code``",
    '"><svg onload=alert(1)>',
    "&lt;script&gt;already escaped&lt;/script&gt;",
]
"""User-given strings that tried to become markup (a prompt, a model folder, a parameter)."""


class _LiveMarkup(__import__("html.parser").parser.HTMLParser):
    """Every element and attribute of a page, to find what a hostile string made live."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.handlers: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.handlers += [f"{tag} {name}={value}" for name, value in attrs
                          if name.startswith("on") or (value or "").strip().lower().startswith("javascript:")]


@pytest.mark.parametrize("show_code", [False, True])
def test_hostile_strings_in_a_report_table_stay_text(tmp_path, show_code):
    """A prompt that closes a code span, opens a tag or splits the table renders as its own text."""
    from IPython.display import Markdown  # noqa: F401  (what the report displays the table with)

    from chromaviz.notebook.report import to_html

    table = markdown_table(["setting", "value"], [["prompt", text] for text in HOSTILE])
    assert len(table.splitlines()) == 2 + len(HOSTILE)  # no line break reached the table
    nb = nbformat.v4.new_notebook()
    code = nbformat.v4.new_code_cell("display(Markdown(table))")
    code.outputs = [nbformat.v4.new_output("display_data", {"text/markdown": table, "text/plain": "<Markdown>"})]
    nb.cells = [code]
    nbformat.write(nb, tmp_path / "nb.ipynb")
    page = to_html(tmp_path / "nb.ipynb", tmp_path / "nb.html", show_code=show_code).read_text()
    body = page[page.index("<body"):]
    found = _LiveMarkup()
    found.feed(body)
    assert not found.handlers and "svg" not in found.tags and "img" not in found.tags and "b" not in found.tags
    assert found.tags.count("script") == page[page.index("<body"):].count("<script") and "PWNED" not in "".join(
        re.findall(r"<script[^>]*>(.*?)</script>", body, flags=re.S))
    assert found.tags.count("tr") == 1 + len(HOSTILE)
    import html as html_module

    text = html_module.unescape(re.sub(r"<[^>]+>", "", body))
    for hostile in HOSTILE:
        assert " ".join(hostile.splitlines()) in text  # shown exactly, as text


# ---------------------------------------------------------------------- one offline page, print-quality figures
EMBEDDED = '<!DOCTYPE html><html><body><p class="x">a < b & \'c\'</p><script>if (1 < 2 && "a") {}</script></body></html>'


def _tiny_executed_notebook(path):
    from chromaviz.notebook.report import embedded_page

    nb = nbformat.v4.new_notebook()
    code = nbformat.v4.new_code_cell("print('hello from the kernel')")
    png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
    code.outputs = [nbformat.v4.new_output("stream", text="hello from the kernel\n"),
                    nbformat.v4.new_output("display_data", {"text/html": embedded_page(EMBEDDED)}),
                    nbformat.v4.new_output("display_data", {"image/png": png}, metadata={"image/png": {"alt": "G <vs> s"}})]
    nb.cells = [nbformat.v4.new_markdown_cell("# Title\n\nλ and x̂<sub>0</sub>, no math typesetting"), code]
    nbformat.write(nb, path)
    return path


@pytest.mark.parametrize("show_code", [False, True])
def test_to_html_loads_nothing_from_the_network_and_hides_code_unless_asked(tmp_path, show_code):
    from chromaviz.notebook.report import to_html

    html = to_html(_tiny_executed_notebook(tmp_path / "nb.ipynb"), tmp_path / "nb.html", show_code=show_code).read_text()
    assert not re.search(r"<script[^>]+src=", html) and not re.search(r'<link[^>]+href="https?:', html)
    assert "hello from the kernel" in html  # the output
    assert html.count("hello from the kernel") == (2 if show_code else 1)
    assert ('jp-InputArea-editor' in html) is show_code
    assert len(html) < 60_000  # a small stylesheet, not JupyterLab's
    import html as html_module

    srcdoc = re.search(r"srcdoc='([^']*)'", html).group(1)  # compact, whatever nbconvert's serialiser did
    assert html_module.unescape(srcdoc) == EMBEDDED and "&lt;" not in srcdoc
    assert 'alt="G &lt;vs&gt; s"' in html  # a figure's text alternative, escaped
    with pytest.raises(TypeError, match="show_code"):
        to_html(tmp_path / "nb.ipynb", tmp_path / "x.html", show_code="yes")


def test_embedded_page_holds_the_whole_page():
    import html as html_module

    from chromaviz.notebook.report import embedded_page

    page = '<html><body><p title="a &amp; b">x < y & \'z\'</p><script>if (1 < 2 && "a") {}</script></body></html>'
    frame = embedded_page(page, name="run", height=300)
    srcdoc = re.search(r"srcdoc='([^']*)'", frame).group(1)
    assert html_module.unescape(srcdoc) == page and 'name="run"' in frame and 'height="300"' in frame
    with pytest.raises(TypeError, match="page must be an HTML document"):
        embedded_page(b"<html></html>")
    with pytest.raises(ValueError, match="height"):
        embedded_page(page, height=0)


def test_picture_of_a_figure_writes_png_and_svg_and_describes_itself(tmp_path):
    from matplotlib.figure import Figure

    from chromaviz.notebook.report import picture

    fig = Figure(figsize=(3, 2))
    ax = fig.subplots()
    ax.plot([0, 1], [1, 0])
    ax.set(title="signal fraction", xlabel="sampling step", ylabel="G")
    pic = picture(fig, tmp_path / "f.png")
    assert pic.path == tmp_path / "f.png" and (tmp_path / "f.svg").is_file()
    data, metadata = pic._repr_png_()
    assert data.startswith(b"\x89PNG") and metadata["alt"] == "signal fraction, x: sampling step, y: G"


def test_screen_png_is_a_smaller_palette_png():
    import io

    import numpy as np
    from matplotlib.figure import Figure
    from PIL import Image

    from chromaviz.notebook.report import screen_png

    fig = Figure(figsize=(6, 3))
    ax = fig.subplots()
    for k in range(5):
        ax.plot(np.sin(np.linspace(0, 6, 200) + k), lw=2)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    full = buf.getvalue()
    small = screen_png(full)
    assert len(small) < len(full) and Image.open(io.BytesIO(small)).mode == "P"
    assert Image.open(io.BytesIO(small)).size == Image.open(io.BytesIO(full)).size
    with pytest.raises(ValueError, match="colours"):
        screen_png(full, colours=1)


def test_levels_have_one_palette_in_matplotlib_and_bokeh():
    import numpy as np

    from chromaviz.views.figures import LEVEL_ENTRIES, MIN_CONTRAST, contrast_ratio, level_colours

    from matplotlib import colormaps
    from matplotlib.colors import to_rgb

    Plasma256 = pytest.importorskip("bokeh.palettes").Plasma256
    for n in (1, 5, 7, 9):
        colours = level_colours(n)
        assert len(colours) == n and all(re.fullmatch(r"#[0-9a-f]{6}", c) for c in colours)
        entries = np.linspace(*LEVEL_ENTRIES, n).astype(int)
        assert np.allclose([to_rgb(c) for c in colours], np.asarray(colormaps["plasma"].colors)[entries], atol=1 / 255)
        assert np.allclose([to_rgb(c) for c in colours], [to_rgb(Plasma256[i]) for i in entries], atol=2 / 255)
        # legible when projected: every level at least 3:1 on white (the coarsest was 1.5:1)
        assert min(contrast_ratio(c) for c in colours) >= MIN_CONTRAST >= 3
    with pytest.raises(ValueError, match="n"):
        level_colours(0)


def test_save_figure_writes_png_and_svg_the_same_every_time(tmp_path):
    from matplotlib.figure import Figure

    from chromaviz.views.figures import save_figure

    def draw():
        fig = Figure(figsize=(3, 2))
        fig.subplots().plot([0, 1], [1, 0])
        return fig

    png = save_figure(draw(), tmp_path / "a" / "fig.png")
    assert png == tmp_path / "a" / "fig.png" and png.read_bytes().startswith(b"\x89PNG")
    svg = (tmp_path / "a" / "fig.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    save_figure(draw(), tmp_path / "b" / "fig.png")
    assert (tmp_path / "b" / "fig.svg").read_text() == svg  # no date or random ids
    with pytest.raises(ValueError, match="formats"):
        save_figure(draw(), tmp_path / "c.png", formats=["png", "jpeg"])


def test_chromatogram_figure_labels_its_axes_and_draws_each_level_in_its_colour():
    import numpy as np

    from chromaviz.analysis import Comparison
    from chromaviz.views.figures import chromatogram_figure, level_colours

    s = np.linspace(0, 1, 6)[:, None] ** np.array([[1.0, 2.0, 3.0]])
    c = Comparison((1, 2, 4), "rings", np.linspace(900, 0, 6), np.linspace(-5, 5, 6), s + 0.01, s, s ** 1.1, "model")
    fig = chromatogram_figure(c, title="t")
    ax1, ax2 = fig.axes[:2]
    assert "step" in ax1.get_xlabel() and "signal fraction" in ax1.get_ylabel() and ax2.get_ylabel()
    drawn = {line.get_color() for line in ax1.lines}
    assert set(level_colours(3)) <= drawn


# ---------------------------------------------------------------------- real reports
REPORT_HTML_BUDGET = 3_000_000  # bytes: the default report.html, run page included (issue: ≤ 3 MB)
FIGURES = ("strip", "samples", "chromatogram", "theory", "rapsd")


@pytest.fixture(scope="module")
def default_report(tmp_path_factory):
    """The default report, made by the ``chromaviz`` command in a subprocess: (exit code, folder, seconds, output)."""
    from test_report_browser import chromaviz_command

    out = tmp_path_factory.mktemp("report")
    start = time.perf_counter()
    proc = subprocess.run([*chromaviz_command(), "report", "-o", str(out), "--quiet"], capture_output=True, text=True,
                          timeout=900)
    return proc.returncode, out, time.perf_counter() - start, proc.stdout + proc.stderr


@pytest.mark.notebook
@pytest.mark.slow
def test_default_report_end_to_end(default_report):
    code, out, elapsed, output = default_report
    assert code == 0, output
    assert elapsed < REPORT_BUDGET_S, f"the default report took {elapsed:.1f} s (budget {REPORT_BUDGET_S} s)"
    for name in ("report.ipynb", "report.html", "run.html", "level_timings.csv", "signal_fractions.csv",
                 *(f"{figure}.{fmt}" for figure in FIGURES for fmt in ("png", "svg"))):
        assert (out / name).is_file(), f"{name} missing from the report folder"
    figures = read_figures(out / "report.ipynb")
    assert figures["status"] == "complete" and figures["steps_recorded"] == 50
    assert figures["levels"] == [1, 2, 4, 8, 16] and figures["inherited_levels"] == [16]
    assert figures["max_deviation"] < 0.01  # against the run as sampled: exact for DDIM (issue 14's bound)
    assert figures["max_deviation_continuous"] == pytest.approx(0.408, abs=0.02)  # m=16 misses 41% of its power
    assert figures["missing_measured"][-1] == pytest.approx(figures["max_deviation_continuous"], abs=0.01)
    executed = json.loads((out / "report.ipynb").read_text(encoding="utf-8"))
    assert any("injected-parameters" in c["metadata"].get("tags", []) for c in executed["cells"])
    assert sum(c["cell_type"] == "code" and "import" in "".join(c["source"]) for c in executed["cells"]) >= 1
    assert (out / "signal_fractions.csv").read_text().count("\n") == 51  # header + one row per step


@pytest.mark.notebook
@pytest.mark.slow
def test_report_kernel_is_not_on_the_network(default_report):
    """The kernel talks over Unix sockets (ipc): no TCP ports, so no security warning in the command's output."""
    code, _, _, output = default_report
    assert code == 0, output
    assert "Kernel is running over TCP" not in output and "without encryption" not in output, output
    assert "Parent appears to have exited" not in output, "the kernel outlived the command"


@pytest.mark.notebook
@pytest.mark.slow
def test_default_report_html_is_one_small_offline_file(default_report):
    code, out, _, output = default_report
    assert code == 0, output
    html = (out / "report.html").read_text(encoding="utf-8")
    assert 'src="run.html"' not in html and "srcdoc='" in html  # the run page is inside, not beside
    embedded = re.search(r"srcdoc='([^']*)'", html).group(1)
    around = html.replace(embedded, "")
    assert not re.search(r'(?:src|href)="https?://', around), "report.html refers to the network"  # the page's
    # own scripts hold such strings (bokeh's MathJax URL, unused): the browser test checks that nothing is fetched
    assert "mathjax" not in around.lower() and "require.js" not in around.lower()
    assert around.count("data:image/png;base64") >= len(FIGURES)  # figures are inside the page
    assert 'jp-InputArea-editor' not in html, "code cells are shown by default"
    size, run_page = len(html.encode()), len(embedded.encode())
    images = sum(len(u) for u in re.findall(r"data:image/png;base64,[A-Za-z0-9+/=]+", around))
    print(f"report.html {size / 1e6:.2f} MB: run page {run_page / 1e6:.2f} MB (escaped), figures {images / 1e6:.2f} MB, "
          f"rest {(size - run_page - images) / 1e6:.2f} MB")
    assert size - run_page < 600_000, "the report around the run page should be well under 1 MB"
    assert size <= REPORT_HTML_BUDGET, f"report.html is {size / 1e6:.2f} MB (budget {REPORT_HTML_BUDGET / 1e6:.1f} MB)"
    run_html = (out / "run.html").stat().st_size  # 50 steps of 64×64, batch 8: WebP frames, BokehJS gzip-compressed
    assert run_html <= 2_000_000, f"run.html is {run_html / 1e6:.2f} MB (budget 2 MB)"


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
@pytest.mark.parametrize("source, timeout, words", [
    ("import time\ntime.sleep(60)", "2", r"cell 2 of the report ran past the cell timeout \(2 s\); allow more with --cell-timeout"),
    ("import os\nos._exit(3)", "60", r"the kernel died in cell 2 of the report \(out of memory, or a crash in native code\)"),
])
def test_a_cell_past_its_timeout_or_a_dead_kernel_is_one_error_line(tmp_path, capfd, source, timeout, words):
    """Both raised nbclient's own exceptions through chromaviz (a traceback, with the kernel's ZeroMQ
    tracebacks above it); now one line, and the executed notebook is kept. Cell 1 is the parameters
    papermill injects."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell('output_dir: str = "."')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(source)]
    nbformat.write(nb, tmp_path / "stops.ipynb")
    code = main(["report", "--notebook", str(tmp_path / "stops.ipynb"), "--cell-timeout", timeout, "-o", str(tmp_path / "out"),
                 "--quiet"])
    err = capfd.readouterr().err
    assert code == 1 and re.search(words, err), err
    assert "Traceback" not in err and "ZMQError" not in err, err
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


@pytest.mark.slow
@pytest.mark.parametrize("signum, status, how", [(15, 143, "terminated"), (2, 130, "interrupted")])
def test_a_signal_during_a_report_interrupts_the_kernel_and_keeps_the_partial_run(tmp_path, signum, status, how):
    """SIGTERM (kill, timeout, a batch system) or Ctrl-C during the sampling cell interrupts the
    kernel as Jupyter's stop button does: the sampling cell saves the steps it recorded
    (``save_trajectory``), the executed part of the notebook and its HTML are written with the later
    cells not run, one line names the cell, and the exit status is 128 + the signal."""
    import sys

    import psutil

    from chromaviz.sampling import Trajectory

    out = tmp_path / "out"
    child = subprocess.Popen(
        [sys.executable, "-m", "chromaviz.cli", "report", "-p", "steps", "1000", "-p", "size", "128", "-p", "batch", "2",
         "-p", "save_trajectory", "true", "-o", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    kernel, deadline = None, time.monotonic() + 300
    while kernel is None or kernel.memory_info().rss < 900 * 2**20:  # the sampling cell has recorded ~300 steps
        assert child.poll() is None and time.monotonic() < deadline, "the report ended before the signal"
        kernels = [p for p in psutil.Process(child.pid).children(recursive=True) if "ipykernel" in " ".join(p.cmdline())]
        kernel = kernels[0] if kernels else None
        time.sleep(0.05)
    child.send_signal(signum)
    _, err = child.communicate(timeout=300)
    err = err.decode(errors="replace")
    assert child.returncode == status, err
    assert "Traceback" not in err and re.search(rf"chromaviz report: {how} in cell \d+; the cells that ran", err), err
    assert (out / "report.html").stat().st_size > 0
    partial = Trajectory.load(out / "trajectory.safetensors")  # saved from the kernel, complete or not
    assert partial.status in ("interrupted", "complete") and len(partial) >= 100, (partial.status, len(partial))
    cells = nbformat.read(out / "report.ipynb", as_version=4).cells
    ran = [c.metadata.get("papermill", {}).get("status") for c in cells]
    assert "failed" in ran and "completed" not in ran[ran.index("failed"):], ran
