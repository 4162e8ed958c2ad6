"""Leases that heal themselves.

A claimed token carries a lease that ends at ``lease.expires``. While a
pilot holds tokens, a :class:`LeaseKeeper` thread renews their leases well
before they run out (a heartbeat). If the pilot dies (SIGKILL, lost node,
long network outage) the renewals stop, the lease runs out, and any pilot
that looks (:func:`recover_expired`) puts the token back in todo, counting
the lost attempt. No server-side process is involved, and every hand-over
is a compare-and-set on ``_rev``, so two pilots never both win.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterable

from . import conflicts, dependencies, designdocs, errors, state
from .database import Database, confirmed
from .token import Token

log = logging.getLogger(__name__)


def recover_expired(db: Database, now: float | None = None, limit: int = 500) -> int:
    """Put tokens whose lease ran out back in todo (or error); return how many.

    Safe to run from many pilots at once: a token renewed or recovered by
    someone else in the meantime is a conflict, and is left alone. Each
    token is read with all its branches first (:func:`conflicts.current`):
    a lease that ran out on one branch may sit beside a running lock.
    """
    now = time.time() if now is None else now
    rows = db.view(designdocs.MONITOR, "locked_by_expiry", endkey=now, limit=limit)["rows"]
    expired = []
    for row in rows:
        current = conflicts.current(db, row["id"], now)
        if current is not None and state.lease_expired(current, now):
            expired.append(state.expire(current, now=now))
    results = db.bulk_docs(expired)
    # Out of retries, some went to error: the tokens waiting for them say so.
    dependencies.tell(db, [doc for doc, r in zip(expired, results, strict=True) if confirmed(r)])
    recovered = sum(1 for r in results if confirmed(r))
    if recovered:
        log.info("recovered %d token(s) whose lease had expired", recovered)
    return recovered


class LeaseKeeper:
    """Renews the leases of the tokens this pilot holds, from a thread.

    The keeper owns the latest revision of each held token: the pilot
    hands a token over with :meth:`hold` and takes it back, with its
    current ``_rev``, via :meth:`take`. A renewal that meets a conflict
    re-reads the token: if the lease is still ours (someone only asked for
    a cancel, say) it renews on top of that; otherwise the lease is lost.
    """

    def __init__(self, db: Database, lease_seconds: float, interval: float | None = None) -> None:
        self.db = db
        self.lease_seconds = lease_seconds
        self.interval = interval if interval is not None else max(0.5, lease_seconds / 3)
        self._held: dict[str, dict] = {}
        #: until when the cluster confirmed each held lease (claims are
        #: confirmed locks; a renewal answered "accepted" does not count)
        self._until: dict[str, float] = {}
        #: tokens taken over by another pilot: our last revision of each
        self._lost: dict[str, dict] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.cancel_requested: set[str] = set()
        self.lost: set[str] = set()
        self.renewals = 0
        self.failures = 0

    def hold(self, tokens: Iterable[Token]) -> None:
        with self._lock:
            for token in tokens:
                self._held[token["_id"]] = token
                self._until[token["_id"]] = _expires(token)

    def take(self, token_id: str) -> Token | None:
        """Stop renewing ``token_id``; return our latest revision of it.

        For a token that was taken over, that is the revision we last held:
        its result then goes down as a late attempt, not nowhere.
        """
        with self._lock:
            self._until.pop(token_id, None)
            return self._held.pop(token_id, None) or self._lost.pop(token_id, None)

    def get(self, token_id: str) -> Token | None:
        """Our latest revision of a token still held (renewals change it)."""
        with self._lock:
            return self._held.get(token_id)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="picas-lease", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._wake.set()
            thread.join()
            self._wake.clear()

    def _loop(self) -> None:
        while not self._wake.wait(self.interval):
            try:
                self.renew()
            except errors.PicasError as exc:
                # The server may be back before the lease ends; keep trying.
                self.failures += 1
                log.warning("could not renew leases: %s", exc)

    def renew(self) -> None:
        """Extend every held lease from now, in one request."""
        with self._lock:
            held = list(self._held.values())
            if not held:
                return
            renewed = [state.renew(token, self.lease_seconds) for token in held]
            results = self.db.bulk_docs(renewed)
            now = time.time()
            for token, result in zip(renewed, results, strict=True):
                if confirmed(result):
                    self._held[token["_id"]] = token
                    self._until[token["_id"]] = _expires(token)
                elif "error" not in result and self._until.get(token["_id"], math.inf) < now:
                    # The lease the cluster confirmed had run out before this
                    # renewal, which it did not confirm: another pilot may hold
                    # the token by now, so this one must not count on it.
                    self._give_up(token["_id"], token)
                else:
                    self._resolve(token, written="error" not in result)
            self.renewals += 1

    def _give_up(self, token_id: str, mine: Token) -> None:
        log.warning("lease on %s was taken over", token_id)
        self.lost.add(token_id)
        self._until.pop(token_id, None)
        self._lost[token_id] = self._held.pop(token_id, mine)

    def _resolve(self, mine: Token, written: bool = False) -> None:
        """A renewal conflicted, or was not confirmed (``written``): find out
        whether the lease is still ours, resolving branches if there are any."""
        token_id = mine["_id"]
        if written:
            self._held[token_id] = mine  # our newest revision, wherever it lives now
        leaves = conflicts.live_leaves(self.db, token_id)
        current = conflicts.settle(self.db, leaves) if leaves else None
        if leaves and current is None:
            return  # cannot be decided yet: renew on our branch, look again next beat
        if current is None or not state.held_under(current, state.lease_id(mine)):
            self._give_up(token_id, mine)
            return
        if current.get("cancel_requested"):
            self.cancel_requested.add(token_id)
        renewed = state.renew(current, self.lease_seconds)
        try:
            self.db.put(renewed)
            self._held[token_id] = renewed
            self._until[token_id] = _expires(renewed)
        except errors.WriteInDoubt:
            self._held[token_id] = renewed  # our newest revision; looked at again next beat
        except errors.Conflict:
            # Changed again just now: keep the fresh copy, look again next beat.
            self._held[token_id] = current


def _expires(token: Token) -> float:
    """When the token's lease ends (never, for a lock without one)."""
    expires = (token.get("lease") or {}).get("expires")
    return float(expires) if isinstance(expires, (int, float)) else math.inf
