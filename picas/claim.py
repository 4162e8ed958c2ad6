"""The atomic claim: CouchDB's revision check as compare-and-set.

Candidates come from a view or from the changes feed, and may be stale:
a view row's ``include_docs`` document is the *current* revision, which
another pilot may have locked a moment ago. So the state is checked on
the very revision that gets written: the lock is written with that
``_rev``, and CouchDB accepts it only if nobody wrote the document since.
A 409 means someone else won; the loser moves on.

On a cluster a lock counts only when a quorum of replicas confirmed it:
one answered ``"accepted": true`` may have lost to a conflicting lock
that holds the quorum, so it is marked in doubt and never run (see
:mod:`picas.conflicts`). Tokens with conflicting branches, and locks
whose lease ran out, are taken only after reading all their branches
from a quorum. So two pilots never both run a token, whatever the
source of candidates.

A batch is claimed in one ``_bulk_docs`` request, which CouchDB applies
per document: some may conflict while the rest succeed.
"""
from __future__ import annotations

import logging
import math
import random
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from . import conflicts, designdocs, errors, frontier, state
from .database import Database, confirmed
from .frontier import position as _position
from .state import Holder, TokenState
from .token import Token

log = logging.getLogger(__name__)

DEFAULT_LEASE = 600.0
#: Rows read per claim: more rows spread concurrent pilots over more tokens.
MIN_WINDOW = 50
#: Take at most a 1/SHARE of the claimable tokens seen, so that one pilot
#: never hoards work that others could start.
SHARE = 4
#: Seconds that a lost race makes a pilot pick its tokens by hash (see _preferred).
CONTESTED_FOR = 60.0
#: What a pilot reads of the changes feed on Apache CouchDB: tokens not
#: finished (todo, locked, held; not waiting, whose ``done`` is -2). Late in
#: a drain, most of the feed is finished tokens that every pilot would read;
#: filtered on the server they cost it 2.5 times less (measured on CouchDB
#: 3.5), and the pilot nothing.
UNFINISHED = {"type": "token", "done": {"$in": [0, "0", ""]}}
#: Seconds between a pilot's updates of the pool's frontier (picas.frontier).
PUBLISH_EVERY = 30.0


@dataclass
class Window:
    """Candidate documents read in one request."""

    docs: list[Token]
    #: no more candidates beyond this window
    exhausted: bool
    #: claimable tokens in the whole source, when the source knows
    backlog: int | None = None
    #: candidates in the source's order, which its cursor depends on
    in_order: bool = False
    #: others raced for the same rows lately
    contested: bool = False


class Source(Protocol):
    def fetch(self, db: Database, window: int) -> Window: ...

    def attempted(self, docs: list[Token], beaten: int = 0) -> None: ...


class ViewSource:
    """Candidates from a view of todo tokens (in the view's order)."""

    def __init__(self, design: str = designdocs.MONITOR, view: str = "todo_by_priority",
                 **view_params: object) -> None:
        self.design, self.view, self.view_params = design, view, view_params

    def fetch(self, db: Database, window: int) -> Window:
        answer = db.view(self.design, self.view, include_docs=True, conflicts=True,
                         limit=window, **self.view_params)
        return self.window(answer, window)

    @staticmethod
    def window(answer: dict, size: int) -> Window:
        docs = [row["doc"] for row in answer["rows"] if row.get("doc")]
        return Window(docs, len(answer["rows"]) < size, answer.get("total_rows"))

    def attempted(self, docs: list[Token], beaten: int = 0) -> None:
        """Views need no bookkeeping: written tokens leave the view."""


