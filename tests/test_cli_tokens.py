"""`picas db`, `views`, `tokens ...`, `logs` and `export`, run through CliRunner
against the real server; every error is one line on stderr, never a traceback."""
from __future__ import annotations

import json

import pytest
from click.testing import Result
from conftest import unique_name
from support import eventually

from picas import adding, designdocs, errors, operations, shaping, state
from picas.database import Database
from picas.server import free_port
from picas.shaping import Shape
from picas.sources import Record
from picas.state import Holder, Outcome
from picas.transport import Transport


def ok(result: Result) -> Result:
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def failed(result: Result, message: str, code: int = 1) -> str:
    """Assert one clear error line and no traceback; return stderr."""
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    if code == 1:
        assert [line.startswith("error: ") for line in result.stderr.splitlines()].count(True) \
            == 1, result.stderr
    assert message in result.stderr, result.stderr
    return result.stderr


def add_tokens(db: Database, n: int, prefix: str = "t", **fields) -> list[dict]:
    new = shaping.build([Record({"_id": f"{prefix}{i}", "command": f"echo {i}", **fields}, "r")
                        for i in range(n)], Shape())
    adding.add(db, new)
    return [db.get(t["_id"]) for t in new]


def count(db: Database, view: str) -> int:
    return len(db.view("Monitor", view)["rows"])


# -- db and views ----------------------------------------------------------------

def test_db_create_sets_security_pushes_views_and_is_idempotent(couch, run):
    name = unique_name()
    try:
        first = ok(run("-d", name, "db", "create", "--member", "alice", "--admin", "bob"))
        assert f"created database '{name}'" in first.stdout
        assert f"views Monitor: {len(designdocs.load()['Monitor']['views'])} added" in first.stdout
        again = ok(run("-d", name, "db", "create", "--member", "carol", "--json"))
        report = json.loads(again.stdout)
        assert report["created"] is False
        assert report["security"]["members"]["names"] == ["alice", "carol"]
        assert report["security"]["admins"]["names"] == ["bob"]
        assert report["views"]["Monitor"]["added"] == []
        assert Database(couch.transport(), name).view("Monitor", "todo")["rows"] == []
    finally:
        Database(couch.transport(), name).destroy()


def test_db_create_closes_a_database_to_all_but_its_members_by_default(couch, run):
    name = unique_name()
    try:
        first = ok(run("-d", name, "db", "create"))
        assert f"members: names ['{couch.username}'], roles [" in first.stdout
        assert "public" not in first.stdout
        anonymous = Database(Transport(couch.url), name)
        with pytest.raises((errors.AuthenticationFailed, errors.PermissionDenied)):
            anonymous.put({"_id": "anon-test"})
        if couch.local is not None:
            assert first.stderr.count("\n") == 1
            assert "note: pouchdb-server does not enforce _security everywhere" in first.stderr
        public = ok(run("-d", name, "db", "create", "--public"))
        assert f"database '{name}' is public: anyone who can reach {couch.url} may read, " \
               "add, change and delete its tokens without logging in" in public.stdout
        # A new transport: one that was refused a login stops asking.
        Database(Transport(couch.url), name).put({"_id": "anon-test"})
        closed = ok(run("-d", name, "db", "create", "--member-role", "pilots"))
        assert f"database '{name}' was open to everyone; now only its members" in closed.stdout
        assert Database(couch.transport(), name).security()["members"] == \
            {"names": [], "roles": ["pilots"]}
    finally:
        Database(couch.transport(), name).destroy()
    failed(run("db", "create", "--public", "--member", "x"), "do not combine", code=2)


def test_db_create_never_writes_through_a_url_that_names_a_database(couch, db, run):
    """The URL names the test database; before, `db create` wrote a document 'picas'
    into it and ended in a conflict that hid the cause."""
    failed(run("--url", f"{couch.url}/{db.name}", "-d", "picas", "db", "create"),
           f"names database '{db.name}', but the database setting is 'picas'")
    into = ok(run("--url", f"{couch.url}/{db.name}", "db", "create", PICAS_DATABASE=None))
    assert f"kept the existing database '{db.name}' at {couch.url}\n" in into.stdout
    assert db.info()["doc_count"] == len(designdocs.load())  # the design documents only


