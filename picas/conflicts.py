"""Tokens with several branches: how they arise, and how exactly one survives.

On a CouchDB cluster a write goes to every replica of a document and is
confirmed (201) once a quorum of them stored it. Two pilots that lock
the same revision at once can split the replicas: one lock gets the
quorum; the other is answered 202 (``"accepted": true``) and lives on as
a conflicting branch once the replicas exchange their revisions. Nothing
on the document says which branch had the quorum, so:

* a pilot runs a token only on a confirmed lock; an unconfirmed one it
  marks *in doubt* (:func:`picas.state.withdraw`) and leaves;
* whoever meets a token with branches reads all of them from a quorum
  (:meth:`picas.database.Database.leaves`), keeps one by :func:`survivor`,
  and deletes the others.

The rule keeps what must not be thrown away: a finished attempt before a
running lock, a running lock before anything else, and never one running
lock over another (only the confirmed one runs, and nothing tells which
that is: such a token waits until one finishes or a lease runs out).
Attempts recorded on any branch are kept on the survivor.
"""
from __future__ import annotations

import logging
import time

from . import designdocs, errors, state
from .database import Database
from .state import TokenState
from .token import Token

log = logging.getLogger(__name__)

_FINISHED = (TokenState.DONE, TokenState.ERROR, TokenState.CANCELLED)


def _rank(doc: Token, now: float, ended: set) -> int:
    """How much a branch must be kept: higher wins. A lock whose lease has
    an attempt recorded, on any branch, is over, as one that ran out."""
    found = state.classify(doc)
    if found in _FINISHED:
        return 4
    if found is TokenState.LOCKED:
        if state.in_doubt(doc):
            return 0
        over = state.lease_expired(doc, now) or state.lease_id(doc) in ended
        return 1 if over else 3
    return 2


def _rev_order(doc: Token) -> tuple[int, str]:
    """CouchDB's own order of branches: the longer history, then the larger hash."""
    pos, _, digest = str(doc.get("_rev", "0-")).partition("-")
    return (int(pos) if pos.isdigit() else 0, digest)


def survivor(leaves: list[Token], now: float | None = None) -> Token | None:
    """The revision to keep of a document's live (non-deleted) leaves, with the
    attempts of every branch on it; None while that cannot be decided."""
    now = time.time() if now is None else now
    ended = {attempt.get("lease") for doc in leaves for attempt in doc.get("attempts", [])}
    ranks = {doc["_rev"]: _rank(doc, now, ended) for doc in leaves}
    ranked = sorted(leaves, key=lambda doc: (ranks[doc["_rev"]], _rev_order(doc)), reverse=True)
    best = ranked[0]
    if ranks[best["_rev"]] == 3:
        running = {state.lease_id(doc) for doc in leaves if ranks[doc["_rev"]] == 3}
        if len(running) > 1:
            return None
    return state.merge_branches(best, ranked[1:])


def live_leaves(db: Database, doc_id: str) -> list[Token]:
    """The branches of a document that are not deleted, read from a quorum."""
    return [doc for doc in db.leaves(doc_id) if not doc.get("_deleted")]


def current(db: Database, doc_id: str, now: float | None = None) -> Token | None:
    """The token's one revision, resolving branches first; None when the
    document is gone or its branches cannot be resolved yet."""
    leaves = live_leaves(db, doc_id)
    return settle(db, leaves, now) if leaves else None


def settle(db: Database, leaves: list[Token], now: float | None = None) -> Token | None:
    """The one live leaf, or the survivor of several once resolved (None
    while that cannot be decided). ``leaves`` must not be empty."""
    return leaves[0] if len(leaves) == 1 else resolve(db, leaves, now)


def resolve(db: Database, leaves: list[Token], now: float | None = None) -> Token | None:
    """Keep the survivor of ``leaves`` (one document's live leaves) and delete
    the other branches; return the survivor as written, or None when it
    cannot be decided yet or another writer came first (try again later)."""
    kept = survivor(leaves, now)
    if kept is None:
        return None
    base = next(doc for doc in leaves if doc["_rev"] == kept["_rev"])
    try:
        if kept != base:
            db.put(kept)
        for doc in leaves:
            if doc["_rev"] != base["_rev"]:
                db.delete(doc["_id"], doc["_rev"])
    except (errors.Conflict, errors.NotFound, errors.WriteInDoubt) as exc:
        log.info("branches of %s changed while resolving them: %s", base["_id"], exc)
        return None
    log.info("resolved %d branches of %s", len(leaves), base["_id"])
    return kept


def resolve_all(db: Database, now: float | None = None) -> tuple[int, int]:
    """Resolve every token with branches (from ``Monitor/conflicts``); return
    how many were resolved and how many must wait (two running locks)."""
    resolved = waiting = 0
    ids = [row["id"] for row in db.iter_view(designdocs.MONITOR, "conflicts", reduce=False,
                                             key="conflicts")]
    for doc_id in ids:
        leaves = live_leaves(db, doc_id)
        if len(leaves) <= 1:
            continue  # resolved by someone else meanwhile
        if resolve(db, leaves, now) is None:
            waiting += 1
        else:
            resolved += 1
    return resolved, waiting