class ChangesSource:
    """Candidates from the changes feed: no view index to keep up to date.

    Every document sits in the feed at its latest change, so untouched
    todo tokens come first and everything a pilot writes moves on. A
    cursor moves past every row read, so each read starts near the live
    front. Nothing claimable is lost behind the cursor: attempted rows were
    written (by us or by the winner) and so sit further on; claimable rows
    that this pilot skipped are remembered; and locked rows are watched
    until their lease runs out. When the feed is exhausted, the remembered
    and the expired ones are read again, in one request.

    Nothing here relies on the order of the feed beyond "a written document
    comes again after its write": CouchDB's feed is ordered only per shard.
    So the cursor and the ids remembered behind it are all a new pilot
    needs to start where this one is: they are published as the pool's
    frontier (:mod:`picas.frontier`) now and then, and read at the start.
    """

    def __init__(self) -> None:
        self.cursor: object = 0
        #: locked tokens behind the cursor: id -> when their lease expires
        self.watch: dict[str, float] = {}
        #: claimable tokens behind the cursor that this pilot skipped (in order)
        self.skipped: dict[str, None] = {}
        #: the last window's rows: (id, seq, claimable)
        self._rows: list[tuple[str, object, bool]] = []
        #: when this pilot was last beaten to a token (monotonic clock)
        self._beaten_at: float | None = None
        #: the feed's filter: UNFINISHED on Apache CouchDB, {} for none (None: not known yet)
        self._selector: dict | None = None
        #: the cursor last published as the frontier, and when (monotonic clock)
        self._published: tuple[object, float] | None = None

    def _start(self, db: Database) -> None:
        """Begin at the pool's frontier, with the ids that may need a look behind it."""
        self._selector = UNFINISHED if db.transport.is_apache_couchdb() else {}
        start = frontier.load(db)
        self.cursor = start.since
        self.watch.update(start.watch)
        self.skipped.update(dict.fromkeys(start.skipped))
        self._published = (start.since, time.monotonic())

    def _publish(self, db: Database, exhausted: bool) -> None:
        """Share the cursor as the frontier: when at the end of the feed, else
        at most every PUBLISH_EVERY seconds."""
        assert self._published is not None
        last, at = self._published
        if self.cursor == last or (not exhausted and time.monotonic() - at < PUBLISH_EVERY):
            return
        self._published = (self.cursor, time.monotonic())
        if len(self.watch) + len(self.skipped) <= frontier.MAX_IDS:  # else: not worth copying
            frontier.publish(db, frontier.Frontier(self.cursor, dict(self.watch),
                                                   list(self.skipped)))

    def fetch(self, db: Database, window: int) -> Window:
        if self._selector is None:
            self._start(db)
        self._publish(db, exhausted=False)
        try:
            rows = self._read(db, window)
        except errors.Conflict as exc:
            # A cluster that lost the node a cursor names may answer 409
            # "progress not possible": read from the start again (only
            # costs reading; what is remembered behind the cursor stays).
            log.warning("the changes feed cannot go on from this pilot's place (%s): "
                        "reading it from the start", exc)
            self.cursor = 0
            rows = self._read(db, window)
        now = time.time()
        docs, self._rows = [], []
        for row in rows:
            doc = row.get("doc") or {}
            doc = _one_branch(db, row["id"], doc, now)
            self.watch.pop(row["id"], None)
            self.skipped.pop(row["id"], None)
            ok = claimable(doc, now)
            self._rows.append((row["id"], row["seq"], ok))
            if ok:
                docs.append(doc)
                continue
            expires = (doc.get("lease") or {}).get("expires")
            if state.classify(doc) is TokenState.LOCKED and isinstance(expires, (int, float)):
                self.watch[row["id"]] = expires
        exhausted = len(rows) < window
        if not docs:
            self.attempted([])
            if exhausted:
                self._publish(db, exhausted=True)
                docs = self._recheck(db, now, window)
        return Window(docs, exhausted, in_order=True, contested=self._contested())

    def _read(self, db: Database, window: int) -> list[dict]:
        return db.changes(self._selector or None, since=self.cursor, limit=window,
                          include_docs=True, conflicts=True)["results"]

    def _due(self, now: float) -> list[str]:
        """Watched tokens whose lease ran out."""
        return [doc_id for doc_id, expires in self.watch.items() if expires < now]

    def _contested(self) -> bool:
        """Whether this pilot lost a race lately: others read the same rows."""
        return self._beaten_at is not None and time.monotonic() - self._beaten_at < CONTESTED_FOR

    def attempted(self, docs: list[Token], beaten: int = 0) -> None:
        """Move the cursor past the window's last attempted row (or all of it,
        when nothing was attempted or pilots divide it); remember the
        claimable rows skipped."""
        if beaten:
            self._beaten_at = time.monotonic()
        tried = {doc["_id"] for doc in docs}
        for doc_id in tried:
            self.skipped.pop(doc_id, None)
        # Alone, a pilot comes back for the rest of a window; sharing it, the
        # rest is others' share, and reading it again would cost a read per claim.
        last = len(self._rows) - 1 if self._contested() else \
            max((i for i, (doc_id, _, _) in enumerate(self._rows) if doc_id in tried),
                default=len(self._rows) - 1)
        for doc_id, seq, ok in self._rows[:last + 1]:
            if ok and doc_id not in tried:
                self.skipped[doc_id] = None
            self.cursor = seq

    def _recheck(self, db: Database, now: float, window: int) -> list[Token]:
        """Read again the skipped rows and the watched ones whose lease ran out."""
        keys = (list(self.skipped) + self._due(now))[:window]
        if not keys:
            return []
        rows = db.all_docs(keys=keys, include_docs=True, conflicts=True)["rows"]
        docs = []
        for row in rows:
            doc = row.get("doc") or {}
            doc = _one_branch(db, row["key"], doc, now)
            if claimable(doc, now):
                docs.append(doc)  # stays remembered until attempted
            else:
                # Written since: it sits past the cursor now, or is gone.
                self.watch.pop(row["key"], None)
                self.skipped.pop(row["key"], None)
        return docs


