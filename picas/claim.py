"""The atomic claim: CouchDB's revision check as compare-and-set.

Candidates come from a view or from the changes feed, and may be stale:
a view row's ``include_docs`` document is the *current* revision, which
another pilot may have locked a moment ago. So the state is checked on
the very revision that gets written: the lock is written with that
``_rev``, and CouchDB accepts it only if nobody wrote the document since.
A 409 means someone else won; the loser moves on. Two pilots can never
both hold a token, whatever the source of candidates.

A batch is claimed in one ``_bulk_docs`` request, which CouchDB applies
per document: some may conflict while the rest succeed.
"""
from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

from . import designdocs, errors, shutdown, state
from .database import Database
from .roster import Roster, point
from .state import Holder, TokenState

log = logging.getLogger(__name__)

DEFAULT_LEASE = 600.0
#: Rows read per claim: more rows spread concurrent pilots over more tokens.
MIN_WINDOW = 50
#: Take at most a 1/SHARE of the claimable tokens seen, so that one pilot
#: never hoards work that others could start.
SHARE = 4
#: Seconds that a lost race makes a pilot pick its tokens by hash (see _preferred
#: and picas.roster).
CONTESTED_FOR = 60.0
#: Where pilots say how far they found nothing claimable (see ChangesSource).
SCANNED_ID = "_local/picas.scanned"
#: The most rows one claim reads, however many pilots divide them.
MAX_WINDOW = 1000
#: Seconds a pilot waits for another that says it scans the feed, without news.
SCAN_STALE = 2.0
#: Seconds between looks at the shared scan while another pilot scans.
SCAN_POLL = 0.05
#: A scan that ends with more claimable tokens than this is not shared.
MAX_OPEN = 1000


@dataclass
class Window:
    """Candidate documents read in one request."""

    docs: list[dict]
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

    def attempted(self, docs: list[dict], lost: int = 0) -> None: ...


class ViewSource:
    """Candidates from a view of todo tokens (in the view's order)."""

    def __init__(self, design: str = designdocs.PILOT, view: str = "todo_by_priority",
                 **view_params: object) -> None:
        self.design, self.view, self.view_params = design, view, view_params

    def fetch(self, db: Database, window: int) -> Window:
        answer = db.view(self.design, self.view, include_docs=True, limit=window,
                         **self.view_params)
        docs = [row["doc"] for row in answer["rows"] if row.get("doc")]
        return Window(docs, len(answer["rows"]) < window, answer.get("total_rows"))

    def attempted(self, docs: list[dict], lost: int = 0) -> None:
        """Views need no bookkeeping: written tokens leave the view."""


