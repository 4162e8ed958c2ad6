"""Tokens that wait for others: adding them, releasing them, blocking, repair."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from pilots import run_pilot, states
from support import eventually

from picas import adding, claim, dependencies, errors, operations, results, shaping, state
from picas.cli import cli
from picas.shaping import Shape
from picas.sources import Record
from picas.state import Holder, Outcome, TokenState


@pytest.fixture
def run(couch, db, tmp_path):
    env = {"PICAS_URL": couch.url, "PICAS_DATABASE": db.name,
           "PICAS_USERNAME": couch.username, "PICAS_PASSWORD": couch.password,
           "PICAS_CONFIG": str(tmp_path / "conf.yml"), "PICAS_PROFILE": None}

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(cli, list(args), env=env)

    return invoke


def ok(result: Result) -> Result:
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def jsonl(path, *records: dict):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def first_attempt(db, token_id: str) -> dict:
    return state.attempts(db.get(token_id))[0]


# -- the state --------------------------------------------------------------------

def test_follow_releases_on_the_last_done_parent_and_is_idempotent():
    child = state.wait({"_id": "c", "type": "token", "lock": 0, "done": 0}, ["a", "b"])
    assert state.classify(child) is TokenState.WAITING
    after_a = state.follow(child, {"a": TokenState.DONE})
    assert after_a["waiting_for"] == ["b"] and state.classify(after_a) is TokenState.WAITING
    assert state.follow(after_a, {"a": TokenState.DONE}) is None  # heard already
    blocked = state.follow(after_a, {"b": TokenState.ERROR})
    assert blocked["blocked_by"] == ["b"] and state.classify(blocked) is TokenState.WAITING
    unblocked = state.follow(blocked, {"b": TokenState.TODO})
    assert "blocked_by" not in unblocked
    released = state.follow(blocked, {"b": TokenState.DONE})
    assert state.classify(released) is TokenState.TODO
    assert released["after"] == ["a", "b"] and "waiting_for" not in released
    assert state.follow(released, {"b": TokenState.DONE}) is None  # not waiting any more
    assert state.follow(child, {"a": None})["blocked_by"] == ["a"]  # a parent that is gone


def test_a_waiting_token_is_never_a_claim_candidate(db):
    child = state.wait({"_id": "w", "type": "token", "lock": 0, "done": 0, "command": "true"},
                       ["nobody"])
    db.put(child)
    assert not claim.claimable(db.get("w"))
    for source in (claim.ChangesSource(), claim.ViewSource()):
        assert claim.claim(db, Holder("p", "h"), source=source).tokens == []
    with pytest.raises(errors.InvalidToken):
        state.lock(db.get("w"), Holder("p", "h"), 60)
    if db.transport.is_apache_couchdb():  # the feed's filter on the server
        assert db.changes(claim.UNFINISHED)["results"] == []


# -- adding -----------------------------------------------------------------------

def test_tokens_add_records_who_waits_for_whom(db, run, tmp_path):
    path = jsonl(tmp_path / "flow.jsonl",
                 {"_id": "merge", "command": "true", "after": ["part-1", "part-2"]},
                 {"_id": "part-1", "command": "true", "after": ["split"]},
                 {"_id": "part-2", "command": "true", "after": "split"},
                 {"_id": "split", "command": "true"})
    ok(run("tokens", "add", path))
    assert states(db) == {"todo": 1, "waiting": 3}
    assert db.get("split")["dependents"] == ["part-1", "part-2"]
    assert db.get("part-1")["dependents"] == ["merge"]
    merge = db.get("merge")
    assert merge["waiting_for"] == merge["after"] == ["part-1", "part-2"]
    listed = ok(run("tokens", "list", "--view", "waiting")).stdout
    assert "waiting for 2" in listed and "waiting for 1" in listed
    assert "waiting" in ok(run("status")).stdout


def test_unknown_ids_and_cycles_are_refused_and_nothing_is_written(db, run, tmp_path):
    unknown = jsonl(tmp_path / "unknown.jsonl", {"_id": "a", "command": "true"},
                    {"_id": "b", "command": "true", "after": ["a", "no-such-token"]})
    result = run("tokens", "add", unknown)
    assert result.exit_code != 0
    assert "'no-such-token' (after of 'b')" in result.output
    assert "nothing was added" in result.output
    cycle = jsonl(tmp_path / "cycle.jsonl", {"_id": "a", "command": "true", "after": ["c"]},
                  {"_id": "b", "command": "true", "after": ["a"]},
                  {"_id": "c", "command": "true", "after": ["b"]},
                  {"_id": "d", "command": "true"})
    result = run("tokens", "add", cycle)
    assert result.exit_code != 0
    assert "a -> c -> b -> a" in result.output and "nothing was added" in result.output
    assert "Traceback" not in result.output
    result = run("tokens", "add", "--after", "d", "--grid", "n=1..2", "--command", "true")
    assert result.exit_code != 0 and "unknown token 'd'" in result.output  # never added
    assert states(db) == {}
    assert db.all_docs(keys=["a", "b", "c", "d"])["rows"][0].get("error") == "not_found"


def test_after_for_a_batch_and_on_tokens_already_there(db, run, tmp_path):
    ok(run("tokens", "add", jsonl(tmp_path / "first.jsonl",
                                  {"_id": "ran", "command": "true"},
                                  {"_id": "later", "command": "true"})))
    locked = state.lock(db.get("ran"), Holder("p", "h"), 60)
    db.put(locked)
    db.put(state.finish(locked, state.new_attempt(locked, Outcome.SUCCEEDED, exit_code=0)))
    ok(run("tokens", "add", "--grid", "n=1..3", "--command", "echo {n}", "--after", "ran"))
    ok(run("tokens", "add", "--grid", "n=1..2", "--command", "echo {n}",
           "--after", "later", "--after", "ran"))
    assert states(db) == {"done": 1, "todo": 1 + 3, "waiting": 2}
    assert len(db.get("ran")["dependents"]) == 5
    assert len(db.get("later")["dependents"]) == 2
    waiting = [row["doc"] for row in db.view("Monitor", "waiting", include_docs=True)["rows"]]
    assert all(doc["waiting_for"] == ["later"] for doc in waiting)


def test_check_keeps_the_after_of_the_tokens_that_have_one_only():
    records = [Record({"_id": f"plain{i}", "command": "true"}, f"r:{i}") for i in range(50)]
    records.append(Record({"_id": "last", "command": "true", "after": ["plain0", "plain7"]},
                          "r:last"))
    edges: dict[str, list[str]] = {}
    assert shaping.check(records, Shape(), edges) == 51
    assert edges == {"last": ["plain0", "plain7"]}


def test_a_streamed_add_releases_a_token_whose_parent_ended_before_it_was_written(db):
    """Write order does not matter: settle reads the parents again at the end."""
    records = [Record({"_id": "parent", "command": "true"}, "r:1"),
               Record({"_id": "child", "command": "true", "after": ["parent"]}, "r:2")]
    edges: dict[str, list[str]] = {}
    shaping.check(records, Shape(), edges)
    plan = dependencies.plan(db, edges, lambda: (t["_id"] for t in shaping.stream(records)))
    assert plan.dependents == {"parent": ["child"]} and plan.gates == []

    def tokens():
        for token in shaping.stream(records):
            if token["_id"] == "child":  # the parent runs to its end before the child exists
                eventually(lambda: "error" not in db.all_docs(keys=["parent"])["rows"][0], True)
                locked = state.lock(db.get("parent"), Holder("p", "h"), 60)
                db.put(locked)
                db.put(state.finish(locked, state.new_attempt(locked, Outcome.SUCCEEDED,
                                                              exit_code=0)))
            yield token

    report = adding.add(db, tokens(), batch=1, plan=plan)
    assert report.added == 2
    assert state.classify(db.get("child")) is TokenState.TODO
    assert db.get("parent")["dependents"] == ["child"]


# -- releasing ----------------------------------------------------------------------

def test_a_pilot_drains_split_parts_merge_in_order(db, run, pilot_env, tmp_path):
    parts = [{"_id": f"part-{i}", "command": "sleep 0.2", "after": ["split"]}
             for i in range(3)]
    ok(run("tokens", "add", jsonl(tmp_path / "flow.jsonl",
                                  {"_id": "split", "command": "true"}, *parts,
                                  {"_id": "merge", "command": "true",
                                   "after": [p["_id"] for p in parts]})))
    report = run_pilot(pilot_env, workdir=tmp_path / "w")
    assert report["outcomes"] == {"succeeded": 5}, report
    assert states(db) == {"done": 5}
    split = first_attempt(db, "split")
    ran = [first_attempt(db, p["_id"]) for p in parts]
    assert all(a["start"] >= split["end"] for a in ran)
    assert first_attempt(db, "merge")["start"] >= max(a["end"] for a in ran)


def test_a_failed_parent_blocks_until_it_is_reset_and_done(db, run, pilot_env, tmp_path):
    marker = tmp_path / "second-time"
    ok(run("tokens", "add", jsonl(
        tmp_path / "flow.jsonl",
        {"_id": "flaky", "command": f"test -e {marker} || {{ touch {marker}; exit 3; }}",
         "max_attempts": 1},
        {"_id": "next", "command": "true", "after": ["flaky"]},
        {"_id": "last", "command": "true", "after": ["next"]})))
    report = run_pilot(pilot_env, workdir=tmp_path / "w")
    assert report["outcomes"] == {"failed": 1} and report["stopped_because"] == "no-work"
    assert states(db) == {"error": 1, "waiting": 2}
    assert db.get("next")["blocked_by"] == ["flaky"]
    assert "blocked_by" not in db.get("last")  # it waits for 'next', which did not fail
    assert "(1 blocked: a token they wait for is in error or cancelled)" in \
        ok(run("status")).stdout
    assert "blocked by flaky" in ok(run("tokens", "list", "--view", "waiting")).stdout
    assert "reset it" in ok(run("tokens", "show", "next")).stdout
    ok(run("tokens", "reset", "flaky", "--yes"))
    assert "blocked_by" not in db.get("next")
    report = run_pilot(pilot_env, workdir=tmp_path / "w")
    assert report["outcomes"] == {"succeeded": 3}, report
    assert states(db) == {"done": 3}


def test_cancelling_blocks_and_a_reset_waits_again(db, run, tmp_path):
    ok(run("tokens", "add", jsonl(tmp_path / "flow.jsonl",
                                  {"_id": "parent", "command": "true"},
                                  {"_id": "child", "command": "true", "after": ["parent"]})))
    ok(run("tokens", "cancel", "parent", "--yes"))
    assert db.get("child")["blocked_by"] == ["parent"]
    ok(run("tokens", "cancel", "child", "--yes"))
    ok(run("tokens", "reset", "parent", "child", "--yes"))
    child = db.get("child")
    assert state.classify(child) is TokenState.WAITING and "blocked_by" not in child
    assert state.classify(db.get("parent")) is TokenState.TODO


def test_recover_releases_what_a_pilot_could_not(db, run, tmp_path, monkeypatch):
    ok(run("tokens", "add", jsonl(tmp_path / "flow.jsonl",
                                  {"_id": "parent", "command": "true"},
                                  {"_id": "child", "command": "true", "after": ["parent"]},
                                  {"_id": "other", "command": "false", "after": ["parent"]})))
    (locked,) = claim.claim(db, Holder("p", "h")).tokens
    writer = results.ResultWriter(db)

    def server_gone(*args, **kwargs):
        raise errors.ConnectionFailed("the server went away")

    monkeypatch.setattr(dependencies, "_tell", server_gone)
    writer.add(locked, results.Result("parent", state.lease_id(locked),
                                      state.new_attempt(locked, Outcome.SUCCEEDED, exit_code=0)))
    writer.flush()  # the result is written; the release is not
    monkeypatch.undo()
    assert states(db) == {"done": 1, "waiting": 2}
    released = []

    def recover() -> int:  # a cluster's view may not show the waiting tokens at once
        found = json.loads(ok(run("recover", "--json")).stdout)
        assert found["blocked"] == 0
        released.append(found["released"])
        return sum(released)

    eventually(recover, 2)
    assert states(db) == {"done": 1, "todo": 2}
    assert json.loads(ok(run("recover", "--json")).stdout)["released"] == 0


def test_recover_names_parents_that_failed_or_are_gone(db, run, tmp_path):
    ok(run("tokens", "add", jsonl(tmp_path / "flow.jsonl",
                                  {"_id": "gone", "command": "true"},
                                  {"_id": "child", "command": "true", "after": ["gone"]})))
    operations.apply(db, ["gone"], operations.delete)
    eventually(lambda: json.loads(ok(run("recover", "--json")).stdout)["blocked"], 1)
    assert db.get("child")["blocked_by"] == ["gone"]


# -- the example ------------------------------------------------------------------

def test_the_workflow_example_splits_works_and_merges(db, pilot_env, tmp_path):
    example = Path(__file__).resolve().parent.parent / "examples" / "workflow.py"
    env = {**pilot_env, "PICAS_CONFIG": str(tmp_path / "conf.yml")}
    done = subprocess.run([sys.executable, str(example), "5", "--folder", str(tmp_path / "wf")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "total 500500 (expected 500500)" in done.stdout
    assert states(db) == {"done": 7}
    merge = first_attempt(db, "merge")
    assert all(first_attempt(db, f"part-{n}")["end"] <= merge["start"] for n in range(5))


def test_a_large_fan_in_waits_through_gates(db, run, tmp_path, monkeypatch):
    monkeypatch.setattr(dependencies, "GATE_SIZE", 3)
    parents = [{"_id": f"p{i}", "command": "true"} for i in range(10)]
    added = json.loads(ok(run("tokens", "add", "--json", jsonl(
        tmp_path / "flow.jsonl", *parents,
        {"_id": "all", "command": "true", "after": [p["_id"] for p in parents]}))).stdout)
    assert (added["added"], added["gates"]) == (11, 4 + 2)  # 10 -> 4 gates -> 2 gates
    child = db.get("all")
    assert child["waiting_for"] == ["all.gate2-0", "all.gate2-1"] and len(child["after"]) == 10
    assert states(db) == {"todo": 10, "waiting": 7}
    holder = Holder("p", "h")
    writer = results.ResultWriter(db)
    for _ in range(10):
        (token,) = claim.claim(db, holder, source=claim.ViewSource()).tokens
        assert state.classify(db.get("all")) is TokenState.WAITING
        writer.add(token, results.Result(token["_id"], state.lease_id(token), state.new_attempt(
            token, Outcome.SUCCEEDED, exit_code=0)))
        writer.flush()
        assert max(len(doc.get("waiting_for") or []) for doc in
                   (row["doc"] for row in db.all_docs(include_docs=True)["rows"])) <= 3
    assert state.classify(db.get("all")) is TokenState.TODO
    assert states(db) == {"done": 10 + 6, "todo": 1}
