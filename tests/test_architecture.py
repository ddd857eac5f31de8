"""The layers of chromaviz: imports point down only, no cycles, and the UI stays out of the library.

The import graph is read from the source with :mod:`ast` (every ``import`` statement, also those
inside functions, except ``if TYPE_CHECKING:`` blocks, which never run), so a lazy import that
dodges a cycle is found as the cycle it is.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "chromaviz"

LAYERS = [
    # The package's __init__ imports nothing when it runs (its public names load on first use, PEP 562),
    # so it is the bottom layer: any module may read chromaviz.__version__.
    {"__init__", "_checks"},
    {"noise"},
    {"prompts"},
    {"theory", "spectral"},
    {"models"},
    {"sampling"},
    {"analysis", "prediction"},
    {"runs"},  # one run's settings: checked, loaded (models), sampled (sampling), compared (analysis)
    {"apps"},
    {"views"},
    {"notebook"},
    {"sweep"},
    {"cli"},
]
"""chromaviz's layers, lowest first, by the first component of a module's name below ``chromaviz``."""

UI_PACKAGES = {"widgets", "ipywidgets", "bokeh", "jupyter_bokeh", "IPython"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules(package: Path) -> dict[str, Path]:
    return {_module_name(p): p for p in package.rglob("*.py")}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(path: Path, name: str, known: set[str], type_checking: bool = False) -> set[str]:
    """Every module ``name`` imports at run time (absolute names), and with ``type_checking`` also
    those it imports for type annotations only."""
    is_package = path.name == "__init__.py"
    base = name.split(".") if is_package else name.split(".")[:-1]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node) and not type_checking:
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                target = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in known else target)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), filename=str(path)))
    return found


def _graph(package: Path, type_checking: bool = False) -> dict[str, set[str]]:
    modules = _modules(package)
    known = set(modules)
    return {name: _imports(path, name, known, type_checking) for name, path in modules.items()}


def _first_component(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _rank(module: str) -> int:
    first = _first_component(module)
    for i, layer in enumerate(LAYERS):
        if first in layer:
            return i
    raise AssertionError(f"{module} is in no layer; add its folder to LAYERS in {Path(__file__).name}")


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module, or a module importing itself (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            connect(v)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return {m: {i for i in imports if i.startswith("chromaviz") or i.split(".")[0] in UI_PACKAGES}
            for m, imports in _graph(PACKAGE).items()}


def test_no_import_cycles_inside_chromaviz(graph):
    inside = {m: {i for i in imports if i in graph} for m, imports in graph.items()}
    assert _cycles(inside) == []


def test_no_cycles_through_type_annotations_either():
    """An import kept under ``if TYPE_CHECKING:`` never runs, but a cycle through it is still two
    modules that each need the other to be read. The package's own ``__init__`` is the exception: its
    ``TYPE_CHECKING`` block only tells editors what its lazily imported public names are."""
    graph = _graph(PACKAGE, type_checking=True)
    graph["chromaviz"] = _graph(PACKAGE)["chromaviz"]
    assert _cycles({m: {i for i in imports if i in graph} for m, imports in graph.items()}) == []


def test_imports_point_down_the_layers(graph):
    upward = [
        f"{m} (layer {_rank(m)}) imports {i} (layer {_rank(i)})"
        for m, imports in sorted(graph.items()) for i in sorted(imports) if i in graph and _rank(i) > _rank(m)
    ]
    assert upward == []


def test_library_never_imports_the_ui(graph):
    ui = [f"{m} imports {i}" for m, imports in sorted(graph.items()) for i in sorted(imports)
          if i.split(".")[0] in UI_PACKAGES]
    assert ui == []


def test_widgets_import_chromaviz_and_never_the_reverse():
    widgets = _graph(ROOT / "widgets")
    assert any(i.startswith("chromaviz") for imports in widgets.values() for i in imports)
    library = _graph(PACKAGE)
    assert not [m for m, imports in library.items() if any(i.split(".")[0] == "widgets" for i in imports)]


TOP_LEVEL = {"__init__", "_checks", "analysis", "cli", "prediction", "runs", "spectral", "theory"}
"""The only modules at chromaviz's top level; everything else lives in its layer's folder."""


def test_the_top_level_holds_at_most_eight_modules():
    top = {path.stem for path in PACKAGE.glob("*.py")}
    assert len(top) <= 8 and top <= TOP_LEVEL, sorted(top - TOP_LEVEL)


def test_the_prompt_language_is_pure_text():
    """``chromaviz.prompts`` reads and writes prompt text: it imports neither torch nor diffusers."""
    import subprocess
    import sys

    code = ("import sys, chromaviz.prompts; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'diffusers', 'transformers'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_checker_finds_a_cycle_and_an_upward_import(tmp_path):
    """The graph test can fail: a two-module cycle through a lazy import, and a low layer importing a high one."""
    pkg = tmp_path / "chromaviz"
    (pkg / "noise").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "noise" / "__init__.py").write_text("")
    (pkg / "noise" / "a.py").write_text("from . import b\n")
    (pkg / "noise" / "b.py").write_text("def f():\n    from .a import g\n    from ..analysis import compare\n")
    (pkg / "analysis.py").write_text("")
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        g = _graph(pkg)
    finally:
        ROOT = saved
    assert _cycles(g) == [["chromaviz.noise.a", "chromaviz.noise.b"]]
    assert "chromaviz.analysis" in g["chromaviz.noise.b"] and _rank("chromaviz.analysis") > _rank("chromaviz.noise.b")


SAMPLING_WITHOUT_UI = f"""
import importlib.abc, sys
class NoUI(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {sorted(UI_PACKAGES - {"widgets"})!r}:
            raise ImportError(f"{{name}} is not installed here")
sys.meta_path.insert(0, NoUI())
import chromaviz, chromaviz.widgets.worker
print(chromaviz.widgets.worker.SamplingJob.__name__)
try:
    chromaviz.widgets.Explorer
except ImportError as err:
    print(err)
"""


def test_the_sampling_side_of_the_explorer_imports_without_the_ui_packages():
    """A GPU machine with the library's requirements only runs the explorer's worker (and the GPU
    checks): ``widgets`` imports its views on first use, and only then needs the UI packages."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", SAMPLING_WITHOUT_UI], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "SamplingJob", 'chromaviz.widgets.Explorer needs the explorer extra: pip install "chromaviz[explorer]" '
                       "(missing: bokeh, jupyter_bokeh, ipywidgets)"]
