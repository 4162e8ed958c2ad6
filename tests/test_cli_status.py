"""`picas status` (once, as JSON, and watching) and `picas server start|stop|status`."""
from __future__ import annotations

import json
import socket
import threading

import pytest
import requests
from click.testing import CliRunner, Result
from support import missing

from picas import adding, errors, overview, server, shaping, state
from picas.cli import cli
from picas.server import free_port
from picas.shaping import Shape
from picas.sources import Record
from picas.state import Holder, Outcome


@pytest.fixture
def env(couch, db, tmp_path) -> dict:
    return {"PICAS_URL": couch.url, "PICAS_DATABASE": db.name,
            "PICAS_USERNAME": couch.username, "PICAS_PASSWORD": couch.password,
            "PICAS_CONFIG": str(tmp_path / "conf.yml"), "PICAS_PROFILE": None}


def picas(env: dict, *args: str, **extra: str | None) -> Result:
    return CliRunner().invoke(cli, list(args), env={**env, **extra})


def add(db, n: int) -> list[dict]:
    new = shaping.build([Record({"_id": f"t{i}", "command": "true"}, "r") for i in range(n)],
                       Shape())
    adding.add(db, new)
    return [db.get(t["_id"]) for t in new]


def succeed(db, doc: dict) -> None:
    locked = state.lock(doc, Holder("p", "h"), 60)
    db.put(locked)
    db.put(state.finish(locked, state.new_attempt(locked, Outcome.SUCCEEDED, exit_code=0)))


def test_status_shows_states_running_errors_and_rate(db, env):
    docs = add(db, 4)
    succeed(db, docs[0])
    db.put(state.lock(docs[1], Holder("pilot-x", "node-9"), 300))
    locked = state.lock(docs[2], Holder("p", "h"), 60)
    db.put(locked)
    db.put(state.finish(locked, state.new_attempt(locked, Outcome.FAILED, exit_code=127),
                        default_max_attempts=1))
    result = picas(env, "status")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"database '{db.name}' at {env['PICAS_URL']}"
    assert [line.split() for line in lines[1:9]] == [
        ["todo", "1"], ["locked", "1"], ["done", "1"], ["error", "1"], ["held", "0"],
        ["cancelled", "0"], ["waiting", "0"], ["total", "4"]]
    assert "tokens/min, ETA" in result.stdout
    running = next(line for line in lines if line.strip().startswith("t1"))
    assert "node-9" in running and "pilot-x" in running
    assert lines[-2:] == ["errors by exit code:", "  127               1"]


def test_status_json_for_scripts(db, env):
    add(db, 2)
    result = picas(env, "status", "--json")
    summary = json.loads(result.stdout)
    assert {k: summary[k] for k in ("todo", "locked", "done", "error")} == \
        {"todo": 2, "locked": 0, "done": 0, "error": 0}
    assert all(isinstance(summary[k], int) for k in ("todo", "locked", "done", "error"))


def test_watch_refreshes_until_done(db, env, monkeypatch):
    docs = add(db, 2)
    refreshed = threading.Event()
    real_summary = overview.summary

    def summary(*args, **kwargs):
        result = real_summary(*args, **kwargs)
        refreshed.set()
        return result

    monkeypatch.setattr(overview, "summary", summary)
    finisher = threading.Thread(target=lambda: refreshed.wait(30) and
                                [succeed(db, d) for d in docs])
    finisher.start()
    result = picas(env, "status", "--watch", "--interval", "0.1", "--until-done", "--json")
    finisher.join(30)
    assert result.exit_code == 0, result.output
    refreshes = [json.loads(line) for line in result.stdout.splitlines()]
    assert refreshes[0]["todo"] == 2
    assert (refreshes[-1]["done"], refreshes[-1]["todo"]) == (2, 0)


def test_watch_text_has_a_progress_bar(db, env):
    succeed(db, add(db, 1)[0])
    result = picas(env, "status", "--watch", "--until-done", "--interval", "0.1")
    assert result.exit_code == 0, result.output
    assert "[########################################] 100.0%  1/1 finished" in result.stdout


def test_status_errors_are_one_line(env, stranger):
    url = f"http://127.0.0.1:{free_port()}"
    down = picas(env, "status", "--watch", PICAS_URL=url)
    assert down.exit_code == 1 and down.stderr.startswith(f"error: cannot reach CouchDB at {url}")
    wrong = picas(env, "status", PICAS_USERNAME=stranger, PICAS_PASSWORD="wrong")
    assert wrong.exit_code == 1 and "check the username and password" in wrong.stderr