class PrioritySource:
    """Highest priority first, without waiting long for a view's index.

    ``todo_by_priority`` is read as far as its index has got
    (``stale=update_after``: the server catches up afterwards, in the
    background). When that shows nothing claimable and the index is only
    a little behind (just after an add, say), the view is read again up
    to date, which takes a moment; when it is far behind (a million new
    tokens), candidates come from the changes feed meanwhile.
    """

    #: changes an index may lag behind the database and still be waited for
    CATCH_UP = 5000

    def __init__(self, feed: ChangesSource) -> None:
        self.view = ViewSource()
        self.feed = feed
        self._last: Source = self.view

    def fetch(self, db: Database, window: int) -> Window:
        self._last = self.view
        answer = db.view(self.view.design, self.view.view, include_docs=True, conflicts=True,
                         limit=window, stale="update_after", update_seq=True)
        got = self.view.window(answer, window)
        if self._any_claimable(got):
            return got
        if _position(db.info().get("update_seq")) - _position(answer.get("update_seq")) \
                <= self.CATCH_UP:
            got = self.view.fetch(db, window)
            if self._any_claimable(got):
                return got
        self._last = self.feed
        return self.feed.fetch(db, window)

    @staticmethod
    def _any_claimable(got: Window) -> bool:
        now = time.time()
        return any(claimable(doc, now) for doc in got.docs)

    def attempted(self, docs: list[Token], beaten: int = 0) -> None:
        self._last.attempted(docs, beaten)


def _one_branch(db: Database, doc_id: str, doc: Token, now: float) -> Token:
    """``doc`` as read, or, where it has branches, the one left after resolving
    them (whoever meets a token with branches resolves it: picas.conflicts)."""
    if not doc.get("_conflicts"):
        return doc
    return conflicts.current(db, doc_id, now) or {}


def claimable(doc: Token, now: float | None = None) -> bool:
    """Todo, or locked under a lease that has run out (or was never confirmed)."""
    return state.classify(doc) is TokenState.TODO or state.lease_expired(doc, now)


