"""What a CouchDB cluster answers, and a single server never does, played
through a real HTTP proxy (tests/faultproxy.py) in front of the test server.

A write that lost a race on some replicas but not all is answered 202 /
``"accepted": true`` and leaves a conflicting branch; a cluster with two
nodes of three down answers every write that way. Branches are made for
real, with ``new_edits=false``. The claim must stay exactly-once through
all of it, and nothing may be lost or left with branches.
"""
from __future__ import annotations

import subprocess
import sys
import time
import uuid

import pytest
from faultproxy import FaultProxy
from pilots import TOKEN_BASE, add, executions, finish, run_pilot, start_pilot, states, tokens

from picas import claim, conflicts, lease, overview, state
from picas.database import Database
from picas.results import Result, ResultWriter
from picas.state import Holder, Outcome, TokenState
from picas.transport import Transport


@pytest.fixture
def proxy(couch):
    with FaultProxy(couch.url) as running:
        yield running


def _through(proxy: FaultProxy, couch, db: Database) -> Database:
    return Database(Transport(proxy.url, couch.username, couch.password), db.name)


def _branch(db: Database, doc: dict, **fields: object) -> dict:
    """A conflicting child of ``doc``'s revision, as a split write leaves one."""
    pos, _, digest = doc["_rev"].partition("-")
    new = uuid.uuid4().hex
    branch = {**doc, **fields, "_rev": f"{int(pos) + 1}-{new}",
              "_revisions": {"start": int(pos) + 1, "ids": [new, digest]}}
    db.transport.request("POST", [db.name, "_bulk_docs"],
                         json={"docs": [branch], "new_edits": False})
    return {key: value for key, value in branch.items() if key != "_revisions"}


def _live(db: Database, doc_id: str) -> list[dict]:
    return conflicts.live_leaves(db, doc_id)


def _locked(doc: dict, pilot: str, lease_seconds: float = 600, now: float | None = None) -> dict:
    return state.lock(doc, Holder(pilot, "node-" + pilot), lease_seconds, now)


def _todo(db: Database, token_id: str = "t1") -> dict:
    add(db, tokens({token_id: "true"}))
    return db.get(token_id)


# -- the claim ------------------------------------------------------------------------

def test_a_lock_the_cluster_did_not_confirm_is_marked_in_doubt_and_never_run(couch, db, proxy):
    add(db, tokens({f"t{i}": "true" for i in range(5)}))
    proxy.no_quorum = True
    through = _through(proxy, couch, db)
    for _ in range(30):  # a claim takes a share of what it sees: claim until none is todo
        got = claim.claim(through, Holder.here(), limit=5, source=claim.ChangesSource())
        assert got.tokens == [] and got.in_doubt >= 1
        if "todo" not in states(db):
            break
    for i in range(5):
        doc = db.get(f"t{i}")
        assert state.in_doubt(doc) and state.lease_expired(doc)
    assert overview.needs_recovery(db) == {"conflicts": 0, "in_doubt": 5}
    # Confirmed at last, the same tokens are claimed, with no attempt counted.
    proxy.no_quorum = False
    source, taken = claim.ChangesSource(), []
    for _ in range(30):
        taken += claim.claim(db, Holder.here("p2"), limit=5, source=source).tokens
    assert sorted(doc["_id"] for doc in taken) == [f"t{i}" for i in range(5)]
    assert all(doc["lease"]["pilot"] == "p2" and not state.attempts(doc)
               and not state.in_doubt(doc) for doc in taken)


def test_a_lock_that_lost_on_a_quorum_leaves_a_branch_that_gives_way(couch, db, proxy):
    doc = _todo(db)
    winner = claim.claim(db, Holder.here("winner"), source=claim.ChangesSource())
    assert [t["_id"] for t in winner.tokens] == ["t1"]
    # The loser read the todo revision before the winner wrote.
    proxy.split_races = True
    stale = claim.ChangesSource()
    loser_db = _through(proxy, couch, db)
    outcome = loser_db.bulk_docs([_locked(doc, "loser")])[0]
    assert outcome["accepted"] is True
    assert len(_live(db, "t1")) == 2
    kept = conflicts.current(db, "t1")
    assert kept is None  # two unmarked running locks: nobody can tell which is real yet
    loser = next(d for d in _live(db, "t1") if d["lease"]["pilot"] == "loser")
    db.put(state.withdraw(loser))  # what the loser's claim does next
    kept = conflicts.current(db, "t1")
    assert kept["lease"]["pilot"] == "winner"
    assert len(_live(db, "t1")) == 1
    assert stale.fetch(db, 10).docs == []  # nothing claimable left