# -- the local server --------------------------------------------------------------

@pytest.fixture
def local(tmp_path) -> tuple[int, dict]:
    """A free port for a server of the test's own, and settings that point at it;
    state and data folders in tmp_path."""
    try:
        server.executable()
    except errors.ConfigError as exc:
        missing(f"pouchdb-server ({exc})")
    port = free_port()
    return port, {
        "PICAS_URL": f"http://127.0.0.1:{port}", "PICAS_USERNAME": None, "PICAS_PASSWORD": None,
        "PICAS_CONFIG": str(tmp_path / "conf.yml"), "PICAS_SERVER_DATA": None,
        "PICAS_DATABASE": None, "PICAS_PROFILE": None, "XDG_STATE_HOME": str(tmp_path / "state"),
        "XDG_DATA_HOME": str(tmp_path / "share")}


def test_server_start_status_stop(tmp_path, local):
    port, env = local
    data = tmp_path / "couch-data"
    env.update(PICAS_USERNAME="admin", PICAS_PASSWORD="s3cret", PICAS_SERVER_DATA=str(data))
    try:
        started = picas(env, "server", "start")
        assert started.exit_code == 0, started.output
        assert f"server started at http://127.0.0.1:{port}" in started.stdout
        assert f"Fauxton: http://127.0.0.1:{port}/_utils" in started.stdout
        session = requests.get(f"http://127.0.0.1:{port}/_session",
                               auth=("admin", "s3cret"), timeout=10).json()
        assert "_admin" in session["userCtx"]["roles"]
        again = picas(env, "server", "start")
        assert "server already running" in again.stdout
        status = picas(env, "server", "status", "--json")
        assert json.loads(status.stdout)["running"] is True
        assert picas(env, "db", "create").exit_code == 0
    finally:
        stopped = picas(env, "server", "stop")
        server.stop_supervised(data)
    assert "stopped the server" in stopped.stdout
    after = picas(env, "server", "status")
    assert after.exit_code == 3 and "not running" in after.stdout


def test_server_start_refuses_a_busy_port(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = picas({"PICAS_CONFIG": str(tmp_path / "conf.yml"), "PICAS_URL": None,
                        "PICAS_USERNAME": None, "PICAS_PASSWORD": None},
                       "server", "start", "--port", str(port), "--data-dir", str(tmp_path / "d"))
    assert result.exit_code == 1 and f"port {port} is in use" in result.stderr


def test_server_status_and_stop_find_the_server_of_the_configured_url(tmp_path, local):
    """As after the demo: the server runs on a data directory of its own, and
    status and stop are given only the settings."""
    port, env = local
    data = tmp_path / "elsewhere"
    try:
        assert picas(env, "server", "start", "--data-dir", str(data)).exit_code == 0
        status = picas(env, "server", "status")
        assert status.exit_code == 0, status.output
        assert f"running at http://127.0.0.1:{port}" in status.stdout
        assert str(data.resolve()) in status.stdout
        stopped = picas(env, "server", "stop")
        assert f"stopped the server of {data.resolve()}" in stopped.stdout
    finally:
        server.stop_supervised(data)
    after = picas(env, "server", "status")
    assert after.exit_code == 3
    assert f"not running (looked in {tmp_path / 'share' / 'picas' / 'server'}; no server that " \
           f"picas started listens on http://127.0.0.1:{port}, and this is the default data " \
           "directory: name another with --data-dir (or PICAS_SERVER_DATA))" in after.stdout


@pytest.mark.parametrize("summary, said", [
    ({"eta_s": 85.0, "eta_basis": "expected_runtime", "eta_guess": False},
     "ETA 1m 25s (from the expected_runtime of the running tokens)"),
    ({"eta_s": 6.0, "eta_basis": "rate", "eta_guess": True},
     "ETA ~6s (a guess from the recent rate)"),
    ({"eta_s": 120.0, "eta_basis": "running", "eta_guess": True},
     "ETA ~2m 00s (a guess: each token as long as the running ones so far)"),
    ({"eta_s": None, "eta_basis": None, "eta_guess": False}, "ETA unknown"),
])
def test_status_says_what_the_eta_rests_on(summary, said):
    from picas.cli.status_cmd import render
    full = {"database": "d", "url": "u", "todo": 1, "locked": 0, "done": 0, "error": 0,
            "held": 0, "cancelled": 0, "waiting": 0, "total": 1, "rate": 1.0, "running": [],
            "errors_by_exit_code": {}, **summary}
    assert f"rate 1.0 tokens/min, {said}" in render(full).splitlines()
