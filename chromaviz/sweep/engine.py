"""Running a sweep's cells as Dask tasks: a local cluster of worker processes, or an existing cluster.

Dask does the scheduling: every cell is one task (:func:`chromaviz.sweep.cell.run_cell`), submitted
with :meth:`distributed.Client.submit` and collected with :func:`distributed.as_completed`. A worker
that dies mid-task has its tasks run again on the others by the Dask scheduler (up to its
``distributed.scheduler.allowed-failures``); a cell that fails by itself is a row with its error.
The client writes each cell's folder as soon as its result arrives, so an interrupted sweep keeps
every finished cell, and running the same sweep into the same folder runs only what is left.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import uuid
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from .. import _checks
from .grid import Cell, SweepError, axes, make_grid
from .results import TABLE, finished_cells, save_cell, write_gallery, write_table


@contextlib.contextmanager
def connect(workers: int | None = None, scheduler: str | None = None, *, timeout: float = 5.0) -> Iterator[Any]:
    """A :class:`distributed.Client`: to ``scheduler`` if given, else to a new ``LocalCluster``.

    Parameters
    ----------
    workers : int, optional
        Worker processes of the local cluster, one thread each (default: the CPU cores).
    scheduler : str, optional
        Address of a running Dask scheduler, e.g. ``tcp://10.0.0.5:8786``.
    timeout : float
        Seconds to wait for the scheduler before giving up.

    Raises
    ------
    SweepError
        If the scheduler cannot be reached within ``timeout`` seconds.
    """
    _checks.require_extra("sweep", "chromaviz.sweep.connect")
    from distributed import Client

    if scheduler is not None:
        try:
            kind = _identify(scheduler, timeout)
            if kind != "Scheduler":
                raise OSError(f"it answers as {kind!r}, not as a Dask scheduler")
            client = Client(scheduler, timeout=timeout)
        except (OSError, TimeoutError, ValueError) as err:
            raise SweepError(f"cannot reach the Dask scheduler at {scheduler!r} within {timeout:g} s "
                             f"({type(err).__name__}: {err}); start one with `dask scheduler`, "
                             "or leave out --scheduler for a local cluster") from None
        with client:
            yield client
        return
    with local_cluster(workers or os.cpu_count() or 1) as cluster, Client(cluster) as client:
        yield client


@contextlib.contextmanager
def local_cluster(workers: int) -> Iterator[Any]:
    """A ``LocalCluster`` of ``workers`` processes with one thread each, on 127.0.0.1 only.

    Scheduler, workers and dashboard listen on this machine only (a Dask cluster runs whatever its
    clients send). The workers start without the ``MALLOC_TRIM_THRESHOLD_=65536`` that Dask's
    nanny sets by default (``distributed.nanny.pre-spawn-environ``): with it, glibc hands every
    freed tensor back to the system and the runs of a sweep cost about 1.4× the CPU time measured
    in a plain process (benchmarks/sweep_scaling.py). OMP/MKL/OpenBLAS stay at one thread.
    """
    import dask
    from distributed import LocalCluster

    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", default={}))
    environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}), _quiet_shutdown(), \
            LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                         dashboard_address="127.0.0.1:0", preload=["chromaviz.sweep.worker_setup"]) as cluster:
        yield cluster


class _NotStillAlive(logging.Filter):
    """Drops the nanny's "Worker process still alive after 4.0 seconds, killing": a worker still in
    a cancelled cell (a running task cannot be stopped) or slow to release torch is killed as the
    cluster closes, which is what closing it asks for; the warning told the user nothing."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Worker process still alive")


@contextlib.contextmanager
def _quiet_shutdown() -> Iterator[None]:
    nanny, quiet = logging.getLogger("distributed.nanny"), _NotStillAlive()
    nanny.addFilter(quiet)
    try:
        yield
    finally:
        nanny.removeFilter(quiet)


def _identify(address: str, timeout: float) -> str:
    """What listens at ``address`` (its ``identity`` type, ``"Scheduler"`` for a Dask scheduler), within ``timeout`` s.

    Dask's own connect waits without a limit for the handshake of a server that accepts the
    connection but never answers; this probe puts one deadline on connecting, handshake and reply,
    in a thread of its own (so it also works where an event loop is already running, as in Jupyter).

    Raises
    ------
    TimeoutError, OSError, ValueError
        No answer within ``timeout``, a refused connection, or a malformed address.
    """
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from distributed.comm import connect as open_comm

    async def ask() -> str:
        comm = await open_comm(address, timeout=timeout)
        try:
            await comm.write({"op": "identity", "reply": True})
            reply = await comm.read()
        finally:
            comm.abort()
        return str(reply.get("type", "unknown")) if isinstance(reply, dict) else "unknown"

    async def ask_in_time() -> str:
        try:
            return await asyncio.wait_for(ask(), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"no answer from {address} after {timeout:g} s") from None

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, ask_in_time()).result()


def _check_options(workers: Any, scheduler: Any, torch_threads: Any, connect_timeout: Any) -> None:
    if workers is not None and scheduler is not None:
        raise SweepError(f"give workers (a local cluster) or scheduler (an existing cluster), not both: "
                         f"got workers={workers!r} and scheduler={scheduler!r}")
    if workers is not None:
        _checks.positive_int("workers", workers)
    if torch_threads is not None:
        _checks.positive_int("torch_threads", torch_threads)
    _checks.real("connect_timeout", connect_timeout, minimum=0)
    if scheduler is not None and (not isinstance(scheduler, str) or not scheduler.strip()):
        raise SweepError(f"scheduler must be an address such as 'tcp://HOST:8786', got {scheduler!r}")