def test_a_push_through_a_database_url_names_the_cause(couch, db):
    inside = Database(Transport(f"{couch.url}/{db.name}", couch.username, couch.password),
                      db.name)
    inside.put({"_id": db.name})  # what the old `db create` left behind
    with pytest.raises((errors.Conflict, errors.RequestRejected)) as caught:
        designdocs.push(inside)
    if couch.local is None:  # CouchDB names the cause itself
        assert "Attachment name '_design/Monitor'" in str(caught.value)
    else:
        assert "does not exist, yet refuses to create it: does the URL lead to the server " \
               "itself" in str(caught.value)


def test_db_create_needs_an_admin(run):
    failed(run("db", "create", PICAS_USERNAME=None, PICAS_PASSWORD=None),
           "creating a database needs a server admin")


def test_views_push_reports_what_changed(couch, run):
    fresh = Database(couch.transport(), unique_name())
    fresh.create()
    try:
        first = ok(run("-d", fresh.name, "views", "push", "--json"))
        assert "todo" in json.loads(first.stdout)["Monitor"]["added"]
        again = ok(run("-d", fresh.name, "views", "push"))
        views = len(designdocs.load()["Monitor"]["views"])
        assert f"views Monitor: 0 added, 0 changed, {views} unchanged" in again.stdout
    finally:
        fresh.destroy()


def test_missing_database_says_how_to_create_it(run):
    for args in (["views", "push"], ["tokens", "list"], ["status"]):
        failed(run("-d", "no_such_db", *args), "`picas db create`")


def test_wrong_credentials_and_server_down(run, stranger):
    failed(run("tokens", "list", PICAS_USERNAME=stranger, PICAS_PASSWORD="wrong"),
           "check the username and password")
    url = f"http://127.0.0.1:{free_port()}"
    failed(run("--url", url, "tokens", "list"), f"cannot reach CouchDB at {url}")


# -- tokens add --------------------------------------------------------------------

