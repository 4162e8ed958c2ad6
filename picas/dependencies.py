"""Tokens that wait for others: checking them at add time, releasing them later.

A token added ``after`` other tokens is stored waiting (see
:mod:`picas.state`), which no claim source offers as work: on Apache
CouchDB the feed's filter keeps it from pilots altogether, and
pouchdb-server's unfiltered feed sends each write of it once. It is
released by a write: each parent lists its ``dependents``,
and whoever writes a parent's end (the pilot's result writer, ``picas
tokens`` operations) then tells those dependents, which strike the parent
from their ``waiting_for`` (:func:`picas.state.follow`). A release costs
one bulk read and one bulk write per batch of dependents, whatever the
number of waiting tokens in the pool.

At add time, :func:`picas.shaping.check` collects the ``after`` of the
tokens that have one (refusing cycles), :func:`plan` refuses unknown ids
and works out ``dependents`` and gates from those edges alone, and
:mod:`picas.adding` sets them on each token as it streams past. The
writes may come in any order: :func:`settle` then reads the new waiting
tokens' parents, which releases a token whose parents ended before it
was written.

If a pilot dies between a parent's result and the release, the waiting
token stays waiting with its parents done; :func:`recheck` (``picas
recover``) reads the parents of every waiting token and finds it.

A token that waits for more than :data:`GATE_SIZE` others waits for them
through *gates* (:func:`gate`): tokens without a command, each waiting for
up to GATE_SIZE of them, which their last parent's release marks done
instead of todo. So no release rewrites a list longer than GATE_SIZE,
and a fan-in of n tokens costs O(n) in reads and bytes, not O(n^2).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from . import errors, state
from .database import Database, confirmed
from .designdocs import MONITOR
from .state import TokenState
from .token import Token
from .update import update_many

log = logging.getLogger(__name__)

#: Documents per bulk request.
BATCH = 500
#: The parent's states that its dependents hear of from the pilot's result writer.
ENDS = (TokenState.DONE, TokenState.ERROR, TokenState.CANCELLED)
#: The most tokens that one token waits for directly; more go through gates.
GATE_SIZE = 100


def parents_of(token: Token) -> list[str]:
    """The tokens whose end releases ``token``: what it waits for, gates included."""
    return list(token.get("waiting_for") or [])


def _gates(child: str, waits: list[str]) -> tuple[list[str], list[Token]]:
    """What ``child`` waits for directly, and the gates it then needs: one
    per GATE_SIZE of ``waits`` (which may wait for gates again)."""
    size = GATE_SIZE
    gates: list[Token] = []
    level = 0
    while len(waits) > size:
        level += 1
        layer = [state.gate(f"{child}.gate{level}-{n}", waits[i:i + size])
                 for n, i in enumerate(range(0, len(waits), size))]
        gates.extend(layer)
        waits = [g["_id"] for g in layer]
    return waits, gates


# -- add time -------------------------------------------------------------------

@dataclass
class Plan:
    """What an add sets on its tokens for their ``after``, kept for the tokens
    that have one (and their parents) only, so plain tokens stream past."""

    #: token (or gate) -> what it waits for directly
    waits: dict[str, list[str]]
    #: token -> the tokens (or gates) that wait for it
    dependents: dict[str, list[str]]
    #: gates to write besides the input's tokens
    gates: list[Token]

    def fit(self, token: Token) -> Token:
        """``token`` with the ``waiting_for`` and ``dependents`` of this plan."""
        own = token["_id"]
        if own not in self.waits and own not in self.dependents:
            return token
        token = dict(token)
        if own in self.waits:
            token["waiting_for"] = list(self.waits[own])
        if own in self.dependents:
            known = token.get("dependents") or []
            token["dependents"] = list(dict.fromkeys([*known, *self.dependents[own]]))
        return token


def plan(db: Database, after: dict[str, list[str]], ids: Callable[[], Iterable[str]]) -> Plan:
    """The plan for an input whose tokens wait as ``after`` says (id -> its
    after, checked for cycles by :func:`picas.shaping.check`).

    Refuses ids that are neither in the input nor in ``db``: those not in
    the database are looked for among the input's ``ids`` (read again only
    then, since a plain token may be a parent). Tokens in ``db`` cannot
    wait for new ones, so no cycle goes through them.
    """
    named = sorted({p for parents in after.values() for p in parents} - after.keys())
    missing = set(named) - _existing(db, named)
    if missing:
        for token_id in ids():
            missing.discard(token_id)
            if not missing:
                break
    if missing:
        unknown = sorted(missing)
        waiting = {p: child for child, parents in after.items() for p in parents
                   if p in missing}
        shown = ", ".join(f"'{p}' (after of '{waiting[p]}')" for p in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise errors.InvalidToken(f"unknown token {shown}{more}: not in the input nor in "
                                  f"database '{db.name}'; nothing was added")
    waits: dict[str, list[str]] = {}
    gates: list[Token] = []
    for child, parents in after.items():
        waits[child], extra = _gates(child, list(dict.fromkeys(parents)))
        gates.extend(extra)
        waits.update((g["_id"], parents_of(g)) for g in extra)
    dependents: dict[str, list[str]] = {}
    for child, parents in waits.items():
        for parent in parents:
            dependents.setdefault(parent, []).append(child)
    found = Plan(waits, dependents, [])
    found.gates = [found.fit(g) for g in gates]
    return found


def _existing(db: Database, ids: list[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(ids), BATCH):
        rows = db.all_docs(keys=ids[start:start + BATCH])["rows"]
        found.update(row["key"] for row in rows
                     if "error" not in row and not row.get("value", {}).get("deleted"))
    return found


def settle(db: Database, done: Plan) -> Recheck:
    """After an add: record the new waiting tokens on parents that were there
    already (or were written without them), then read their parents' states
    again: a parent that ended before its dependents were written is heard
    of here, so the order of the writes does not matter."""
    parents = list(done.dependents)

    def add(doc: Token | None) -> Token | None:
        if doc is None:
            return None
        known = list(doc.get("dependents") or [])
        seen = set(known)
        new = [c for c in done.dependents[doc["_id"]] if c not in seen]
        return {**doc, "dependents": known + new} if new else None

    for start in range(0, len(parents), BATCH):
        _, pending = update_many(db, parents[start:start + BATCH], add)
        if pending:
            raise errors.Conflict(f"{len(pending)} parent token(s) kept changing while their "
                                  "dependents were recorded: add the same input again")
    return recheck(db, list(done.waits))


# -- release ----------------------------------------------------------------------

def tell(db: Database, written: Iterable[Token], ends: Iterable[TokenState] = ENDS) -> int:
    """Tell the dependents of the parents just ``written`` in what state they
    are now (only those in ``ends``); return how many dependents became todo.

    Call it only with confirmed writes. A failure here loses no release for
    good: ``picas recover`` finds waiting tokens whose parents are done.
    """
    news = _news(written, ends)
    if not news:
        return 0
    try:
        return _tell(db, news)
    except (errors.ConnectionFailed, errors.ServerError, errors.Conflict) as exc:
        log.warning("could not release %d dependent token(s) (%s): `picas recover` will",
                    len(news), exc)
        return 0


def _news(written: Iterable[Token], ends: Iterable[TokenState]
          ) -> dict[str, dict[str, TokenState | None]]:
    """For each dependent of ``written``: its parents' states, those in ``ends``."""
    wanted = set(ends)
    news: dict[str, dict[str, TokenState | None]] = {}
    for doc in written:
        now = state.classify(doc)
        if now in wanted:
            for child in doc.get("dependents") or []:
                news.setdefault(child, {})[doc["_id"]] = now
    return news


