"""Following a set of tokens through one changes feed, in a background thread.

A client waiting for many tokens must not poll each one: a :class:`Watcher`
follows one ``_changes`` feed, filtered to the ids it watches, and hands
every change of those tokens to a callback. Each request is a long poll
(``feed=longpoll``) that the server answers at the first change, or after
:data:`WAIT` seconds: the filter can then take new ids, and the server
ends every request itself. (A continuous feed would have to be cut to
take new ids, and pouchdb-server keeps serving a cut continuous feed:
after a hundred of them its writes took 2.5 times as long.)

No change is missed between reads. The feed starts from a sequence taken
*before* the documents are read once in bulk; ids watched later are read
once in bulk too, after the feed's cursor already passed anything they
might have missed, and then join the filter. So every change is seen by
either that read or the feed, and some by both: the callback must be
idempotent. It must be anyway: a CouchDB cluster's feed is ordered only
per shard, and may replay changes after a node restarts.

Connection failures and server restarts are retried with backoff from the
last sequence seen; a sequence the server refuses starts over with a bulk
read. Errors that retrying cannot cure (the database is gone, the password
is wrong) end the thread and go to ``on_failure``.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from . import conflicts, errors
from .database import Database
from .token import Token

log = logging.getLogger(__name__)

#: Seconds that one request waits for a change: how soon the thread
#: notices new ids or a stop when nothing changes.
WAIT = 1.0
#: Seconds beyond WAIT after which a long poll is given up (pouchdb-server
#: ignores ``timeout`` and keeps it open until a change; it ends it when
#: the client goes, unlike a continuous feed).
GRACE = 2.0
#: Ids read per bulk request (small enough to be read within WAIT + GRACE).
READ_BATCH = 100
#: Backoff after a failed connection: from FIRST_DELAY, doubling up to MAX_DELAY.
FIRST_DELAY, MAX_DELAY = 0.5, 30.0
#: Errors that retrying cannot cure.
FATAL = (errors.AuthenticationFailed, errors.PermissionDenied, errors.DatabaseNotFound)


class Watcher:
    """Calls ``on_token(doc)`` for every change of a watched token.

    ``on_token`` runs in the watcher's thread, outside its lock; a deleted
    token comes as ``{"_id": ..., "_deleted": True}``. Nothing is sent
    before the first :meth:`watch`.
    """

    def __init__(self, db: Database, on_token: Callable[[Token], None],
                 on_failure: Callable[[Exception], None] | None = None,
                 wait: float = WAIT) -> None:
        self.db = db
        # The feed reads with a session of its own (the caller's is not ours to
        # share), and gives up on a long poll that the server does not end.
        self.feed_db = Database(db.transport.clone(timeout=wait + GRACE), db.name)
        self.on_token = on_token
        self.on_failure = on_failure
        self.wait = wait
        self._lock = threading.Condition()
        self._watched: set[str] = set()
        #: watched ids that the feed's filter does not have yet
        self._fresh: set[str] = set()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def watch(self, ids: list[str]) -> None:
        """Follow these tokens too (their current state is read first)."""
        with self._lock:
            if self._stopping:
                raise RuntimeError("this watcher was stopped")
            new = set(ids) - self._watched
            self._watched |= new
            self._fresh |= new
            self._lock.notify_all()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="picas-watch",
                                                daemon=True)
                self._thread.start()

    def unwatch(self, ids: list[str]) -> None:
        """Stop following these tokens (for instance because they finished)."""
        with self._lock:
            self._watched.difference_update(ids)
            self._fresh.difference_update(ids)

    def stop(self, timeout: float | None = None) -> None:
        """End the thread (within about :data:`WAIT` seconds) and wait for it."""
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- the thread ---------------------------------------------------------
    def _run(self) -> None:
        db = self.feed_db
        cursor: object = None
        delay = FIRST_DELAY
        try:
            while True:
                with self._lock:
                    while not self._watched and not self._stopping:
                        cursor = None  # idle: the next ids start from a fresh sequence
                        self._lock.wait()
                    if self._stopping:
                        return
                try:
                    if cursor is None:
                        cursor = db.info()["update_seq"]
                        with self._lock:
                            self._fresh = set(self._watched)
                    cursor = self._follow(db, cursor)
                    delay = FIRST_DELAY
                except FATAL:
                    raise
                except errors.RequestRejected as exc:
                    log.warning("the changes feed refused its position (%s); reading again", exc)
                    cursor = None
                except (errors.ConnectionFailed, errors.ServerError, errors.NotFound) as exc:
                    log.warning("following changes failed (%s); again in %.1f s", exc, delay)
                    with self._lock:
                        self._lock.wait_for(lambda: self._stopping, delay)
                    delay = min(2 * delay, MAX_DELAY)
        except FATAL as exc:
            log.error("stopped following changes: %s", exc)
            if self.on_failure is not None:
                self.on_failure(exc)
        finally:
            db.transport.close()

    def _follow(self, db: Database, cursor: object) -> object:
        """Read the fresh ids, then follow every watched id from ``cursor``
        until ids are added, all are unwatched, or the watcher stops;
        return the last sequence handled."""
        with self._lock:
            fresh, self._fresh = sorted(self._fresh), set()
            ids = sorted(self._watched)
        try:
            self._read(db, fresh)
        except errors.PicasError:
            with self._lock:  # read them again on the next try
                self._fresh |= set(fresh) & self._watched
            raise
        while ids:
            try:
                page = db.changes(doc_ids=ids, since=cursor, feed="longpoll", conflicts=True,
                                  timeout=int(self.wait * 1000), include_docs=True)
            except errors.TimedOut:
                # pouchdb-server does not end a quiet long poll, nor one on a
                # database removed meanwhile: ask whether the database is there.
                db.info()
                page = {"results": []}
            for row in page["results"]:
                self._deliver(db, row["id"], row.get("doc"), row.get("deleted", False))
            cursor = page.get("last_seq", cursor)
            with self._lock:
                if self._stopping or self._fresh or not self._watched:
                    break
        return cursor

    def _read(self, db: Database, ids: list[str]) -> None:
        """Hand over the current revision of each of ``ids``, read in bulk."""
        for start in range(0, len(ids), READ_BATCH):
            rows = db.all_docs(keys=ids[start:start + READ_BATCH], include_docs=True,
                               conflicts=True)["rows"]
            for row in rows:
                if "error" in row:
                    continue  # not there (yet): the feed will show it when it is
                deleted = bool((row.get("value") or {}).get("deleted"))
                self._deliver(db, row["key"], row.get("doc"), deleted)

    def _deliver(self, db: Database, doc_id: str, doc: Token | None, deleted: bool) -> None:
        with self._lock:
            if doc_id not in self._watched:
                return
        if deleted:
            doc = {"_id": doc_id, "_deleted": True}
        elif doc is None:
            return
        elif doc.get("_conflicts"):
            # Branches: only the one left after resolving them tells the state.
            doc = conflicts.current(db, doc_id)
            if doc is None:
                return  # not decidable yet; the resolution is a change of its own
        try:
            self.on_token(doc)
        except Exception:
            log.exception("handling a change of token %s failed", doc_id)
