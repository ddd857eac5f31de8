"""The teaching notebooks' run times with their default parameters, idle and beside a competing load.

Each notebook is executed with papermill in a fresh kernel, as the notebook tests run them: on the
machine as it is ("idle"), and while ``--load`` other processes spin on the CPU (a class sharing a
server, or the other notebooks of a workshop). Each notebook sizes torch's threads itself in its
first cell (:func:`chromaviz.use_free_cores`: the cores this process may use less the load
average, at least one); ``--threads default`` runs the loaded case with torch's own choice (one
thread per core) as well, by setting ``OMP_NUM_THREADS`` to that count in the kernel's environment,
which ``use_free_cores`` keeps as the user's choice. Threads that spin-wait for cores other
processes hold make a run many times slower. Before the loaded runs the load average is given up
to 90 s to rise (it averages over a minute), as it has on a machine that has been busy for a while.
Prints one table, in seconds, with the target of 60 s per notebook idle, and the load averages.

    python benchmarks/notebook_timing.py [--notebooks theory measurement ...] [--load 3] [--threads sized default]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from chromaviz.sampling.threads import THREADS_VARIABLE, usable_cores

ROOT = Path(__file__).resolve().parent.parent
TEACHING = ("theory", "measurement", "prompt_composing", "upscaling", "schedule_design", "explorer")
TARGET_S = 60.0


def torch_default_threads() -> int:
    """The intra-op thread count torch chooses by itself, asked of a fresh interpreter."""
    env = {k: v for k, v in os.environ.items() if k != THREADS_VARIABLE}
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"], env=env,
                         check=True, capture_output=True, text=True)
    return int(out.stdout.split()[-1])


def _spin(stop) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def _load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run_notebook(name: str, out: Path, threads: int | None) -> float:
    """Seconds papermill takes to execute ``notebooks/<name>.ipynb`` with its default parameters.

    ``threads`` None lets the notebook size its threads; a number is passed as ``OMP_NUM_THREADS``.
    """
    import papermill

    before = dict(os.environ)
    os.environ.pop(THREADS_VARIABLE, None)
    if threads is not None:
        os.environ[THREADS_VARIABLE] = str(threads)  # the kernel papermill starts inherits this environment
    try:
        start = time.perf_counter()
        papermill.execute_notebook(str(ROOT / "notebooks" / f"{name}.ipynb"), str(out / f"{name}.ipynb"),
                                   cwd=str(out), progress_bar=False, log_output=False, kernel_name="python3")
        return time.perf_counter() - start
    finally:
        os.environ.clear()
        os.environ.update(before)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notebooks", nargs="+", default=list(TEACHING), choices=TEACHING)
    parser.add_argument("--load", type=int, default=3, help="busy processes of the competing load (default: 3)")
    parser.add_argument("--threads", nargs="+", default=["sized", "default"], choices=("sized", "default"),
                        help="torch threads under load: sized by the notebook to the free cores, and/or torch's default")
    args = parser.parse_args()
    if args.load < 0:
        parser.error(f"--load must be ≥ 0, got {args.load}")

    default_threads = torch_default_threads()
    averages = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        averages["idle"] = _load_average()
        idle = {name: run_notebook(name, out, None) for name in args.notebooks}
        loaded: dict[str, dict[str, float]] = {policy: {} for policy in args.threads}
        stop = multiprocessing.Event()
        workers = [multiprocessing.Process(target=_spin, args=(stop,), daemon=True) for _ in range(args.load)]
        for w in workers:
            w.start()
        try:
            rise, base = time.perf_counter(), os.getloadavg()[0]
            while time.perf_counter() - rise < 90 and os.getloadavg()[0] < base + args.load / 2:
                time.sleep(1)
            averages["loaded"] = _load_average()
            for policy in args.threads:
                for name in args.notebooks:
                    loaded[policy][name] = run_notebook(name, out, None if policy == "sized" else default_threads)
            averages["loaded, end"] = _load_average()
        finally:
            stop.set()
            for w in workers:
                w.join(5)

    print(f"teaching notebooks, default parameters, papermill, {usable_cores()} cores; "
          f"load: {args.load} busy processes; torch's default: {default_threads} threads")
    print("load average (1, 5, 15 min): " + "; ".join(f"{k} {v}" for k, v in averages.items()) + "\n")
    head = "".join(f"{'loaded, ' + p + ' threads':>26s}" for p in args.threads)
    print(f"{'notebook':20s} {'idle (s)':>10s}{head}  {'idle ≤ ' + format(TARGET_S, 'g') + ' s':>12s}")
    for name in args.notebooks:
        times = [idle[name], *(loaded[p][name] for p in args.threads)]
        print(f"{name:20s} {times[0]:10.1f}" + "".join(f"{t:26.1f}" for t in times[1:])
              + f"  {str(times[0] <= TARGET_S):>12s}")


if __name__ == "__main__":
    main()
