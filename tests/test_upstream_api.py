"""The API that PiCaS 1.1 pilot and token scripts import, unchanged.

Upstream defects that picas fixes on purpose are tested as fixed: a
default ``Task`` shows in the views, a conflicting delete does not crash,
an empty view is not an ``IndexError``.
"""
from __future__ import annotations

import uuid

import pytest
import requests_mock
from support import eventually

from picas import errors, jobid, state, util
from picas.clients import CouchDB
from picas.database import Database
from picas.documents import Document, Job, Task, User
from picas.iterators import (
    EndlessViewIterator,
    PrioritizedViewIterator,
    TaskViewIterator,
    ViewIterator,
)
from picas.modifiers import BasicTokenModifier, NestedTokenModifier, TokenModifier
from picas.state import Holder, TokenState

JOB_ENV = ("DIRACJOBID", "GLITE_WMS_JOBID", "CREAM_JOBID", "PBS_JOBID",
           "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_ID")


@pytest.fixture
def slurm_job(monkeypatch) -> str:
    for name in JOB_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "31337")
    return "31337"


def _ids(client: CouchDB, view: str) -> list[str]:
    return sorted(row.id for row in client.view(view))


def _save_tokens(client: CouchDB, n: int, prefix: str = "t", **fields) -> list[Task]:
    tasks = [Task({"_id": f"{prefix}{i}", "input": {"n": i}, **fields}) for i in range(n)]
    assert client.save_documents(tasks) == [True] * n
    return tasks


def _done(client: CouchDB, task: Task, exit_code: int = 0) -> None:
    task.lock()
    task.done()
    task["exit_code"] = exit_code
    client.save(task)


# -- the client -----------------------------------------------------------------

def test_constructors_do_no_io(couch):
    with requests_mock.Mocker() as mock:
        client = CouchDB("http://127.0.0.1:1", "tokens", "user", "pw", create=True)
        client.copy()
        assert client.db.name == "tokens"
        TaskViewIterator(client, "todo")
        CouchDB(couch.url, "does_not_exist_either")
        assert mock.call_count == 0


def test_create_true_creates_the_database_on_first_use(couch):
    name = f"picas_test_{uuid.uuid4().hex[:12]}"
    client = CouchDB(couch.url, name, couch.username, couch.password, create=True)
    check = Database(couch.transport(), name)
    assert not check.exists()
    try:
        assert client.doc_count() == 0
        assert check.exists()
        again = CouchDB(couch.url, name, couch.username, couch.password, create=True)
        with pytest.raises(errors.Conflict) as caught:
            again.doc_count()
        assert "create=True" in str(caught.value)
    finally:
        check.destroy()


def test_copy_is_an_independent_client_on_the_same_database(client):
    other = client.copy()
    assert other is not client and other.transport is not client.transport
    other.save(Task({"_id": "from_copy"}))
    assert client["from_copy"]["type"] == "token"
    assert other.database.name == client.database.name


def test_the_legacy_couchdb_handle_reaches_the_same_database(client, db):
    client.save(Task({"_id": "t1"}))
    assert client.db["t1"]["type"] == "token"
    assert client.db.name == db.name


def test_getitem_and_get_return_documents(client):
    client.save(Task({"_id": "t1", "input": {"x": 1}}))
    for doc in (client["t1"], client.get("t1")):
        assert isinstance(doc, Document)
        assert doc.id == "t1" and doc["input"] == {"x": 1} and doc.rev.startswith("1-")


def test_get_raises_valueerror_for_a_missing_id_as_upstream_did(client):
    """Upstream ``get`` raised ValueError; scripts catch it (upstream's own get_from_view did)."""
    with pytest.raises(ValueError):
        client.get("no_such_token")


def test_views_give_rows_with_id_key_and_value(client):
    _save_tokens(client, 3)
    rows = client.view("todo").rows
    assert [(r.id, r.key, r.value) for r in rows] == [(f"t{i}", f"t{i}", f"t{i}") for i in range(3)]
    assert all(r.doc is None for r in rows)
    with_docs = client.view("todo_by_priority", design_doc="Monitor", include_docs=True)
    assert len(with_docs) == 3 and {r.doc["_id"] for r in with_docs} == {"t0", "t1", "t2"}
    assert with_docs.total_rows == 3


def test_get_from_view_returns_the_current_documents(client):
    tasks = _save_tokens(client, 3)
    docs = client.get_from_view("todo")
    assert [d.id for d in docs] == ["t0", "t1", "t2"]
    assert all(isinstance(d, Document) and d.rev == t.rev for d, t in zip(docs, tasks, strict=True))
    assert [d.id for d in client.get_from_view("todo", limit=1)] == ["t0"]


