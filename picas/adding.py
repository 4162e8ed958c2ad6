"""Adding tokens in bulk: ``_bulk_docs``, a batch at a time.

A conflict means the id exists already: for a content-hash id that is the
same token, so it counts as existing rather than failed.

Tokens that wait for others (``after``) are checked against the database
first, and written before the rest, so that no parent can end before the
tokens waiting for it exist (see :mod:`picas.dependencies`).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from . import dependencies, pool
from .database import Database
from .shaping import token_id
from .token import Token

DEFAULT_BATCH = 500


@dataclass
class AddReport:
    """What an add did: ``existing`` tokens were in the database already."""

    added: int = 0
    existing: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    #: tokens given more than once in the same input (added once)
    duplicates: int = 0
    #: gates added for tokens that wait for many others (see picas.dependencies)
    gates: int = 0

    def merge(self, other: AddReport) -> None:
        self.added += other.added
        self.existing += other.existing
        self.failed.extend(other.failed)
        self.duplicates += other.duplicates
        self.gates += other.gates

    def as_dict(self) -> dict:
        return {"added": self.added, "existing": self.existing, "duplicates": self.duplicates,
                "gates": self.gates,
                "failed": [{"id": i, "reason": r} for i, r in self.failed]}


def _has_priority(token: Token) -> bool:
    try:
        return float(token.get("priority") or 0) != 0
    except (TypeError, ValueError):
        return False


def add(db: Database, tokens: Iterable[Token], batch: int = DEFAULT_BATCH,
        progress: Callable[[int], None] | None = None) -> AddReport:
    """Write new tokens with ``_bulk_docs``, ``batch`` at a time.

    A conflict means the id exists: for a content-hash id that is the same
    token, so it counts as ``existing``. A given ``_id`` counts as existing
    only when the stored token runs the same thing; otherwise it failed.
    ``progress`` gets the number of tokens done after each batch. A token
    ``after`` one that is neither given nor in the database adds nothing
    (:class:`errors.InvalidToken`).
    """
    report = AddReport()
    unique: dict[str, dict] = {}
    for token in tokens:
        if token["_id"] in unique:
            report.duplicates += 1
        else:
            unique[token["_id"]] = token
    items = list(unique.values())
    waiting = [token for token in items if dependencies.parents(token)]
    if waiting:
        dependencies.check(db, items)
        gates = dependencies.gate(waiting)
        items = waiting + gates + [token for token in items if not dependencies.parents(token)]
        waiting += gates
        dependencies.link(items)
    if any(_has_priority(token) for token in items):
        # Before the tokens exist, so that no pilot takes them out of order.
        pool.enable_priorities(db)
    added: set[str] = set()
    for start in range(0, len(items), batch):
        chunk = [dict(token) for token in items[start:start + batch]]
        _add_chunk(db, chunk, report, added)
        if progress is not None:
            progress(len(chunk))
    if waiting:
        # Parents that were there already learn of their new dependents only now.
        there = list(dict.fromkeys(p for token in waiting for p in dependencies.parents(token)
                                   if p not in added))
        dependencies.link_existing(db, waiting, there)
    return report


def _add_chunk(db: Database, chunk: list[Token], report: AddReport, added: set[str]) -> None:
    given_ids = []
    for doc, result in zip(chunk, db.bulk_docs(chunk), strict=True):
        if doc.get("gate"):  # not the caller's: counted apart, and there already is fine
            report.gates += "error" not in result
            added.add(doc["_id"])
        elif "error" not in result:
            report.added += 1
            added.add(doc["_id"])
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
