"""`overview.summary`: counts per state, running tokens, errors, rate and ETA."""
from __future__ import annotations

import json
import time

from picas import adding, overview, shaping, state
from picas.shaping import Shape
from picas.sources import Record
from picas.state import Holder, Outcome

NOW = float(int(time.time()))


def make(db, n: int, prefix: str) -> list[dict]:
    new = shaping.build([Record({"_id": f"{prefix}{i}", "command": "true"}, "r")
                        for i in range(n)], Shape())
    adding.add(db, new)
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
    summary = overview.summary(db, now=NOW)
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
    summary = overview.summary(db, running_limit=2)
    assert summary["locked"] == 4 and len(summary["running"]) == 2


def test_empty_database_has_no_rate_and_nothing_left(db):
    summary = overview.summary(db)
    assert summary["total"] == 0 and summary["rate"] == 0.0 and summary["eta_s"] == 0.0
    make(db, 1, "t")
    assert overview.summary(db)["eta_s"] is None


def test_one_early_finish_is_not_a_huge_rate(db):
    done = make(db, 1, "d")[0]
    make(db, 1, "t")
    db.put(finish(done, Outcome.SUCCEEDED, 0, NOW - 5))
    assert overview.summary(db, now=NOW)["rate"] == 1.0  # one per minute at most


def test_a_pool_where_nothing_ran_yet_is_summed_up_by_one_view_query(db):
    """Each view read first indexes every change since the last read: at 100,000
    new tokens that is minutes per view on pouchdb-server, so read only the overview
    (and ask the server once which indexes it is building)."""
    make(db, 5, "t")
    before = db.transport.request_count
    summary = overview.summary(db)
    assert summary["todo"] == 5 and summary["rate"] == 0.0 and summary["eta_s"] is None
    assert db.transport.request_count - before == 2


def test_the_eta_of_three_30_second_tokens_after_fast_ones_uses_their_expected_runtime(db):
    """Finished short tokens give a high rate (1 per second here: an ETA of 3 s);
    the three left run 30 s each, one at a time."""
    for i, doc in enumerate(make(db, 60, "fast")):
        db.put(finish(doc, Outcome.SUCCEEDED, 0, NOW - 60 + i))
    slow = shaping.build([Record({"_id": f"slow{i}", "command": "sleep 30",
                                 "expected_runtime": 30}, "r") for i in range(3)], Shape())
    adding.add(db, slow)
    db.put(state.lock(db.get("slow0"), Holder("pilotA", "node1"), 600, now=NOW - 5))
    summary = overview.summary(db, now=NOW)
    assert summary["rate"] == 60.0
    assert (summary["eta_s"], summary["eta_basis"], summary["eta_guess"]) == \
        (85.0, "expected_runtime", False)


def running(age: float, pilot: str, expected: float | None = None) -> dict:
    return {"id": f"t-{pilot}-{age}", "pilot": pilot, "age_s": age,
            "expected_runtime": expected}


def test_eta_from_expected_runtime_shares_the_work_among_the_pilots():
    sample = [running(10, "a", 40), running(30, "b", 40)]
    # left: 30 and 10; 4 todo tokens of 40 s; 2 pilots: (20 * 2 + 160) / 2
    assert overview.eta(4, 2, sample, per_minute=600.0) == (100.0, "expected_runtime")
    # A pilot holding two tokens runs them one after the other.
    held = [running(10, "a", 40), running(0, "a", 40)]
    assert overview.eta(0, 2, held, per_minute=0.0) == (70.0, "expected_runtime")


def test_without_expected_runtime_the_eta_is_a_guess_that_takes_the_longer_view():
    sample = [running(60, "a"), running(60, "b")]
    # The running tokens have run a minute: 4 tokens left on 2 pilots, 2 minutes ...
    assert overview.eta(2, 2, sample, per_minute=60.0) == (120.0, "running")
    # ... unless the recent rate says longer.
    assert overview.eta(2, 2, sample, per_minute=1.0) == (240.0, "rate")
    assert overview.eta(2, 0, [], per_minute=6.0) == (20.0, "rate")
    assert overview.eta(2, 0, [], per_minute=0.0) == (None, None)
    assert overview.eta(0, 0, [], per_minute=0.0) == (0.0, None)