class ChangesSource:
    """Candidates from the changes feed: no view index to keep up to date.

    Every document sits in the feed at its latest change, so untouched
    todo tokens come first and everything a pilot writes moves to the end.
    A cursor moves past every row read, so each read starts near the live
    front (on pouchdb-server a read walks every outdated entry between
    ``since`` and the first live one, so a lagging cursor costs dearly).
    Nothing claimable is lost behind the cursor: attempted rows were
    written (by us or by the winner) and so sit further on; claimable rows
    that this pilot skipped are remembered; and locked rows are watched
    until their lease runs out. When the feed is exhausted, the remembered
    and the expired ones are read again, in one request.

    Each pilot reads every row, then, including all the rows that the
    other pilots wrote: at the end of a drain, every pilot reads every
    finished token once more before it can tell that nothing is left.
    With ``share_scans``, a pilot that read the whole feed says in a
    ``_local`` document "nothing up to ``seq`` is claimable but the ``open``
    tokens", and pilots that are reading finished rows jump there and take
    the open tokens on. That is safe because a document sits at its last
    change: a token that becomes claimable later moves past that point
    (save a lease that runs out later, which only pilots that stay on
    would watch; so only pilots that stop when the pool is empty share
    their scans). Pilots run out of work at about the same time, so a
    pilot that reads on among finished rows says so in the same document,
    and the others wait for its scan rather than read the same rows at once.
    """

    def __init__(self, share_scans: bool = False, roster: Roster | None = None) -> None:
        self.cursor: object = 0
        self.share_scans = share_scans
        self.roster = roster
        #: locked tokens behind the cursor: id -> when their lease expires
        self.watch: dict[str, float] = {}
        #: claimable tokens behind the cursor that this pilot skipped (in order)
        self.skipped: dict[str, None] = {}
        #: the last window's rows: (id, seq, claimable)
        self._rows: list[tuple[str, object, bool]] = []
        #: when this pilot last lost a race for a token (monotonic clock)
        self._lost_at: float | None = None
        #: the last read found nothing claimable: it read rows others wrote
        self._in_tail = False
        #: when the feed was last read (wall clock, to compare with others')
        self._read_at = 0.0
        #: the shared scan as last read or written, and the last seq shared or jumped to
        self._scan: dict = {}
        self._scan_seq: object = None
        #: the shared scan's revision as first seen, and when (monotonic clock)
        self._seen_rev: str | None = None
        self._seen_at = 0.0

    def fetch(self, db: Database, window: int) -> Window:
        if self.share_scans and self._in_tail:
            self._catch_up(db)
        self._read_at = time.time()
        rows = db.changes(since=self.cursor, limit=window, include_docs=True)["results"]
        now = time.time()
        docs, self._rows = [], []
        for row in rows:
            doc = row.get("doc") or {}
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
        self._in_tail = not docs
        if not docs:
            self.attempted([])
            # Skipped rows that are this pilot's own (beyond a claim's limit, or
            # while pilots knew different rosters) would wait for the end of
            # the feed, behind every row that others wrote: ask for them now.
            mine = [doc_id for doc_id in self.skipped if self.roster.owns(doc_id)] \
                if self._crowded() else []
            if mine:
                docs = self._recheck(db, now, window, mine)
            if not docs and exhausted:
                docs = self._recheck(db, now, window)
                if self.share_scans:
                    self._share(db, docs)
        if docs and self._scanning():
            self._write_scan(db, scanner=None)  # found work: others scan for themselves
        return Window(docs, exhausted, in_order=True, contested=self._contested())

    def _crowded(self) -> bool:
        return self.roster is not None and self.roster.size > 1

    def _me(self) -> str | None:
        """This pilot's id, as the shared scan names it (None without a roster)."""
        return self.roster.pilot_id if self.roster is not None else None

    def _scanning(self) -> bool:
        """Whether the shared scan, as this pilot last saw it, says it reads on."""
        return self._me() is not None and self._scan.get("scanner") == self._me()

    def _due(self, now: float) -> list[str]:
        """Watched tokens whose lease ran out."""
        return [doc_id for doc_id, expires in self.watch.items() if expires < now]

    def _contested(self) -> bool:
        """Whether this pilot lost a race lately: others read the same rows."""
        return self._lost_at is not None and time.monotonic() - self._lost_at < CONTESTED_FOR

    def _catch_up(self, db: Database) -> None:
        """Jump to where another pilot's scan ended; while another pilot is
        scanning, wait for its end rather than read the same rows at once.

        Pilots run out of work at about the same time, and each would read
        every row the others wrote. Next to others, a pilot that reads on
        says so in the shared document (again at every window) and the rest
        wait; a scanner silent for SCAN_STALE seconds (of the waiter's own
        clock) is passed over.
        """
        me = self._me()
        while True:
            scan = db.find(SCANNED_ID) or {}
            self._scan = scan
            if self._jump(scan) or shutdown.requested.is_set():
                return
            rev, now = scan.get("_rev"), time.monotonic()
            if rev != self._seen_rev:
                self._seen_rev, self._seen_at = rev, now
            if scan.get("scanner") not in (None, me) and now - self._seen_at < SCAN_STALE:
                shutdown.requested.wait(SCAN_POLL)
                continue
            # Alone (as far as it knows), a pilot does not spend a write on saying so.
            if not self._crowded() or self._write_scan(db, scanner=me):
                return

    def _jump(self, scan: dict) -> bool:
        """Move to the end of a scan shared after this pilot's last read (and
        so, most likely, ahead of its cursor)."""
        seq, at, open_ids = scan.get("seq"), scan.get("at"), scan.get("open") or []
        if seq is None or seq == self._scan_seq or not isinstance(at, (int, float)) \
                or at <= self._read_at:
            return False
        self._scan_seq = self.cursor = seq
        # When the scan ended, nothing up to its seq was claimable but the
        # open tokens: a token claimable now that is not open has changed
        # since, and so lies ahead. The open ones are this pilot's to recheck.
        self.skipped = dict.fromkeys(str(doc_id) for doc_id in open_ids)
        return True

    def _share(self, db: Database, docs: list[dict]) -> None:
        """Say that nothing up to the cursor is claimable but the tokens
        still open (best effort: too many open, and the scan is not shared)."""
        # A recheck reads one window's worth: leases that ran out beyond it count too.
        now = time.time()
        open_ids = list(dict.fromkeys([doc["_id"] for doc in docs] + list(self.skipped)
                                      + self._due(now)))
        if len(open_ids) > MAX_OPEN:
            if self._scanning():
                self._write_scan(db, scanner=None)
            return
        if (self.cursor, open_ids) == (self._scan_seq, self._scan.get("open")) \
                and not self._scanning():
            return  # said already
        if self._write_scan(db, seq=self.cursor, at=now, open=open_ids, scanner=None):
            self._scan_seq = self.cursor

    def _write_scan(self, db: Database, **fields: object) -> bool:
        """Rewrite the shared scan with ``fields``; False when another pilot wrote it first."""
        doc = {key: value for key, value in self._scan.items() if key in ("seq", "at", "open")}
        doc.update({key: value for key, value in fields.items() if value is not None})
        doc["_id"] = SCANNED_ID
        if self._scan.get("_rev"):
            doc["_rev"] = self._scan["_rev"]
        try:
            db.put(doc)
        except errors.Conflict:
            return False
        self._scan = doc
        return True

    def attempted(self, docs: list[dict], lost: int = 0) -> None:
        """Move the cursor past the window's last attempted row (or all of it,
        when nothing was attempted or pilots divide it); remember the
        claimable rows skipped."""
        if lost:
            self._lost_at = time.monotonic()
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

    def _recheck(self, db: Database, now: float, window: int,
                  keys: list[str] | None = None) -> list[dict]:
        """Read again the given skipped rows, or all skipped rows and the
        watched ones whose lease ran out."""
        if keys is None:
            keys = list(self.skipped) + self._due(now)
        keys = keys[:window]
        if not keys:
            return []
        rows = db.all_docs(keys=keys, include_docs=True)["rows"]
        docs = []
        for row in rows:
            doc = row.get("doc") or {}
            if claimable(doc, now):
                docs.append(doc)  # stays remembered until attempted
            else:
                # Written since: it sits past the cursor now, or is gone.
                self.watch.pop(row["key"], None)
                self.skipped.pop(row["key"], None)
        return docs