def test_get_single_from_view(client):
    assert client.get_single_from_view("todo") is None
    _save_tokens(client, 5)
    assert eventually(lambda: getattr(client.get_single_from_view("todo"), "id", None), "t0")
    picks = {client.get_single_from_view("todo", window_size=2).id for _ in range(40)}
    assert picks <= {"t0", "t1"}
    assert client.get_single_from_view("todo_by_priority", design_doc="Monitor") is not None


def test_save_sets_the_revision_and_conflicts_on_a_stale_one(client):
    task = Task({"_id": "t1"})
    assert client.save(task) is task
    first = task.rev
    stale = Task(client.get("t1").value.copy())
    task.input = {"changed": True}
    client.save(task)
    assert task.rev != first and client["t1"]["input"] == {"changed": True}
    with pytest.raises(errors.Conflict):
        client.save(stale)


def test_save_gives_a_document_without_id_a_new_one(client):
    """Upstream's save POSTed such documents and the server chose the id."""
    doc = Document({"type": "note", "text": "hello"})
    client.save(doc)
    assert client[doc.id]["text"] == "hello"


def test_save_documents_reports_each_document(client):
    client.save(Task({"_id": "exists"}))
    docs = [Task({"_id": "new1"}), Task({"_id": "exists"}), Task({"_id": "new2"})]
    assert client.save_documents(docs) == [True, False, True]
    assert docs[0].rev.startswith("1-") and "_rev" not in docs[1]
    assert client.save_documents([]) == []


def test_a_default_task_shows_in_todo(client):
    task = Task()
    assert task.id.startswith("task_") and task["type"] == "token"
    client.save(task)
    assert _ids(client, "todo") == [task.id]


def test_add_view_adds_a_queryable_view(client):
    _save_tokens(client, 4)
    client.add_view("count_tokens",
                    "function (doc) { if (doc.type == 'token') emit(doc.type, 1); }",
                    reduce_fun="_count")
    assert client.view("count_tokens").rows[0].value == 4
    assert len(client.view("count_tokens", reduce=False)) == 4


def test_delete(client):
    task = Task({"_id": "t1"})
    client.save(task)
    stale = Task(dict(task.value))
    client.save(task)
    with pytest.raises(errors.Conflict):
        client.delete(stale)
    client.delete(task)
    with pytest.raises(errors.NotFound):
        client["t1"]


def test_delete_documents_reports_a_conflict_as_false(client):
    tasks = _save_tokens(client, 3)
    stale = Task(dict(tasks[1].value))
    client.save(tasks[1])
    assert client.delete_documents([tasks[0], stale, tasks[2]]) == [True, False, True]
    assert client["t1"].rev == tasks[1].rev
    assert _ids(client, "todo") == ["t1"]


def test_delete_from_view(client):
    tasks = _save_tokens(client, 5)
    for task in tasks[:3]:
        _done(client, task)
    eventually(lambda: len(_ids(client, "done")), 3)
    assert client.delete_from_view("done") == [True, True, True]
    eventually(lambda: (_ids(client, "done"), _ids(client, "todo")), ([], ["t3", "t4"]))
    assert client.delete_from_view("done") == []


def test_set_users_writes_the_security_document(client, db):
    client.set_users(admins=["ann"], members=["max"], admin_roles=["boss"], member_roles=["team"])
    assert db.security() == {"admins": {"names": ["ann"], "roles": ["boss"]},
                             "members": {"names": ["max"], "roles": ["team"]}}
    client.set_users(members=["mia"])
    assert db.security() == {"admins": {"names": ["ann"], "roles": ["boss"]},
                             "members": {"names": ["mia"], "roles": ["team"]}}


def test_is_view_nonempty(client):
    assert client.is_view_nonempty("todo") is False
    _save_tokens(client, 1)
    eventually(lambda: client.is_view_nonempty("todo"), True)
    assert client.is_view_nonempty("todo_by_priority", design_doc="Monitor") is True
    assert client.is_view_nonempty("locked") is False
    assert client.is_view_nonempty("no_such_view") is False


def test_doc_count(client):
    before = client.doc_count()
    _save_tokens(client, 3)
    eventually(client.doc_count, before + 3)


# -- documents -------------------------------------------------------------------