def _needs_all_branches(doc: Token, now: float) -> bool:
    """Whether a candidate may be taken only after reading every branch of it.

    A replica that has not yet seen a quorum-confirmed lock can show a
    token with conflicts as todo, or an in-doubt lock as the only one; a
    quorum read of all branches cannot miss that lock.
    """
    return bool(doc.get("_conflicts")) or state.lease_expired(doc, now)


def _checked(db: Database, docs: list[Token], now: float) -> list[Token]:
    """The candidates as their one resolved branch, where that is claimable."""
    out = []
    for doc in docs:
        if not _needs_all_branches(doc, now):
            out.append(doc)
            continue
        current = conflicts.current(db, doc["_id"], now)
        if current is not None and claimable(current, now):
            out.append(current)
    return out


@dataclass
class ClaimResult:
    tokens: list[Token] = field(default_factory=list)
    conflicts: int = 0
    #: locks the cluster could not confirm: marked in doubt, not run
    in_doubt: int = 0
    #: tokens whose expired lease this claim took over
    recovered: int = 0
    #: claimable tokens seen (the whole backlog, when the source knows it)
    backlog: int = 0


def _order(candidates: list[Token], rng: random.Random) -> list[Token]:
    """Highest priority first; random within a priority so pilots spread out."""
    rng.shuffle(candidates)
    return sorted(candidates, key=lambda doc: -_priority(doc))


def point(name: str) -> float:
    """A stable place in [0, 1) for a name (the same in every process)."""
    return zlib.crc32(name.encode()) / 2 ** 32


def _preferred(candidates: list[Token], pilot_id: str, want: int) -> list[Token]:
    """The ``want`` candidates this pilot prefers, in their original order.

    Pilots reading the same window would all take its first rows, and all
    but one would lose the race. So once a pilot has lost one, it prefers
    the tokens whose id hashes closest after its own id's hash on a circle:
    pilots divide a window between them without talking, and only pilots
    whose hashes are close compete.
    """
    origin = point(pilot_id)
    ranked = sorted(range(len(candidates)),
                    key=lambda i: (point(candidates[i]["_id"]) - origin) % 1.0)
    return [candidates[i] for i in sorted(ranked[:want])]


def _priority(doc: Token) -> float:
    try:
        return float(doc.get("priority") or 0)
    except (TypeError, ValueError):
        return 0.0


def _take(doc: Token, holder: Holder, lease_seconds: float, now: float) -> tuple[Token, bool]:
    """The locked revision to write for a claimable candidate, and whether it was recovered."""
    if not state.lease_expired(doc, now):
        return state.lock(doc, holder, lease_seconds, now), False
    recovered = state.expire(doc, now=now)
    if state.classify(recovered) is TokenState.TODO:
        return state.lock(recovered, holder, lease_seconds, now), True
    return recovered, True  # out of retries: written as error, not claimed


