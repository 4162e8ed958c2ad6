"""Results are never lost: retried, spooled when the server is gone, pushed later."""
from __future__ import annotations

import json

from click.testing import CliRunner
from pilots import add, tokens, wait_for

from picas import claim, results, server, state
from picas.cli import cli
from picas.database import Database
from picas.state import Holder, Outcome, TokenState
from picas.transport import Transport


def _claimed(db: Database, token_id: str) -> dict:
    add(db, tokens({token_id: "true"}))
    # (A cluster's view may not show the new token for a moment.)
    got = wait_for(lambda: claim.claim(db, Holder("p1", "host"), source=claim.ViewSource()).tokens)
    (token,) = got
    return token


def _result(token: dict, outcome: Outcome = Outcome.SUCCEEDED) -> results.Result:
    attempt = state.new_attempt(token, outcome, exit_code=0)
    return results.Result(token["_id"], state.lease_id(token), attempt,
                          {"attempt-1.stdout": ("text/plain", b"kept\n")})


def test_a_result_the_server_cannot_take_is_spooled_then_pushed(db, couch, tmp_path):
    token = _claimed(db, "t")
    dead = Database(Transport(f"http://127.0.0.1:{server.free_port()}", couch.username,
                              couch.password), db.name)
    writer = results.ResultWriter(dead, tmp_path / "spool", retry_for=0.5)
    writer.add(token, _result(token))
    writer.flush()
    (spooled,) = list((tmp_path / "spool").glob("*.json"))
    assert json.loads(spooled.read_text())["token_id"] == "t"
    assert state.classify(db.get("t")) is TokenState.LOCKED  # nothing half-written

    env = {"PICAS_URL": couch.url, "PICAS_DATABASE": db.name, "PICAS_USERNAME": couch.username,
           "PICAS_PASSWORD": couch.password, "PICAS_CONFIG": str(tmp_path / "none.yml")}
    answer = CliRunner().invoke(cli, ["recover", "--spool", str(tmp_path / "spool"), "--json"],
                                env=env)
    assert answer.exit_code == 0, answer.output
    assert json.loads(answer.output)["pushed"] == 1
    done = db.get("t")
    assert state.classify(done) is TokenState.DONE
    assert db.get_attachment("t", "attempt-1.stdout") == b"kept\n"
    assert not list((tmp_path / "spool").glob("*.json"))


def test_pushing_the_same_result_twice_records_it_once(db, tmp_path):
    token = _claimed(db, "t")
    result = _result(token)
    spool = tmp_path / "spool"
    spool.mkdir()
    for name in ("a.json", "b.json"):
        results.write_atomically(spool / name, json.dumps(result.to_json()).encode())
    assert results.push_spool(db, spool) == 2
    assert [a["outcome"] for a in db.get("t")["attempts"]] == ["succeeded"]


def test_a_result_for_a_lease_taken_over_becomes_a_late_attempt(db, tmp_path):
    token = _claimed(db, "t")
    stale_lease = dict(token)
    # Another pilot took the token over after the lease ran out, and finished it.
    taken = state.lock(state.expire(db.get("t"), now=token["lease"]["expires"] + 1),
                       Holder("p2", "other"), 60)
    db.put(taken)
    db.put(state.finish(taken, state.new_attempt(taken, Outcome.SUCCEEDED, exit_code=0)))
    writer = results.ResultWriter(db, tmp_path / "spool")
    writer.add(stale_lease, _result(stale_lease, Outcome.FAILED))
    writer.flush()
    final = db.get("t")
    assert state.classify(final) is TokenState.DONE
    assert [(a["outcome"], a.get("late", False)) for a in final["attempts"]] == [
        ("lease_lost", False), ("succeeded", False), ("failed", True)]
    assert writer.late == 1
