"""Writing results so that none is lost or written over a newer attempt.

A finished attempt is a :class:`Result`: the lease it ran under, the
attempt record, and its log attachments. :func:`apply` turns it into the
document to write *given the token's current revision*: if the lease is
still ours, the token moves on (done, error or back to todo); if another
pilot took the token over meanwhile, the result is kept as a late attempt
and the state is left to the newer attempt.

:class:`ResultWriter` buffers results and writes them in bulk. When the
server cannot be reached it retries with backoff for a bounded time, then
spools the results to local files, which a restarted pilot or ``picas
recover --spool DIR`` pushes later.

Once a token's end is written, the tokens waiting for it hear of it
(:func:`picas.dependencies.tell`).
"""
from __future__ import annotations

import base64
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from . import conflicts, dependencies, errors, state
from .database import Database, confirmed
from .token import Token
from .update import TRIES, update

log = logging.getLogger(__name__)


@dataclass
class Result:
    token_id: str
    lease_id: str | None
    attempt: dict
    #: attachment name -> (content type, bytes)
    attachments: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    #: a defect of the token itself (no command): straight to error
    fatal: bool = False
    #: extra fields to set on the token when the lease is still ours
    fields: dict = field(default_factory=dict)
    #: output files, name -> (content type, bytes): attached when the lease is
    #: still ours (a late attempt's must not replace the newer attempt's)
    outputs: dict[str, tuple[str, bytes]] = field(default_factory=dict)

    def to_json(self) -> dict:
        data = asdict(self)
        data["attachments"] = _encoded(self.attachments)
        data["outputs"] = _encoded(self.outputs)
        return data

    @classmethod
    def from_json(cls, data: dict) -> Result:
        return cls(data["token_id"], data.get("lease_id"), data["attempt"],
                   _decoded(data.get("attachments", {})), data.get("fatal", False),
                   data.get("fields", {}), _decoded(data.get("outputs", {})))

    def slimmer(self, reason: str) -> Result | None:
        """This result without its output files, or else without its logs, for a
        server that refused it as too large; the token says what was left out.
        None when there is nothing left to leave out."""
        if self.outputs:
            skipped = [*self.fields.get("outputs_skipped", []),
                       *({"name": name, "size": len(raw), "reason": reason}
                         for name, (_, raw) in sorted(self.outputs.items()))]
            return replace(self, outputs={}, fields={**self.fields, "outputs_skipped": skipped})
        if self.attachments:
            return replace(self, attachments={},
                           attempt={**self.attempt, "logs": [], "logs_left_out": reason})
        return None


def _encoded(files: dict[str, tuple[str, bytes]]) -> dict[str, list[str]]:
    return {name: [ctype, base64.b64encode(raw).decode()] for name, (ctype, raw) in files.items()}


def _decoded(files: dict[str, list[str]]) -> dict[str, tuple[str, bytes]]:
    return {name: (ctype, base64.b64decode(b64)) for name, (ctype, b64) in files.items()}


def already_recorded(current: Token, result: Result) -> bool:
    """True when ``current`` holds this result already (a retried write went through)."""
    return any(a.get("lease") == result.lease_id and a.get("n") == result.attempt.get("n")
               and a.get("outcome") == result.attempt.get("outcome")
               for a in current.get("attempts", []))


def apply(current: Token, result: Result,
          default_max_attempts: int = state.DEFAULT_MAX_ATTEMPTS) -> Token | None:
    """The document to write for ``result`` on top of the token's ``current`` revision.

    None when there is nothing to write: the result is on the token already.
    """
    if already_recorded(current, result):
        return None
    held = state.held_under(current, result.lease_id)
    if held:
        doc = state.finish({**current, **result.fields}, result.attempt,
                           default_max_attempts, fatal=result.fatal)
    else:
        doc = state.add_late_attempt(current, result.attempt)
    files = {**result.attachments, **result.outputs} if held else result.attachments
    if files:
        attachments = dict(doc.get("_attachments", {}))
        for name, (ctype, raw) in files.items():
            attachments[name] = {"content_type": ctype, "data": base64.b64encode(raw).decode()}
        doc["_attachments"] = attachments
    return doc


