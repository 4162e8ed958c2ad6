"""Adding tokens in bulk: ``_bulk_docs``, a batch at a time.

A conflict means the id exists already: for a content-hash id that is the
same token, so it counts as existing rather than failed. Tokens are taken
from an iterator and written as they come, two requests in flight, so a
million tokens cost the memory of a few batches.

Tokens that wait for others (``after``) get their ``waiting_for`` and
their parents' ``dependents`` from a :class:`picas.dependencies.Plan` as
they pass, and gates are written after them; once everything is written,
:func:`picas.dependencies.settle` tells the waiting tokens of parents that
ended meanwhile.
"""
from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from . import dependencies, errors
from . import pool as pool_settings
from .database import Database
from .shaping import token_id
from .token import Token
from .transport import Transport

DEFAULT_BATCH = 2000
#: Requests in flight at once: the server works on one while the next is made.
WRITERS = 2


@dataclass
class AddReport:
    """What an add did: ``existing`` tokens were in the database already."""

    added: int = 0
    existing: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    #: tokens given more than once in the same batch of input (added once)
    duplicates: int = 0
    #: gates added for tokens that wait for many others (see picas.dependencies)
    gates: int = 0
    #: what stopped the add before the end (the server went away, say): the
    #: counts above say what was written until then
    stopped_by: errors.PicasError | None = None

    def merge(self, other: AddReport) -> None:
        self.added += other.added
        self.existing += other.existing
        self.failed.extend(other.failed)
        self.duplicates += other.duplicates
        self.gates += other.gates

    def as_dict(self) -> dict:
        return {"added": self.added, "existing": self.existing, "duplicates": self.duplicates,
                "gates": self.gates,
                "failed": [{"id": i, "reason": r} for i, r in self.failed],
                "stopped_by": None if self.stopped_by is None else str(self.stopped_by)}


def _has_priority(token: Token) -> bool:
    try:
        return float(token.get("priority") or 0) != 0
    except (TypeError, ValueError):
        return False


def _chunks(tokens: Iterable[Token], batch: int) -> Iterator[tuple[list[Token], int]]:
    """Batches of distinct tokens, and how many repeats each batch dropped."""
    chunk: dict[str, Token] = {}
    repeats = 0
    for token in tokens:
        if token["_id"] in chunk:
            repeats += 1
            continue
        chunk[token["_id"]] = dict(token)
        if len(chunk) == batch:
            yield list(chunk.values()), repeats
            chunk, repeats = {}, 0
    if chunk or repeats:
        yield list(chunk.values()), repeats


def add(db: Database, tokens: Iterable[Token], batch: int = DEFAULT_BATCH,
        progress: Callable[[int], None] | None = None, writers: int = WRITERS,
        plan: dependencies.Plan | None = None) -> AddReport:
    """Write new tokens with ``_bulk_docs``, ``batch`` at a time, as they come.

    A conflict means the id exists: for a content-hash id that is the same
    token, so it counts as ``existing`` (a repeat in a later batch of the
    same input counts so too). A given ``_id`` counts as existing only when
    the stored token runs the same thing; otherwise it failed. ``progress``
    gets the number of tokens done after each batch. At most ``writers``
    batches are in flight, each on a connection of its own, so memory stays
    bounded whatever the number of tokens. A request that fails before any
    token was written raises its error; one that fails later stops the add:
    :attr:`AddReport.stopped_by` says why, the counts what was written, and
    adding the same tokens again finishes the job.

    Tokens with ``after`` follow ``plan`` (from :func:`picas.dependencies.plan`);
    for a list of tokens, add makes the plan itself. A token ``after`` one
    that is neither given nor in the database adds nothing
    (:class:`errors.InvalidToken`).
    """
    if plan is None and isinstance(tokens, list):
        plan = _plan(db, tokens)
    report = AddReport()
    priorities = False
    fitted = tokens if plan is None else _fitted(tokens, plan)
    with _Writers(db, writers, report, progress) as out:
        for chunk, repeats in _chunks(fitted, batch):
            report.duplicates += repeats
            if not priorities and any(_has_priority(token) for token in chunk):
                # Before these tokens exist, so that no pilot takes them out of order.
                pool_settings.enable_priorities(db)
                priorities = True
            if not out.submit(chunk, len(chunk) + repeats):
                break
    if report.stopped_by is not None and not (report.added or report.existing):
        raise report.stopped_by  # nothing written: the error says it all
    if plan is not None and report.stopped_by is None:
        dependencies.settle(db, plan)
    return report