def test_task_fields_and_defaults():
    task = Task({"input": {"file": "a.txt"}})
    for key, default in Task.BASE.items():
        if key != "input":
            assert task[key] == default, key
    assert task.input == {"file": "a.txt"}
    task.input = {"file": "b.txt"}
    task.output = {"result": 42}
    task.uploads = {"log": "srm://x"}
    assert (task["input"], task["output"], task["uploads"]) == (
        {"file": "b.txt"}, {"result": 42}, {"log": "srm://x"})
    assert state.classify(task.value) is TokenState.TODO
    other = Task()
    other["input"]["x"] = 1
    assert Task()["input"] == {} and Task.BASE["input"] == {}


def test_task_from_the_database_is_taken_as_it_is():
    stored = {"_id": "old", "_rev": "3-abc", "type": "token", "lock": 0, "done": 0}
    task = Task(stored)
    assert task.value is stored and "scrub_count" not in task
    assert Task(task).value is stored


def test_task_lock_done_error_scrub(slurm_job):
    task = Task({"_id": "t1"})
    assert task.lock() is task
    assert task["lock"] > 0 and task["hostname"] and task["slurm_job_id"] == slurm_job
    assert state.classify(task.value) is TokenState.LOCKED and not task.is_done()
    task.done()
    task["exit_code"] = 0
    assert task.is_done() and state.classify(task.value) is TokenState.DONE
    assert not task.has_error()
    try:
        raise RuntimeError("disk full")
    except RuntimeError as exc:
        task.error("it broke", exception=exc)
    task.error()
    assert task["lock"] == task["done"] == 99 and task.has_error()
    assert state.classify(task.value) is TokenState.ERROR
    errors_ = task.get_errors()
    assert len(errors_) == 2 and errors_[0]["message"] == "it broke"
    assert "disk full" in errors_[0]["exception"] and "time" in errors_[1]
    assert task.scrub() is task
    assert task["scrub_count"] == 1 and task["lock"] == task["done"] == 0
    assert "slurm_job_id" not in task and state.classify(task.value) is TokenState.TODO


def test_task_error_marks_untyped_and_upstream_task_documents_failed_too():
    """Upstream's default Task() wrote type "task"; has_error must agree with error()."""
    for doc in ({"_id": "a", "_rev": "1-x", "type": "task", "lock": 5, "done": 0},
                {"_id": "b", "_rev": "1-x", "lock": 5, "done": 0}):
        task = Task(doc)
        task.error("boom")
        assert task.has_error(), doc["_id"]


def test_document_is_dict_like():
    doc = Document({"_id": "d1", "a": 1})
    assert doc.id == "d1" and len(doc) == 2 and "a" in doc and sorted(doc) == ["_id", "a"]
    doc["b"] = 2
    del doc["a"]
    doc.update({"c": 3})
    assert doc.value == {"_id": "d1", "b": 2, "c": 3} and doc.get("zz", 7) == 7
    doc.id = "d2"
    assert doc["_id"] == "d2"
    with pytest.raises(AttributeError):
        _ = doc.rev
    with pytest.raises(AttributeError):
        _ = Document().id


def test_document_has_every_dict_method():
    token = Task({"_id": "t", "input": "x"})
    plain = dict(token.value)
    for name in [n for n in dir(dict) if not n.startswith("_")]:
        assert callable(getattr(token, name)), name
    assert token.keys() == plain.keys() and list(token.values()) == list(plain.values())
    assert token.items() == plain.items() and token == plain and dict(token) == plain
    copied = token.copy()
    copied["input"] = "changed"
    assert token["input"] == "x" and isinstance(copied, dict)
    assert token.setdefault("extra", 1) == 1 and token.setdefault("extra", 2) == 1
    token.update(a=1)
    token.update([("b", 2)])
    assert token.pop("a") == 1 and token.pop("a", None) is None
    with pytest.raises(KeyError):
        token.pop("a")
    assert token.popitem() == ("b", 2)  # the last key, as a dict pops it
    assert (token | {"c": 3})["c"] == 3 and ({"c": 3} | token)["_id"] == "t"
    token |= {"d": 4}
    assert token["d"] == 4 and next(reversed(token)) == "d"
    token.clear()
    assert len(token) == 0 and token.value == {}


def test_user_and_job():
    user = User("bob", "pw", roles=["r"])
    assert user.value == {"_id": "org.couchdb.user:bob", "name": "bob", "type": "user",
                          "password": "pw", "roles": ["r"]}
    with pytest.raises(ValueError):
        Job({})
    job = Job({"_id": "job1"})
    assert job["type"] == "job" and not job.is_done()
    job.queue("slurm", host="node7")
    assert job["method"] == "slurm" and job["hostname"] == "node7" and job["queue"] > 0
    job.start()
    assert job["start"] > 0 and job["hostname"]
    job.finish()
    assert job.is_done()
    job["_rev"] = "1-x"
    job.archive()
    assert job.id.startswith("archived-job1-") and "_rev" not in job and job["archive"] > 0


