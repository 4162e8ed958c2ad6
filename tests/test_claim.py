"""Bulk create and the atomic claim, alone and under a race of processes."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
import textwrap
import time

import pytest

from picas import claim, state
from picas.clients import CouchDB
from picas.database import Database
from picas.documents import Task
from picas.iterators import TaskViewIterator
from picas.state import Holder, TokenState

T_DONE = 1_700_000_100
JOB_ENV = ("DIRACJOBID", "GLITE_WMS_JOBID", "CREAM_JOBID", "PBS_JOBID",
           "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_ID")


def _make_tokens(client: CouchDB, n: int, **fields) -> list[str]:
    tasks = [Task({"_id": f"t{i:04d}", "input": {"n": i}, **fields}) for i in range(n)]
    assert client.save_documents(tasks) == [True] * n
    return [t.id for t in tasks]


def _ids(db: Database, view: str) -> list[str]:
    return sorted(row["id"] for row in db.iter_view("Monitor", view))


def test_bulk_create_puts_every_token_in_todo(client, db):
    ids = _make_tokens(client, 200)
    assert _ids(db, "todo") == ids
    rows = db.view("Monitor", "overview_total", group=True)["rows"]
    counts = {r["key"]: r["value"] for r in rows}
    assert counts == {"todo": 200}
    again = [Task({"_id": i}) for i in ids[:3]]
    assert client.save_documents(again) == [False, False, False]


def test_batch_claim_locks_distinct_tokens_for_the_holder(client, db, monkeypatch):
    for name in JOB_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    holder = Holder.here(pilot_id="pilot-a")
    assert holder.job_id == ("slurm_job_id", "4242")
    ids = _make_tokens(client, 100)
    before = time.time()
    result = claim.claim(db, holder, limit=7, lease_seconds=120)
    assert len(result.tokens) == 7 and result.conflicts == 0
    claimed = {t["_id"] for t in result.tokens}
    assert len(claimed) == 7 and claimed <= set(ids)
    assert result.backlog == 100
    assert _ids(db, "locked") == sorted(claimed)
    for token in result.tokens:
        stored = db.get(token["_id"])
        assert stored["_rev"] == token["_rev"]
        assert state.classify(stored) is TokenState.LOCKED
        assert stored["lock"] >= int(before) and stored["done"] == 0
        assert stored["hostname"] == holder.hostname
        assert stored["slurm_job_id"] == "4242"
        lease = stored["lease"]
        assert lease["pilot"] == "pilot-a" and lease["host"] == holder.hostname
        assert lease["job_id"] == "4242" and lease["attempt"] == 1
        assert lease["id"].startswith("pilot-a-")
        assert lease["expires"] == pytest.approx(lease["claimed"] + 120)


def test_holder_records_a_slurm_array_job(monkeypatch):
    for name in JOB_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "101")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "100")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert Holder.here().job_id == ("slurm_job_id", "100_3")
    for name in JOB_ENV:
        monkeypatch.delenv(name, raising=False)
    assert Holder.here().job_id is None


def _claim_all(db: Database, holder: Holder, **kwargs) -> list[dict]:
    """Claim until nothing is left (a claim may take fewer than its limit)."""
    claimed: list[dict] = []
    while True:
        result = claim.claim(db, holder, **kwargs)
        if not result.tokens:
            return claimed
        claimed += result.tokens


class StaleView:
    """Make ``db.view`` answer once with a stale answer, then ask the server."""

    def __init__(self, db: Database, answer: dict) -> None:
        self.real = db.view
        self.answer = copy.deepcopy(answer)
        self.calls = 0

    def __call__(self, design: str, view: str, **params):
        self.calls += 1
        if self.calls == 1:
            return copy.deepcopy(self.answer)
        return self.real(design, view, **params)


def _todo_answer(db: Database) -> dict:
    return db.view("Monitor", "todo_by_priority", include_docs=True)


def _lock_behind_its_back(db: Database, rows: list[dict]) -> dict[str, str]:
    other = Holder(pilot_id="other", hostname="elsewhere")
    revs = {}
    for row in rows:
        token = state.lock(db.get(row["id"]), other, 600)
        revs[row["id"]] = db.put(token)
    return revs


def test_stale_revisions_in_view_rows_are_never_claimed(client, db, monkeypatch):
    """The rows carry the todo revision that was indexed; others locked it since."""
    _make_tokens(client, 10)
    answer = _todo_answer(db)
    answer["rows"] = answer["rows"][:4]
    stolen = _lock_behind_its_back(db, answer["rows"])
    monkeypatch.setattr(db, "view", StaleView(db, answer))
    result = claim.claim(db, Holder("me", "here"), limit=1)
    assert result.conflicts == 1
    assert len(result.tokens) == 1 and result.tokens[0]["_id"] not in stolen
    for doc_id, rev in stolen.items():
        stored = db.get(doc_id)
        assert stored["_rev"] == rev and stored["lease"]["pilot"] == "other"


def test_current_documents_that_are_not_todo_are_skipped(client, db, monkeypatch):
    """The row is stale but its include_docs document is the current revision:
    locked by another pilot (lease still running), finished, held or cancelled."""
    _make_tokens(client, 8)
    answer = _todo_answer(db)
    stolen = _lock_behind_its_back(db, answer["rows"][:6])
    for doc_id, fields in zip(sorted(stolen)[2:], (dict(done=T_DONE, exit_code=0),
                                                   dict(done=T_DONE, exit_code=3),
                                                   dict(lock=-1, done=0),
                                                   dict(lock=-1, done=-1)), strict=True):
        stolen[doc_id] = db.put({**db.get(doc_id), **fields})
    for row in answer["rows"]:
        row["doc"] = db.get(row["id"])
    answer["rows"] = [row for row in answer["rows"] if row["id"] in stolen]
    monkeypatch.setattr(db, "view", StaleView(db, answer))
    result = claim.claim(db, Holder("me", "here"), limit=4)
    assert result.conflicts == 0 and result.tokens == []
    for doc_id, rev in stolen.items():
        assert db.get(doc_id)["_rev"] == rev


def test_a_conflict_is_counted_not_raised(client, db, monkeypatch):
    _make_tokens(client, 5)
    answer = _todo_answer(db)
    first = _claim_all(db, Holder("first", "a"), limit=5)
    assert len(first) == 5
    monkeypatch.setattr(db, "view", StaleView(db, answer))
    second = claim.claim(db, Holder("second", "b"), limit=1)
    # A single server answers 409; a cluster may store the loser on one
    # replica and answer "accepted": a lock in doubt, never run.
    assert second.tokens == [] and second.conflicts + second.in_doubt == 1
    assert second.backlog == 0
    assert {claim.conflicts.current(db, t["_id"])["lease"]["pilot"] for t in first} == {"first"}


def test_an_empty_view_is_a_normal_outcome(client, db):
    result = claim.claim(db, Holder("p", "h"), limit=3)
    assert result.tokens == [] and result.backlog == 0 and result.conflicts == 0
    iterator = TaskViewIterator(client, "todo", holder=Holder("p", "h"))
    assert list(iterator) == []
    assert iterator.is_stopped()


def test_only_todo_tokens_are_claimed(client, db):
    docs = [{"_id": f"s{lock}_{done}", "type": "token", "lock": lock, "done": done,
             "exit_code": 0} for lock, done in ((5, 0), (5, 6), (99, 99), (-1, 0), (-1, -1))]
    db.bulk_docs(docs)
    _make_tokens(client, 2)
    got = _claim_all(db, Holder("p", "h"), limit=10, source=claim.ViewSource("Monitor", "todo"))
    assert sorted(t["_id"] for t in got) == ["t0000", "t0001"]


def test_accept_skips_candidates(client, db):
    _make_tokens(client, 10)
    got = _claim_all(db, Holder("p", "h"), limit=10, accept=lambda doc: doc["input"]["n"] % 2 == 0)
    assert sorted(t["input"]["n"] for t in got) == [0, 2, 4, 6, 8]
    assert len(_ids(db, "todo")) == 5


def test_release_of_prefetched_tokens_puts_them_back_in_todo(client, db):
    ids = _make_tokens(client, 60)
    iterator = TaskViewIterator(client, "todo", batch=5, holder=Holder("p", "h"))
    first = next(iterator)
    assert len(iterator.prefetched) == 4
    assert iterator.release_prefetched() == 4
    assert not iterator.prefetched
    assert _ids(db, "locked") == [first.id]
    assert _ids(db, "todo") == sorted(set(ids) - {first.id})
    for doc_id in set(ids) - {first.id}:
        stored = db.get(doc_id)
        assert "lease" not in stored and stored.get("scrub_count", 0) == 0


def test_release_skips_tokens_changed_meanwhile(client, db):
    _make_tokens(client, 40)
    tokens = claim.claim(db, Holder("p", "h"), limit=3).tokens
    assert len(tokens) == 3
    changed = db.get(tokens[0]["_id"])
    changed["cancel_requested"] = True
    db.put(changed)
    assert claim.release(db, tokens) == 2
    assert state.classify(db.get(changed["_id"])) is TokenState.LOCKED
    assert claim.release(db, []) == 0


def test_higher_priority_is_claimed_first(client, db):
    for priority in range(5):
        docs = [Task({"_id": f"p{priority}_{i}", "priority": priority}) for i in range(3)]
        assert client.save_documents(docs) == [True] * 3
    order = [t["priority"] for t in _claim_all(db, Holder("p", "h"), limit=2)]
    assert order == sorted(order, reverse=True) and len(order) == 15
    for priority in (1, 4):
        db.put({**Task({"_id": f"m{priority}", "priority": priority}).value})
    result = claim.claim(db, Holder("p", "h"), limit=1, source=claim.ViewSource("Monitor", "todo"))
    assert [t["_id"] for t in result.tokens] == ["m4"]


# -- the race -----------------------------------------------------------------

WORKER = textwrap.dedent("""
    import itertools, json, os, sys, time
    from picas import claim
    from picas.database import Database
    from picas.state import Holder
    from picas.transport import Transport

    out_path, go_path, pilot, batches = sys.argv[1:5]
    batches = [int(b) for b in batches.split(",")]
    db = Database(Transport(os.environ["PICAS_URL"], os.environ["PICAS_USERNAME"],
                            os.environ["PICAS_PASSWORD"]), os.environ["PICAS_DATABASE"])
    holder = Holder(pilot_id=pilot, hostname="host-" + pilot)
    while not os.path.exists(go_path):
        time.sleep(0.005)
    conflicts = 0
    with open(out_path, "w") as out:
        for n in itertools.count():
            result = claim.claim(db, holder, limit=batches[n % len(batches)])
            conflicts += result.conflicts
            out.writelines(t["_id"] + "\\n" for t in result.tokens)
            out.flush()
            if not result.tokens and result.backlog == 0:
                break
    print(json.dumps({"conflicts": conflicts}))
