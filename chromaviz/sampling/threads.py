"""torch's intra-op threads sized to the CPU cores that are free, for notebooks on a shared machine.

torch starts one OpenMP thread per core. When other processes hold some of those cores (a class
sharing a server, the other notebooks of a workshop), each parallel operation waits at its barrier
for the threads the operating system has paused, and the threads that are running spin while they
wait: on 2 cores beside 3 busy processes a teaching notebook ran several times slower with torch's
default than with one thread (``python benchmarks/notebook_timing.py``; docs/notebooks.md).
"""

from __future__ import annotations

import os

__all__ = ["THREADS_VARIABLE", "free_cores", "use_free_cores", "usable_cores"]

THREADS_VARIABLE = "OMP_NUM_THREADS"
"""The environment variable that, when set, is the user's own choice: :func:`use_free_cores` keeps it."""

_ceiling: int | None = None  # torch's own thread count at the first call: never exceeded


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the system has one), ≥ 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def free_cores() -> int:
    """The usable cores less the 1-minute load average, rounded, at least one.

    A heuristic. The load average counts the processes that ran or waited to run, averaged over
    the last minute, so it is a guess at what other work will take next, not a measurement of it:
    it lags a load that has just started or stopped by a minute or so, it also counts this
    process's own recent work (call it before a notebook's computing starts, not in the middle),
    and it counts processes on cores outside this process's affinity mask too. It needs no
    privileges and no extra package, and its two errors differ in cost: too few threads make a run
    at most (usable cores) times slower, too many, spin-waiting for busy cores, several times that.
    Systems without a load average count as idle.

    Returns
    -------
    int
        In ``[1, usable_cores()]``.
    """
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, min(usable_cores(), int(usable_cores() - load + 0.5)))


def use_free_cores() -> int:
    """Give torch as many intra-op threads as there are free cores now (:func:`free_cores`).

    Call it once at the start of a notebook or script that computes on the CPU, before the work
    starts; it prints nothing. The count is also at most torch's own choice at the first call (its
    default is one thread per core), so an idle machine runs as it would without the call.

    An explicit choice wins: when ``OMP_NUM_THREADS`` is set in the environment (torch took its
    thread count from it at import), nothing is changed, so ``OMP_NUM_THREADS=2 jupyter lab``
    runs every notebook on 2 threads, and a benchmark can compare with torch's default.

    Returns
    -------
    int
        The number of intra-op threads torch now uses, ≥ 1.

    Notes
    -----
    torch's thread count is per Python thread: this sizes the calling thread's, which is the
    notebook's. The explorer's sampling thread takes its count from it, less one core left to the
    live view (:func:`chromaviz.widgets.worker.sampling_threads`).
    """
    global _ceiling
    import torch

    if os.environ.get(THREADS_VARIABLE, "").strip():
        return torch.get_num_threads()
    if _ceiling is None:
        _ceiling = torch.get_num_threads()
    threads = max(1, min(free_cores(), _ceiling))
    torch.set_num_threads(threads)
    return threads
