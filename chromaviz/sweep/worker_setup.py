"""Set-up of each worker process of a sweep's local cluster (a Dask preload module).

The local cluster's workers are child processes of the command line, in its process group, so a
terminal's Ctrl-C reached them too: each printed Dask's tracebacks of its cancelled task while the
client was already stopping the sweep and keeping the finished cells. Here a worker leaves Ctrl-C
to the client and keeps Dask's warnings about the tasks the client cancels (its
``distributed.worker`` loggers) off the terminal; errors still show.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any


def dask_setup(worker: Any) -> None:
    """Called by Dask in the worker process as it starts (``preload``)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.getLogger("distributed").setLevel(logging.ERROR)