def _tell(db: Database, news: dict[str, dict[str, TokenState | None]]) -> int:
    """Apply each child's news (parent -> state) to it, conflict-safe."""
    released = 0

    def change(doc: Token | None) -> Token | None:
        return None if doc is None else state.follow(doc, news[doc["_id"]])

    ids = [child for child, parent_news in news.items() if parent_news]
    opened: list[Token] = []
    for start in range(0, len(ids), BATCH):
        answered, pending = update_many(db, ids[start:start + BATCH], change)
        written = [doc for doc, result in answered if confirmed(result)]
        released += sum(1 for doc in written if state.classify(doc) is TokenState.TODO)
        opened += [doc for doc in written if state.classify(doc) is TokenState.DONE]
        if pending:
            log.warning("%d dependent token(s) kept changing: `picas recover` releases them",
                        len(pending))
    if opened:  # gates whose parents are all done: done themselves, they tell theirs
        released += _tell(db, _news(opened, (TokenState.DONE,)))
    if released:
        log.info("released %d token(s) whose parents are done", released)
    return released


# -- repair -------------------------------------------------------------------------

@dataclass
class Recheck:
    """What :func:`recheck` found among the waiting tokens."""

    waiting: int = 0
    released: int = 0
    blocked: int = 0


def recheck(db: Database, ids: list[str] | None = None) -> Recheck:
    """Read the parents of waiting tokens (all of them, or ``ids``) and apply
    their states: releases that a pilot could not write, and up-to-date
    ``blocked_by`` for parents that failed or were cancelled outside a pilot.

    Reads every waiting token once and each parent once (a view, so not
    for the claim path: ``picas recover`` and ``picas tokens reset`` use it).
    """
    if ids is None:
        try:
            ids = [row["id"] for row in db.iter_view(MONITOR, "waiting")]
        except errors.ViewNotFound:  # views from before picas knew of dependencies
            ids = []
    report = Recheck()
    for start in range(0, len(ids), BATCH):
        rows = db.all_docs(keys=ids[start:start + BATCH], include_docs=True)["rows"]
        children = [row["doc"] for row in rows if row.get("doc")
                    and state.classify(row["doc"]) is TokenState.WAITING]
        report.waiting += len(children)
        named = sorted({p for child in children for p in child.get("waiting_for") or []})
        found = _states(db, named)
        news = {child["_id"]: {p: found.get(p) for p in child.get("waiting_for") or []}
                for child in children}
        report.blocked += sum(1 for child in children
                              if (state.follow(child, news[child["_id"]]) or child)
                              .get("blocked_by"))
        report.released += _tell(db, news)
    return report


def _states(db: Database, ids: list[str]) -> dict[str, TokenState | None]:
    """The state of each token ``ids`` (None for one that is gone)."""
    found: dict[str, TokenState | None] = {}
    for start in range(0, len(ids), BATCH):
        rows = db.all_docs(keys=ids[start:start + BATCH], include_docs=True)["rows"]
        for row in rows:
            found[row["key"]] = state.classify(row["doc"]) if row.get("doc") else None
    return found


def blocked(db: Database) -> int:
    """Waiting tokens that a parent in error or cancelled holds up (0 on views
    from before picas knew of dependencies)."""
    try:
        rows = db.view(MONITOR, "blocked")["rows"]
    except errors.ViewNotFound:
        return 0
    return int(rows[0]["value"]) if rows else 0
