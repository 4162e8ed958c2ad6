"""Failure triage: signatures, `picas errors`, and hosts that fail far more than others."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from pilots import add, run_pilot, tokens

from picas import state, triage
from picas.cli import cli
from picas.state import Outcome

# -- signatures ---------------------------------------------------------------------


@pytest.mark.parametrize("one, other", [
    ("Traceback: File \"/home/a/run_17.py\", line 12\nValueError: bad value 3.25",
     "Traceback: File \"/scratch/b/run_99.py\", line 140\nValueError: bad value -7"),
    ("segfault at 0x7ffd3a2b in worker 12", "segfault at 0xdeadbeef in worker 3"),
    ("checksum 9f86d081884c7d65 does not match", "checksum 60303ae22b998861 does not match"),
    ("cannot open ./data/in-004.dat: No such file", "cannot open ./data/in-120.dat: No such file"),
])
def test_the_same_fault_on_other_inputs_has_the_same_signature(one, other):
    assert triage.signature(one.encode()) == triage.signature(other.encode())


def test_different_faults_have_different_signatures():
    assert (triage.signature(b"MemoryError\n") != triage.signature(b"disk quota exceeded\n")
            != triage.signature(b""))


def test_a_signature_is_the_last_lines_of_stderr_without_blank_ones():
    err = b"starting 1\nstep 2\n\nwarning: x\nfatal: y\n\n"
    assert triage.signature(err) == "step <n> | warning: x | fatal: y"


def test_without_stderr_the_error_message_or_the_outcome_is_the_signature():
    assert triage.signature(b"", Outcome.TIMED_OUT) == "(timed_out, no stderr)"
    assert triage.signature(b"", Outcome.FAILED, error="the token has no 'command'") == (
        "the token has no 'command'")


def test_a_signature_is_short_even_for_huge_lines():
    assert len(triage.signature(b"x" * 100_000)) == triage.SIGNATURE_CHARS


# -- hosts ---------------------------------------------------------------------------

def test_a_host_failing_far_more_than_the_rest_is_suspect():
    by_host = {"good1": {"succeeded": 40, "failed": 1}, "good2": {"succeeded": 38},
               "bad": {"failed": 9, "succeeded": 1}, "new": {"failed": 2}}
    (suspect,) = triage.suspect_hosts(by_host)
    assert suspect["host"] == "bad" and suspect["failure_rate"] == 0.9
    assert suspect["others_rate"] == pytest.approx(3 / 81, abs=1e-3)


def test_when_every_host_fails_alike_no_host_is_suspect():
    by_host = {f"h{i}": {"failed": 10, "succeeded": 2} for i in range(4)}
    assert triage.suspect_hosts(by_host) == []


# -- picas errors ------------------------------------------------------------------

#: Three faults, each on several inputs, and a token without a command.
PLANTED = {
    **{f"missing-{i}": f"cat ./input-{i}.dat" for i in range(4)},
    **{f"value-{i}": f"python3 -c \"raise ValueError('bad value {i * 7}')\"" for i in range(3)},
    **{f"quota-{i}": f"echo 'writing block {i}'; echo 'quota exceeded for uid {1000 + i}' >&2; "
                     "exit 3" for i in range(2)},
    "fine": "true",
}


def _errors(env: dict, *args: str):
    result = CliRunner().invoke(cli, ["errors", *args], env=env)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def planted(db, pilot_env, tmp_path) -> dict:
    docs = [*tokens(PLANTED, max_attempts=1),
            {**tokens({"no-command": None})[0], "max_attempts": 1}]
    del docs[-1]["command"]
    add(db, docs)
    run_pilot(pilot_env, workdir=tmp_path)
    return {group["sample"].rsplit("-", 1)[0]: group
            for group in json.loads(_errors(pilot_env, "--json"))}


def test_errors_groups_the_planted_causes_with_counts_hosts_and_a_sample(planted):
    assert {cause: g["count"] for cause, g in planted.items()} == {
        "missing": 4, "value": 3, "quota": 2, "no": 1}
    assert {g["exit_code"] for g in planted.values()} == {1, 3}
    assert planted["missing"]["signature"] == (
        "cat: <path>: No such file or directory")
    assert planted["value"]["signature"].endswith("ValueError: bad value <n>")
    assert planted["quota"]["signature"] == "quota exceeded for uid <n>"
    assert planted["no"]["signature"].startswith("the token has no 'command'")
    import socket
    assert all(g["hosts"] == {socket.gethostname(): g["count"]} for g in planted.values())
    assert len({g["group"] for g in planted.values()}) == 4


def test_errors_shows_each_group_in_a_few_lines(planted, pilot_env):
    text = _errors(pilot_env)
    assert text.startswith("10 error tokens in 4 groups")
    assert f"group {planted['missing']['group']}       4  exit code 1" in text
    assert "cat: <path>: No such file or directory" in text


def test_errors_reset_puts_one_group_back_in_todo(planted, pilot_env, db):
    group = planted["quota"]["group"]
    result = CliRunner().invoke(cli, ["errors", "--reset", group[:5], "--yes"], env=pilot_env)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"reset 2 tokens of group {group} to todo"
    assert [state.classify(db.get(f"quota-{i}")).value for i in range(2)] == ["todo"] * 2
    assert state.classify(db.get("missing-0")) is state.TokenState.ERROR
    assert {g["sample"].rsplit("-", 1)[0] for g in json.loads(_errors(pilot_env, "--json"))} == {
        "missing", "value", "no"}


def test_errors_reset_of_an_unknown_group_says_so_in_one_line(planted, pilot_env):
    result = CliRunner().invoke(cli, ["errors", "--reset", "zzzz", "--yes"], env=pilot_env)
    assert result.exit_code == 1
    assert result.output.strip().startswith("error: no group 'zzzz' of error tokens")


def test_errors_on_a_pool_without_errors(db, pilot_env):
    assert _errors(pilot_env).strip() == f"no error tokens in database '{db.name}'"