def test_racing_pilots_on_split_replicas_run_each_token_exactly_once(couch, db, proxy,
                                                                      pilot_env, tmp_path):
    side = tmp_path / "side"
    side.mkdir()
    add(db, tokens({f"t{i:04d}": f'echo "$PICAS_TOKEN_ID" >> {side}/$PPID' for i in range(400)}))
    proxy.split_races = True
    env = {**pilot_env, "PICAS_URL": proxy.url}
    procs = [start_pilot(env, "--lease", "20", workdir=tmp_path / f"w{i}") for i in range(6)]
    reports = [finish(p, timeout=300) for p in procs]
    counts = executions(side)
    assert proxy.stats["branches"] > 0, "no race was split: the test proved nothing"
    assert [t for t, n in counts.items() if n != 1] == []
    assert len(counts) == 400
    assert sum(r["in_doubt"] for r in reports) > 0
    # Whatever is left with branches, recover resolves; then nothing is left.
    subprocess.run([sys.executable, "-m", "picas", "recover"], env=pilot_env, check=True,
                   capture_output=True, timeout=120)
    assert states(db) == {"done": 400}
    assert overview.needs_recovery(db) == {"conflicts": 0, "in_doubt": 0}
    assert all(len(_live(db, f"t{i:04d}")) == 1 for i in range(0, 400, 7))


