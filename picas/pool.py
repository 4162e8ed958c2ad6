"""Settings of the token pool itself, kept in one document of the database.

Pilots claim from the changes feed by default, which needs no view index
and so is fast, but takes tokens in the order they were added. Once any
token has a priority, the pool says so here, and pilots switch to the
``Monitor/todo_by_priority`` view, which gives the highest priority first.
"""
from __future__ import annotations

from . import errors
from .database import Database
from .update import update

POOL_ID = "picas.pool"


def uses_priorities(db: Database) -> bool:
    try:
        return bool(db.get(POOL_ID).get("priorities"))
    except errors.DocumentNotFound:
        return False


def enable_priorities(db: Database) -> bool:
    """Mark the pool as using priorities; False if it already was."""

    def mark(doc: dict | None) -> dict | None:
        doc = doc or {"_id": POOL_ID, "type": "pool"}
        return None if doc.get("priorities") else {**doc, "priorities": True}

    return update(db, POOL_ID, mark) is not None