def sweep(
    grid: Mapping[str, Sequence[Any]],
    out: str | Path = "chromaviz-sweep",
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    x: str | None = None,
    y: str | None = None,
    reports: bool = False,
    torch_threads: int | None = None,
    progress: bool = True,
    connect_timeout: float = 5.0,
    notebook: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Run the report's computation on every cell of a parameter grid, as Dask tasks.

    Each cell samples and compares like ``chromaviz report`` with those parameters (in the worker's
    process, no notebook), and records a row: the parameters, status, error, seconds, the device it
    ran on, and its figures (birth steps per level measured, predicted and by the m² law, inheritance,
    max deviation). Writes ``sweep.csv``, ``gallery.html`` and one folder per cell into ``out``.

    Parameters
    ----------
    grid : mapping of str to list
        Report parameter → values, e.g. ``{"scheduler": ["ddim", "euler"], "steps": [20, 50]}``:
        the cells are the Cartesian product. Values may also be text, as on the command line.
    out : path
        Output folder. Cells already finished there with the same parameters are skipped.
    workers : int, optional
        Worker processes of a local Dask cluster (default: the CPU cores), one thread each.
    scheduler : str, optional
        Address of an existing Dask scheduler (``tcp://HOST:PORT``) instead of a local cluster.
    x, y : str, optional
        Parameters across and down the gallery (default: the first two swept with several values).
    reports : bool
        Also write each cell's full report (papermill) into ``out/cells/<cell>/``; on a remote
        cluster ``out`` must be on a file system the workers share.
    torch_threads : int, optional
        torch threads per cell (default: 1 on a local cluster; torch's own default on a remote one).
    progress : bool
        A tqdm bar counting finished cells, and the Dask dashboard's address.
    connect_timeout : float
        Seconds to wait for ``scheduler``.
    notebook : path, optional
        The report notebook whose parameters are swept (default: the package's report).

    Returns
    -------
    list of dict
        One row per finished cell, in grid order (the rows of ``sweep.csv``, with typed values).

    Raises
    ------
    MissingExtra (an ImportError)
        If the ``sweep`` extra is not installed (``pip install "chromaviz[sweep]"``).
    SweepError, ReportError (both ValueError)
        Before any cell runs: an unknown parameter, a value of the wrong type, an empty value list,
        bad axes or cluster options, an unreachable scheduler.
    KeyboardInterrupt
        After writing the table and gallery of the cells that finished.
    """
    _checks.require_extra("sweep", "chromaviz.sweep.sweep")
    _check_options(workers, scheduler, torch_threads, connect_timeout)
    cells = make_grid(grid, notebook=notebook)
    x, y = axes(grid, x, y)
    reports = _checks.boolean("reports", reports)
    out = Path(out)
    rows: dict[str, dict[str, Any]] = finished_cells(out, cells)
    todo = [c for c in cells if c.name not in rows]
    if progress and rows:
        print(f"{len(rows)} of {len(cells)} cells already complete in {out}; "
              + (f"running the other {len(todo)}" if todo else "nothing to run"), file=sys.stderr)
    if scheduler is None and torch_threads is None:
        torch_threads = 1
    try:
        if todo:
            with connect(workers, scheduler, timeout=connect_timeout) as client:
                out.mkdir(parents=True, exist_ok=True)
                _run(client, todo, out, rows, len(cells), torch_threads=torch_threads, reports=reports, progress=progress)
    finally:
        if out.is_dir():
            ordered = [rows[c.name] for c in cells if c.name in rows]
            write_table(out / TABLE, ordered)
            write_gallery(out, cells, rows, x, y)
    return [rows[c.name] for c in cells if c.name in rows]


def _run(client: Any, todo: list[Cell], out: Path, rows: dict[str, dict[str, Any]], total: int, *,
         torch_threads: int | None, reports: bool, progress: bool) -> None:
    """Submit one task per cell and save each result as it arrives."""
    from distributed import as_completed
    from tqdm.auto import tqdm

    from .cell import TRAJECTORY, run_cell

    if progress and client.dashboard_link:
        print(f"Dask dashboard: {client.dashboard_link}", file=sys.stderr)
    if not client.scheduler_info().get("workers"):  # the cells would wait without a word
        address = client.scheduler.address
        print(f"chromaviz sweep: no worker is connected to the scheduler at {address} yet; the cells wait for one "
              f"(start one with `dask worker {address}`, or press Ctrl-C)", file=sys.stderr)
    token = uuid.uuid4().hex[:8]
    futures = {}
    for cell in todo:
        folder = (out / "cells" / cell.name).resolve()
        report = str(folder) if reports else None  # the report saves the trajectory itself when asked to
        trajectory = str(folder / TRAJECTORY) if cell.values.get("save_trajectory") and not reports else None
        future = client.submit(run_cell, cell.values, torch_threads=torch_threads, report=report, pairs=cell.pairs(),
                               trajectory=trajectory, key=f"chromaviz-cell-{cell.name}-{token}", pure=False)
        futures[future] = cell
    bar = tqdm(total=total, initial=total - len(todo), desc="cells", unit="cell", disable=not progress)
    try:
        for future in as_completed(futures):
            cell = futures[future]
            try:
                result = future.result()
            except Exception as err:  # Dask gave up on the task itself (e.g. its workers kept dying)
                result = {"row": {"status": "error", "error": f"{type(err).__name__}: {err}"}, "chromatogram": None}
            rows[cell.name] = save_cell(out, cell, result)
            future.release()
            bar.update()
    finally:
        bar.close()
        client.cancel([f for f in futures if not f.done()])

