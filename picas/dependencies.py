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
from collections.abc import Iterable
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


def parents(token: Token) -> list[str]:
    """The tokens whose end releases ``token``: what it waits for, gates included."""
    return list(token.get("waiting_for") or [])


def gate(tokens: list[Token]) -> list[Token]:
    """Gates for the tokens that wait for more than GATE_SIZE others; each
    such token then waits for its gates (which may wait for gates again)."""
    size = GATE_SIZE
    gates: list[Token] = []
    for token in tokens:
        waits, level = parents(token), 0
        while len(waits) > size:
            level += 1
            layer = [state.gate(f"{token['_id']}.gate{level}-{n}", waits[i:i + size])
                     for n, i in enumerate(range(0, len(waits), size))]
            gates.extend(layer)
            waits = [g["_id"] for g in layer]
        token["waiting_for"] = waits
    return gates


# -- add time -------------------------------------------------------------------

def check(db: Database, tokens: list[Token]) -> None:
    """Refuse ``tokens`` whose parents are neither among them nor in ``db``.

    Cycles among them were refused already when they were built
    (:func:`picas.shaping.build`); tokens in ``db`` cannot wait for new ones.
    """
    given = {token["_id"] for token in tokens}
    named = sorted({p for token in tokens for p in token.get("after") or []} - given)
    found = _existing(db, named)
    unknown = [p for p in named if p not in found]
    if unknown:
        waiting = {p: t["_id"] for t in tokens for p in t.get("after") or [] if p in unknown}
        shown = ", ".join(f"'{p}' (after of '{waiting[p]}')" for p in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise errors.InvalidToken(f"unknown token {shown}{more}: not in the input nor in "
                                  f"database '{db.name}'; nothing was added")


def _existing(db: Database, ids: list[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(ids), BATCH):
        rows = db.all_docs(keys=ids[start:start + BATCH])["rows"]
        found.update(row["key"] for row in rows
                     if "error" not in row and not row.get("value", {}).get("deleted"))
    return found


def link(tokens: list[Token]) -> None:
    """Record on each parent among ``tokens`` which of them wait for it."""
    by_id = {token["_id"]: token for token in tokens}
    found: dict[str, dict[str, None]] = {}
    for token in tokens:
        for parent in parents(token):
            if parent in by_id:
                found.setdefault(parent, {})[token["_id"]] = None
    for parent, children in found.items():
        known = by_id[parent].get("dependents") or []
        by_id[parent]["dependents"] = list(dict.fromkeys([*known, *children]))


def link_existing(db: Database, tokens: list[Token], outside: list[str]) -> int:
    """Add ``tokens`` to the ``dependents`` of their parents in ``db``, then
    tell them what state those parents are in; return the tokens released.

    Called after ``tokens`` are written: a parent that ends after this
    write tells them itself, one that ended before is told of here.
    """
    if not outside:
        return 0
    children: dict[str, list[str]] = {p: [] for p in outside}
    for token in tokens:
        for parent in parents(token):
            if parent in children:
                children[parent].append(token["_id"])

    def add(doc: Token | None) -> Token | None:
        if doc is None:
            return None
        known = list(doc.get("dependents") or [])
        seen = set(known)
        new = [c for c in children[doc["_id"]] if c not in seen]
        return {**doc, "dependents": known + new} if new else None

    written: list[Token] = []
    for start in range(0, len(outside), BATCH):
        chunk = outside[start:start + BATCH]
        answered, pending = update_many(db, chunk, add)
        if pending:
            raise errors.Conflict(f"{len(pending)} parent token(s) kept changing while their "
                                  "dependents were recorded: add the same input again")
        written.extend(doc for doc, result in answered if "error" not in result)
    wrote = {doc["_id"] for doc in written}
    unchanged = [p for p in outside if p not in wrote]
    news = {doc["_id"]: state.classify(doc) for doc in written}
    news.update(_states(db, unchanged))
    return _tell(db, {token["_id"]: {p: news[p] for p in parents(token) if p in news}
                      for token in tokens})


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
