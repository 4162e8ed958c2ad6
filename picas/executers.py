"""Upstream PiCaS's ``picas.executers``: ``execute`` and ``execute_old``.

Commands run through :mod:`picas.procgroup`, as their own process group.
Output goes to temporary files rather than pipes: a command that leaves
background children holding its stdout open cannot make us wait forever.
"""
from __future__ import annotations

import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from .procgroup import DEFAULT_GRACE, start, wait


@dataclass
class Limits:
    """Per-thread limits that a running actor imposes on :func:`execute`."""

    deadline: float | None = None
    grace: float = DEFAULT_GRACE
    timed_out: bool = False
    interrupted: bool = False


_limits = threading.local()


def current_limits() -> Limits:
    if not hasattr(_limits, "value"):
        _limits.value = Limits()
    return _limits.value


def set_limits(limits: Limits) -> None:
    _limits.value = limits


def execute(args: str | Sequence[str], shell: bool = False,
            timeout: float | None = None) -> tuple[subprocess.Popen, int, bytes, bytes]:
    """Run ``args``; return ``(process, returncode, stdout, stderr)`` like upstream.

    On ``timeout`` (or the enclosing actor's ``max_token_time``, or a
    shutdown signal) the whole process group is stopped and the return code
    is negative (the signal).
    """
    limits = current_limits()
    if limits.deadline is not None:
        left = max(0.0, limits.deadline - time.time())
        timeout = left if timeout is None else min(timeout, left)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = start(args, shell=shell, stdout=out, stderr=err)
        reason = wait(proc, timeout=timeout, grace=limits.grace)
        limits.timed_out |= reason == "timeout"
        limits.interrupted |= reason == "shutdown"
        out.seek(0)
        err.seek(0)
        return proc, proc.returncode, out.read(), err.read()


def execute_old(cmd: str) -> int:
    """Run ``cmd`` through the shell with our own stdout and stderr; its exit code.

    Upstream's older helper (it used ``os.system``); the SRM client still
    calls it. Use :func:`execute` for anything that should obey time limits.
    """
    return subprocess.call(cmd, shell=True)
