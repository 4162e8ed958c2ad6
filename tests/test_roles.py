"""Who may do what: pilots and day-to-day commands need only membership of the
database; creating it and pushing views need an admin; a user who is not a
member, and an anonymous one, are refused by every command with one line.

On pouchdb-server, which enforces less than CouchDB, these are the checks
it can make; the same tests run on Apache CouchDB with PICAS_TEST_COUCHDB_URL.
"""
from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest
from click.testing import CliRunner, Result
from test_actors import ShellActor

from picas import adding, errors, shaping, state
from picas.cli import cli
from picas.clients import CouchDB
from picas.documents import Task
from picas.shaping import Shape
from picas.sources import Record
from picas.state import TokenState


@pytest.fixture
def users(couch, db):
    """A member of the test database and a user who is not one: name -> password."""
    admin = couch.transport()
    made = {}
    for role in ("member", "outsider"):
        name = f"picas_{role}_{uuid.uuid4().hex[:8]}"
        password = uuid.uuid4().hex
        rev = admin.request("PUT", ["_users", f"org.couchdb.user:{name}"], json={
            "name": name, "password": password, "roles": [], "type": "user"})["rev"]
        made[role] = (name, password, rev)
    db.set_security({"admins": {"names": [], "roles": []},
                     "members": {"names": [made["member"][0]], "roles": []}})
    yield {role: (name, password) for role, (name, password, _) in made.items()}
    for name, _, rev in made.values():
        admin.request("DELETE", ["_users", f"org.couchdb.user:{name}"], params={"rev": rev})


def environment(couch, db, tmp_path, who: tuple[str, str] | None) -> dict:
    return {"PICAS_URL": couch.url, "PICAS_DATABASE": db.name,
            "PICAS_USERNAME": who[0] if who else None, "PICAS_PASSWORD": who[1] if who else None,
            "PICAS_CONFIG": str(tmp_path / "conf.yml"), "PICAS_PROFILE": None}


def picas(env: dict, *args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env=env)


def pilot(env: dict, tmp_path) -> subprocess.CompletedProcess:
    full = {k: v for k, v in {**__import__("os").environ, **env}.items() if v is not None}
    for name in [k for k, v in env.items() if v is None]:
        full.pop(name, None)
    return subprocess.run([sys.executable, "-m", "picas", "pilot", "--max-tasks", "1",
                           "--workdir", str(tmp_path / "work"), "--json"],
                          env=full, capture_output=True, text=True, timeout=120)


def ok(result: Result) -> Result:
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def refused_in_one_line(stderr: str, code: int) -> str:
    assert code == 1, stderr
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


def test_a_member_runs_pilots_and_every_day_to_day_command(couch, db, users, tmp_path):
    env = environment(couch, db, tmp_path, users["member"])
    assert "added 4 tokens" in ok(picas(env, "tokens", "add", "--grid", "n=1..4",
                                        "--command", "echo token {n}")).stdout
    ran = pilot(env, tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["outcomes"] == {"succeeded": 1}
    done = json.loads(ok(picas(env, "tokens", "list", "--view", "done", "--json")).stdout)
    token_id = done[0]["_id"]
    assert "state        done" in ok(picas(env, "tokens", "show", token_id)).stdout
    assert ok(picas(env, "logs", token_id)).stdout.startswith("token ")
    todo = [t["_id"] for t in json.loads(ok(picas(env, "tokens", "list", "--view", "todo",
                                                  "--json")).stdout)]
    assert "held 1 token" in ok(picas(env, "tokens", "hold", todo[0])).stdout
    assert "released 1 token" in ok(picas(env, "tokens", "release", todo[0])).stdout
    assert "cancelled 1 token" in ok(picas(env, "tokens", "cancel", todo[1], "--yes")).stdout
    assert "reset 1 token" in ok(picas(env, "tokens", "reset", todo[1], "--yes")).stdout
    assert "deleted 1 token" in ok(picas(env, "tokens", "delete", todo[2], "--yes")).stdout
    assert json.loads(ok(picas(env, "status", "--json")).stdout)["done"] == 1
    ok(picas(env, "recover"))
    ok(picas(env, "export", "-o", str(tmp_path / "all.jsonl")))
    assert len((tmp_path / "all.jsonl").read_text().splitlines()) == 3
    client = CouchDB(couch.url, db.name, *users["member"])
    client.save(Task({"_id": "upstream-1", "command": "echo upstream"}))
    assert client["upstream-1"]["command"] == "echo upstream"
    actor = ShellActor(client)
    actor.run(max_tasks=1)
    assert actor.seen and state.classify(db.get(actor.seen[0])) is TokenState.DONE


def test_a_member_is_told_that_db_create_and_views_push_need_an_admin(couch, db, users,
                                                                      tmp_path):
    env = environment(couch, db, tmp_path, users["member"])
    name = users["member"][0]
    views = db.get("_design/Monitor")
    db.delete(views["_id"], views["_rev"])
    create = picas(env, "db", "create")
    assert f"needs a server admin, and user '{name}' is not one" in \
        refused_in_one_line(create.stderr, create.exit_code)
    push = picas(env, "views", "push")
    assert f"pushing views needs an admin of database '{db.name}' or a server admin, " \
           f"and user '{name}' is neither" in refused_in_one_line(push.stderr, push.exit_code)


#: Every command a member may use, as an outsider would try it.
COMMANDS = [
    ["tokens", "add", "--grid", "n=1..2", "--command", "echo {n}"],
    ["tokens", "list"], ["tokens", "show", "t0"], ["logs", "t0"],
    ["tokens", "reset", "t0", "--yes"], ["tokens", "hold", "t0"], ["tokens", "release", "t0"],
    ["tokens", "cancel", "t0", "--yes"], ["tokens", "delete", "t0", "--yes"],
    ["status"], ["recover"], ["export"], ["views", "push"], ["db", "create"],
]


@pytest.mark.parametrize("who", ["outsider", "anonymous"])
def test_outsiders_are_refused_by_every_command_in_one_line(couch, db, users, tmp_path, who):
    adding.add(db, shaping.build([Record({"_id": "t0", "command": "true"}, "r")], Shape()))
    before = db.info()["doc_count"]
    env = environment(couch, db, tmp_path, users.get(who))
    said = {}
    for args in COMMANDS:
        result = picas(env, *args)
        said[" ".join(args[:2])] = refused_in_one_line(result.stderr, result.exit_code)
    ran = pilot(env, tmp_path)
    said["pilot"] = refused_in_one_line(ran.stderr, ran.returncode)
    for command, line in said.items():
        assert db.name in line or "server admin" in line, (command, line)
    with pytest.raises((errors.AuthenticationFailed, errors.PermissionDenied)):
        CouchDB(couch.url, db.name, *(users.get(who) or (None, ""))).save(Task({"_id": "u"}))
    assert db.info()["doc_count"] == before