def _plan(db: Database, tokens: list[Token]) -> dependencies.Plan | None:
    after = {t["_id"]: list(t["after"]) for t in tokens if t.get("after")}
    if not after:
        return None
    return dependencies.plan(db, after, lambda: (t["_id"] for t in tokens))


def _fitted(tokens: Iterable[Token], plan: dependencies.Plan) -> Iterator[Token]:
    """The tokens as ``plan`` has them, then its gates."""
    for token in tokens:
        yield plan.fit(token)
    yield from plan.gates


class _Writers:
    """Batches written by a few threads, each on a connection of its own,
    with at most one batch per thread in flight."""

    def __init__(self, db: Database, size: int, report: AddReport,
                 progress: Callable[[int], None] | None) -> None:
        self.db, self.size, self.report, self.progress = db, size, report, progress
        self.local = threading.local()
        self.opened: list[Transport] = []
        self.lock = threading.Lock()
        self.in_flight: deque[tuple[Future[AddReport], int]] = deque()
        self.pool: ThreadPoolExecutor | None = None

    def __enter__(self) -> _Writers:
        self.pool = ThreadPoolExecutor(max_workers=self.size, thread_name_prefix="picas-add")
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            while self.in_flight:
                self._collect(*self.in_flight.popleft())
        finally:
            assert self.pool is not None
            self.pool.shutdown(wait=True)
            for transport in self.opened:
                transport.close()

    def submit(self, chunk: list[Token], count: int) -> bool:
        """Queue a batch; False once a batch failed (nothing more is sent then)."""
        while len(self.in_flight) >= self.size:
            self._collect(*self.in_flight.popleft())
        if self.report.stopped_by is not None:
            return False
        assert self.pool is not None
        self.in_flight.append((self.pool.submit(self._write, chunk), count))
        return True

    def _write(self, chunk: list[Token]) -> AddReport:
        if not hasattr(self.local, "db"):
            self.local.db = Database(self.db.transport.clone(), self.db.name)
            with self.lock:
                self.opened.append(self.local.db.transport)
        part = AddReport()
        _add_chunk(self.local.db, chunk, part)
        return part

    def _collect(self, future: Future[AddReport], count: int) -> None:
        try:
            self.report.merge(future.result())
        except errors.PicasError as exc:
            self.report.stopped_by = self.report.stopped_by or exc
            return
        if self.progress is not None:
            self.progress(count)


def _add_chunk(db: Database, chunk: list[Token], report: AddReport) -> None:
    given_ids = []
    for doc, result in zip(chunk, db.bulk_docs(chunk), strict=True):
        if doc.get("gate"):  # not the caller's: counted apart, and there already is fine
            report.gates += "error" not in result
        elif "error" not in result:
            report.added += 1
        elif result["error"] != "conflict":
            report.failed.append((doc["_id"], result.get("reason") or result["error"]))
        elif token_id(doc) == doc["_id"]:
            report.existing += 1
        else:
            given_ids.append(doc)
    if given_ids:
        _compare_existing(db, given_ids, report)


def _compare_existing(db: Database, docs: list[Token], report: AddReport) -> None:
    rows = db.all_docs(keys=[d["_id"] for d in docs], include_docs=True)["rows"]
    stored = {row["id"]: row.get("doc") for row in rows if row.get("doc")}
    for doc in docs:
        there = stored.get(doc["_id"])
        if there is not None and token_id(there) == token_id(doc):
            report.existing += 1
        else:
            report.failed.append((doc["_id"], "a different document with this _id exists"))
