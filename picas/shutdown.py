"""Graceful shutdown: signal handlers that only set a flag.

SIGTERM and SIGINT (what Slurm sends at walltime and on ``scancel``) set
:data:`requested`; the pilot's loops and :func:`picas.procgroup.wait`
poll it and do the actual work (kill the task, hand the token back) in
the main flow of the program, never inside the handler.
"""
from __future__ import annotations

import signal
import threading

requested = threading.Event()
received: list[int] = []


def _handler(signum: int, frame: object) -> None:
    received.append(signum)
    requested.set()


def install(signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> None:
    """Route ``signals`` to the flag (main thread only, as Python requires)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in signals:
        signal.signal(signum, _handler)


def reset() -> None:
    """Clear the flag, for a new run in the same process."""
    requested.clear()
    received.clear()
