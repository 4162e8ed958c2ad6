"""Iterators that hand out claimed tokens, upstream PiCaS style.

``for task in TaskViewIterator(db, "todo")`` yields tokens this process
holds, each claimed atomically (:mod:`picas.claim`). When the view is
empty the loop simply ends.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from . import claim, designdocs, state
from .documents import Task

log = logging.getLogger(__name__)


class ViewIterator:
    """Base class: subclasses implement :meth:`claim_task`."""

    def __init__(self) -> None:
        self._stop = False

    def __iter__(self) -> ViewIterator:
        return self

    def reset(self) -> None:
        self._stop = False

    def stop(self) -> None:
        self._stop = True

    def is_stopped(self) -> bool:
        return self._stop

    def __next__(self) -> Task:
        if self.is_stopped():
            raise StopIteration
        task = self.claim_task()
        if task is None:
            self.stop()
            raise StopIteration
        return task

    def claim_task(self) -> Task | None:
        """The next claimed task, or None when there is none."""
        raise NotImplementedError("claim_task is not implemented")

    def reconnect(self, database: Any) -> None:
        self.database = database

    def release_prefetched(self) -> int:
        """Give back tokens claimed ahead but not handed out; return how many."""
        return 0


class TaskViewIterator(ViewIterator):
    """Claims tokens from one view of a :class:`picas.clients.CouchDB`.

    The stock ``Monitor/todo`` is read through the changes feed instead,
    which yields the same tokens without keeping a view index up to date.

    ``batch`` > 1 claims that many tokens per request and hands them out
    one by one; :meth:`release_prefetched` returns the unused ones.
    ``holder`` and ``lease_seconds`` say who holds a claimed token and for
    how long; a :class:`picas.actors.RunActor` keeps the lease alive.
    """

    def __init__(self, database: Any, view: str = "todo", **view_params: Any) -> None:
        super().__init__()
        self.database = database
        self.view = view
        self.design_doc = view_params.pop("design_doc", "Monitor")
        self.batch = int(view_params.pop("batch", 1))
        self.lease_seconds = float(view_params.pop("lease_seconds", claim.DEFAULT_LEASE))
        self.holder: state.Holder = view_params.pop("holder", None) or state.Holder.here()
        self.accept: Callable[[dict], bool] | None = view_params.pop("accept", None)
        self.view_params = view_params
        self.prefetched: deque[dict] = deque()
        self.conflicts = 0
        self._changes: claim.ChangesSource | None = None

    def _source(self) -> claim.Source:
        """Monitor/todo holds exactly the claimable tokens the changes feed
        yields, which needs no view index; other views are queried."""
        if (self.design_doc, self.view) == (designdocs.MONITOR, "todo") and not self.view_params:
            if self._changes is None:
                self._changes = claim.ChangesSource()
            return self._changes
        return claim.ViewSource(self.design_doc, self.view, **self.view_params)

    def claim_task(self) -> Task | None:
        if not self.prefetched:
            result = claim.claim(self.database.database, self.holder, limit=self.batch,
                                 lease_seconds=self.lease_seconds, source=self._source(),
                                 accept=self.accept)
            self.conflicts += result.conflicts
            self.prefetched.extend(result.tokens)
        return Task(self.prefetched.popleft()) if self.prefetched else None

    def release_prefetched(self) -> int:
        tokens, self.prefetched = list(self.prefetched), deque()
        return claim.release(self.database.database, tokens)


class PrioritizedViewIterator(ViewIterator):
    """Claims from a high-priority view first, then from a low-priority one."""

    def __init__(self, database: Any, high_priority_view: str, low_priority_view: str,
                 **view_params: Any) -> None:
        super().__init__()
        self.database = database
        self.high = TaskViewIterator(database, high_priority_view, **dict(view_params))
        self.low = TaskViewIterator(database, low_priority_view, **dict(view_params))
        self.high_priority_view = high_priority_view
        self.low_priority_view = low_priority_view

    def claim_task(self) -> Task | None:
        return self.high.claim_task() or self.low.claim_task()

    def reconnect(self, database: Any) -> None:
        super().reconnect(database)
        self.high.reconnect(database)
        self.low.reconnect(database)

    def release_prefetched(self) -> int:
        return self.high.release_prefetched() + self.low.release_prefetched()


class EndlessViewIterator(ViewIterator):
    """Keeps asking another iterator for work, sleeping while there is none."""

    def __init__(self, view_iterator: ViewIterator, sleep_sec: float = 10,
                 stop_callback: Callable[..., bool] | None = None,
                 **stop_callback_args: Any) -> None:
        super().__init__()
        self.iterator = view_iterator
        self.sleep_sec = sleep_sec
        self.stop_callback = stop_callback
        self.stop_callback_args = stop_callback_args

    def is_cancelled(self) -> bool:
        return self.is_stopped() or (
            self.stop_callback is not None and bool(self.stop_callback(**self.stop_callback_args)))

    def __next__(self) -> Task:
        while not self.is_cancelled():
            try:
                return next(self.iterator)
            except StopIteration:
                self.iterator.reset()
                log.info("no work; trying again in %s s", self.sleep_sec)
                time.sleep(self.sleep_sec)
        self.iterator.stop()
        self.stop()
        raise StopIteration

    def reconnect(self, database: Any) -> None:
        self.iterator.reconnect(database)

    def release_prefetched(self) -> int:
        return self.iterator.release_prefetched()