class ResultWriter:
    """Buffers finished attempts and writes them in bulk, conflict-safe."""

    def __init__(self, db: Database, spool_dir: Path | None = None,
                 default_max_attempts: int = state.DEFAULT_MAX_ATTEMPTS,
                 retry_for: float = 60.0) -> None:
        self.db = db
        self.spool_dir = spool_dir
        self.default_max_attempts = default_max_attempts
        self.retry_for = retry_for
        self.pending: list[tuple[Token, Result]] = []
        self.oldest: float | None = None
        self.written = 0
        self.late = 0
        self.spooled = 0

    def add(self, current: Token, result: Result) -> None:
        """Queue ``result``; ``current`` is the token's latest known revision."""
        if not self.pending:
            self.oldest = time.monotonic()
        self.pending.append((current, result))

    def age(self) -> float:
        return 0.0 if self.oldest is None else time.monotonic() - self.oldest

    def flush(self) -> None:
        """Write everything pending; spool what cannot be written in time."""
        if not self.pending:
            return
        pending, self.pending, self.oldest = self.pending, [], None
        delay, give_up = 0.5, time.monotonic() + self.retry_for
        while True:
            try:
                self._write(pending)
                return
            except errors.AuthenticationFailed as exc:
                # Trying again would only count as more failed logins.
                log.error("could not write %d result(s): %s", len(pending), exc)
                self._spool([result for _, result in pending])
                return
            except (errors.ConnectionFailed, errors.ServerError) as exc:
                if time.monotonic() + delay > give_up:
                    log.error("could not write %d result(s): %s", len(pending), exc)
                    self._spool([result for _, result in pending])
                    return
                log.warning("writing results failed (%s); retrying in %.1f s", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _write(self, pending: list[tuple[Token, Result]]) -> None:
        todo = []
        for current, result in pending:
            doc = apply(current, result, self.default_max_attempts)
            if doc is not None:  # None: recorded already
                todo.append((current, result, doc))
        written = []
        try:
            outcomes = self.db.bulk_docs([doc for _, _, doc in todo])
        except errors.TooLarge:
            # One of them is too large, and the server refused them all: one by one.
            outcomes = [{"error": "too_large"} for _ in todo]
        for (current, result, doc), outcome in zip(todo, outcomes, strict=True):
            if confirmed(outcome):
                self._count(current, result)
                written.append(doc)
            else:
                again = self._write_one(result)
                if again is not None:
                    written.append(again)
        dependencies.tell(self.db, written)

    def _write_one(self, result: Result, tries: int = TRIES) -> Token | None:
        """:meth:`_write_as_is`; a result the server refuses as too large is
        written without its output files (or at worst its logs), so that the
        attempt is never lost to them. Returns what was written (None: nothing was)."""
        while True:
            try:
                return self._write_as_is(result, tries)
            except errors.TooLarge as exc:
                slimmer = result.slimmer(f"the server refused the token as too large: {exc}")
                if slimmer is None:
                    raise
                log.warning("token %s: %s; writing its result without %s", result.token_id,
                            exc, "its output files" if result.outputs else "its logs")
                result = slimmer

    def _write_as_is(self, result: Result, tries: int) -> Token | None:
        """Re-read and re-apply until the write is confirmed; return what was
        written (None: nothing was).

        Reads every branch: on a cluster, a write that was not confirmed
        may sit on a branch of its own. The result goes onto the branch of
        its own lease where there is one (a finished attempt outranks any
        other branch), and the other branches are resolved.
        """
        branches = 0
        base: Token | None = None

        def read(db: Database, token_id: str) -> Token | None:
            nonlocal branches
            leaves = conflicts.live_leaves(db, token_id)
            branches = len(leaves)
            return self._branch_for(result, leaves)

        def change(current: Token | None) -> Token | None:
            nonlocal base
            base = current
            return None if current is None else apply(current, result,
                                                      self.default_max_attempts)

        written = update(self.db, result.token_id, change, tries=tries, read=read,
                         in_doubt_too=True)
        if written is None:
            return None
        assert base is not None  # change wrote on top of it
        self._count(base, result)
        if branches > 1:
            conflicts.current(self.db, result.token_id)
        return written

    def _branch_for(self, result: Result, leaves: list[Token]) -> Token | None:
        """The leaf to write ``result`` on top of; None when there is nothing
        to write (the token is gone, or has the result already). Raises
        :class:`errors.Conflict` while its branches cannot be decided."""
        if not leaves:
            log.warning("token %s is gone; its result was not recorded", result.token_id)
            return None
        if any(already_recorded(doc, result) for doc in leaves):
            self.written += 1  # an earlier write went through after all
            if len(leaves) > 1:
                conflicts.resolve(self.db, leaves)
            return None
        current = next((doc for doc in leaves if state.held_under(doc, result.lease_id)), None)
        if current is None:
            current = conflicts.settle(self.db, leaves)
        if current is None:
            time.sleep(0.5)  # let the writes in flight settle before looking again
            raise errors.Conflict(f"the branches of token {result.token_id} cannot be "
                                  "decided yet")
        return current

    def _count(self, current: Token, result: Result) -> None:
        self.written += 1
        if not state.held_under(current, result.lease_id):
            self.late += 1
            log.warning("token %s was taken over; result recorded as a late attempt",
                        result.token_id)

    def _spool(self, results: list[Result]) -> None:
        if self.spool_dir is None:
            raise errors.ConnectionFailed(
                f"{len(results)} result(s) could not be written and no spool folder is set")
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        for result in results:
            name = f"{result.token_id}.{result.attempt.get('n', 0)}.{int(time.time() * 1000)}.json"
            write_atomically(self.spool_dir / name, json.dumps(result.to_json()).encode())
            self.spooled += 1
        log.error("spooled %d result(s) to %s: push them later with `picas recover --spool %s`",
                  len(results), self.spool_dir, self.spool_dir)


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` so that ``path`` is either absent or complete, even after a crash."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def push_spool(db: Database, spool_dir: Path,
               default_max_attempts: int = state.DEFAULT_MAX_ATTEMPTS) -> int:
    """Write spooled results to the server; remove each file once written."""
    if not spool_dir.is_dir():
        return 0
    writer = ResultWriter(db, None, default_max_attempts)
    pushed = 0
    written = []
    for path in sorted(spool_dir.glob("*.json")):
        result = Result.from_json(json.loads(path.read_text()))
        doc = writer._write_one(result)
        if doc is not None:
            written.append(doc)
        path.unlink()
        pushed += 1
    dependencies.tell(db, written)
    return pushed
