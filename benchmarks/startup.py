"""Start-up: what ``import chromaviz`` and the command line cost before any work, against ``import torch``.

Each measure is a fresh process, timed from start to exit (the interpreter's own start included, as
a user waits for it). The measures take turns, round after round (one warm-up round first, not
counted), so that all of them see the same machine; the table shows medians and the ratio to
``import torch``, the baseline. Targets: ``import chromaviz`` at most 1.3× ``import torch``,
``chromaviz --help`` under 1 s.

    python benchmarks/startup.py              # 10 rounds
    python benchmarks/startup.py --rounds 20
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path


def _command() -> list[str]:
    script = Path(sys.executable).with_name("chromaviz")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "chromaviz.cli"]


MEASURES = [
    # (label, argv, target: (kind, value) or None)
    ("python -c pass (the interpreter alone)", [sys.executable, "-c", "pass"], None),
    ("import torch (baseline)", [sys.executable, "-c", "import torch"], None),
    ("import chromaviz", [sys.executable, "-c", "import chromaviz"], ("ratio", 1.3)),
    ("import diffusers's schedulers (what sample() steps with)",
     [sys.executable, "-c", "import diffusers.schedulers.scheduling_utils"], None),
    ("from chromaviz import sample, compare, GaussianPowerLaw",
     [sys.executable, "-c", "from chromaviz import sample, compare, GaussianPowerLaw"], None),
    ("chromaviz --help", [*_command(), "--help"], ("seconds", 1.0)),
    ("chromaviz --version", [*_command(), "--version"], ("seconds", 1.0)),
    ("chromaviz run --help (imports the library)", [*_command(), "run", "--help"], None),
]


def _seconds(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_ENV)
    return time.perf_counter() - start


_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONPROFILEIMPORTTIME"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="rounds of all measures (default: 10)")
    args = parser.parse_args()

    times: dict[str, list[float]] = {label: [] for label, _, _ in MEASURES}
    for round_ in range(args.rounds + 1):
        order = MEASURES if round_ % 2 == 0 else MEASURES[::-1]
        for label, argv, _ in order:
            seconds = _seconds(argv)
            if round_ > 0:  # round 0 warms the file cache
                times[label].append(seconds)

    median = {label: statistics.median(values) for label, values in times.items()}
    base = median["import torch (baseline)"]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; Python "
          f"{platform.python_version()}; median of {args.rounds} rounds, each measure a fresh process\n")
    print(f"{'measure':<58}{'median s':>10}{'vs torch':>10}  target")
    for label, _, target in MEASURES:
        ratio = median[label] / base
        if target is None:
            verdict = ""
        elif target[0] == "ratio":
            verdict = f"≤ {target[1]:.1f}× torch: {'met' if ratio <= target[1] else 'NOT MET'}"
        else:
            verdict = f"< {target[1]:g} s: {'met' if median[label] < target[1] else 'NOT MET'}"
        print(f"{label:<58}{median[label]:>10.3f}{ratio:>9.2f}×  {verdict}")


if __name__ == "__main__":
    main()