""")

PROCESSES = 8
TOKENS = 500


def test_racing_processes_claim_each_token_exactly_once(client, db, pilot_env, tmp_path):
    ids = _make_tokens(client, TOKENS)
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    go = tmp_path / "go"
    batch_mixes = ["1", "5", "1,5", "5,1,3"]
    procs, outputs = [], []
    for n in range(PROCESSES):
        out = tmp_path / f"claimed-{n}.txt"
        outputs.append(out)
        procs.append(subprocess.Popen(
            [sys.executable, str(script), str(out), str(go), f"pilot{n}",
             batch_mixes[n % len(batch_mixes)]],
            env=pilot_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    go.touch()
    conflicts = 0
    try:
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=180)
            assert proc.returncode == 0, stderr
            conflicts += int(json.loads(stdout)["conflicts"])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    claims = {f"pilot{n}": out.read_text().split() for n, out in enumerate(outputs)}
    every = [doc_id for got in claims.values() for doc_id in got]
    duplicates = len(every) - len(set(every))
    print(f"\n{PROCESSES} processes, {TOKENS} tokens: {len(every)} claims, "
          f"{duplicates} double claims, {conflicts} conflicts")
    assert duplicates == 0
    assert sorted(every) == ids
    assert sum(1 for got in claims.values() if got) >= 2
    assert _ids(db, "todo") == []
    for pilot, got in claims.items():
        for doc_id in got:  # (on a cluster, after resolving what lost on a quorum)
            assert claim.conflicts.current(db, doc_id)["lease"]["pilot"] == pilot


def test_pilots_that_lost_a_race_divide_a_window_between_them():
    window = [{"_id": f"t{i:04d}"} for i in range(400)]
    picks = [claim._preferred(window, f"pilot-{n}", 100) for n in range(4)]
    for pick in picks:
        assert len(pick) == 100
        assert pick == sorted(pick, key=lambda doc: doc["_id"])  # the feed's order is kept
    # Taking the window's front, all four would want the same 100 tokens.
    covered = {doc["_id"] for pick in picks for doc in pick}
    assert len(covered) > 250


def _contested_source() -> claim.ChangesSource:
    source = claim.ChangesSource()
    source.attempted([], beaten=1)  # as after a lost race
    return source


def test_a_pilot_sharing_a_window_reads_it_once():
    rows = [{"id": f"t{i:04d}", "seq": i + 1, "doc": {"_id": f"t{i:04d}", "type": "token",
                                                      "lock": 0, "done": 0}} for i in range(100)]

    class Feed:
        class transport:
            is_apache_couchdb = staticmethod(lambda: False)

        def changes(self, selector, since, limit, **_):
            return {"results": [row for row in rows if row["seq"] > since][:limit]}

        def find(self, doc_id):
            return None  # no frontier published

    alone, sharing = claim.ChangesSource(), _contested_source()
    for source in (alone, sharing):
        first = source.fetch(Feed(), 60)
        source.attempted(first.docs[:1])  # took its one token near the front
    # Alone, it comes back for the rest of the window; sharing, the rest is others'.
    assert alone.fetch(Feed(), 60).docs[0]["_id"] == "t0001"
    assert sharing.fetch(Feed(), 60).docs[0]["_id"] == "t0060"
    assert len(sharing.skipped) == 59  # still remembered, in case nobody takes them