def test_attachments_round_trip_through_the_server(client):
    blob = bytes(range(256)) * 4
    task = Task({"_id": "att"})
    task.put_attachment("log.txt", "hello\n")
    task.put_attachment("blob.bin", blob, "application/octet-stream")
    task.put_attachment("out.json", b"{}")
    assert task.get_attachment("log.txt")["data"] == b"hello\n"
    client.save(task)

    loaded = client.get("att")
    stub = loaded["_attachments"]["log.txt"]
    assert stub.get("stub") is True and "data" not in stub
    assert "data" not in loaded.get_attachment("log.txt")
    text = loaded.get_attachment("log.txt", retrieve_from_database=client)
    assert text["data"] == b"hello\n" and text["content_type"].startswith("text/plain")
    binary = loaded.get_attachment("blob.bin", retrieve_from_database=client)
    assert binary["data"] == blob and binary["content_type"] == "application/octet-stream"
    assert loaded.get_attachment("out.json")["content_type"] == "application/json"
    with pytest.raises(KeyError):
        loaded.get_attachment("nope.txt")

    loaded.input = {"saved": "again"}
    client.save(loaded)
    again = client.get("att")
    assert again.get_attachment("blob.bin", retrieve_from_database=client)["data"] == blob

    assert again.remove_attachment("log.txt") is again
    client.save(again)
    final = client.get("att")
    assert set(final["_attachments"]) == {"blob.bin", "out.json"}
    with pytest.raises(errors.NotFound):
        client.database.get_attachment("att", "log.txt")


# -- modifiers -------------------------------------------------------------------

def test_basic_token_modifier(slurm_job):
    modifier = BasicTokenModifier()
    token = Task({"_id": "t"}).value
    assert modifier.lock(token) is token
    assert token["lock"] > 0 and token["hostname"] and token["slurm_job_id"] == slurm_job
    assert state.classify(token) is TokenState.LOCKED
    modifier.close(token)
    modifier.add_output(token, {"exit_code": 0, "output": {"x": 1}})
    assert state.classify(token) is TokenState.DONE and token["output"] == {"x": 1}
    modifier.unclose(token)
    assert token["done"] == 0 and "slurm_job_id" not in token
    modifier.lock(token)
    modifier.unlock(token)
    assert token["lock"] == 0 and "slurm_job_id" not in token
    assert state.classify(token) is TokenState.TODO
    modifier.lock(token)
    modifier.set_error(token)
    assert state.classify(token) is TokenState.ERROR
    modifier.scrub(token)
    modifier.scrub(token)
    assert token["scrub_count"] == 2 and token["lock"] == 0
    with pytest.raises(NotImplementedError):
        TokenModifier().lock(token)


def test_basic_token_modifier_on_a_task_object(slurm_job):
    """Upstream scripts pass their Task itself, not its dict."""
    modifier = BasicTokenModifier()
    task = Task({"_id": "t"})
    modifier.lock(task)
    assert task["slurm_job_id"] == slurm_job and task["lock"] > 0
    modifier.close(task)
    modifier.unclose(task)
    assert task["done"] == 0 and "slurm_job_id" not in task
    modifier.lock(task)
    assert modifier.unlock(task) is task and task["lock"] == 0 and "slurm_job_id" not in task
    modifier.lock(task)
    modifier.scrub(task)
    assert task["scrub_count"] == 1 and task["lock"] == 0 and "slurm_job_id" not in task
    assert state.classify(task.value) is TokenState.TODO


def test_nested_token_modifier(slurm_job):
    modifier = NestedTokenModifier()
    record = {"job": {"lock": 0, "done": 0}}
    assert modifier.lock("job", record) is record
    assert record["job"]["lock"] > 0 and record["job"]["slurm_job_id"] == slurm_job
    deep = {"runs": {"first": {"token": {"lock": 0, "done": 0}}}}
    ref = ["record", "runs", "first", "token"]
    modifier.lock(ref, deep)
    modifier.close(ref, deep)
    modifier.add_output(ref, deep, {"exit_code": 0})
    token = modifier.get_token(ref, deep)
    assert token is deep["runs"]["first"]["token"]
    assert token["lock"] > 0 and token["done"] > 0 and token["exit_code"] == 0
    modifier.set_error(ref, deep)
    assert token["lock"] == token["done"] == 99
    modifier.unclose(ref, deep)
    modifier.scrub(ref, deep)
    assert token["done"] == 0 and token["lock"] == 0 and token["scrub_count"] == 1
    modifier.unlock("job", record)
    assert record["job"]["lock"] == 0