def test_with_two_nodes_down_a_pilot_stops_claiming_and_says_why(couch, db, proxy,
                                                                 pilot_env, tmp_path):
    side = tmp_path / "side"
    side.mkdir()
    add(db, tokens({f"t{i:03d}": f"echo x >> {side}/ran" for i in range(30)}))
    proxy.no_quorum = True
    env = {**pilot_env, "PICAS_URL": proxy.url}
    done = subprocess.run([sys.executable, "-m", "picas", "pilot", "--workdir",
                           str(tmp_path / "w")], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "quorum" in lines[0] and "twice" in lines[0]
    assert not (side / "ran").exists()
    assert "Traceback" not in done.stderr


# -- resolving branches -----------------------------------------------------------------

def test_a_finished_attempt_outranks_a_running_lock(db):
    doc = _todo(db)
    mine = _locked(doc, "a")
    db.put(mine)
    attempt = state.new_attempt(mine, Outcome.SUCCEEDED, exit_code=0)
    finished = state.finish(mine, attempt)
    db.put(finished)
    _branch(db, {**mine, "_rev": mine["_rev"]}, cancel_requested=True)
    kept = conflicts.current(db, "t1")
    assert state.classify(kept) is TokenState.DONE
    assert len(_live(db, "t1")) == 1


def test_a_running_lock_outranks_todo_and_locks_in_doubt(db):
    doc = _todo(db)
    running = _locked(doc, "a")
    db.put(running)
    _branch(db, doc)  # a todo sibling, as a reset written on a split would be
    _branch(db, state.withdraw(_locked(doc, "b")))
    assert len(_live(db, "t1")) == 3
    kept = conflicts.current(db, "t1")
    assert kept["lease"]["pilot"] == "a" and not state.in_doubt(kept)
    assert [d["_rev"] for d in _live(db, "t1")] == [kept["_rev"]]


def test_two_running_locks_wait_until_one_lease_runs_out(db):
    doc = _todo(db)
    now = time.time()
    db.put(_locked(doc, "a", 600, now))
    _branch(db, _locked(doc, "b", 5, now))
    assert conflicts.current(db, "t1", now) is None
    assert len(_live(db, "t1")) == 2  # nothing deleted while undecided
    later = conflicts.current(db, "t1", now + 10)
    assert later["lease"]["pilot"] == "a"
    assert len(_live(db, "t1")) == 1


def test_attempts_on_every_branch_are_kept(db):
    doc = _todo(db)
    mine = _locked(doc, "a")
    db.put(mine)
    failed = state.finish(mine, state.new_attempt(mine, Outcome.FAILED, exit_code=3))
    db.put(failed)  # back to todo, one attempt on it
    _branch(db, mine, cancel_requested=True)
    kept = conflicts.current(db, "t1")
    # The lock on the other branch is over: its lease has an attempt recorded.
    assert state.classify(kept) is TokenState.TODO
    assert [a["exit_code"] for a in kept["attempts"]] == [3]


def test_recover_resolves_branches_and_locks_in_doubt(couch, db, pilot_env):
    doc = _todo(db)
    db.put(_locked(doc, "a", 1, time.time() - 10))  # its pilot is gone
    _branch(db, doc)
    two = _todo(db, "t2")
    db.put(state.withdraw(_locked(two, "b")))
    assert overview.needs_recovery(db) == {"conflicts": 1, "in_doubt": 1}
    done = subprocess.run([sys.executable, "-m", "picas", "recover"], env=pilot_env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "resolved 1 token with conflicting branches" in done.stdout
    assert overview.needs_recovery(db) == {"conflicts": 0, "in_doubt": 0}
    assert states(db) == {"todo": 2}
    assert state.attempts(db.get("t2")) == []  # a lock in doubt never ran


# -- renewals and results -------------------------------------------------------------

def test_a_renewal_that_lost_on_a_quorum_keeps_the_lease_and_the_cancel(couch, db, proxy):
    doc = _todo(db)
    mine = _locked(doc, "a")
    db.put(mine)
    db.put({**mine, "cancel_requested": True})  # a person cancels: our copy is stale
    proxy.split_races = True
    keeper = lease.LeaseKeeper(_through(proxy, couch, db), 600)
    keeper.hold([mine])
    keeper.renew()
    # The proxy made the branch, or a real cluster did (a lagging replica took it).
    assert proxy.stats["accepted"] >= 1
    assert keeper.cancel_requested == {"t1"} and keeper.lost == set()
    leaves = _live(db, "t1")
    assert len(leaves) == 1 and leaves[0]["lease"]["pilot"] == "a"


def test_a_result_that_lost_on_a_quorum_is_kept_and_leaves_no_branch(couch, db, proxy):
    doc = _todo(db)
    mine = _locked(doc, "a")
    db.put(mine)
    db.put({**mine, "cancel_requested": True})
    proxy.split_races = True
    writer = ResultWriter(_through(proxy, couch, db))
    attempt = state.new_attempt(mine, Outcome.SUCCEEDED, exit_code=0)
    writer.add(mine, Result("t1", state.lease_id(mine), attempt))
    writer.flush()
    assert proxy.stats["accepted"] >= 1
    leaves = _live(db, "t1")
    assert len(leaves) == 1
    assert state.classify(leaves[0]) is TokenState.DONE
    assert [a["outcome"] for a in leaves[0]["attempts"]] == ["succeeded"]


def test_a_result_whose_answer_was_cut_is_recorded_once(couch, db, proxy):
    doc = _todo(db)
    mine = _locked(doc, "a")
    db.put(mine)
    proxy.cut(r"POST /[^/]+/_bulk_docs")
    writer = ResultWriter(_through(proxy, couch, db), retry_for=30)
    attempt = state.new_attempt(mine, Outcome.SUCCEEDED, exit_code=0)
    writer.add(mine, Result("t1", state.lease_id(mine), attempt))
    writer.flush()
    assert proxy.stats["cut"] == 1
    token = db.get("t1")
    assert state.classify(token) is TokenState.DONE
    assert len(token["attempts"]) == 1 and writer.spooled == 0


def test_a_claim_whose_answer_was_cut_is_not_run_twice(couch, db, proxy, pilot_env, tmp_path):
    side = tmp_path / "side"
    side.mkdir()
    add(db, [{**TOKEN_BASE, "_id": "t1", "command": f"echo x >> {side}/t1"}])
    proxy.cut(r"POST /[^/]+/_bulk_docs")  # the first lock lands, its answer does not
    env = {**pilot_env, "PICAS_URL": proxy.url}
    first = run_pilot(env, "--lease", "2", workdir=tmp_path / "w1")
    assert first["started"] == 0  # its lock went unanswered: it is nobody's to run
    assert proxy.stats["cut"] == 1
    time.sleep(2.5)  # the orphaned lease runs out
    report = finish(start_pilot(env, workdir=tmp_path / "w2"))
    assert report["started"] == 1
    assert (side / "t1").read_text().split() == ["x"]
    token = db.get("t1")
    assert [a["outcome"] for a in token["attempts"]] == ["lease_lost", "succeeded"]
