"""The teaching notebooks' run times with their default parameters, idle and beside a competing load.

Each notebook is executed with papermill in a fresh kernel, as the notebook tests run them, twice per
condition: on an idle machine, and while ``--load`` other processes spin on the CPU (a class sharing
a server, or the other notebooks of a workshop). Under load, torch's intra-op threads are given as
the cores left free (:func:`free_cores`: the cores this process may use, less the load average,
at least one) through ``OMP_NUM_THREADS`` in the kernel's environment; ``--threads default`` runs
the loaded case with torch's own choice (one thread per core) as well, to show what sizing saves:
threads that spin-wait for cores other processes hold make a run many times slower. Prints one
table, in seconds, with the target of 60 s per notebook.

    python benchmarks/notebook_timing.py [--notebooks explorer theory ...] [--load 3] [--threads sized default]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEACHING = ("theory", "measurement", "prompt_composing", "upscaling", "schedule_design", "explorer")
TARGET_S = 60.0


def cores() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def free_cores() -> int:
    """Cores not taken by other work: the usable cores less the 1-minute load average, at least one."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, int(round(cores() - load)))


def _spin(stop) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def run_notebook(name: str, out: Path, threads: int | None) -> float:
    """Seconds papermill takes to execute ``notebooks/<name>.ipynb`` with its default parameters."""
    import papermill

    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    before = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)  # the kernel papermill starts inherits this process's environment
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
    parser.add_argument("--threads", nargs="+", default=["sized"], choices=("sized", "default"),
                        help="torch threads under load: sized to the free cores, and/or torch's default")
    args = parser.parse_args()
    if args.load < 0:
        parser.error(f"--load must be ≥ 0, got {args.load}")

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        idle = {name: run_notebook(name, out, None) for name in args.notebooks}
        loaded: dict[str, dict[str, float]] = {policy: {} for policy in args.threads}
        stop = multiprocessing.Event()
        workers = [multiprocessing.Process(target=_spin, args=(stop,), daemon=True) for _ in range(args.load)]
        for w in workers:
            w.start()
        try:
            time.sleep(5)  # the load average catches up a little
            for policy in args.threads:
                for name in args.notebooks:
                    loaded[policy][name] = run_notebook(name, out, free_cores() if policy == "sized" else None)
        finally:
            stop.set()
            for w in workers:
                w.join(5)
        for name in args.notebooks:
            rows.append((name, idle[name], *(loaded[p][name] for p in args.threads)))

    print(f"teaching notebooks, default parameters, papermill, {cores()} cores; load: {args.load} busy processes\n")
    head = "".join(f"{'loaded, ' + p + ' threads':>26s}" for p in args.threads)
    print(f"{'notebook':20s} {'idle (s)':>10s}{head}  {'≤ ' + format(TARGET_S, 'g') + ' s':>8s}")
    for name, *times in rows:
        ok = all(t <= TARGET_S for t in times[:2])
        print(f"{name:20s} {times[0]:10.1f}" + "".join(f"{t:26.1f}" for t in times[1:]) + f"  {str(ok):>8s}")


if __name__ == "__main__":
    main()
