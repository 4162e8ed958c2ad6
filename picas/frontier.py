"""Where in the changes feed the unfinished work begins, shared by the pilots.

A pilot reads the changes feed from a cursor. Started from the beginning,
a new pilot would read past every finished token first: at a million
finished tokens that is a minute of the server's time before it finds
the last few todo ones (CouchDB's feed filter still reads every change).

What lies behind a pilot's cursor stays settled: a token that becomes
claimable again is written (reset, unhold, retry), and a write moves it
to the front of the feed. The exceptions are few and the pilot keeps
them by id: locked tokens, whose lease may run out without a write, and
claimable tokens it skipped. So a pilot publishes its cursor with those
ids as the pool's *frontier* (a ``_local`` document: never replicated,
never in a view or the feed), and a new pilot starts there.

A frontier is only ever a shortcut: one that is missing, old or lost in
a race costs reading, never a token.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from . import errors
from .database import Database
from .update import update

log = logging.getLogger(__name__)

FRONTIER_ID = "_local/picas.frontier"
#: A frontier with more ids to keep than this is not published (it would
#: cost every new pilot more than reading the feed).
MAX_IDS = 2000


@dataclass
class Frontier:
    """A feed position, and the tokens behind it that may still need a look."""

    since: Any = 0
    #: locked tokens behind ``since``: id -> when their lease expires
    watch: dict[str, float] = field(default_factory=dict)
    #: claimable tokens behind ``since`` that nobody has tried yet
    skipped: list[str] = field(default_factory=list)


def position(seq: Any) -> int:
    """How far along the feed a sequence is: CouchDB's are ``"N-..."`` (N the
    sum over shards), pouchdb-server's plain numbers."""
    try:
        return int(str(seq).split("-", 1)[0])
    except ValueError:
        return 0


def load(db: Database) -> Frontier:
    """The published frontier, or the start of the feed."""
    doc = db.find(FRONTIER_ID)
    if not doc:
        return Frontier()
    watch = doc.get("watch")
    skipped = doc.get("skipped")
    return Frontier(
        since=doc.get("since", 0),
        watch={str(k): float(v) for k, v in watch.items()
               if isinstance(v, (int, float))} if isinstance(watch, dict) else {},
        skipped=[str(i) for i in skipped] if isinstance(skipped, list) else [])


def publish(db: Database, frontier: Frontier) -> bool:
    """Store ``frontier`` unless a published one is further along; True when stored.
    (Callers keep it to :data:`MAX_IDS` ids: a new pilot reads them all.)

    Best effort: a frontier that cannot be written is left for the next try.
    """
    def move(current: dict | None) -> dict | None:
        if current and position(current.get("since")) >= position(frontier.since):
            return None
        return {"_id": FRONTIER_ID, **({"_rev": current["_rev"]} if current else {}),
                "since": frontier.since, "watch": frontier.watch,
                "skipped": frontier.skipped}

    try:
        return update(db, FRONTIER_ID, move) is not None
    except (errors.ConnectionFailed, errors.ServerError, errors.Conflict,
            errors.PermissionDenied) as exc:
        log.debug("frontier not published: %s", exc)
        return False
