"""Notebooks as reports and as regression tests: recorded figures, report parameters, ``chromaviz report``.

- :func:`record` publishes a named figure (a number, a string, or a short list of them) as an
  output of the notebook cell that computes it; :func:`read_figures` reads every recorded figure
  back from an executed notebook. Tests compare them with baselines; nothing else is needed to
  read them (no scrapbook, no pandas).
- :func:`notebook_parameters` lists the parameters of a notebook's ``parameters`` cell with the
  type each one takes; :func:`parse_parameters` turns ``NAME VALUE`` text pairs into those types
  and says clearly what is wrong otherwise.
- :func:`run_report` executes ``chromaviz/notebook/report.ipynb`` with papermill (its kernel on
  Unix sockets, not TCP) and writes the executed notebook and :func:`to_html`'s rendering: one
  offline page, code hidden unless asked, the run page inside it (:func:`embedded_page`), figures
  as 256-colour PNGs (:func:`picture`, :func:`screen_png`; the files beside it keep full colour
  and have an SVG each).

This module imports no UI package. In a Jupyter kernel :func:`record` uses the IPython that is
already running there (it never imports it); in a plain script it prints the figure.
"""

from __future__ import annotations

import _thread
import ast
import functools
import html
import json
import math
import os
import re
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from ..spectral import centred_rapsd

FIGURE_MIME = "application/x-chromaviz-figure+json"
"""MIME type of a recorded figure's display output: ``{"name": str, "value": JSON}``."""

REPORT_NOTEBOOK = Path(__file__).resolve().parent / "report.ipynb"
"""The parameterised report (package data, installed with chromaviz)."""

RESERVED = {"output_dir": "use -o DIR"}
"""Report parameters that ``chromaviz report`` sets itself, with what to do instead."""

_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


class ReportError(ValueError):
    """A report could not be started: a wrong parameter name or value, a missing notebook or kernel."""


class ReportCellError(RuntimeError):
    """A cell of the report failed; the executed notebook and its HTML were still written."""


class ReportInterrupted(KeyboardInterrupt):
    """The report was interrupted (Ctrl-C, SIGTERM); the notebook of the cells that ran and its HTML
    were still written, and the message names the cell it stopped in. ``signum`` is the signal that
    stopped it (``signal.SIGINT`` or ``signal.SIGTERM``)."""

    def __init__(self, message: str, signum: int = signal.SIGINT) -> None:
        super().__init__(message)
        self.signum = signum


# ---------------------------------------------------------------------- recorded figures
def _encode(value: Any) -> Any:
    """A JSON value for ``value``: numpy and torch scalars and arrays become Python numbers and lists.

    Non-finite floats become the strings ``"nan"``, ``"inf"`` and ``"-inf"`` (JSON has no NaN);
    :func:`read_figures` turns them back into floats.
    """
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()  # numpy / torch scalars and arrays
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else ("nan" if math.isnan(value) else ("inf" if value > 0 else "-inf"))
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _encode(v) for k, v in value.items()}
    raise TypeError(f"cannot record a {type(value).__name__}; record numbers, strings, booleans or lists of them")


def _decode(value: Any) -> Any:
    if isinstance(value, str):
        return _NON_FINITE.get(value, value)
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, dict):
        return {k: _decode(v) for k, v in value.items()}
    return value


