"""Upstream PiCaS's actors, on picas's claim path and leases.

A pilot script subclasses :class:`RunActor`, implements ``process_task``
(usually: ``execute`` a command, set ``exit_code``, ``close`` the token,
attach logs) and calls :meth:`RunActor.run`. What it gains here, without
changing a line:

* each claim is atomic, and the token's lease is renewed while it runs,
  so a pilot that dies loses its token back to todo, not forever;
* ``max_token_time`` really stops the task's process group (for work done
  through :func:`picas.executers.execute`);
* SIGTERM/SIGINT only set a flag; the running command is stopped, the
  token goes back to todo with an interrupted attempt, and ``run`` returns;
* every execution is recorded in ``token["attempts"]``; a result whose
  lease was taken over meanwhile is kept as a late attempt, not lost.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from . import dependencies, errors, executers, lease, shutdown, state
from .documents import Task
from .errors import PicasError
from .iterators import EndlessViewIterator, TaskViewIterator, ViewIterator
from .state import Outcome, TokenState
from .update import update
from .util import Timer, time_elapsed

log = logging.getLogger(__name__)


class AbstractRunActor:
    """Iterates over claimed tokens and hands each to :meth:`process_task`."""

    def __init__(self, db: Any, iterator: ViewIterator | None = None, view: str = "todo",
                 token_reset_values: tuple[int, int] | list[int] | None = (0, 0),
                 **view_params: Any) -> None:
        if db is None:
            raise ValueError("Database must be initialized")
        self.db = db
        if iterator is None:
            iterator = TaskViewIterator(db, view, **view_params)
        self.iterator = iterator
        self.token_reset_values = token_reset_values
        self.current_task: Task | None = None
        self.subprocess = None
        self.tasks_processed = 0
        self.time = Timer()

    def reconnect(self) -> None:
        self.db = self.db.copy()
        self.iterator.reconnect(self.db)

    # -- hooks for subclasses ------------------------------------------------
    def prepare_env(self, *args: Any, **kwargs: Any) -> None:
        """Called once before the first task."""

    def prepare_run(self, *args: Any, **kwargs: Any) -> None:
        """Called before each task, e.g. to fetch inputs."""

    def process_task(self, task: Task) -> None:
        """Do the work of one task. Subclasses must implement this."""
        raise NotImplementedError

    def cleanup_run(self, *args: Any, **kwargs: Any) -> None:
        """Called after each task."""

    def cleanup_env(self, *args: Any, **kwargs: Any) -> None:
        """Called once after the last task."""

    # -- machinery --------------------------------------------------------------
    def _lease_seconds(self) -> float:
        inner = getattr(self.iterator, "iterator", None)
        return float(getattr(self.iterator, "lease_seconds", None)
                     or getattr(inner, "lease_seconds", None) or 600.0)

    def _run(self, task: Task, timeout: float | None, keeper: lease.LeaseKeeper) -> Outcome:
        """Process one task and write its result; return the attempt's outcome."""
        self.prepare_run()
        self.current_task = task
        limits = executers.Limits(deadline=None if timeout is None else time.time() + timeout)
        executers.set_limits(limits)
        keeper.hold([dict(task.value)])
        started = time.time()
        try:
            self.process_task(task)
        except Exception as exc:  # noqa: BLE001 -- the user's code failed: record it on the token
            msg = f"Exception {type(exc).__name__} occurred during processing: {exc}"
            log.info(msg)
            task.error(msg, exception=exc)
        finally:
            executers.set_limits(executers.Limits())
        outcome = self._outcome(task, limits)
        self._save(task, outcome, started, keeper)
        self.cleanup_run()
        self.tasks_processed += 1
        self.current_task = None
        return outcome

    def _outcome(self, task: Task, limits: executers.Limits) -> Outcome:
        if limits.interrupted or shutdown.requested.is_set():
            return Outcome.INTERRUPTED
        if limits.timed_out:
            return Outcome.TIMED_OUT
        if (task.get("lock") == state.UPSTREAM_ERROR
                or not state.exit_code_is_zero(task.get("exit_code"))):
            return Outcome.FAILED
        return Outcome.SUCCEEDED

    def _save(self, task: Task, outcome: Outcome, started: float,
              keeper: lease.LeaseKeeper) -> None:
        """Write the task as the script left it, on top of the lease's latest revision."""
        latest = keeper.take(task.id) or task.value
        attempt = state.new_attempt(latest, outcome, start=started,
                                    exit_code=_int_or_none(task.get("exit_code")),
                                    logs=sorted(task.get("_attachments", {})))
        if outcome is Outcome.INTERRUPTED and self.token_reset_values is not None:
            task.scrub()
            task["lock"], task["done"] = self.token_reset_values
        elif outcome is Outcome.TIMED_OUT and state.classify(task.value) is TokenState.LOCKED:
            task["done"] = max(int(time.time()), 1)
            code = task.get("exit_code")
            task["exit_code"] = code if code not in ("", 0, None) else 124

        def record(current: dict | None) -> dict:
            if current is None:
                raise errors.DocumentNotFound(
                    f"token {task.id} was deleted; its result could not be written")
            if not state.held_under(current, attempt["lease"]):
                log.warning("token %s was taken over; result kept as a late attempt", task.id)
                return state.add_late_attempt(current, attempt)
            doc = {**task.value, "_rev": current["_rev"]}
            doc.pop("lease", None)
            doc["attempts"] = [*doc.get("attempts", current.get("attempts", [])), attempt]
            return doc

        doc = update(self.db.database, task.id, record, first=latest)
        assert doc is not None  # record always writes
        dependencies.tell(self.db.database, [doc])
        task.value.clear()
        task.value.update(doc)

    def run(self, max_token_time: float | None = None) -> None:
        """Process tasks until the iterator runs dry or a signal arrives."""
        self._loop(max_token_time, lambda task: False)

    def _loop(self, max_token_time: float | None, after: Callable[[Task], bool]) -> None:
        shutdown.install()
        keeper = lease.LeaseKeeper(self.db.database, self._lease_seconds())
        keeper.start()
        self.prepare_env()
        try:
            for task in self.iterator:
                outcome = self._run(task, max_token_time, keeper)
                if outcome is Outcome.INTERRUPTED or shutdown.requested.is_set() or after(task):
                    break
        finally:
            keeper.stop()
            try:
                self.iterator.release_prefetched()
            except PicasError as exc:
                log.warning("could not release prefetched tokens: %s", exc)
            self.cleanup_env()


class RunActor(AbstractRunActor):
    """An actor with upstream's stop conditions and scrubbing of failed tasks."""

    def run(self, max_token_time: float | None = None, max_total_time: float | None = None,
            max_tasks: int | None = None, max_scrub: int = 0,
            stop_function: Callable[..., bool] | None = None, **stop_function_args: Any) -> None:
        """Process tasks until one of the limits is reached or the work runs out.

        ``max_scrub``: a failed task goes back to todo until it has been
        scrubbed this many times (upstream semantics).
        """
        timer = Timer()
        if max_total_time is not None and isinstance(self.iterator, EndlessViewIterator):
            self.iterator.stop_callback = time_elapsed
            self.iterator.stop_callback_args = {"timer": timer, "max": max_total_time}

        def after(task: Task) -> bool:
            if (int(task.get("scrub_count") or 0) < max_scrub
                    and state.classify(task.value) is TokenState.ERROR):
                log.info("scrubbing token %s", task.id)
                task.scrub()
                self.db.save(task)
            if stop_function is not None and stop_function(**stop_function_args):
                return True
            if max_tasks and self.tasks_processed >= max_tasks:
                return True
            return max_total_time is not None and timer.elapsed() > max_total_time

        self._loop(max_token_time, after)


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
