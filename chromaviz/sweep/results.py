"""What a sweep writes: one folder per cell, the table (``sweep.csv``) and ``gallery.html``.

Layout of the output folder ``DIR``::

    DIR/sweep.csv                 one row per finished cell
    DIR/gallery.html              the chromatograms in a grid, each linking to its cell's page
    DIR/cells/<cell>/cell.json    the cell's parameters and row (what a re-run reads to skip it)
    DIR/cells/<cell>/chromatogram.png
    DIR/cells/<cell>/samples.png   its first final samples (decoded where the model has a VAE)
    DIR/cells/<cell>/index.html   the cell's page (parameters, figures per level, chromatogram)
    DIR/cells/<cell>/report.html  with --reports: the full report (and its files)

Every page is self-contained (images inlined as data URIs, no script, no external resource), so the
folder can be opened offline or copied elsewhere.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from .grid import Cell

TABLE = "sweep.csv"
GALLERY = "gallery.html"
FINISHED = "complete"
"""The status of a finished cell; a re-run into the same folder skips these and runs the others again."""

_STYLE = """
.chromaviz-sweep { font-family: system-ui, sans-serif; color: #222; }
.chromaviz-sweep table { border-collapse: collapse; }
.chromaviz-sweep th, .chromaviz-sweep td { border: 1px solid #ccc; padding: 4px 8px; vertical-align: top; }
.chromaviz-sweep th { background: #f3f3f3; }
.chromaviz-sweep .grid td { text-align: center; }
.chromaviz-sweep .grid img { width: 420px; display: block; }
.chromaviz-sweep img.samples { image-rendering: pixelated; margin-bottom: 4px; }
.chromaviz-sweep .error { color: #b00020; white-space: pre-wrap; max-width: 420px; text-align: left; }
.chromaviz-sweep .caption { font-size: 0.85em; color: #555; }
"""


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else str(value)
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _json_safe(v) for k, v in value.items()}
    return value


def cell_folder(out: Path, cell: Cell) -> Path:
    return out / "cells" / cell.name


def table_row(cell: Cell, result_row: Mapping[str, Any]) -> dict[str, Any]:
    """The table's row of a cell: its name, every parameter, then what the run gave."""
    return {"cell": cell.name, **cell.values, **result_row}


def save_cell(out: Path, cell: Cell, result: Mapping[str, Any]) -> dict[str, Any]:
    """Write a finished cell's folder (``cell.json``, ``chromatogram.png``, ``samples.png``, ``index.html``); its table row."""
    folder = cell_folder(out, cell)
    folder.mkdir(parents=True, exist_ok=True)
    row = table_row(cell, result["row"])
    for name in ("chromatogram", "thumbnail", "samples"):
        if result.get(name):
            (folder / f"{name}.png").write_bytes(result[name])
    record = {"parameters": _json_safe(cell.values), "row": _json_safe(row), "traceback": result.get("traceback", "")}
    (folder / "index.html").write_text(cell_page(cell, row, folder, result.get("traceback", "")), encoding="utf-8")
    tmp = folder / "cell.json.tmp"
    tmp.write_text(json.dumps(record, indent=1), encoding="utf-8")
    tmp.replace(folder / "cell.json")  # written last and atomically: a cell.json means the folder is complete
    return row


def finished_cells(out: Path, cells: Sequence[Cell]) -> dict[str, dict[str, Any]]:
    """Rows of the cells already finished in ``out`` with the same parameters (cell name → row)."""
    done = {}
    for cell in cells:
        path = cell_folder(out, cell) / "cell.json"
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        row = record.get("row") if isinstance(record, dict) else None  # a damaged file: run the cell again
        if isinstance(row, dict) and record.get("parameters") == _json_safe(cell.values) and row.get("status") == FINISHED:
            done[cell.name] = row
    return done


def _csv_value(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return "" if value is None else value


def write_table(path: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """One tidy CSV: a row per cell, a column per parameter and figure (per-level figures as ``…_m4`` columns)."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), restval="")
        writer.writeheader()
        writer.writerows({k: _csv_value(v) for k, v in row.items()} for row in rows)
    tmp.replace(path)
    return path


def read_table(path: str | Path) -> list[dict[str, str]]:
    """The rows of a ``sweep.csv`` (values as text)."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _data_uri(png: Path) -> str | None:
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii") if png.is_file() else None


def _number(value: Any, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) else html.escape(str(value))


def _caption(row: Mapping[str, Any]) -> str:
    if row.get("status") != FINISHED:
        return f'<div class="error">{html.escape(str(row.get("status")))}: {html.escape(str(row.get("error", "")))}</div>'
    deviation = row.get("max_deviation")
    seconds = row.get("seconds")
    deviation = f"{deviation:.2g}" if isinstance(deviation, float) else html.escape(str(deviation))
    z, coverage = row.get("z_max"), row.get("coverage")
    band = ("no expected band · " if not isinstance(z, float) or z != z else
            f'{"outside" if row.get("in_band") is False else "in"} its band: worst {z:.1f}σ, '
            f'{coverage:.0%} within ±2σ · ')
    return (f'<div class="caption">{band}replay max |G − {html.escape(str(row.get("prediction", "s")))}| = {deviation}'
            f' · {_number(seconds, 1)} s · {html.escape(str(row.get("run_device", "")))}</div>')


def _page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f'<style>{_STYLE}</style></head><body>\n<div class="chromaviz-sweep">\n{body}\n</div>\n</body></html>\n')


def cell_page(cell: Cell, row: Mapping[str, Any], folder: Path, traceback_text: str = "") -> str:
    """A cell's page: its parameters, status, figures per level and chromatogram (inlined)."""
    report = folder / "report.html"
    parts = [f"<h1>{html.escape(cell.name)}</h1>", f'<p><a href="../../{GALLERY}">← gallery</a>'
             + (' · <a href="report.html">full report</a>' if report.is_file() else "") + "</p>"]
    parts.append("<table>" + "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(repr(v))}</td></tr>"
                                     for k, v in cell.values.items()) + "</table>")
    parts.append(_caption(row))
    if traceback_text:
        parts.append(f'<pre class="error">{html.escape(traceback_text)}</pre>')
    levels = row.get("levels") or []
    if levels:
        suffix = f"_m{levels[0]}"
        kinds = [k[: -len(suffix)] for k in row if k.endswith(suffix)]  # every per-level figure of the row
        header = "".join(f"<th>{html.escape(k.replace('_', ' '))}</th>" for k in kinds)
        body = "".join("<tr><td>" + str(m) + "</td>" + "".join(f"<td>{_number(row.get(f'{k}_m{m}'), 3)}</td>" for k in kinds)
                       + "</tr>" for m in levels)
        parts.append(f"<h2>Per level</h2><table><tr><th>m</th>{header}</tr>{body}</table>"
                     "<p class=\"caption\">birth step: the first step at which the level's signal fraction reaches ½.</p>")
    samples = _data_uri(folder / "samples.png")
    if samples:
        parts.append(f'<h2>Final samples</h2><img src="{samples}" alt="final samples of {html.escape(cell.name)}">')
    image = _data_uri(folder / "chromatogram.png")
    if image:
        parts.append(f'<h2>Chromatogram</h2><img src="{image}" alt="chromatogram of {html.escape(cell.name)}" style="max-width:100%">')
    return _page(f"chromaviz sweep: {cell.name}", "\n".join(parts))


def _label(name: str | None, value: Any) -> str:
    return html.escape(f"{name} = {value!r}" if name else "")


def write_gallery(out: Path, cells: Sequence[Cell], rows: Mapping[str, Mapping[str, Any]],
                  x: str | None, y: str | None) -> Path:
    """``gallery.html``: the cells' chromatograms, ``x`` across, ``y`` down, one grid per value of the other parameters.

    Cells not finished (an interrupted sweep) are shown as "not run".
    """
    names = list(cells[0].swept) if cells else []
    several = {n for n in names if len({repr(c.swept[n]) for c in cells}) > 1}
    others = [n for n in names if n not in (x, y) and n in several]
    fixed = [n for n in names if n not in (x, y) and n not in several]
    xs = list(dict.fromkeys(c.swept[x] for c in cells)) if x else [None]
    ys = list(dict.fromkeys(c.swept[y] for c in cells)) if y else [None]
    groups: dict[tuple, dict[tuple, Cell]] = {}
    for c in cells:
        key = tuple(c.swept[n] for n in others)
        groups.setdefault(key, {})[(c.swept[x] if x else None, c.swept[y] if y else None)] = c
    done = sum(1 for c in cells if c.name in rows)
    ok = sum(1 for c in cells if rows.get(c.name, {}).get("status") == FINISHED)
    parts = [f"<h1>chromaviz sweep: {len(cells)} cells</h1>",
             f"<p>{ok} complete, {done - ok} failed, {len(cells) - done} not run. Table: <a href=\"{TABLE}\">{TABLE}</a>. "
             "Each cell shows its first final samples above its chromatogram and links to its page. Lines: theory; dots: measured.</p>"]
    if fixed:
        parts.append("<p>In every cell: " + " · ".join(_label(n, cells[0].swept[n]) for n in fixed) + ".</p>")
    for key, members in groups.items():
        if others:
            parts.append("<h2>" + " · ".join(_label(n, v) for n, v in zip(others, key)) + "</h2>")
        head = "<tr><th>" + html.escape(f"{y} ↓ / {x} →" if y and x else (x or y or "")) + "</th>"
        head += "".join(f"<th>{_label(x, v)}</th>" for v in xs) + "</tr>"
        body = []
        for yv in ys:
            tds = [f"<th>{_label(y, yv)}</th>"]
            for xv in xs:
                c = members.get((xv, yv))
                if c is None:
                    tds.append("<td></td>")
                    continue
                folder = cell_folder(out, c)
                row = rows.get(c.name)
                if row is None:
                    tds.append(f'<td><div class="caption">{html.escape(c.name)}: not run</div></td>')
                    continue
                page = "report.html" if (folder / "report.html").is_file() else "index.html"
                link = f"cells/{c.name}/{page}"
                image = _data_uri(folder / "thumbnail.png") or _data_uri(folder / "chromatogram.png")
                img = f'<img src="{image}" alt="chromatogram of {html.escape(c.name)}">' if image else html.escape(c.name)
                samples = _data_uri(folder / "samples.png")
                shown = f'<img class="samples" src="{samples}" alt="final samples of {html.escape(c.name)}"><br>' if samples else ""
                tds.append(f'<td><a href="{html.escape(link)}">{shown}{img}</a>{_caption(row)}</td>')
            body.append("<tr>" + "".join(tds) + "</tr>")
        parts.append(f'<table class="grid">{head}{"".join(body)}</table>')
    path = out / GALLERY
    path.write_text(_page("chromaviz sweep", "\n".join(parts)), encoding="utf-8")
    return path
