"""Changing many tokens at once: reset, hold, release, cancel, delete.

Tokens are selected by id, by state view and/or by tag; each one then
goes through a transition of :mod:`picas.state` and is written back in
``_bulk_docs`` batches with its ``_rev``. A token that changed meanwhile
(a pilot claimed it) is re-read and tried again, a few times; a token in
a state the transition does not accept is skipped, not forced.

Tokens waiting for a changed token hear of its new state: a cancelled
parent blocks them, a reset one unblocks them (:mod:`picas.dependencies`).
"""
from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from . import dependencies, designdocs, errors, state
from .database import Database
from .state import TokenState
from .token import Token
from .update import update_many

log = logging.getLogger(__name__)

Transition = Callable[[Token], Token]
STATE_VIEWS = tuple(s.value for s in TokenState)
DEFAULT_BATCH = 500
DEFAULT_RETRIES = 3
#: The new states of a parent that its waiting dependents hear of.
TOLD = (TokenState.DONE, TokenState.ERROR, TokenState.CANCELLED, TokenState.TODO)


def delete(doc: Token) -> Token:
    """A tombstone for ``doc`` (any state: deleting is a person's decision)."""
    if not state.is_token(doc):
        raise errors.InvalidToken(f"'{doc.get('_id')}' is not a token")
    return {"_id": doc["_id"], "_rev": doc["_rev"], "_deleted": True}


#: The operations the CLI offers, by name.
TRANSITIONS: dict[str, Transition] = {
    "reset": state.reset,
    "hold": state.hold,
    "release": state.unhold,
    "cancel": state.cancel,
    "delete": delete,
}


@dataclass
class Report:
    """What an operation did; ``states`` counts the changed tokens' new states."""

    changed: int = 0
    skipped: int = 0
    conflicts: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    states: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict:
        return {"changed": self.changed, "skipped": self.skipped, "conflicts": self.conflicts,
                "failed": [{"id": i, "reason": r} for i, r in self.failed],
                "states": dict(self.states)}


def select(db: Database, ids: Iterable[str] = (), views: Iterable[str] = (),
           tag: str | None = None) -> list[str]:
    """The ids of the tokens chosen by ids, state views and/or a tag.

    Ids must all exist (a typo changes nothing: :class:`NotFound`). Views
    and tag combine as "in one of these states, with this tag".
    """
    wanted = list(dict.fromkeys(ids))
    views = list(dict.fromkeys(views))
    for view in views:
        if view not in STATE_VIEWS:
            raise errors.ViewNotFound(f"unknown view '{view}': use one of {', '.join(STATE_VIEWS)}")
    chosen: list[str] = []
    if wanted:
        rows = db.all_docs(keys=wanted)["rows"]
        missing = [row["key"] for row in rows
                   if "error" in row or row.get("value", {}).get("deleted")]
        if missing:
            listed = ", ".join(f"'{m}'" for m in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise errors.NotFound(f"no token {listed}{more} in database '{db.name}'; "
                                  "nothing was changed")
        chosen.extend(wanted)
    if tag is not None:
        ranges = ([{"key": [tag, view]} for view in views] if views else
                  [{"startkey": [tag], "endkey": [tag, {}]}])
        for key_range in ranges:
            chosen.extend(row["id"] for row in
                          db.iter_view(designdocs.MONITOR, "by_tag", reduce=False, **key_range))
    else:
        for view in views:
            chosen.extend(row["id"] for row in db.iter_view(designdocs.MONITOR, view))
    return list(dict.fromkeys(chosen))


def apply(db: Database, ids: list[str], transition: Transition, *,
          batch: int = DEFAULT_BATCH, retries: int = DEFAULT_RETRIES,
          progress: Callable[[int], None] | None = None) -> Report:
    """Apply ``transition`` to the tokens ``ids``, in bulk; count what happened."""
    report = Report()

    def change(doc: Token | None) -> Token | None:
        try:
            if doc is not None:  # else deleted since it was selected
                return transition(doc)
        except errors.InvalidToken:
            pass  # not in a state this transition applies to
        report.skipped += 1
        return None

    for start in range(0, len(ids), batch):
        chunk = ids[start:start + batch]
        answered, pending = update_many(db, chunk, change, tries=retries + 1)
        _tell(db, [doc for doc, result in answered if "error" not in result])
        for doc, result in answered:
            if "error" in result:
                report.failed.append((doc["_id"], result.get("reason") or result["error"]))
                continue
            report.changed += 1
            new_state = "deleted" if doc.get("_deleted") else state.classify(doc)
            report.states[getattr(new_state, "value", new_state)] += 1
        report.conflicts += len(pending)
        if pending:
            log.warning("%d tokens kept changing and were left alone: try again", len(pending))
        if progress is not None:
            progress(len(chunk))
    return report



def _tell(db: Database, written: list[Token]) -> None:
    """Pass the new states on to waiting dependents; a reset token that waits
    again (it was cancelled while waiting) looks at its parents afresh."""
    dependencies.tell(db, written, TOLD)
    again = [doc["_id"] for doc in written if state.classify(doc) is TokenState.WAITING]
    if again:
        dependencies.recheck(db, again)
