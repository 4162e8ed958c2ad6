"""A new pilot starts where the unfinished work begins, not at the start of the feed."""
from __future__ import annotations

import time

from picas import claim, frontier, state
from picas.database import Database
from picas.shaping import build
from picas.sources import Record
from picas.state import Holder, Outcome, TokenState
from picas.update import update


def _add(db: Database, first: int, n: int) -> list[str]:
    tokens = build([Record({"command": f"echo {i}"}, f"t:{i}") for i in range(first, first + n)])
    db.bulk_docs(tokens)
    return [t["_id"] for t in tokens]


def _claim_all(db: Database, source: claim.ChangesSource, holder: Holder,
               **kwargs) -> list[dict]:
    """Every token one pilot can claim now."""
    got: list[dict] = []
    while True:
        step = claim.claim(db, holder, limit=50, source=source, **kwargs)
        if not step.tokens:
            return got
        got += step.tokens


def _finish(db: Database, tokens: list[dict]) -> None:
    for token in tokens:
        db.put(state.finish(token, state.new_attempt(token, Outcome.SUCCEEDED, exit_code=0)))


def _drain(db: Database, source: claim.ChangesSource, holder: Holder) -> int:
    """Claim and finish every token one pilot can get; return how many."""
    finished = 0
    while True:
        got = _claim_all(db, source, holder)
        if not got:
            return finished
        _finish(db, got)
        finished += len(got)


class Counting:
    """Counts the change rows a source reads."""

    def __init__(self, db: Database) -> None:
        self.db, self.rows = db, 0
        self.changes_ = db.changes

    def __enter__(self) -> Counting:
        def changes(*args, **kwargs):
            answer = self.changes_(*args, **kwargs)
            self.rows += len(answer["results"])
            return answer
        self.db.changes = changes  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        del self.db.changes


def test_a_new_pilot_skips_the_finished_tokens_behind_the_frontier(db):
    _add(db, 0, 300)
    assert _drain(db, claim.ChangesSource(), Holder("first", "h")) == 300
    late = _add(db, 1000, 5)  # added after everything before them is done
    with Counting(db) as counting:
        got = _claim_all(db, claim.ChangesSource(), Holder("second", "h"))
    assert sorted(t["_id"] for t in got) == sorted(late)
    # the first pilot's last results lie beyond its frontier, the 300 finished before not
    assert counting.rows < 60


def test_a_lock_behind_the_frontier_is_taken_over_when_its_lease_runs_out(db, monkeypatch):
    ids = _add(db, 0, 40)
    dead = claim.claim(db, Holder("dies", "h"), limit=1, lease_seconds=600.0,
                       source=claim.ChangesSource()).tokens
    assert len(dead) == 1
    assert _drain(db, claim.ChangesSource(), Holder("first", "h")) == 39
    published = frontier.load(db)
    assert dead[0]["_id"] in published.watch and published.since != 0
    later = time.time() + 601.0
    monkeypatch.setattr(time, "time", lambda: later)  # the lease has run out
    got = claim.claim(db, Holder("new", "h"), limit=5, source=claim.ChangesSource())
    assert [t["_id"] for t in got.tokens] == [dead[0]["_id"]] and got.recovered == 1
    assert set(ids) >= {t["_id"] for t in got.tokens}


def test_tokens_a_pilot_would_not_take_are_left_for_others(db):
    """A pilot skips what does not fit its walltime; a new pilot must still find it."""
    long = build([Record({"command": "sleep", "expected_runtime": 3600}, "t:long")])
    db.bulk_docs(long)
    _add(db, 0, 20)
    short_only = claim.ChangesSource()

    def fits(doc: dict) -> bool:
        return not doc.get("expected_runtime")

    got = _claim_all(db, short_only, Holder("short", "h"), accept=fits)
    assert len(got) == 20
    _finish(db, got)
    assert _claim_all(db, short_only, Holder("short", "h"), accept=fits) == []
    assert long[0]["_id"] in frontier.load(db).skipped
    taken = _claim_all(db, claim.ChangesSource(), Holder("long", "h"))
    assert [t["_id"] for t in taken] == [long[0]["_id"]]


def test_a_frontier_never_moves_back(db):
    assert frontier.publish(db, frontier.Frontier(since=50))
    assert not frontier.publish(db, frontier.Frontier(since=20, watch={"x": 1.0}))
    assert frontier.load(db).since == 50 and frontier.load(db).watch == {}


def test_a_reset_token_is_found_again_beyond_the_frontier(db):
    ids = _add(db, 0, 30)
    assert _drain(db, claim.ChangesSource(), Holder("first", "h")) == 30
    update(db, ids[3], lambda doc: state.reset(doc))
    got = claim.claim(db, Holder("second", "h"), limit=5, source=claim.ChangesSource())
    assert [t["_id"] for t in got.tokens] == [ids[3]]
    assert state.classify(db.get(ids[0])) is TokenState.DONE


def test_a_feed_that_cannot_go_on_from_the_cursor_is_read_from_the_start(couch, db):
    """A cluster that lost the node a cursor names answers 409 "progress not possible"."""
    from faultproxy import FaultProxy

    from picas.transport import Transport

    ids = _add(db, 0, 30)
    with FaultProxy(couch.url) as proxy:
        reached = Database(Transport(proxy.url, couch.username, couch.password), db.name)
        source = claim.ChangesSource()
        first = claim.claim(reached, Holder("p", "h"), limit=5, source=source).tokens
        assert first and source.cursor != 0
        proxy.answer(r"_changes\?(.*&)?since=[1-9]", 409,
                     {"error": "conflict", "reason": "progress not possible"})
        rest = _claim_all(reached, source, Holder("p", "h"))
    assert sorted(t["_id"] for t in first + rest) == sorted(ids)
