"""Run a command as its own process group, so that it can be stopped whole.

The pilot's runner and upstream's :func:`picas.executers.execute` both
start commands here. When the command ends, what it left running in its
group is killed; on a timeout, a shutdown or a cancel the group gets
SIGTERM, then SIGKILL after a grace period.
"""
from __future__ import annotations

import contextlib
import os
import resource
import select
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any

from . import shutdown

#: Seconds between SIGTERM and SIGKILL when a task must stop.
DEFAULT_GRACE = 5.0
POLL = 0.05
#: How long a command that died of a signal waits for the pilot's own signal.
SIGNAL_RACE = 1.0


def _killed_by_signal(returncode: int) -> bool:
    """Died of SIGTERM/SIGINT/SIGHUP itself (negative) or as told by its shell (128+N)."""
    stops = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    return -returncode in stops or returncode - 128 in stops


def kill_group(proc: subprocess.Popen, grace: float) -> resource.struct_rusage | None:
    """SIGTERM the process group, then SIGKILL whatever is left after ``grace`` s;
    the command's resource use when this reaped it (see :func:`reap`)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return reap(proc)
    end = time.monotonic() + grace
    with _exit_watch(proc) as exited:
        while not exited(POLL) and time.monotonic() < end:
            pass
    return reap_group(proc)


def reap_group(proc: subprocess.Popen) -> resource.struct_rusage | None:
    """SIGKILL every process left in the group (background children too);
    the resource use of the command, see :func:`reap`."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    return reap(proc)


def reap(proc: subprocess.Popen) -> resource.struct_rusage | None:
    """Wait for ``proc`` with ``wait4``: its resource use, or None if it was reaped already.

    The kernel adds to a process's usage that of the descendants it waited
    for, and takes the largest peak memory among them: so this is the
    CPU time of the command's process tree and its largest process's
    peak RSS (background children that outlived it are not counted).
    """
    if proc.returncode is not None:
        return None
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except ChildProcessError:  # reaped behind our back (someone else waited)
        proc.wait()
        return None
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage


def wait(proc: subprocess.Popen, *, timeout: float | None = None,
         grace: float = DEFAULT_GRACE, should_stop: Any = None) -> str | None:
    """Wait for ``proc``; kill its group on timeout, shutdown or ``should_stop()``.

    Returns None when it ended by itself, else why it was stopped:
    ``"timeout"``, ``"shutdown"`` or whatever ``should_stop()`` returned.
    """
    return wait_measured(proc, timeout=timeout, grace=grace, should_stop=should_stop)[0]


def wait_measured(proc: subprocess.Popen, *, timeout: float | None = None,
                  grace: float = DEFAULT_GRACE, should_stop: Any = None,
                  ) -> tuple[str | None, resource.struct_rusage | None]:
    """:func:`wait`, and the command's resource use as :func:`reap` gives it."""
    deadline = None if timeout is None else time.monotonic() + timeout
    with _exit_watch(proc) as exited:
        while True:
            if exited(POLL):
                usage = reap(proc)
                reap_group(proc)
                if _killed_by_signal(proc.returncode) and shutdown.requested.wait(SIGNAL_RACE):
                    # The batch system signalled the command and us at once (scancel,
                    # walltime): an interruption, not the command's failure.
                    return "shutdown", usage
                return None, usage
            reason = None
            if deadline is not None and time.monotonic() >= deadline:
                reason = "timeout"
            elif shutdown.requested.is_set():
                reason = "shutdown"
            elif should_stop is not None:
                reason = should_stop()
            if reason:
                return reason, kill_group(proc, grace)


@contextlib.contextmanager
def _exit_watch(proc: subprocess.Popen) -> Iterator[Callable[[float], bool]]:
    """A function that waits up to N seconds for ``proc`` to exit.

    With a pidfd (Linux 5.3+) it wakes the moment the process exits, which
    matters for short tasks; otherwise it polls.
    """
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        def polled(seconds: float) -> bool:
            try:
                proc.wait(timeout=seconds)
                return True
            except subprocess.TimeoutExpired:
                return False
        yield polled
        return
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    try:
        yield lambda seconds: bool(poller.poll(seconds * 1000))
    finally:
        os.close(fd)


def start(args: str | Sequence[str], *, shell: bool, stdout: IO, stderr: IO,
          stdin: IO | None = None, **popen: Any) -> subprocess.Popen:
    """Start ``args`` in a new session (its own process group); no ``stdin``
    means an empty one."""
    return subprocess.Popen(args, shell=shell,
                            stdin=subprocess.DEVNULL if stdin is None else stdin,
                            stdout=stdout, stderr=stderr, start_new_session=True, **popen)