def claim(db: Database, holder: Holder, *, limit: int = 1,
          lease_seconds: float = DEFAULT_LEASE, source: Source | None = None,
          accept: Callable[[Token], bool] | None = None,
          rounds: int = 5, rng: random.Random | None = None) -> ClaimResult:
    """Lock up to ``limit`` claimable tokens for ``holder``.

    Returns the locked tokens (with their new ``_rev``); an empty result
    means there is nothing to claim now, a normal outcome. ``accept`` can
    skip candidates (for example tokens that would not fit in the walltime
    left). ``source`` defaults to the ``Monitor/todo_by_priority`` view.
    """
    rng = rng or random.Random()
    source = source or ViewSource()
    result = ClaimResult()
    window = max(MIN_WINDOW, SHARE * limit)
    beaten_rounds = stale_windows = 0
    while beaten_rounds < rounds and stale_windows < rounds:
        got = source.fetch(db, window)
        now = time.time()
        # The source may be stale: only what is claimable in the revision
        # at hand is a candidate (the write then checks that revision).
        candidates = {doc["_id"]: doc for doc in got.docs
                      if claimable(doc, now) and (accept is None or accept(doc))}
        result.backlog = got.backlog if got.backlog is not None else len(candidates)
        if not candidates:
            if got.exhausted:
                return result
            source.attempted([])  # none acceptable here: move past them, remembered
            # A feed read moves its cursor on, so reading on always ends;
            # a view answers the same stale rows until its index catches up.
            stale_windows += not got.in_order
            continue
        chosen = _choose(got, list(candidates.values()), holder,
                         limit - len(result.tokens), now, rng)
        picked = [_take(doc, holder, lease_seconds, now) for doc in _checked(db, chosen, now)]
        outcomes = db.bulk_docs([doc for doc, _ in picked])
        beaten = sum(not confirmed(o) for o in outcomes)
        source.attempted(chosen, beaten=beaten)
        _withdraw(db, _tally(result, picked, outcomes))
        if result.tokens:
            # Possibly fewer than asked for when others won some races:
            # good enough, the caller comes back for more.
            return result
        beaten_rounds += 1
    return result


def _choose(got: Window, candidates: list[Token], holder: Holder, room: int, now: float,
            rng: random.Random) -> list[Token]:
    """The candidates to try to lock in this round: at most ``room``, fewer
    when others are likely to be claiming from the same window."""
    share = max(1, math.ceil(len(candidates) / SHARE)) if got.backlog is None \
        else max(1, math.ceil(got.backlog / (2 * SHARE)))
    want = min(room, share)
    # Plain todo tokens first: the others cost a read of all their branches,
    # and may be locks this pilot itself just found in doubt.
    fresh = [doc for doc in candidates if not _needs_all_branches(doc, now)]
    pool = fresh or candidates
    if got.in_order and got.contested:
        return _preferred(pool, holder.pilot_id, want)
    if got.in_order:
        # Alone (as far as we know): a run from the front, skipping nothing.
        return pool[:want]
    return _order(pool, rng)[:want]


def _tally(result: ClaimResult, picked: list[tuple[Token, bool]],
           outcomes: list[dict]) -> list[dict]:
    """Count the outcomes of one round's writes into ``result``; return the
    locks that were written but not confirmed, withdrawn."""
    doubtful = []
    for (doc, recovered), outcome in zip(picked, outcomes, strict=True):
        if "error" in outcome:
            result.conflicts += 1
        elif not confirmed(outcome):
            result.in_doubt += 1
            if state.classify(doc) is TokenState.LOCKED:
                doubtful.append(state.withdraw(doc))
        else:
            result.recovered += recovered
            if state.classify(doc) is TokenState.LOCKED:
                result.tokens.append(doc)
    return doubtful


def _withdraw(db: Database, doubtful: list[Token]) -> None:
    """Mark unconfirmed locks in doubt, so that nobody waits for them.

    Best effort: a mark that does not get through leaves a lock that
    nobody renews, which is resolved once its lease runs out.
    """
    if not doubtful:
        return
    log.info("%d lock(s) not confirmed by a quorum: marked in doubt, not run", len(doubtful))
    try:
        db.bulk_docs(doubtful)
        # Where the lock that holds the quorum shows already, give way to it
        # now: until then, views show whichever branch CouchDB picks.
        for doc in doubtful:
            conflicts.current(db, doc["_id"])
    except (errors.ConnectionFailed, errors.ServerError) as exc:
        log.warning("could not mark or resolve %d lock(s) in doubt: %s", len(doubtful), exc)


def release(db: Database, tokens: list[Token]) -> int:
    """Give back tokens that were claimed but never started; return how many."""
    released = [state.release(doc) for doc in tokens if state.classify(doc) is TokenState.LOCKED]
    if not released:
        return 0
    outcomes = db.bulk_docs(released)
    return sum(1 for o in outcomes if confirmed(o))
