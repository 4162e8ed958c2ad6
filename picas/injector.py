"""An injector: keep adding a token for each new file in a directory."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from . import errors, shutdown
from .adding import DEFAULT_BATCH, AddReport, add
from .database import Database
from .shaping import Shape, build, check_template
from .sources import _matching_files, file_record

log = logging.getLogger(__name__)


def _settled_files(directory: Path, pattern: str, added: set[Path],
                   last_seen: dict[Path, tuple[int, int]], first: bool,
                   ) -> tuple[list[Path], dict[Path, tuple[int, int]]]:
    """The new files whose size and mtime did not change since ``last_seen``
    (all new files on the ``first`` look), and what was seen this time."""
    ready, seen = [], {}
    for path in _matching_files(directory, pattern):
        if path in added:
            continue
        try:
            info = path.stat()
        except FileNotFoundError:
            continue
        seen[path] = (info.st_size, info.st_mtime_ns)
        if first or last_seen.get(path) == seen[path]:
            ready.append(path)
    return ready, seen


def _add_or_wait(db: Database, tokens: list, batch: int, interval: float) -> AddReport | None:
    """The report of adding ``tokens``, or None when the server could not take
    them all (they are added again at the next interval: their ids are kept)."""
    try:
        report = add(db, tokens, batch)
    except (errors.ConnectionFailed, errors.ServerError) as exc:
        log.warning("%s; retrying in %g s", exc, interval)
        return None
    if report.stopped_by is not None:
        log.warning("%s; retrying in %g s", report.stopped_by, interval)
        return None
    return report


def watch(db: Database, directory: Path | str, pattern: str, how: Shape = Shape(), *,
          interval: float = 5.0, max_time: float | None = None, batch: int = DEFAULT_BATCH,
          on_added: Callable[[AddReport], None] | None = None) -> AddReport:
    """Keep adding a token for each new file in ``directory`` (an injector).

    Files there at the start are added at once; a file that appears later
    is added once its size and modification time stay the same over one
    ``interval``, so that files still being written are not picked up.
    Stops when :data:`picas.shutdown.requested` is set or after
    ``max_time`` seconds. A server that cannot be reached is retried at
    the next interval.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise errors.InvalidToken(f"--from-dir {directory}: not a directory")
    if how.command is not None:
        check_template(how.command)
    total = AddReport()
    added: set[Path] = set()
    last_seen: dict[Path, tuple[int, int]] = {}
    first = True
    end = None if max_time is None else time.monotonic() + max_time
    while True:
        ready, last_seen = _settled_files(directory, pattern, added, last_seen, first)
        if ready:
            report = _add_or_wait(db, build([file_record(path) for path in ready], how),
                                  batch, interval)
            if report is not None:
                added.update(ready)
                first = False
                total.merge(report)
                if on_added is not None:
                    on_added(report)
        else:
            first = False
        if shutdown.requested.is_set():
            break
        wait = interval if end is None else min(interval, end - time.monotonic())
        if wait <= 0 or shutdown.requested.wait(wait):
            break
    return total