def record(name: str, value: Any) -> None:
    """Record a named figure so that it can be read back from the executed notebook.

    Parameters
    ----------
    name : str
        Figure name, unique within the notebook (a later record of the same name wins).
    value : number, str, bool, None, or a list or dict of them
        numpy and torch scalars and arrays are converted to Python numbers and lists.

    Notes
    -----
    In a Jupyter kernel this displays one output whose data holds ``{FIGURE_MIME: {"name", "value"},
    "text/plain": ""}``: the value is in the executed notebook for :func:`read_figures`, and nothing
    shows on screen (the notebook's tables and figures show it); elsewhere it prints ``name = value``.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"a figure name must be a non-empty string, got {name!r}")
    encoded = _encode(value)
    text = f"{name} = {json.dumps(encoded)}"
    ipython = sys.modules.get("IPython")  # already loaded in a kernel; never imported here
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is not None:
        shell.display_pub.publish(data={FIGURE_MIME: {"name": name, "value": encoded}, "text/plain": ""}, metadata={})
    else:
        print(text)


class Picture:
    """A PNG image that notebooks display (``_repr_png_``) and reports embed.

    Attributes
    ----------
    data : bytes
        The PNG shown: a palette PNG of at most :data:`SCREEN_COLOURS` colours when that is smaller
        than the full-colour one (:func:`screen_png`), so that a report page stays small.
    path : Path or None
        The full-colour PNG file, if one was written (with the SVG beside it, for print).
    alt : str
        Text alternative for readers who cannot see the image (the report page's ``alt``).
    """

    def __init__(self, data: bytes, path: Path | None = None, alt: str = "") -> None:
        self.data = data
        self.path = path
        self.alt = alt

    def _repr_png_(self):
        return (self.data, {"alt": self.alt}) if self.alt else self.data

    def __repr__(self) -> str:
        return f"Picture({len(self.data)} bytes" + (f", {self.path})" if self.path else ")")


SCREEN_COLOURS = 256
"""Colours of the PNG a report page shows (figures are lines and text on white: 256 colours look the same)."""


def screen_png(png: bytes, colours: int = SCREEN_COLOURS) -> bytes:
    """``png`` as a palette PNG of at most ``colours`` colours (octree, no dithering), if that is smaller.

    Parameters
    ----------
    png : bytes
        A PNG file.
    colours : int
        2 to 256.

    Returns
    -------
    bytes
        The smaller of the palette PNG and ``png`` itself. Line plots typically shrink threefold;
        the files written beside a report keep full colour.
    """
    import io

    from PIL import Image

    from .._checks import integer

    colours = integer("colours", colours, minimum=2, maximum=256)
    img = Image.open(io.BytesIO(png))
    if img.mode in ("RGBA", "LA", "P"):
        img = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", img.size, "white"), img)
    palette = img.convert("RGB").quantize(colours, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    buf = io.BytesIO()
    palette.save(buf, format="PNG", compress_level=9)
    return buf.getvalue() if buf.tell() < len(png) else png


def picture(source: Any, path: str | Path | None = None, *, dpi: int = 110) -> Picture:
    """A :class:`Picture` of a matplotlib figure (which is then closed) or of a PNG file.

    Works whatever matplotlib backend is active: a notebook keeps showing figures after
    :mod:`chromaviz.views.figures` has switched matplotlib to its non-interactive Agg backend.

    Parameters
    ----------
    source : matplotlib Figure, or str / Path of a PNG file
    path : str or Path, optional
        Save a figure there as PNG and, beside it, in the other
        :data:`chromaviz.views.figures.FIGURE_FORMATS` (SVG); folders are created. A PNG file
        given as ``source`` is copied there.
    dpi : int
        Resolution of a figure's PNG (dots per inch).

    Returns
    -------
    Picture
        Showing :func:`screen_png` of the PNG.
    """
    if isinstance(source, (str, Path)):
        data = Path(source).read_bytes()
        if path is not None:
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    elif path is not None:
        from ..views.figures import save_figure

        path = save_figure(source, path, dpi=dpi)
        data = path.read_bytes()
    else:
        import io

        buf = io.BytesIO()
        source.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
        data = buf.getvalue()
    if not isinstance(source, (str, Path)):
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is not None:
            pyplot.close(source)
    return Picture(screen_png(data), Path(path) if path is not None else None, alt=_describe(source, path))


def _describe(source: Any, path: str | Path | None) -> str:
    """A text alternative for a figure: its titles and axis labels (or the file name of a PNG)."""
    if isinstance(source, (str, Path)):
        return f"figure {Path(source).name}"
    parts = [source._suptitle.get_text()] if getattr(source, "_suptitle", None) is not None else []
    for ax in source.get_axes():
        labels = [ax.get_title(), ax.get_xlabel() and f"x: {ax.get_xlabel()}", ax.get_ylabel() and f"y: {ax.get_ylabel()}"]
        parts.append(", ".join(t for t in labels if t))
    text = "; ".join(t for t in parts if t).replace("$", "")  # mathtext markers read as noise
    return text or (f"figure {Path(path).name}" if path is not None else "figure")


def rapsd_figure(traj: Any, *, count: int = 5, reference: tuple[str, Any] | None = None, title: str = ""):
    """RAPSD of the final samples and of x̂0 at ``count`` steps, with each step's noise floor 1/SNR.

    Frequencies whose power lies below a step's floor e^(−λ) are still buried in the noise at that
    step. Spectra are :func:`chromaviz.spectral.centred_rapsd` without the DC bin.

    Parameters
    ----------
    traj : Trajectory
        A run that recorded x̂0.
    count : int
        Steps shown, spread evenly over the run.
    reference : (label, callable), optional
        A reference spectrum P(f) drawn dotted, e.g. ``("model", lambda f: 0.04 * f**-2)``.

    Returns
    -------
    matplotlib.figure.Figure
        A figure outside pyplot (show it with :func:`picture`).
    """
    import numpy as np
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.5), layout="constrained")
    ax = fig.subplots()
    freqs, power = centred_rapsd(traj.sample, dc=False)
    ax.loglog(freqs, power, "k-", lw=2, label="final samples")
    if reference is not None:
        ax.loglog(freqs, reference[1](freqs), "k:", label=reference[0])
    shown = np.unique(np.linspace(0, len(traj) - 1, count).round().astype(int))
    top = power.max()
    for i, c in zip(shown, colormaps["plasma"](np.linspace(0, 0.85, len(shown)))):
        ax.loglog(*centred_rapsd(traj.steps[i].x0, dc=False), color=c, lw=1, label=f"x̂0 at step {i} (λ = {traj.log_snr[i]:+.1f})")
        if np.isfinite(traj.log_snr[i]):
            ax.axhline(np.exp(-traj.log_snr[i]), color=c, lw=0.8, ls="--")
            top = max(top, np.exp(-traj.log_snr[i]))
    ax.set(xlabel="frequency (cycles/pixel)", ylabel="power (white noise = 1)", ylim=(power.min() * 1e-3, top * 3),
           title=title or "RAPSD of x̂0 during the run; dashed: noise floor 1/SNR at that step")
    ax.tick_params(axis="x", which="minor", labelbottom=False)
    ax.legend(fontsize=7)
    return fig


_HTML_SPECIAL = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}


def markdown_text(value: Any) -> str:
    """``str(value)`` as Markdown that renders as exactly that text, on one line, and never as markup.

    HTML's special characters become character references and every other ASCII punctuation mark
    is backslash-escaped (CommonMark allows both anywhere), so no user-given string (a prompt, a
    model folder, a parameter) can open a tag, a code span, a link or a table cell; line breaks
    become spaces.

    Examples
    --------
    >>> print(markdown_text("red` <b>x</b> | *y*"))
    red\\` &lt;b&gt;x&lt;\\/b&gt; \\| \\*y\\*
    """
    text = " ".join(str(value).splitlines())
    return "".join(_HTML_SPECIAL.get(c) or (f"\\{c}" if c.isascii() and not c.isalnum() and c.isprintable() and c != " " else c)
                   for c in text)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], digits: int = 3) -> str:
    """A Markdown table (for ``IPython.display.Markdown`` and nbconvert's HTML); floats get ``digits``
    significant digits, and every other cell is :func:`markdown_text` (shown as its text, never as markup)."""
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "–" if math.isnan(v) else f"{v + 0.0:.{digits}g}"  # + 0.0: no "-0"
        return markdown_text(v)

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def read_figures(notebook: str | Path | Mapping) -> dict[str, Any]:
    """Every figure recorded with :func:`record` in an executed notebook, by name.

    Parameters
    ----------
    notebook : path or notebook dict
        An ``.ipynb`` file (or its parsed JSON / ``nbformat`` node).

    Returns
    -------
    dict
        Figure name → value, in the order they were recorded; non-finite floats are floats again.
    """
    nb = json.loads(Path(notebook).read_text(encoding="utf-8")) if isinstance(notebook, (str, Path)) else notebook
    figures: dict[str, Any] = {}
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            data = output.get("data", {}).get(FIGURE_MIME)
            if data is None:
                continue
            if isinstance(data, str):  # some writers keep JSON data as text
                data = json.loads(data)
            figures[data["name"]] = _decode(data["value"])
    return figures


# ---------------------------------------------------------------------- parameters
_TYPES = {"int": int, "float": float, "bool": bool, "str": str, "list": list, "tuple": tuple, "dict": dict}


@dataclass(frozen=True)
class Parameter:
    """One parameter of a notebook's ``parameters`` cell.

    Attributes
    ----------
    name : str
    type : str
        ``"int"``, ``"float"``, ``"bool"``, ``"str"``, ``"list"``, ``"tuple"``, ``"dict"``, or
        ``"any"``: the annotation when there is one, else the type of the default value.
    default : str
        The default as written in the cell.
    help : str
        The comment after it.
    """

    name: str
    type: str
    default: str
    help: str = ""

    def convert(self, text: str) -> Any:
        """The value of command-line ``text`` for this parameter; :class:`ReportError` if it has the wrong type."""
        expected = {"int": "an integer", "float": "a number", "bool": "true or false", "list": "a list such as [1, 2]",
                    "tuple": "a tuple such as (1, 2)", "dict": "a dict such as {'a': 1}"}
        try:
            if self.type == "str":
                return text
            if self.type == "bool":
                lowered = text.strip().lower()
                if lowered in ("true", "yes", "1", "on"):
                    return True
                if lowered in ("false", "no", "0", "off"):
                    return False
                raise ValueError(text)
            if self.type == "int":
                return int(text)
            if self.type == "float":
                return float(text)
            if self.type in ("list", "tuple", "dict"):
                value = ast.literal_eval(text)
                if not isinstance(value, _TYPES[self.type]):
                    raise ValueError(text)
                return value
        except (ValueError, SyntaxError):
            raise ReportError(
                f"parameter {self.name!r} expects {expected[self.type]} ({self.type}, default {self.default}), got {text!r}"
            ) from None
        try:  # "any": a Python literal if it is one, else the text itself
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text

    def describe(self) -> str:
        """``name (type, default value): help``."""
        return f"{self.name} ({self.type}, default {self.default})" + (f": {self.help}" if self.help else "")


def _parameter_type(annotation: str, default: str) -> str:
    if annotation and annotation != "None":
        return annotation if annotation in _TYPES else "any"
    try:
        value = ast.literal_eval(default)
    except (ValueError, SyntaxError):
        return "any"
    name = type(value).__name__
    return name if name in _TYPES else "any"


def notebook_parameters(notebook: str | Path) -> dict[str, Parameter]:
    """The parameters of ``notebook``'s cell tagged ``parameters``, with their types, in order.

    Types come from annotations (``steps: int = 50``) or else from the default's literal value;
    the help is the comment after the assignment. The cell is read with :mod:`ast` (papermill's
    ``inspect_notebook`` skips a line whose default contains ``=``, such as
    ``prompt: str = "[cat:moon:m=4]"``), so every assignment at the top of the cell is a parameter.

    Raises
    ------
    ReportError
        No notebook at ``notebook``, a file that is not a notebook, or a parameters cell that is not
        valid Python (naming the line).
    """
    import io
    import json
    import tokenize

    path = Path(notebook)
    if not path.is_file():
        raise ReportError(f"no notebook at {path}")
    try:
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    except (ValueError, KeyError, TypeError, UnicodeError) as err:
        raise ReportError(f"{path} is not a Jupyter notebook ({type(err).__name__}: {err})") from None
    cell = next((c for c in cells if isinstance(c, dict) and "parameters" in c.get("metadata", {}).get("tags", [])), None)
    if cell is None:
        return {}
    source = cell.get("source", "")
    source = "".join(source) if isinstance(source, list) else str(source)
    try:
        tree = ast.parse(source)
        comments = {tok.start[0]: tok.string.lstrip("#").strip()
                    for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT}
    except (SyntaxError, tokenize.TokenError) as err:
        raise ReportError(f"the parameters cell of {path} is not valid Python (line {getattr(err, 'lineno', '?')}: {err})") from None
    found: dict[str, Parameter] = {}
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            targets, annotation = [node.target.id], ast.unparse(node.annotation)
        elif isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) for t in node.targets):
            targets, annotation = [t.id for t in node.targets], ""
        else:
            continue
        default = ast.get_source_segment(source, node.value) or ast.unparse(node.value)
        for name in targets:
            found[name] = Parameter(name, _parameter_type(annotation, default), default, comments.get(node.end_lineno, ""))
    return found


def format_parameters(parameters: Mapping[str, Parameter], skip: Sequence[str] = ()) -> str:
    """One indented line per parameter (see :meth:`Parameter.describe`)."""
    return "\n".join(f"  {p.describe()}" for name, p in parameters.items() if name not in skip)


def parse_parameters(pairs: Sequence[Sequence[str]], parameters: Mapping[str, Parameter], reserved: Mapping[str, str] | Sequence[str] = ()) -> dict[str, Any]:
    """Typed values for ``NAME VALUE`` pairs (as given to ``-p``).

    Raises
    ------
    ReportError
        For a name the notebook does not have (or one in ``reserved``, a mapping name → hint),
        listing the parameters with their types and defaults, or for a value that does not convert
        to the parameter's type.
    """
    import difflib

    hints = dict(reserved) if isinstance(reserved, Mapping) else {name: "" for name in reserved}
    values: dict[str, Any] = {}
    for name, text in pairs:
        if name not in parameters or name in hints:
            if name in hints:
                why = "is set by the command itself" + (f" ({hints[name]})" if hints[name] else "")
            else:
                close = difflib.get_close_matches(name, [n for n in parameters if n not in hints], n=1)
                why = "is not a parameter of this report" + (f" (did you mean {close[0]!r}?)" if close else "")
            raise ReportError(f"{name!r} {why}; the report's parameters are:\n{format_parameters(parameters, hints)}")
        values[name] = parameters[name].convert(text)
    return values


def notebook_defaults(parameters: Mapping[str, Parameter]) -> dict[str, Any]:
    """The default value of every parameter but the :data:`RESERVED` ones: the Python literal as
    written in the parameters cell, or its text where it is not a literal."""
    out = {}
    for name, p in parameters.items():
        if name in RESERVED:
            continue
        try:
            out[name] = ast.literal_eval(p.default)
        except (ValueError, SyntaxError):
            out[name] = p.default
    return out


def check_values(values: Mapping[str, Any], defaults: Mapping[str, Any] | None = None, *,
                 refuse_ignored: bool = True, local: bool = True) -> None:
    """Refuse report parameters that cannot work, before a kernel starts: the run's checks
    (:meth:`chromaviz.runs.RunSpec.check`), its settings spelt as ``-p NAME VALUE``.

    Where the notebook has every setting of a run (the report does), the run they make is checked
    as a whole: each value, a size the box pyramid cannot split, and for a built-in model the run as
    ``sample()`` checks it (a size or prompt the model cannot take, an unknown schedule, more steps
    than the scheduler can take, a recording larger than the host's memory). ``defaults`` (the
    notebook's own values) fill in what ``values`` (the ``-p`` overrides) leave out. With
    ``refuse_ignored`` (the default), values given that the model would ignore are refused too: a
    schedule for a trained model, a dtype for a built-in one, a guidance scale for an unconditional
    one (a sweep's grid may pair them harmlessly, and does not refuse them). Without ``local`` the
    device is not checked (a sweep's cells may run on another machine). A notebook with only some
    of the settings has those values checked one by one (:func:`chromaviz.runs.check_settings`).

    Raises
    ------
    ReportError
        Saying what was wrong and what is allowed.
    """
    from ..runs import SETTINGS, RunSpec, check_settings

    merged = {**(defaults or {}), **values}
    try:
        if all(name in merged for name in SETTINGS):
            RunSpec.from_parameters(merged).check(given=[n for n in values if n in SETTINGS] if refuse_ignored else (),
                                                  option="-p ", local=local)
        else:
            check_settings(values, local=local)
    except (ValueError, TypeError) as err:  # the library's own checks, as the notebook would meet them
        raise ReportError(str(err)) from None


# ---------------------------------------------------------------------- the report
def kernel_for_this_python() -> str:
    """Name of the Jupyter kernel that runs this interpreter: ``python3``, as ipykernel installs it.

    Raises
    ------
    ReportError
        If Jupyter knows no ``python3`` kernel, or if the one it knows runs another Python (a
        kernel spec left in a user folder by another environment, say).
    """
    from .._checks import require_extra

    require_extra("report", "chromaviz.notebook.report.kernel_for_this_python")
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    fix = "run: python -m ipykernel install --sys-prefix  (in this environment)"
    try:
        spec = KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        raise ReportError(f"Jupyter has no 'python3' kernel; {fix}") from None
    program = spec.argv[0] if spec.argv else ""
    # jupyter_client starts a kernel whose program is plain "python", "python3" or "python3.X" with this interpreter
    same = program in ("python", f"python{sys.version_info[0]}", "python{}.{}".format(*sys.version_info[:2]))
    if not same and program:
        try:
            same = Path(program).resolve() == Path(sys.executable).resolve()
        except OSError:
            same = False
    if not same:
        raise ReportError(f"the 'python3' Jupyter kernel ({spec.resource_dir}) runs {program}, not {sys.executable}; {fix}")
    return "python3"


@dataclass(frozen=True)
class ReportFiles:
    """What :func:`run_report` wrote."""

    notebook: Path
    html: Path
    extra: tuple[Path, ...]
    figures: dict[str, Any]


_REPORT_CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#1f1f1f;margin:0;background:#fff}
main{max-width:1120px;margin:0 auto;padding:1.5em 2em 3em}
h1,h2,h3{line-height:1.2;font-weight:600}h1{font-size:2em}
h2{font-size:1.45em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
a.anchor-link{display:none}
table{border-collapse:collapse;margin:.6em 0;font-size:14px}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
thead th{background:#f0f0f0}tbody tr:nth-child(even){background:#f8f8f8}
img{max-width:100%;height:auto}
pre,code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:13px}
.jp-InputArea pre{background:#f6f8fa;border:1px solid #e3e3e3;padding:.6em .8em;overflow-x:auto;margin:.4em 0}
.jp-InputPrompt,.jp-OutputPrompt,.jp-Collapser{display:none}
.jp-OutputArea-output pre{margin:.3em 0;white-space:pre-wrap}
.jp-RenderedText[data-mime-type="application/vnd.jupyter.stderr"]{background:#fff3f3}
@media print{iframe{display:none}main{max-width:none;padding:0}}
"""
"""The report's stylesheet: a document, not a notebook (3 kB instead of JupyterLab's 260 kB)."""

_OFFLINE_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block notebook_css -%}<style type="text/css">""" + _REPORT_CSS + """</style>{%- endblock notebook_css -%}
{% block data_png scoped %}<div class="jp-RenderedImage jp-OutputArea-output {{ extra_class }}">
<img src="data:image/png;base64,{{ output.data['image/png'] | escape_html }}"
 alt="{{ ((output | get_metadata('alt', 'image/png')) or 'figure') | escape_html }}"></div>
{%- endblock data_png %}
"""
"""nbconvert's ``lab`` page without the scripts it loads from CDNs (require.js, MathJax, Mermaid) and
with :data:`_REPORT_CSS` for JupyterLab's stylesheet (the code highlighting styles stay); images
carry the ``alt`` text of their output's metadata (:class:`Picture` sets it).

The report's markdown writes its symbols in Unicode and HTML (λ, x̂<sub>0</sub>, m²), so it needs
no math typesetting, and its outputs use no require.js; the page then loads nothing from the network."""


def to_html(notebook: str | Path, path: str | Path, *, show_code: bool = False) -> Path:
    """Render an executed notebook, outputs included, as one self-contained, offline HTML page.

    Parameters
    ----------
    notebook : str or Path
        An executed ``.ipynb``.
    path : str or Path
        The HTML file to write.
    show_code : bool
        Keep the code cells (as in the notebook); by default only the markdown and the outputs are
        shown.

    Notes
    -----
    nbconvert's ``lab`` template with its CDN scripts removed (:data:`_OFFLINE_TEMPLATE`); its
    styles are inline, images are inline data URIs.
    """
    from .._checks import boolean, require_extra

    require_extra("report", "chromaviz.notebook.report.to_html")
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    show_code = boolean("show_code", show_code)
    exporter = HTMLExporter(
        template_name="lab", extra_loaders=[DictLoader({"chromaviz-offline.html.j2": _OFFLINE_TEMPLATE})],
        template_file="chromaviz-offline.html.j2", exclude_input=not show_code,
        exclude_input_prompt=not show_code, exclude_output_prompt=not show_code,
    )
    body, _ = exporter.from_filename(str(notebook))
    # nbconvert re-serialises the page (BeautifulSoup), escaping every <, > and " of an embedded page
    body = re.sub(r'srcdoc="([^"]*)"', lambda m: f"srcdoc='{_srcdoc(html.unescape(m.group(1)))}'", body)
    path = Path(path)
    path.write_text(body, encoding="utf-8")
    return path


def embedded_page(page: str, *, name: str = "chromaviz-run", height: int = 820, title: str = "step-by-step run") -> str:
    """An ``<iframe srcdoc=...>`` that holds a whole HTML page, so that it needs no file of its own.

    The page keeps its own styles and scripts (a bokeh document, say) apart from the page around
    it; a report that embeds it is still one file.

    Parameters
    ----------
    page : str
        A complete, standalone HTML document (such as the explorer's exported run page).
    name : str
        The frame's name (browsers and tests find the frame by it).
    height : int
        Frame height in CSS pixels.
    title : str
        Accessible title of the frame.

    Returns
    -------
    str
        HTML: a ``<div>`` around the frame. ``srcdoc`` is single-quoted, and only ``&`` and ``'`` of
        ``page`` are escaped, which is all such an attribute needs (a bokeh page grows by about 1%;
        escaping ``"`` instead would add about 7%).
    """
    from .._checks import positive_int

    if not isinstance(page, str):
        raise TypeError(f"page must be an HTML document as str, got {type(page).__name__}")
    height = positive_int("height", height)
    return (f'<div class="chromaviz-embedded"><iframe name="{html.escape(name)}" title="{html.escape(title)}" '
            f'width="100%" height="{height}" style="border:1px solid #ddd" srcdoc=\'{_srcdoc(page)}\'></iframe></div>')


def _srcdoc(page: str) -> str:
    """``page`` as the value of a single-quoted attribute (pages quote with " far more often than with ')."""
    return page.replace("&", "&amp;").replace("'", "&#39;")


@functools.cache
def _kernel_with_log() -> type:
    """jupyter_client's kernel manager, with the kernel process's own log (its stderr: ipykernel's
    messages, not the cells' output) in a file instead of the terminal, where an interrupted or
    timed-out cell made it print ZeroMQ tracebacks above the one-line error. A class made on first
    use: jupyter_client comes with the ``report`` extra, and this module imports without it."""
    from jupyter_client.manager import AsyncKernelManager

    class _KernelWithLog(AsyncKernelManager):
        def __init__(self, log: Path, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._log_path = Path(log)
            self._log = None

        async def start_kernel(self, **kw: Any) -> None:
            self._log = open(self._log_path, "ab")
            await super().start_kernel(**{"stderr": self._log, **kw})

        def close_log(self) -> None:
            if self._log is not None:
                self._log.close()

        def last_words(self) -> str:
            """The last line the kernel process wrote, as ``": <line>"`` ("" if none)."""
            try:
                lines = self._log_path.read_text(errors="replace").strip().splitlines()
            except OSError:
                return ""
            return f": {lines[-1].strip()}" if lines else ""

    return _KernelWithLog


KERNEL_GRACE_SECONDS = 20.0


@contextmanager
def _interrupts_to_kernel(kernel: Any, received: list[int]) -> Iterator[None]:
    """Within the block Ctrl-C and SIGTERM interrupt the kernel, as Jupyter's stop button does: the
    running cell stops with KeyboardInterrupt where it is (a sampling cell keeps its partial run and
    can save it), papermill records that cell's error and writes the notebook, and each signal is
    appended to ``received``. A second signal, or a kernel still busy
    :data:`KERNEL_GRACE_SECONDS` later, raises KeyboardInterrupt here instead.

    The kernel runs in a session of its own (jupyter_client starts it so), so a terminal's Ctrl-C
    reaches this process only. Outside the main thread signals cannot be handled: nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    grace: list[threading.Timer] = []

    def forward(signum: int, frame: Any) -> None:
        received.append(signum)
        process = getattr(getattr(kernel, "provisioner", None), "process", None)
        if len(received) > 1 or process is None:
            raise KeyboardInterrupt
        os.kill(process.pid, signal.SIGINT)
        grace.append(threading.Timer(KERNEL_GRACE_SECONDS, _thread.interrupt_main))
        grace[0].daemon = True
        grace[0].start()

    previous = {signum: signal.signal(signum, forward) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for timer in grace:
            timer.cancel()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _stopped_cell(notebook: Path) -> str:
    """The index of the last cell papermill started in ``notebook`` ("?" if it cannot tell)."""
    try:
        cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    except (OSError, ValueError, KeyError):
        return "?"
    started = [i for i, c in enumerate(cells) if c.get("metadata", {}).get("papermill", {}).get("start_time")]
    return str(started[-1]) if started else "?"


def run_report(
    pairs: Sequence[Sequence[str]] = (),
    out: str | Path = "chromaviz-report",
    *,
    notebook: str | Path | None = None,
    progress: bool = True,
    cell_timeout: float = 600,
    kernel_name: str | None = None,
    show_code: bool = False,
) -> ReportFiles:
    """Execute the report notebook with papermill into ``out``; write ``report.ipynb`` and ``report.html``.

    Parameters
    ----------
    pairs : sequence of (name, value) text pairs
        Parameter overrides, converted to the types of the notebook's defaults.
    out : path
        Output folder; the notebook runs there (``output_dir = "."``), so the files it writes
        (images, tables, the kernel-free ``run.html``) land next to ``report.html``.
    notebook : path, optional
        Default :data:`REPORT_NOTEBOOK`.
    progress : bool
        tqdm progress bar over the cells.
    cell_timeout : float
        Seconds any one cell may run.
    kernel_name : str, optional
        Jupyter kernel; default :func:`kernel_for_this_python`.
    show_code : bool
        Keep the code cells in ``report.html`` (``report.ipynb`` always keeps them).

    Notes
    -----
    The kernel talks to papermill over Unix domain sockets in a private temporary folder
    (jupyter_client's ``ipc`` transport), never over TCP: nothing on the network can reach it
    while the report runs. On Windows, which has no such transport in ZeroMQ, it listens on the
    loopback interface (127.0.0.1) only.

    Raises
    ------
    ReportError
        Wrong parameters, or no notebook or kernel: before anything runs.
    ReportCellError
        A cell failed. The executed notebook and its HTML are still written, so that the error can
        be read in context.
    """
    import tempfile

    from .._checks import boolean, require_extra

    require_extra("report", "chromaviz.notebook.report.run_report")
    import papermill
    from jupyter_core.utils import run_sync
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from papermill.exceptions import PapermillExecutionError

    source = Path(notebook) if notebook is not None else REPORT_NOTEBOOK
    if not source.is_file():
        raise ReportError(f"cannot find the report notebook at {source}; pass --notebook PATH")
    parameters = notebook_parameters(source)
    values = parse_parameters(pairs, parameters, reserved=RESERVED)
    check_values(values, notebook_defaults(parameters))
    show_code = boolean("show_code", show_code)
    kernel_name = kernel_name or kernel_for_this_python()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    if "output_dir" in parameters:
        values["output_dir"] = "."
    target = out / "report.ipynb"
    failure = None
    interrupts: list[int] = []  # the signals received while the notebook ran
    with tempfile.TemporaryDirectory(prefix="chromaviz-kernel-") as sockets:
        # ZeroMQ has no ipc transport on Windows: there the kernel listens on the loopback interface
        ipc = {"transport": "ipc", "ip": str(Path(sockets) / "kernel")} if sys.platform != "win32" else {}
        kernel = _kernel_with_log()(Path(sockets) / "kernel.log", kernel_name=kernel_name, **ipc)
        try:
            with _interrupts_to_kernel(kernel, interrupts):
                papermill.execute_notebook(
                    str(source.resolve()), str(target.resolve()), parameters=values, cwd=str(out.resolve()),
                    progress_bar=progress, kernel_name=kernel_name, execution_timeout=cell_timeout, km=kernel,
                )
        except PapermillExecutionError as err:
            if not interrupts:
                failure = f"cell {err.cell_index} of the report failed: {err.ename}: {err.evalue}"
        except CellTimeoutError:
            failure = (f"cell {_stopped_cell(target)} of the report ran past the cell timeout ({cell_timeout:g} s); "
                       "allow more with --cell-timeout SECONDS")
        except KeyboardInterrupt:  # a second signal, or a kernel that did not stop: keep and render what ran
            interrupts.append(signal.SIGINT)
        except DeadKernelError:
            failure = (f"the kernel died in cell {_stopped_cell(target)} of the report (out of memory, or a crash in "
                       f"native code){kernel.last_words()}")
        finally:  # papermill leaves a kernel it was given running
            if kernel.has_kernel:
                run_sync(kernel.shutdown_kernel)()
            kernel.close_log()
    if interrupts:
        if not target.is_file():
            raise ReportInterrupted("before the report's first cell; nothing written", interrupts[0])
        rendered = to_html(target, out / "report.html", show_code=show_code)
        raise ReportInterrupted(f"in cell {_stopped_cell(target)}; the cells that ran are in {target}, rendered as "
                                f"{rendered}", interrupts[0])
    rendered = to_html(target, out / "report.html", show_code=show_code)
    if failure is not None:
        raise ReportCellError(f"{failure}\n(the executed notebook is {target}, rendered as {rendered})")
    written = (p for p in out.iterdir() if p.is_file() and p.stat().st_mtime >= started - 1)
    extra = tuple(sorted(p for p in written if p not in (target, rendered)))
    return ReportFiles(target, rendered, extra, read_figures(target))
