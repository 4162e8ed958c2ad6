"""How far along the work is: counts, running tokens, errors, rate and ETA.

Everything comes from reduced views and one short, limited view query,
so a summary costs the same handful of requests at 100 or 1,000,000 tokens.
While the views are being built, their rows so far are shown, and said to lag.
"""
from __future__ import annotations

import time
from typing import Any

from . import dependencies, indexing, triage
from .database import Database
from .designdocs import MONITOR
from .errors import ViewNotFound
from .state import TokenState

RUNNING_LIMIT = 20
#: The rate is measured over the tokens finished in this many recent seconds.
RATE_WINDOW = 600.0
#: ... but never over less than a minute, so that one early finish is no rate.
MIN_RATE_SPAN = 60.0


def counts(db: Database) -> dict[str, int]:
    """Tokens per state, from ``overview_total`` (one reduced query)."""
    found = {s.value: 0 for s in TokenState}
    for row in db.view(MONITOR, "overview_total", group=True)["rows"]:
        if row["key"] in found:
            found[row["key"]] = int(row["value"])
    return found


def running(db: Database, limit: int = RUNNING_LIMIT, now: float | None = None) -> list[dict]:
    """Up to ``limit`` locked tokens: who holds them, since when, until when."""
    now = time.time() if now is None else now
    rows = db.view(MONITOR, "locked", include_docs=True, limit=limit)["rows"]
    out = []
    for row in rows:
        doc = row.get("doc") or {}
        lease = doc.get("lease") or {}
        since = lease.get("claimed", doc.get("lock"))
        expires = lease.get("expires")
        out.append({
            "id": row["id"],
            "host": lease.get("host") or doc.get("hostname") or "",
            "pilot": lease.get("pilot"),
            "job_id": lease.get("job_id"),
            "attempt": lease.get("attempt"),
            "age_s": round(now - float(since), 1) if isinstance(since, (int, float)) else None,
            "lease_expires_in": round(float(expires) - now, 1)
            if isinstance(expires, (int, float)) else None,
            "cancel_requested": bool(doc.get("cancel_requested")),
            "expected_runtime": doc.get("expected_runtime"),
        })
    return sorted(out, key=lambda r: -(r["age_s"] or 0))


def needs_recovery(db: Database) -> dict[str, int]:
    """Tokens with conflicting branches, and locks a cluster never confirmed
    (both left by a cluster's split writes; `picas recover` resolves them)."""
    found = {"conflicts": 0, "in_doubt": 0}
    for row in db.view(MONITOR, "conflicts", group=True)["rows"]:
        if row["key"] in found:
            found[row["key"]] = int(row["value"])
    return found


def errors_by_exit_code(db: Database) -> dict[str, int]:
    rows = db.view(MONITOR, "error_by_exit_code", group=True)["rows"]
    return {str(row["key"]): int(row["value"]) for row in rows}


def suspect_hosts(db: Database) -> list[dict]:
    """Hosts whose attempts fail far more often than the others' (see
    :func:`picas.triage.suspect_hosts`); none on a database without the triage views."""
    try:
        return triage.suspect_hosts(triage.host_attempts(db))
    except ViewNotFound:
        return []


def rate(db: Database, window: float = RATE_WINDOW, now: float | None = None) -> float:
    """Tokens finished (done or error) per minute over the last ``window`` seconds."""
    now = time.time() if now is None else now
    since = int(now - window)
    rows = db.view(MONITOR, "done_by_time", startkey=since)["rows"]
    finished = int(rows[0]["value"]) if rows else 0
    if not finished:
        return 0.0
    first = db.view(MONITOR, "done_by_time", reduce=False, startkey=since, limit=1)["rows"]
    span = max(now - float(first[0]["key"]), MIN_RATE_SPAN) if first else window
    return finished / span * 60.0


def _number(value: Any) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
    return float(value) if ok else None


def eta(todo: int, locked: int, sample: list[dict], per_minute: float,
        ) -> tuple[float | None, str | None]:
    """Seconds until the todo and locked tokens are finished, and what that rests on.

    ``sample`` holds running tokens as :func:`running` gives them (all of
    them when there are few). With an ``expected_runtime`` on every one of
    them: what is left of theirs, plus theirs on average for each todo
    token, shared by the pilots at work (``expected_runtime``). Without:
    each token is taken to run as long again as the running ones have so
    far (``running``), or the recent rate decides (``rate``), whichever
    says longer; both are guesses.
    """
    remaining = todo + locked
    if not remaining:
        return 0.0, None
    by_rate = remaining / per_minute * 60.0 if per_minute else None
    if not locked or not sample:
        return by_rate, "rate" if by_rate is not None else None
    complete = len(sample) >= locked
    # A pilot runs one token at a time; the others it holds wait their turn.
    pilots = len({r["pilot"] or r["id"] for r in sample}) if complete else locked
    ages = [r["age_s"] or 0.0 for r in sample]
    given = [_number(r.get("expected_runtime")) for r in sample]
    expected = [e for e in given if e is not None]
    if len(expected) == len(given):
        mean = sum(expected) / len(expected)
        left = [max(e - age, 0.0) for e, age in zip(expected, ages, strict=True)]
        work = sum(left) / len(left) * locked + todo * mean
        return max(max(left), work / pilots), "expected_runtime"
    by_age = sum(ages) / len(ages) * remaining / pilots
    if by_rate is not None and by_rate >= by_age:
        return by_rate, "rate"
    return by_age, "running"


def summary(db: Database, running_limit: int = RUNNING_LIMIT,
            rate_window: float = RATE_WINDOW, now: float | None = None) -> dict[str, Any]:
    """Everything ``picas status`` shows, as one JSON-able dict."""
    now = time.time() if now is None else now
    db.lagging.clear()
    building = indexing.follow(db)
    result: dict[str, Any] = counts(db)
    result["total"] = sum(result[s.value] for s in TokenState)
    # Branches come from pilots' writes; a pool where all is todo needs no look
    # (a pilot that meets a todo token with branches resolves it anyway).
    result.update(needs_recovery(db) if result["total"] > result["todo"]
                  else {"conflicts": 0, "in_doubt": 0})
    result["blocked"] = dependencies.blocked(db) if result["waiting"] else 0
    sample = running(db, max(running_limit, RUNNING_LIMIT), now) if result["locked"] else []
    result["running"] = sample[:running_limit]
    result["errors_by_exit_code"] = errors_by_exit_code(db) if result["error"] else {}
    result["suspect_hosts"] = suspect_hosts(db) if result["total"] > result["todo"] else []
    # Views that would say nothing are not read: on pouchdb-server reading a
    # view first indexes every change since its last read: over a minute at 100,000 tokens.
    per_minute = rate(db, rate_window, now) if result["done"] or result["error"] else 0.0
    result["rate"] = round(per_minute, 3)
    # Waiting tokens that nothing blocks run once their parents are done.
    ahead = result["todo"] + result["waiting"] - result["blocked"]
    seconds, basis = eta(ahead, result["locked"], sample, per_minute)
    result["eta_s"] = None if seconds is None else round(seconds, 1)
    result["eta_basis"] = basis
    result["eta_guess"] = basis in ("rate", "running")
    result["views_building"] = [{"design": b.design, "percent": b.percent,
                                 "changes_done": b.changes_done,
                                 "total_changes": b.total_changes} for b in building or []]
    result["views_note"] = indexing.note(db, building)
    result["database"] = db.name
    result["url"] = db.transport.url
    result["time"] = now
    return result
