"""The atomic claim: CouchDB's revision check as compare-and-set.

A view row's ``include_docs`` document is the *current* revision, which
may already be locked by another pilot even though the row came from an
older index. So each candidate's state is checked on the very revision
that gets written: ``lock`` is written with that ``_rev``, and CouchDB
accepts it only if nobody wrote the document since. A 409 means someone
else won; the loser moves on. Two pilots can therefore never both hold a
token.

Batches are claimed in one ``_bulk_docs`` request, which CouchDB applies
per document: some may conflict while the rest succeed.
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import Callable

from . import designdocs, state
from .database import Database
from .state import Holder, TokenState

log = logging.getLogger(__name__)

DEFAULT_LEASE = 600.0
#: Rows read per claim: more rows spread concurrent pilots over more tokens.
MIN_WINDOW = 50


@dataclass
class ClaimResult:
    tokens: list[dict] = field(default_factory=list)
    conflicts: int = 0
    #: rows in the view when queried (the todo backlog, for a todo view)
    backlog: int = 0
    requests: int = 0


def _order(candidates: list[dict], rng: random.Random) -> list[dict]:
    """Highest priority first; random within a priority so pilots spread out."""
    rng.shuffle(candidates)
    return sorted(candidates, key=lambda doc: -_priority(doc))


def _priority(doc: dict) -> float:
    try:
        return float(doc.get("priority") or 0)
    except (TypeError, ValueError):
        return 0.0


def claim(db: Database, holder: Holder, *, limit: int = 1,
          lease_seconds: float = DEFAULT_LEASE,
          design: str = designdocs.PILOT, view: str = "todo_by_priority",
          accept: Callable[[dict], bool] | None = None,
          rounds: int = 5, rng: random.Random | None = None,
          **view_params: object) -> ClaimResult:
    """Lock up to ``limit`` todo tokens from ``design/view`` for ``holder``.

    Returns the locked tokens (with their new ``_rev``). An empty result
    with ``backlog == 0`` means the view is empty: a normal outcome.
    ``accept`` can skip candidates (for example tokens that would not fit
    in the walltime left).
    """
    rng = rng or random.Random()
    result = ClaimResult()
    window = max(MIN_WINDOW, 4 * limit)
    for _ in range(rounds):
        answer = db.view(design, view, include_docs=True, limit=window, **view_params)
        result.requests += 1
        result.backlog = answer.get("total_rows", len(answer["rows"]))
        seen: set[str] = set()
        candidates = []
        for row in answer["rows"]:
            doc = row.get("doc")
            if not doc or doc["_id"] in seen:
                continue
            seen.add(doc["_id"])
            if state.classify(doc) is TokenState.TODO and (accept is None or accept(doc)):
                candidates.append(doc)
        if not candidates:
            if len(answer["rows"]) < window or accept is not None:
                return result
            continue
        want = limit - len(result.tokens)
        locked = [state.lock(doc, holder, lease_seconds) for doc in _order(candidates, rng)[:want]]
        outcomes = db.bulk_docs(locked)
        result.requests += 1
        for doc, outcome in zip(locked, outcomes):
            if "error" in outcome:
                result.conflicts += 1
            else:
                result.tokens.append(doc)
        if result.tokens:
            # Possibly fewer than asked for when others won some races:
            # good enough, the caller comes back for more.
            return result
    return result


def release(db: Database, tokens: list[dict]) -> int:
    """Give back tokens that were claimed but never started; return how many."""
    if not tokens:
        return 0
    released = [state.release(doc) for doc in tokens if state.classify(doc) is TokenState.LOCKED]
    outcomes = db.bulk_docs(released)
    return sum(1 for o in outcomes if "error" not in o)
