"""`chromaviz report`: how long it takes and what its report.html is made of.

Runs the command (as a user would, in a subprocess) ``--repeat`` times into a temporary folder and
prints one table: wall-clock and CPU seconds (the command and its kernel together), then the sizes
of ``report.html`` and its parts (the embedded run page with BokehJS and its frames, the figures,
the rest), ``run.html``, ``report.ipynb`` and the figure files.

    python benchmarks/report_size.py [--repeat 1] [-p NAME VALUE ...]
"""

from __future__ import annotations

import argparse
import html
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _command() -> list[str]:
    script = Path(sys.executable).with_name("chromaviz")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "chromaviz.cli"]


def _parts(page: str) -> dict[str, int]:
    """Bytes of report.html by part."""
    found = re.search(r"srcdoc='([^']*)'", page)
    embedded = found.group(1) if found else ""
    run_page = html.unescape(embedded)
    around = page.replace(embedded, "")
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", run_page, re.S)
    code = sum(len(body.encode()) for attrs, body in scripts if "application/json" not in attrs)  # BokehJS
    frames = sum(len(u) for u in re.findall(r"data:image/[a-z]+;base64,[A-Za-z0-9+/=]+", run_page))
    figures = sum(len(u) for u in re.findall(r"data:image/png;base64,[A-Za-z0-9+/=]+", around))
    return {
        "report.html": len(page.encode()),
        "  run page, escaped": len(embedded.encode()),
        "    scripts (BokehJS inline)": code,
        "    frames (images)": frames,
        "  figures (PNG)": figures,
        "  text, tables, styles": len(around.encode()) - figures,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    args = parser.parse_args()
    pairs = [x for pair in args.parameter for x in ("-p", *pair)]
    with tempfile.TemporaryDirectory() as tmp:
        times = []
        for i in range(args.repeat):
            out = Path(tmp) / f"r{i}"
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            subprocess.run([*_command(), "report", *pairs, "-o", str(out), "--quiet"], check=True,
                           stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONWARNINGS": "ignore"})
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
            times.append((time.perf_counter() - start, cpu))
        out = Path(tmp) / "r0"
        rows = [(f"run {i + 1}: wall / CPU", f"{wall:.1f} s / {cpu:.1f} s") for i, (wall, cpu) in enumerate(times)]
        rows += [(name, f"{size / 1e6:.3f} MB") for name, size in _parts((out / "report.html").read_text("utf-8")).items()]
        for name in ("run.html", "report.ipynb"):
            rows.append((name, f"{(out / name).stat().st_size / 1e6:.3f} MB"))
        for suffix in ("png", "svg"):
            files = sorted(out.glob(f"*.{suffix}"))
            rows.append((f"{len(files)} {suffix.upper()} files", f"{sum(f.stat().st_size for f in files) / 1e6:.3f} MB"))
    width = max(len(r[0]) for r in rows)
    print(f"{'chromaviz report':<{width}}  value\n{'-' * width}  {'-' * 16}")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