def claimable(doc: dict, now: float | None = None) -> bool:
    """Todo, or locked under a lease that has run out."""
    return state.classify(doc) is TokenState.TODO or state.lease_expired(doc, now)


@dataclass
class ClaimResult:
    tokens: list[dict] = field(default_factory=list)
    conflicts: int = 0
    #: tokens whose expired lease this claim took over
    recovered: int = 0
    #: claimable tokens seen (the whole backlog, when the source knows it)
    backlog: int = 0


def _order(candidates: list[dict], rng: random.Random) -> list[dict]:
    """Highest priority first; random within a priority so pilots spread out."""
    rng.shuffle(candidates)
    return sorted(candidates, key=lambda doc: -_priority(doc))


def _preferred(candidates: list[dict], pilot_id: str, want: int) -> list[dict]:
    """The ``want`` candidates this pilot prefers, in their original order.

    Pilots reading the same window would all take its first rows, and all
    but one would lose the race. So once a pilot has lost one, it prefers
    the tokens whose id hashes closest after its own id's hash on a circle
    (as in consistent hashing): pilots divide a window between them without
    talking, and only pilots whose hashes are close compete.
    """
    origin = point(pilot_id)
    ranked = sorted(range(len(candidates)),
                    key=lambda i: (point(candidates[i]["_id"]) - origin) % 1.0)
    return [candidates[i] for i in sorted(ranked[:want])]


