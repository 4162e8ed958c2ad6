"""A pilot on a broken node ("black hole") stops itself instead of draining
the pool into error, and `picas status` points at the node."""
from __future__ import annotations

import json

from click.testing import CliRunner
from pilots import add, finish, run_pilot, start_pilot, states, tokens, wait_for

from picas import state
from picas.cli import cli
from picas.state import TokenState

#: Fails at once wherever BROKEN is set (a node without its GPU, say), else works.
TASK = ('if [ -n "$BROKEN" ]; then echo "cannot open /dev/nvidia0: no such device" >&2; '
        'exit 7; fi; sleep 0.2')


def _black_hole_pilot(env: dict, tmp_path, *args: str):
    proc = start_pilot({**env, "BROKEN": "1"}, "--host", "bad-node", *args,
                       workdir=tmp_path / "bad")
    out, err = proc.communicate(timeout=120)
    return proc.returncode, json.loads(out.decode().splitlines()[-1]), err.decode()


def test_a_black_hole_pilot_stops_while_healthy_pilots_drain_the_pool(db, pilot_env, tmp_path):
    add(db, tokens({f"t{i:02d}": TASK for i in range(60)}, max_attempts=1))
    healthy = [start_pilot(pilot_env, "--host", f"good-{n}", workdir=tmp_path / f"good{n}")
               for n in range(2)]
    wait_for(lambda: states(db).get("done", 0) >= 2)
    code, report, err = _black_hole_pilot(pilot_env, tmp_path)
    for proc in healthy:
        finish(proc)
    run_pilot(pilot_env, "--host", "good-0", workdir=tmp_path / "good0")  # anything handed back

    assert code == 4 and report["stopped_because"] == "black-hole"
    assert report["outcomes"] == {"failed": 5}
    (line,) = err.strip().splitlines()
    assert line.startswith("error: stopped claiming: this host (bad-node) failed 5 different "
                           "tokens in a row that did not fail on other hosts")
    # max_attempts is 1, yet no token went to error: the failures were the node's
    assert states(db) == {"done": 60}
    blamed = [doc for doc in (db.get(f"t{i:02d}") for i in range(60))
              if any(a["host"] == "bad-node" for a in doc["attempts"])]
    assert len(blamed) == 5
    for doc in blamed:
        failed, succeeded = doc["attempts"]
        assert failed["host_failure"] is True and failed["exit_code"] == 7
        assert succeeded["outcome"] == "succeeded" and succeeded["host"].startswith("good-")

    status = CliRunner().invoke(cli, ["status"], env=pilot_env)
    assert ("host bad-node fails 100% of its 5 attempts, the other hosts 0%: a broken node?"
            in status.output)
    summary = json.loads(CliRunner().invoke(cli, ["status", "--json"], env=pilot_env).output)
    assert [s["host"] for s in summary["suspect_hosts"]] == ["bad-node"]


def test_when_every_host_fails_alike_no_pilot_takes_its_host_for_broken(db, pilot_env, tmp_path):
    """A broken task, not a broken node: the tokens go to error as usual."""
    add(db, tokens({f"t{i}": "exit 3" for i in range(8)}, max_attempts=1))
    report = run_pilot(pilot_env, "--host", "h1", workdir=tmp_path)
    assert report["stopped_because"] == "no-work" and report["outcomes"] == {"failed": 8}
    assert states(db) == {"error": 8}


def test_tokens_that_failed_on_other_hosts_too_do_not_count_against_the_host(
        db, pilot_env, tmp_path):
    add(db, tokens({f"ok{i}": "true" for i in range(3)}))
    run_pilot(pilot_env, "--host", "good", workdir=tmp_path / "a")
    bad_everywhere = tokens({f"t{i}": "exit 3" for i in range(6)}, max_attempts=2)
    add(db, bad_everywhere)
    run_pilot(pilot_env, "--host", "other", "--black-hole", "0", "--max-tasks", "6",
              workdir=tmp_path / "b")
    # every token failed once on "other" already: five failures here prove nothing
    report = run_pilot(pilot_env, "--host", "third", "--black-hole", "2",
                       workdir=tmp_path / "c")
    assert report["stopped_because"] == "no-work" and report["outcomes"] == {"failed": 6}
    assert states(db) == {"done": 3, "error": 6}


def test_black_hole_zero_turns_the_rule_off(db, pilot_env, tmp_path):
    add(db, tokens({"ok": "true"}))
    run_pilot(pilot_env, "--host", "good", workdir=tmp_path / "a")
    add(db, tokens({f"t{i}": TASK for i in range(6)}, max_attempts=1))
    report = run_pilot({**pilot_env, "BROKEN": "1"}, "--host", "bad", "--black-hole", "0",
                       workdir=tmp_path / "b")
    assert report["outcomes"] == {"failed": 6} and states(db) == {"done": 1, "error": 6}


def test_blame_host_refunds_only_that_pilots_failures():
    token = {"_id": "t", "type": "token", "lock": 5, "done": 6, "exit_code": 7, "attempts": [
        {"pilot": "p1", "outcome": "failed", "host": "bad"},
        {"pilot": "p2", "outcome": "failed", "host": "ok"},
        {"pilot": "p1", "outcome": "lease_lost", "host": "bad"}]}
    blamed = state.blame_host(token, "p1", default_max_attempts=2)
    assert [a.get("host_failure") for a in blamed["attempts"]] == [True, None, None]
    assert state.classify(blamed) is TokenState.TODO and blamed["exit_code"] == ""
    assert state.application_failures(blamed) == 1 and state.infrastructure_failures(blamed) == 2
    # with one attempt allowed, the failure on "ok" alone uses it up: it stays in error
    assert state.classify(state.blame_host(token, "p1", default_max_attempts=1)) is (
        TokenState.ERROR)
