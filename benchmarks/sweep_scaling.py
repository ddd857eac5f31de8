"""How a sweep scales on Dask: one grid serially in one process, then on 1 and on 2 worker processes.

The grid: 4 schedulers × 4 step counts on the built-in Gaussian model (64×64, batch 8), 16 cells.
"serial" runs each cell's task function (:func:`chromaviz.sweep.cell.run_cell`) and saves its folder
in this process, one after the other; "N workers" is :func:`chromaviz.sweep` sent to a
``LocalCluster`` of N worker processes as ``chromaviz sweep`` starts it
(:func:`chromaviz.sweep.engine.local_cluster`: one thread each; torch 1 thread per process, and 1
in the serial run too). Every process is warmed up first (chromaviz imported, one tiny run), so the times
compare the engine's per-cell overhead and its parallelism; the cluster's start-up is printed apart.
Besides wall time, the CPU time of every process involved (workers, client and scheduler) shows the
engine's overhead independently of what else the machine is running.
Targets: 2 workers ≥ 1.7× faster than 1 worker; 1 worker within 10% of serial.

    python benchmarks/sweep_scaling.py                 # steps 10 20 50 100, one round
    python benchmarks/sweep_scaling.py --rounds 2 --steps 20 50 100 200
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

SCHEDULERS = ["ddim", "euler", "dpmsolver++", "pndm"]


def warm_up() -> int:
    """Import chromaviz and run one tiny cell in this process; its pid."""
    import torch

    from chromaviz.sweep.cell import run_cell
    from chromaviz.sweep.grid import make_grid

    torch.set_num_threads(1)
    for cell in make_grid({"scheduler": SCHEDULERS, "steps": [2], "size": [16], "batch": [2]}):
        run_cell(cell.values, torch_threads=1)
    return os.getpid()


def serial(grid: dict, out: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of the grid run in this process."""
    from chromaviz.sweep.cell import run_cell
    from chromaviz.sweep.grid import axes, make_grid
    from chromaviz.sweep.results import TABLE, save_cell, write_gallery, write_table

    start, cpu = time.perf_counter(), time.process_time()
    cells = make_grid(grid)
    rows = {c.name: save_cell(out, c, run_cell(c.values, torch_threads=1)) for c in cells}
    write_table(out / TABLE, list(rows.values()))
    write_gallery(out, cells, rows, *axes(grid, None, None))
    assert all(r["status"] == "complete" for r in rows.values()), [r["error"] for r in rows.values()]
    return time.perf_counter() - start, time.process_time() - cpu


def on_workers(grid: dict, out: Path, workers: int) -> tuple[float, float, float]:
    """(cluster start-up and warm-up seconds, sweep wall seconds, sweep CPU seconds) on a fresh LocalCluster.

    CPU seconds: the workers' and this process's (client and scheduler) together.
    """
    from distributed import Client

    from chromaviz.sweep import sweep
    from chromaviz.sweep.engine import local_cluster

    start = time.perf_counter()
    with local_cluster(workers) as cluster, Client(cluster) as client:
        client.run(warm_up)
        ready, cpu, cpu_workers = time.perf_counter(), time.process_time(), client.run(time.process_time)
        rows = sweep(grid, out, scheduler=cluster.scheduler_address, torch_threads=1, progress=False)
        done, cpu = time.perf_counter(), time.process_time() - cpu
        cpu += sum(t - cpu_workers[w] for w, t in client.run(time.process_time).items())
    assert len(rows) == 16 and all(r["status"] == "complete" for r in rows), [r["error"] for r in rows]
    return ready - start, done - ready, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs=4, default=[10, 20, 50, 100], help="the four step counts")
    parser.add_argument("--rounds", type=int, default=1, help="rounds (each: serial, 1 worker, 2 workers); medians shown")
    args = parser.parse_args()

    grid = {"scheduler": SCHEDULERS, "steps": args.steps, "size": [64], "batch": [8]}
    warm_up()
    times: dict[str, list[float]] = {"serial": [], "1 worker": [], "2 workers": []}
    cpus: dict[str, list[float]] = {k: [] for k in times}
    startup: dict[str, list[float]] = {"1 worker": [], "2 workers": []}
    root = Path(tempfile.mkdtemp(prefix="sweep-bench-"))
    try:
        for r in range(args.rounds):
            seconds, cpu = serial(grid, root / f"serial-{r}")
            times["serial"].append(seconds)
            cpus["serial"].append(cpu)
            for n, name in ((1, "1 worker"), (2, "2 workers")):
                up, seconds, cpu = on_workers(grid, root / f"w{n}-{r}", n)
                startup[name].append(up)
                times[name].append(seconds)
                cpus[name].append(cpu)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in times.items()}
    cpu = {k: statistics.median(v) for k, v in cpus.items()}
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} at the end")
    print(f"grid: {len(SCHEDULERS)} schedulers ({', '.join(SCHEDULERS)}) × steps {args.steps}, Gaussian model 64×64, "
          f"batch 8: 16 cells; 1 torch thread per process; median of {args.rounds} round(s)\n")
    print(f"{'run':<11}{'wall s':>9}{'s/cell':>9}{'vs serial':>11}{'speed vs 1 worker':>19}{'CPU s':>8}"
          f"{'CPU vs serial':>15}{'cluster start s':>17}")
    for name, seconds in med.items():
        up = f"{statistics.median(startup[name]):.1f}" if name in startup else "–"
        print(f"{name:<11}{seconds:>9.2f}{seconds / 16:>9.3f}{seconds / med['serial']:>11.2f}"
              f"{med['1 worker'] / seconds:>19.2f}{cpu[name]:>8.1f}{cpu[name] / cpu['serial']:>15.2f}{up:>17}")
    speedup, overhead = med["1 worker"] / med["2 workers"], med["1 worker"] / med["serial"] - 1
    print(f"\n2 workers: {speedup:.2f}× faster than 1 worker (target ≥ 1.7) — {'met' if speedup >= 1.7 else 'NOT met'}")
    print(f"1 worker: {overhead:+.1%} against serial (target within 10%) — {'met' if abs(overhead) <= 0.10 else 'NOT met'}")
    print(f"CPU time of the engine (all processes, 1 worker against serial): {cpu['1 worker'] / cpu['serial'] - 1:+.1%}; "
          "wall times are only comparable on an otherwise idle machine (see the load average above)")


if __name__ == "__main__":
    main()