# -- job ids and utilities ---------------------------------------------------------

@pytest.mark.parametrize("environ, expected", [
    ({"SLURM_JOB_ID": "123"}, ("slurm_job_id", "123")),
    ({"SLURM_JOB_ID": "130", "SLURM_ARRAY_JOB_ID": "123", "SLURM_ARRAY_TASK_ID": "7"},
     ("slurm_job_id", "123_7")),
    ({"PBS_JOBID": "42.pbs.example.org"}, ("pbs_job_id", "42.pbs.example.org")),
    ({"DIRACJOBID": "9876", "PBS_JOBID": "1"}, ("dirac_job_id", "9876")),
    ({"GLITE_WMS_JOBID": "https://wms.example.org:9000/abc", "CREAM_JOBID": "c1",
      "PBS_JOBID": "1"}, ("wms_job_id", "https://wms.example.org:9000/abc")),
    # A WMS id that is not a URL is recorded as None, as upstream does.
    ({"GLITE_WMS_JOBID": "N/A", "CREAM_JOBID": "https://cream.example.org:8443/CREAM1"},
     ("wms_job_id", None)),
    ({"CREAM_JOBID": "https://cream.example.org:8443/CREAM1", "PBS_JOBID": "1"},
     ("cream_job_id", "https://cream.example.org:8443/CREAM1")),
    ({"HOME": "/home/me"}, None),
])
def test_job_ids(environ, expected):
    assert jobid.current_job_id(environ) == expected
    doc = {"slurm_job_id": "stale"} if expected is None else {}
    jobid.add_job_id(doc, environ)
    if expected is None:
        assert doc == {"slurm_job_id": "stale"}
    else:
        assert doc == {expected[0]: expected[1]}
    jobid.remove_job_id(doc)
    assert doc == {}


def test_util():
    import time
    assert abs(util.seconds() - time.time()) < 5 and isinstance(util.seconds(), int)
    nested = {"a": {"b": 1}, "c": 2}
    merged = util.merge_dicts(nested, {"c": 3, "d": 4})
    merged["a"]["b"] = 99
    assert merged == {"a": {"b": 99}, "c": 3, "d": 4} and nested == {"a": {"b": 1}, "c": 2}
    timer = util.Timer()
    assert timer.elapsed() >= 0
    assert timer.reset() >= 0
    assert util.time_elapsed(timer, max=-1) is True
    assert util.time_elapsed(timer, max=3600) is False


# -- iterators -------------------------------------------------------------------

def test_task_view_iterator_drains_the_database(client):
    _save_tokens(client, 10)
    seen = []
    for task in TaskViewIterator(client, "todo"):
        assert isinstance(task, Task)
        assert state.classify(task.value) is TokenState.LOCKED
        seen.append(task.id)
        task.done()
        task["exit_code"] = 0
        client.save(task)
    assert sorted(seen) == sorted(f"t{i}" for i in range(10))
    eventually(lambda: (_ids(client, "done"), _ids(client, "todo")), (sorted(seen), []))


def test_prioritized_view_iterator_takes_the_high_view_first(client):
    client.add_view("high", "function (doc) { if (doc.type == 'token' && doc.lock == 0 && "
                            "doc.done == 0 && doc.priority >= 5) emit(doc._id, doc._id); }")
    _save_tokens(client, 3, prefix="low")
    _save_tokens(client, 3, prefix="high", priority=9)
    iterator = PrioritizedViewIterator(client, "high", "todo")
    order = [task.id[:3] for task in iterator]
    assert order == ["hig"] * 3 + ["low"] * 3


def test_endless_view_iterator_waits_for_work_until_stopped(client):
    _save_tokens(client, 2)
    asked = []

    def stop(limit: int) -> bool:
        asked.append(limit)
        if len(asked) == 6:
            client.save(Task({"_id": "late"}))
        return len(asked) > 12

    iterator = EndlessViewIterator(TaskViewIterator(client, "todo", holder=Holder("p", "h")),
                                   sleep_sec=0.01, stop_callback=stop, limit=12)
    got = sorted(task.id for task in iterator)
    assert got == ["late", "t0", "t1"]
    assert set(asked) == {12} and len(asked) == 13
    assert iterator.is_stopped()


def test_endless_view_iterator_with_upstreams_timer(client):
    iterator = EndlessViewIterator(TaskViewIterator(client, "todo"), sleep_sec=0.01,
                                   stop_callback=util.time_elapsed, timer=util.Timer(), max=0.05)
    assert list(iterator) == []


def test_view_iterator_base_class_must_be_extended():
    with pytest.raises(NotImplementedError):
        next(ViewIterator())
