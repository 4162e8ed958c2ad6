"""Read-modify-write of one document, read again on a conflict.

CouchDB's only lock is the ``_rev`` a write names: when someone else
wrote first, the write gets a 409 and the change has to be made again on
what is there now. Every such loop in picas is this one function, so the
number of tries and what happens when they run out are decided in one
place.
"""
from __future__ import annotations

from collections.abc import Callable

from . import errors
from .database import Database, confirmed

#: Writes before giving up: enough for a handful of writers racing for one document.
TRIES = 10

#: What to write, given the document as it is now (None: there is none);
#: None to write nothing.
Change = Callable[[dict | None], dict | None]
#: How to read the document as it is now (None: there is none).
Read = Callable[[Database, str], dict | None]


def read_plain(db: Database, doc_id: str) -> dict | None:
    """The winning revision, or None when there is no such document."""
    try:
        return db.get(doc_id)
    except errors.DocumentNotFound:
        return None


def update(db: Database, doc_id: str, change: Change, *, tries: int = TRIES,
           first: dict | None = None, read: Read = read_plain,
           in_doubt_too: bool = False) -> dict | None:
    """Write ``change(current)`` until a write is not refused for a stale ``_rev``.

    Returns the document written (with its new ``_rev``), or None when
    ``change`` had nothing to write. ``first``, when given, is taken as
    the current document for the first try instead of reading it.
    ``in_doubt_too`` also reads again after a write the server could not
    confirm (:class:`errors.WriteInDoubt`). ``read`` and ``change`` may
    raise :class:`errors.Conflict` themselves to ask for another try.
    Raises :class:`errors.Conflict` when every try lost a race.
    """
    again: tuple[type[errors.PicasError], ...] = (
        (errors.Conflict, errors.WriteInDoubt) if in_doubt_too else (errors.Conflict,))
    for n in range(tries):
        try:
            current = first if n == 0 and first is not None else read(db, doc_id)
            doc = change(current)
            if doc is None:
                return None
            db.put(doc)
        except again:
            continue
        return doc
    raise errors.Conflict(f"{doc_id} kept changing ({tries} tries): try again")


def update_many(db: Database, ids: list[str], change: Change, *,
                tries: int = TRIES) -> tuple[list[tuple[dict, dict]], list[str]]:
    """:func:`update` for many documents, a bulk read and a bulk write per try.

    ``change`` gets None for a document that is not there (deleted since
    it was chosen). Returns each document written or refused for another
    reason than a conflict, with the server's answer for it, and the ids
    that still lost a race after ``tries``.
    """
    answered: list[tuple[dict, dict]] = []
    pending = list(ids)
    for _ in range(tries):
        if not pending:
            break
        rows = db.all_docs(keys=pending, include_docs=True)["rows"]
        docs = [doc for doc in (change(row.get("doc")) for row in rows) if doc is not None]
        pending = []
        for doc, result in zip(docs, db.bulk_docs(docs), strict=True):
            if "error" not in result and not confirmed(result):
                # A cluster stored it on too few replicas: a write made meanwhile
                # may win. Keep one branch now, and apply the change again to it.
                # (Imported here: conflicts -> designdocs -> update would be a cycle.)
                from . import conflicts
                conflicts.current(db, doc["_id"])
                pending.append(doc["_id"])
            elif result.get("error") == "conflict":
                pending.append(doc["_id"])
            else:
                answered.append((doc, result))
    return answered, pending