@pytest.mark.parametrize("name, text", [
    ("jobs.json", '[{"command": "echo a"}, {"command": "echo b", "x": 1}]'),
    ("jobs.jsonl", '{"command": "echo a"}\n{"command": "echo b", "x": 1}\n'),
    ("jobs.yaml", "- command: echo a\n- command: echo b\n  x: 1\n"),
    ("jobs.csv", "command,x\necho a,\necho b,1\n"),
])
def test_add_reads_every_format_and_adds_nothing_twice(db, run, tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    assert "added 2 tokens" in ok(run("tokens", "add", str(path))).stdout
    # (On a cluster, a write confirmed by a quorum reaches the last replica a
    # moment later; until then a second add there is answered "accepted".)
    eventually(lambda: count(db, "todo"), 2)
    again = ok(run("tokens", "add", str(path)))
    assert "added nothing: all 2 tokens were already in" in again.stdout
    assert count(db, "todo") == 2


def test_add_grid_with_shaping(db, run):
    result = ok(run("tokens", "add", "--grid", "alpha=0.5,1", "--grid", "seed=1..3",
                    "--command", "sim --alpha {alpha} --seed {seed}", "--priority", "5",
                    "--max-attempts", "2", "--tag", "sweep", "--json"))
    assert json.loads(result.stdout)["added"] == 6
    docs = [r["doc"] for r in db.view("Monitor", "todo", include_docs=True)["rows"]]
    assert sorted(d["command"] for d in docs)[0] == "sim --alpha 0.5 --seed 1"
    assert {(d["priority"], d["max_attempts"], tuple(d["tags"])) for d in docs} == \
        {(5, 2, ("sweep",))}


def test_add_from_dir_and_watch(db, run, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.fits").write_text("a")
    (data / "b.txt").write_text("b")
    ok(run("tokens", "add", "--from-dir", str(data), "--glob", "*.fits",
           "--command", "reduce {path}"))
    assert count(db, "todo") == 1
    (data / "c.fits").write_text("c")
    watched = ok(run("tokens", "add", "--from-dir", str(data), "--glob", "*.fits", "--watch",
                     "--interval", "0.1", "--max-time", "0.3", "--command", "reduce {path}"))
    assert "stopped watching; added 1 token" in watched.stdout
    assert "1 already there" in watched.stdout
    assert count(db, "todo") == 2


def test_tokens_need_a_command_unless_told_otherwise(db, run, tmp_path):
    path = tmp_path / "inputs.csv"
    path.write_text("sample\ns1\n")
    failed(run("tokens", "add", str(path)), f"{path}:2: no command: give the token a "
                                             "'command' field, or use --command TEMPLATE")
    ok(run("tokens", "add", str(path), "--no-command"))
    assert db.view("Monitor", "todo", include_docs=True)["rows"][0]["doc"]["input"] == \
        {"sample": "s1"}
    failed(run("tokens", "add", str(path), "--no-command", "--command", "x"), "contradict",
           code=2)


def test_add_dry_run_writes_nothing(db, run):
    result = ok(run("tokens", "add", "--grid", "n=1..7", "--command", "echo {n}", "--dry-run"))
    assert "would add 7 tokens" in result.stdout and "... and 2 more" in result.stdout
    as_json = ok(run("tokens", "add", "--grid", "n=1..2", "--command", "echo {n}",
                     "--dry-run", "--json"))
    assert [t["command"] for t in json.loads(as_json.stdout)] == ["echo 1", "echo 2"]
    assert count(db, "todo") == 0


def test_large_add_shows_progress_on_stderr(db, run):
    result = ok(run("tokens", "add", "--grid", "n=1..1200", "--command", "echo {n}"))
    assert "adding 1,200 tokens" in result.stderr
    assert "added 1200 tokens" in result.stdout
    eventually(lambda: count(db, "todo"), 1200)


def test_malformed_file_names_file_and_line_and_adds_nothing(db, run, tmp_path):
    good, bad = tmp_path / "good.jsonl", tmp_path / "bad.jsonl"
    good.write_text('{"command": "echo ok"}\n')
    bad.write_text('{"command": "echo a"}\n{"command": "echo b", "lock": 5}\n{"x": 1}\n')
    stderr = failed(run("tokens", "add", str(good), str(bad)), f"{bad}:2: field 'lock'")
    assert f"{bad}:3: no command" in stderr
    assert "nothing was added" in stderr
    bad.write_text('{"command": "echo a"}\n{"command": \n')
    failed(run("tokens", "add", str(good), str(bad)), f"{bad}:2: not valid JSON")
    assert count(db, "todo") == 0


def test_unreadable_file(run, tmp_path):
    missing = tmp_path / "missing.json"
    failed(run("tokens", "add", str(missing)), f"cannot read or write {missing}: No such file")


def test_add_usage_errors(run, tmp_path):
    failed(run("tokens", "add"), "nothing to add", code=2)
    failed(run("tokens", "add", "x.json", "--grid", "a=1"), "do not combine", code=2)
    failed(run("tokens", "add", "--grid", "a=1", "--watch"), "need --from-dir", code=2)
    failed(run("tokens", "add", "--grid", "a"), "use NAME=V1,V2")
    failed(run("tokens", "add", "--grid", "seed=1..", "--command", "echo {seed}"),
           "--grid 'seed=1..': '1..' is not a range")
    failed(run("tokens", "add", "--grid", "a=1", "--command", "x {b}"), "uses {b}")
    failed(run("tokens", "add", "--from-dir", str(tmp_path / "nope")), "not a directory")


# -- tokens list / show / logs / export ---------------------------------------------

def test_list_by_view_and_tag(db, run):
    add_tokens(db, 3, "a", tags=["red"])
    add_tokens(db, 2, "b", tags=["blue"])
    db.put(state.hold(db.get("a0")))
    text = ok(run("tokens", "list")).stdout
    assert text.splitlines()[0].split() == ["ID", "STATE", "PRIORITY", "TRIES", "HOST", "TAGS",
                                            "COMMAND"]
    assert len(text.splitlines()) == 6
    listed = json.loads(ok(run("tokens", "list", "--view", "todo", "--tag", "red",
                               "--json")).stdout)
    assert [d["_id"] for d in listed] == ["a1", "a2"]
    assert [d["_id"] for d in json.loads(ok(run("tokens", "list", "--tag", "red",
                                                "--json")).stdout)] == ["a0", "a1", "a2"]
    limited = ok(run("tokens", "list", "--limit", "2"))
    assert len(limited.stdout.splitlines()) == 3 and "showing the first 2" in limited.stderr
    assert "no tokens in view error" in ok(run("tokens", "list", "--view", "error")).stdout


def test_unknown_view_is_a_usage_error(run):
    failed(run("tokens", "list", "--view", "bogus"), "'bogus' is not one of", code=2)
    failed(run("tokens", "reset", "--view", "bogus"), "'bogus' is not one of", code=2)


def finished_with_logs(db: Database) -> str:
    """A token that ran twice, with logs of each attempt attached."""
    doc = add_tokens(db, 1, "ran")[0]
    for n, outcome, code in ((1, Outcome.FAILED, 2), (2, Outcome.SUCCEEDED, 0)):
        locked = state.lock(doc, Holder("p1", "node1"), 60)
        db.put(locked)
        names = [f"attempt-{n}.stdout", f"attempt-{n}.stderr"]
        rev = locked["_rev"]
        for name in names:
            rev = db.put_attachment(doc["_id"], rev, name, f"{name} text\n".encode())
        locked = {**db.get(doc["_id"])}
        attempt = state.new_attempt(locked, outcome, exit_code=code, logs=names)
        db.put(state.finish(locked, attempt))
        doc = db.get(doc["_id"])
    return doc["_id"]


def test_show_and_logs(db, run):
    token_id = finished_with_logs(db)
    shown = ok(run("tokens", "show", token_id)).stdout
    assert "state        done" in shown
    assert "#1 failed, exit code 2" in shown and "#2 succeeded, exit code 0" in shown
    assert json.loads(ok(run("tokens", "show", token_id, "--json")).stdout)["_id"] == token_id
    assert ok(run("logs", token_id)).stdout_bytes == b"attempt-2.stdout text\n"
    assert ok(run("logs", token_id, "--attempt", "1", "--stderr")).stdout == \
        "attempt-1.stderr text\n"
    assert ok(run("logs", token_id, "--name", "attempt-1.stdout")).stdout == \
        "attempt-1.stdout text\n"
    failed(run("logs", token_id, "--attempt", "7"), "has no attempt 7 (its attempts: 1, 2)")
    failed(run("logs", token_id, "--name", "x.log"), "has no attachment 'x.log'; it has: ")


def test_show_gives_the_recorded_exit_code_of_a_command_that_never_ran(db, run):
    """A token without a runnable command fails without an exit code of its own;
    the token records 1, and show says so."""
    doc = add_tokens(db, 1)[0]
    locked = state.lock(doc, Holder("p", "h"), 60)
    db.put(locked)
    db.put(state.finish(locked, state.new_attempt(locked, Outcome.FAILED), fatal=True))
    assert db.get(doc["_id"])["exit_code"] == 1
    shown = ok(run("tokens", "show", doc["_id"])).stdout
    assert "#1 failed, exit code 1," in shown and "None" not in shown


def test_bad_ids(db, run):
    add_tokens(db, 1)
    failed(run("tokens", "show", "nope"), "no document 'nope'")
    failed(run("logs", "nope"), "no document 'nope'")
    failed(run("logs", "t0"), "token 't0' has no recorded attempts; it has no attachments")
    failed(run("tokens", "reset", "t0", "nope", "--yes"), "no token 'nope'")
    assert db.get("t0")["scrub_count"] == 0


def test_export_jsonl(db, run, tmp_path):
    add_tokens(db, 3)
    db.put(state.hold(db.get("t1")))
    lines = ok(run("export")).stdout.splitlines()
    assert sorted(json.loads(line)["_id"] for line in lines) == ["t0", "t1", "t2"]
    out = tmp_path / "held.jsonl"
    result = ok(run("export", "--view", "held", "-o", str(out)))
    assert "exported 1 token to" in result.stderr
    assert [json.loads(line)["_id"] for line in out.read_text().splitlines()] == ["t1"]


# -- changing tokens ----------------------------------------------------------------

def test_reset_by_view_after_confirmation(db, run):
    docs = add_tokens(db, 3)
    db.put(state.lock(docs[0], Holder("p", "h"), 60))
    locked = db.get("t1")
    db.put(state.lock(locked, Holder("p", "h"), 60))
    failed_one = db.get("t1")
    db.put(state.finish(failed_one, state.new_attempt(failed_one, Outcome.FAILED, exit_code=1),
                        default_max_attempts=1))
    eventually(lambda: count(db, "locked") + count(db, "error"), 2)
    declined = run("tokens", "reset", "--view", "locked", "--view", "error", input="n\n")
    assert declined.exit_code == 1 and "reset 2 tokens in database" in declined.stderr
    assert count(db, "todo") == 1
    result = ok(run("tokens", "reset", "--view", "locked", "--view", "error", input="y\n"))
    assert "reset 2 tokens" in result.stdout
    assert count(db, "todo") == 3
    assert db.get("t1")["scrub_count"] == 1


def test_hold_release_without_confirmation(db, run):
    add_tokens(db, 2, tags=["gpu"])
    eventually(lambda: count(db, "todo"), 2)
    assert "held 2 tokens" in ok(run("tokens", "hold", "--tag", "gpu")).stdout
    eventually(lambda: count(db, "held"), 2)
    report = json.loads(ok(run("tokens", "release", "t0", "--json")).stdout)
    assert (report["changed"], report["states"]) == (1, {"todo": 1})
    skipped = ok(run("tokens", "release", "t0", "t1"))
    assert "released 1 token (1 skipped: not in a state to release)" in skipped.stdout


def test_cancel_reaches_running_tokens(db, run):
    docs = add_tokens(db, 3)
    db.put(state.lock(docs[2], Holder("p", "h"), 60))
    result = ok(run("tokens", "cancel", "--view", "todo", "--view", "locked", "--yes"))
    assert "cancelled 2 tokens; 1 running token will be stopped by its pilot at the next " \
        "heartbeat" in result.stdout
    eventually(lambda: count(db, "cancelled"), 2)
    assert db.get("t2")["cancel_requested"] is True


def test_delete_needs_a_selection_and_confirmation(db, run):
    add_tokens(db, 2)
    failed(run("tokens", "delete"), "choose tokens", code=2)
    failed(run("tokens", "delete", "--view", "todo"), "not confirmed, so nothing was changed")
    assert count(db, "todo") == 2
    assert "deleted 2 tokens" in ok(run("tokens", "delete", "--view", "todo", "-y")).stdout
    assert count(db, "todo") == 0
    assert "no tokens selected" in ok(run("tokens", "delete", "--view", "todo", "-y")).stdout


def test_operations_retry_a_token_that_changed_meanwhile(db):
    add_tokens(db, 2)
    meddled = []

    def hold_after_someone_else_wrote(doc: dict) -> dict:
        if not meddled:
            meddled.append(doc["_id"])
            db.put({**db.get(doc["_id"]), "note": "changed by someone else"})
        return state.hold(doc)

    report = operations.apply(db, ["t0", "t1"], hold_after_someone_else_wrote)
    assert (report.changed + report.skipped, report.conflicts) == (2, 0)
    assert db.get(meddled[0])["note"] == "changed by someone else"
    eventually(lambda: count(db, "held"), 2)


def test_operations_give_up_on_endless_conflicts(db):
    add_tokens(db, 1)

    def always_meddle(doc: dict) -> dict:
        db.put({**db.get(doc["_id"]), "n": doc.get("n", 0) + 1})
        return state.hold(doc)

    report = operations.apply(db, ["t0"], always_meddle, retries=2)
    assert (report.changed, report.conflicts) == (0, 1)


def test_select_rejects_unknown_views(db):
    with pytest.raises(errors.ViewNotFound, match="unknown view 'bogus'"):
        operations.select(db, views=["bogus"])