def _priority(doc: dict) -> float:
    try:
        return float(doc.get("priority") or 0)
    except (TypeError, ValueError):
        return 0.0


def _take(doc: dict, holder: Holder, lease_seconds: float, now: float) -> tuple[dict, bool]:
    """The locked revision to write for a claimable candidate, and whether it was recovered."""
    if not state.lease_expired(doc, now):
        return state.lock(doc, holder, lease_seconds, now), False
    recovered = state.expire(doc, now=now)
    if state.classify(recovered) is TokenState.TODO:
        return state.lock(recovered, holder, lease_seconds, now), True
    return recovered, True  # out of retries: written as error, not claimed


def claim(db: Database, holder: Holder, *, limit: int = 1,
          lease_seconds: float = DEFAULT_LEASE, source: Source | None = None,
          accept: Callable[[dict], bool] | None = None,
          rounds: int = 5, rng: random.Random | None = None,
          roster: Roster | None = None) -> ClaimResult:
    """Lock up to ``limit`` claimable tokens for ``holder``.

    Returns the locked tokens (with their new ``_rev``); an empty result
    means there is nothing to claim now, a normal outcome. ``accept`` can
    skip candidates (for example tokens that would not fit in the walltime
    left). ``source`` defaults to the ``Pilot/todo_by_priority`` view.
    With a ``roster``, pilots that race for the same feed rows divide them.
    """
    rng = rng or random.Random()
    source = source or ViewSource()
    result = ClaimResult()
    if roster is not None and roster.size > 1:
        # Read about as many rows as hold this pilot's share of the claim, a
        # little less: what it owns beyond the limit would wait for the end.
        window = min(max(MIN_WINDOW, math.ceil(0.8 * limit / roster.share)), MAX_WINDOW)
    else:
        window = max(MIN_WINDOW, SHARE * limit)
    lost_rounds = stale_windows = 0
    while lost_rounds < rounds and stale_windows < rounds:
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
            source.attempted(got.docs)  # none acceptable here: move past them
            # A feed read moves its cursor on, so reading on always ends;
            # a view answers the same stale rows until its index catches up.
            stale_windows += not got.in_order
            continue
        share = max(1, math.ceil(len(candidates) / SHARE)) if got.backlog is None \
            else max(1, math.ceil(got.backlog / (2 * SHARE)))
        want = min(limit - len(result.tokens), share)
        owned = roster.owned(db, list(candidates.values())) \
            if got.in_order and got.contested and roster is not None else []
        if owned:
            chosen = owned[:limit - len(result.tokens)]
        elif got.in_order and got.contested:
            chosen = _preferred(list(candidates.values()), holder.pilot_id, want)
        elif got.in_order:
            # Alone (as far as we know): a run from the front, skipping nothing.
            chosen = list(candidates.values())[:want]
        else:
            chosen = _order(list(candidates.values()), rng)[:want]
        picked = [_take(doc, holder, lease_seconds, now) for doc in chosen]
        outcomes = db.bulk_docs([doc for doc, _ in picked])
        lost = sum("error" in o for o in outcomes)
        source.attempted(chosen, lost=lost)
        if lost and roster is not None:
            roster.lost_race()
        for (doc, recovered), outcome in zip(picked, outcomes):
            if "error" in outcome:
                result.conflicts += 1
                continue
            result.recovered += recovered
            if state.classify(doc) is TokenState.LOCKED:
                result.tokens.append(doc)
        if result.tokens:
            # Possibly fewer than asked for when others won some races:
            # good enough, the caller comes back for more.
            return result
        lost_rounds += 1
    return result


def release(db: Database, tokens: list[dict]) -> int:
    """Give back tokens that were claimed but never started; return how many."""
    released = [state.release(doc) for doc in tokens if state.classify(doc) is TokenState.LOCKED]
    if not released:
        return 0
    outcomes = db.bulk_docs(released)
    return sum(1 for o in outcomes if "error" not in o)
