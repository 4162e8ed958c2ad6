"""The pilots working on a pool, so that they can divide contested work.

Pilots that read the same window of the changes feed would all go for
the same tokens. Knowing each other, they need not: every pilot has
POINTS places on a circle (hashes of its id), and a token belongs to the
pilot with the nearest place at or before the token's own (consistent
hashing). Each takes the tokens it owns, so no two pilots race for one
and none is left over. The list lives in one ``_local`` document, which
CouchDB keeps out of the changes feed and out of replication.

The roster is only a hint. A token still goes to whoever writes its lock
first; a pilot missing from the roster, or gone without leaving it,
only makes the division uneven until the others read the roster again,
and tokens nobody took are claimed later like any other skipped row.
"""
from __future__ import annotations

import bisect
import time
import zlib

from . import errors
from .database import Database

ROSTER_ID = "_local/picas.pilots"
#: An entry not renewed for this long belongs to a pilot that is gone.
STALE = 60.0
#: How often a pilot renews its own entry.
RENEW = STALE / 3
#: Read the roster again after this long, or sooner after a lost race.
REREAD = 5.0
#: ...but not more often than this.
MIN_REREAD = 1.0
#: Points per pilot: with one each, eight pilots' shares of the circle
#: differ by 10x or more; with many, each owns close to an equal share.
POINTS = 32


def point(name: str) -> float:
    """A stable place in [0, 1) for a name (the same in every process)."""
    return zlib.crc32(name.encode()) / 2 ** 32


class Roster:
    """This pilot's view of the pilots on a pool. No I/O until asked."""

    def __init__(self, pilot_id: str) -> None:
        self.pilot_id = pilot_id
        self._points = _points({pilot_id})
        self._joined_at: float | None = None
        self._read_at = 0.0
        self._stale_view = False

    def members(self, db: Database) -> list[str]:
        """The pilots on the pool, this one included, re-read when due."""
        now = time.time()
        if self._joined_at is None or now - self._joined_at > RENEW:
            self._write(db, now, join=True)
        elif now - self._read_at > REREAD or (self._stale_view and now - self._read_at > MIN_REREAD):
            self._set(self._read(db)[0], now)
        return sorted({name for _, name in self._points})

    def lost_race(self) -> None:
        """Someone took a token this pilot thought it owned: read the roster soon."""
        self._stale_view = True

    def leave(self, db: Database) -> None:
        """Take this pilot off the roster (best effort: it goes stale anyway)."""
        if self._joined_at is None:
            return
        try:
            self._write(db, time.time(), join=False)
        except errors.PicasError:
            pass

    @property
    def size(self) -> int:
        """How many pilots this pilot knows of (itself included)."""
        return len(self._points) // POINTS

    @property
    def share(self) -> float:
        """The fraction of the circle, and so of any window, this pilot owns."""
        points = self._points
        owned = 0.0
        for i, (start, name) in enumerate(points):
            if name == self.pilot_id:
                end = points[i + 1][0] if i + 1 < len(points) else points[0][0] + 1.0
                owned += end - start
        return owned

    def owned(self, db: Database, docs: list[dict]) -> list[dict]:
        """The documents that belong to this pilot, in their order (the
        roster is read first when due)."""
        try:
            self.members(db)
        except errors.Conflict:
            pass  # the roster is busy: divide by what is known
        return [doc for doc in docs if self.owns(doc["_id"])]

    def owns(self, doc_id: str) -> bool:
        """Whether a token belongs to this pilot, as far as it knows now."""
        points = self._points
        i = bisect.bisect_right(points, (point(doc_id), "\uffff")) - 1
        return points[i][1] == self.pilot_id  # i == -1 wraps around to the last

    def _read(self, db: Database) -> tuple[dict, dict]:
        doc = db.find(ROSTER_ID) or {"_id": ROSTER_ID}
        pilots = doc.get("pilots")
        return (pilots if isinstance(pilots, dict) else {}), doc

    def _write(self, db: Database, now: float, join: bool) -> None:
        for _ in range(10):
            pilots, doc = self._read(db)
            pilots = {name: seen for name, seen in pilots.items()
                      if isinstance(seen, (int, float)) and now - seen < STALE
                      and name != self.pilot_id}
            if join:
                pilots[self.pilot_id] = now
            doc["pilots"] = pilots
            try:
                db.put(doc)
            except errors.Conflict:
                continue
            self._joined_at = now if join else None
            self._set(pilots, now)
            return
        raise errors.Conflict(f"{ROSTER_ID} kept changing: too many pilots joining at once")

    def _set(self, pilots: dict, now: float) -> None:
        names = {name for name, seen in pilots.items()
                 if isinstance(seen, (int, float)) and now - seen < STALE}
        names.add(self.pilot_id)
        self._points = _points(names)
        self._read_at = now
        self._stale_view = False


def _points(names: set[str]) -> list[tuple[float, str]]:
    return sorted((point(f"{name}/{i}"), name) for name in names for i in range(POINTS))
