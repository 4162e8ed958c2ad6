"""`status.summary`: counts per state, running tokens, errors, rate and ETA."""
from __future__ import annotations

import json
import time

from picas import state, status, tokens
from picas.state import Holder, Outcome
from picas.tokens import Record, Shape

NOW = float(int(time.time()))


def make(db, n: int, prefix: str) -> list[dict]:
    new = tokens.build([Record({"_id": f"{prefix}{i}", "command": "true"}, "r")
                        for i in range(n)], Shape())
    tokens.add(db, new)
    return [db.get(t["_id"]) for t in new]


def finish(doc: dict, outcome: Outcome, exit_code: int, at: float) -> dict:
    locked = state.lock(doc, Holder("p1", "node1"), 600, now=at - 10)
    attempt = state.new_attempt(locked, outcome, start=at - 10, end=at, exit_code=exit_code)
    return state.finish(locked, attempt, default_max_attempts=1, now=at)


def populate(db) -> None:
    make(db, 3, "todo")
    running = make(db, 2, "run")
    db.bulk_docs([state.lock(running[0], Holder("pilotA", "node7"), 600, now=NOW - 100),
                  state.lock(running[1], Holder("pilotB", "node8"), 600, now=NOW - 50)])
    done = make(db, 2, "done")
    failed = make(db, 2, "err")
    upstream = {**failed[1], "lock": 99, "done": 99, "exit_code": ""}
    db.bulk_docs([finish(done[0], Outcome.SUCCEEDED, 0, NOW - 120),
                  finish(done[1], Outcome.SUCCEEDED, 0, NOW - 60),
                  finish(failed[0], Outcome.FAILED, 3, NOW - 30), upstream])
    held, cancelled = make(db, 2, "hc")
    db.bulk_docs([state.hold(held), state.cancel(cancelled)])


def test_summary_counts_every_state_and_explains_progress(db):
    populate(db)
    summary = status.summary(db, now=NOW)
    assert {k: summary[k] for k in ("todo", "locked", "done", "error", "held", "cancelled",
                                    "total")} == \
        {"todo": 3, "locked": 2, "done": 2, "error": 2, "held": 1, "cancelled": 1, "total": 11}
    assert summary["errors_by_exit_code"] == {"3": 1, "": 1}
    running = {r["id"]: r for r in summary["running"]}
    assert running["run0"]["host"] == "node7" and running["run0"]["pilot"] == "pilotA"
    assert running["run0"]["age_s"] == 100.0 and running["run0"]["lease_expires_in"] == 500.0
    assert [r["id"] for r in summary["running"]] == ["run0", "run1"]  # oldest first
    # The upstream error has no done time picas can use (99), so three finished
    # in the window, the first 120 s ago: 1.5 per minute, 5 left: 200 s.
    assert summary["rate"] == 1.5
    assert summary["eta_s"] == 200.0
    json.dumps(summary)


def test_running_list_is_limited(db):
    tokens_ = make(db, 4, "run")
    db.bulk_docs([state.lock(t, Holder("p", "h"), 60) for t in tokens_])
    summary = status.summary(db, running_limit=2)
    assert summary["locked"] == 4 and len(summary["running"]) == 2


def test_empty_database_has_no_rate_and_nothing_left(db):
    summary = status.summary(db)
    assert summary["total"] == 0 and summary["rate"] == 0.0 and summary["eta_s"] == 0.0
    make(db, 1, "t")
    assert status.summary(db)["eta_s"] is None


def test_one_early_finish_is_not_a_huge_rate(db):
    done = make(db, 1, "d")[0]
    make(db, 1, "t")
    db.put(finish(done, Outcome.SUCCEEDED, 0, NOW - 5))
    assert status.summary(db, now=NOW)["rate"] == 1.0  # one per minute at most


def test_a_pool_where_nothing_ran_yet_is_summed_up_by_one_query(db):
    """Each view read first indexes every change since the last read: at 100,000
    new tokens that is minutes per view on pouchdb-server, so read only the overview."""
    make(db, 5, "t")
    before = db.transport.request_count
    summary = status.summary(db)
    assert summary["todo"] == 5 and summary["rate"] == 0.0 and summary["eta_s"] is None
    assert db.transport.request_count - before == 1
