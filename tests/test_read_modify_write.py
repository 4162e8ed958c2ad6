"""One read-modify-write with a conflict retry (picas.update), and the one
test of whether a lease is still ours (state.held_under)."""
from __future__ import annotations

import pytest

from picas import errors, state
from picas.state import Holder
from picas.update import update, update_many

TODO = {"type": "token", "lock": 0, "done": 0, "input": {}}


def test_a_write_that_loses_a_race_is_made_again_on_the_winner(db):
    db.put({"_id": "d", "n": 0})
    seen = []

    def add_one(doc):
        seen.append(doc["n"])
        if len(seen) == 1:  # a rival writes between our read and our write
            db.put({**db.get("d"), "n": 10})
        return {**doc, "n": doc["n"] + 1}

    written = update(db, "d", add_one)
    assert seen == [0, 10]
    assert db.get("d")["n"] == 11 and written["_rev"] == db.get("d")["_rev"]


def test_a_missing_document_reaches_change_as_none_and_nothing_is_written_for_none(db):
    assert update(db, "new", lambda doc: {"_id": "new", "was": doc}) is not None
    assert db.get("new")["was"] is None
    rev = db.get("new")["_rev"]
    assert update(db, "new", lambda doc: None) is None
    assert db.get("new")["_rev"] == rev


def test_giving_up_after_the_tries_says_so(db):
    db.put({"_id": "d", "n": 0})

    def always_beaten(doc):
        db.put({**db.get("d"), "n": doc["n"] + 100})
        return {**doc, "n": -1}

    with pytest.raises(errors.Conflict, match="kept changing"):
        update(db, "d", always_beaten, tries=3)
    assert db.get("d")["n"] == 300


def test_many_documents_retry_only_those_that_lost_and_see_deleted_ones_as_none(db):
    for n in range(3):
        db.put({"_id": f"d{n}", "n": n})
    rival_done = []
    seen = []

    def bump(doc):
        seen.append(None if doc is None else doc["_id"])
        if doc is None:
            return None
        if doc["_id"] == "d1" and not rival_done:
            rival_done.append(db.put({**db.get("d1"), "n": 50}))
        return {**doc, "n": doc["n"] + 1}

    answered, pending = update_many(db, ["d0", "d1", "d2", "gone"], bump)
    assert pending == []
    assert sorted(doc["_id"] for doc, result in answered if "error" not in result) == \
        ["d0", "d1", "d2"]
    assert [db.get(f"d{n}")["n"] for n in range(3)] == [1, 51, 3]
    assert seen.count("d1") == 2 and seen.count(None) == 1


def test_a_lease_is_ours_only_while_the_token_is_locked_under_it():
    holder = Holder(pilot_id="p", hostname="h")
    locked = state.lock({"_id": "t", **TODO}, holder, 60, now=1000.0)
    mine = state.lease_id(locked)
    assert mine is not None
    assert state.held_under(locked, mine)
    assert not state.held_under(locked, "someone-else")
    assert not state.held_under(state.expire(locked, now=10_000.0), mine)
    assert not state.held_under({"_id": "t", **TODO}, None)


def test_a_new_token_has_upstreams_fields_and_is_not_shared():
    from picas.documents import Task
    from picas.token import BLANK, blank
    first, second = blank(input={"n": 1}), blank()
    first["error"].append("x")
    assert second["error"] == [] and BLANK["error"] == []
    assert first["input"] == {"n": 1} and first["type"] == "token"
    assert {k: v for k, v in Task().value.items() if k != "_id"} == BLANK
