"""Tokens that name a Python function: run like commands, their return value kept."""
from __future__ import annotations

import json
import os
import signal
import textwrap

import pytest
from click.testing import CliRunner
from pilots import TOKEN_BASE, add, finish, run_pilot, start_pilot, state_of, wait_for

from picas import errors, functions, shaping
from picas.cli import cli
from picas.sources import Record
from picas.state import TokenState

MODULE = textwrap.dedent("""
    import json, os, time

    def fit(a, b, scale=1):
        print("fitting", a, b)
        return {"sum": (a + b) * scale, "cwd_files": sorted(os.listdir("."))}

    def broken(x):
        raise ValueError(f"bad x: {x}")

    def unserialisable():
        return {1, 2}

    def slow():
        time.sleep(60)

    def read_input():
        with open(os.environ["PICAS_INPUT_FILE"]) as handle:
            return json.load(handle)

    class Model:
        @staticmethod
        def predict(x):
            return [x, x * 2]
""")


@pytest.fixture
def lib_env(pilot_env, tmp_path):
    """A pilot environment that can import the module ``jobs`` above."""
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "jobs.py").write_text(MODULE)
    return {**pilot_env, "PYTHONPATH": f"{lib}{os.pathsep}{pilot_env['PYTHONPATH']}"}


def function_token(token_id: str, function: str, **fields) -> dict:
    return {**TOKEN_BASE, "_id": token_id, "function": function, **fields}


def test_a_function_runs_in_the_tokens_folder_and_its_return_value_is_the_output(
        db, lib_env, tmp_path):
    add(db, [function_token("fit", "jobs:fit", args=[1, 2], kwargs={"scale": 10}),
             function_token("method", "jobs:Model.predict", args=[3]),
             function_token("stdlib", "math:hypot", args=[3, 4])])
    report = run_pilot(lib_env, workdir=tmp_path / "w")
    assert report["outcomes"] == {"succeeded": 3}
    fit = db.get("fit")
    assert state_of(db, "fit") is TokenState.DONE and fit["exit_code"] == 0
    assert fit["output"] == {"sum": 30, "cwd_files": []}  # an empty folder of its own
    assert db.get("method")["output"] == [3, 6]
    assert db.get("stdlib")["output"] == 5.0
    (attempt,) = fit["attempts"]
    assert attempt["outcome"] == "succeeded" and attempt["provenance"]["function"] == "jobs:fit"
    assert db.get_attachment("fit", "attempt-1.stdout") == b"fitting 1 2\n"


def test_an_exception_is_recorded_with_type_message_and_traceback(db, lib_env, tmp_path):
    add(db, [function_token("broken", "jobs:broken", args=[7], max_attempts=2)])
    report = run_pilot(lib_env, workdir=tmp_path / "w")
    assert report["outcomes"] == {"failed": 2}
    token = db.get("broken")
    assert state_of(db, "broken") is TokenState.ERROR
    assert token["exit_code"] == functions.RAISED
    exception = token["attempts"][-1]["exception"]
    assert exception["type"] == "ValueError" and exception["message"] == "bad x: 7"
    assert 'raise ValueError(f"bad x: {x}")' in exception["traceback"]
    assert token["attempts"][-1]["error"] == "ValueError: bad x: 7"
    assert token["error"][-1]["message"] == "ValueError: bad x: 7"
    assert b"ValueError: bad x: 7" in db.get_attachment("broken", "attempt-2.stderr")
    assert token["output"] == {}  # untouched: nothing was returned


def test_a_function_that_cannot_be_imported_is_a_recorded_failure(db, lib_env, tmp_path):
    add(db, [function_token("no-module", "no_such_module_xyz:run", max_attempts=1),
             function_token("no-name", "jobs:no_such_function", max_attempts=1),
             function_token("malformed", "not a function name"),
             function_token("fine", "jobs:fit", args=[1, 1])])
    report = run_pilot(lib_env, workdir=tmp_path / "w")
    assert report["stopped_because"] == "no-work"
    assert report["outcomes"] == {"failed": 3, "succeeded": 1}
    malformed = db.get("malformed")  # a defect of the token: to error at once
    assert state_of(db, "malformed") is TokenState.ERROR and len(malformed["attempts"]) == 1
    assert "function must name a Python function as 'module:name'" in \
        malformed["attempts"][0]["error"]
    no_module = db.get("no-module")["attempts"][0]
    assert no_module["exit_code"] == functions.CANNOT_IMPORT
    assert no_module["exception"]["type"] == "ModuleNotFoundError"
    assert no_module["error"].startswith("ModuleNotFoundError: cannot import "
                                         "no_such_module_xyz:run")
    no_name = db.get("no-name")["attempts"][0]
    assert no_name["exception"]["type"] == "AttributeError"
    assert "cannot import jobs:no_such_function" in no_name["error"]


def test_a_return_value_that_is_not_json_fails_clearly(db, lib_env, tmp_path):
    add(db, [function_token("set", "jobs:unserialisable", max_attempts=1)])
    run_pilot(lib_env, workdir=tmp_path / "w")
    attempt = db.get("set")["attempts"][0]
    assert attempt["outcome"] == "failed" and attempt["exception"]["type"] == "TypeError"
    assert "returned a set, which is not JSON-serialisable" in attempt["error"]


def test_a_function_has_the_same_time_limit_as_a_command(db, lib_env, tmp_path):
    add(db, [function_token("slow", "jobs:slow", max_attempts=1)])
    run_pilot(lib_env, "--max-token-time", "1", "--grace", "1", workdir=tmp_path / "w")
    (attempt,) = db.get("slow")["attempts"]
    assert attempt["outcome"] == "timed_out" and "exception" not in attempt


def test_sigterm_interrupts_a_function_and_hands_its_token_back(db, lib_env, tmp_path):
    add(db, [function_token("slow", "jobs:slow")])
    proc = start_pilot(lib_env, workdir=tmp_path / "w")
    wait_for(lambda: state_of(db, "slow") is TokenState.LOCKED)
    wait_for(lambda: list((tmp_path / "w").glob("*.call.json")))  # the child is starting
    os.kill(proc.pid, signal.SIGTERM)
    report = finish(proc, timeout=30)
    assert report["stopped_because"] == "signal"
    token = db.get("slow")
    assert state_of(db, "slow") is TokenState.TODO
    assert [a["outcome"] for a in token["attempts"]] == ["interrupted"]


def test_a_function_reads_the_tokens_input_from_the_input_file(db, lib_env, tmp_path):
    add(db, [function_token("in", "jobs:read_input", input={"alpha": 0.5, "name": "x"})])
    run_pilot(lib_env, workdir=tmp_path / "w")
    assert db.get("in")["output"] == {"alpha": 0.5, "name": "x"}


def test_a_return_value_larger_than_a_token_may_hold_fails_the_attempt(
        db, lib_env, tmp_path):
    add(db, [function_token("big", "builtins:list", args=["x" * 3000], max_attempts=1)])
    run_pilot(lib_env, "--max-token-size", "4000", workdir=tmp_path / "w")
    token = db.get("big")
    assert state_of(db, "big") is TokenState.ERROR and token["output"] == {}
    assert "more than the token may hold" in token["attempts"][0]["error"]


# -- adding function tokens ------------------------------------------------------

def shape(fields: dict, how: shaping.Shape = shaping.Shape()) -> dict:
    return shaping.shape(Record(fields, "jobs.jsonl:3"), how)


def test_a_record_may_name_a_function_instead_of_a_command():
    token = shape({"function": "mypkg.mod:fit", "args": [1, 2], "kwargs": {"a": 1}, "n": 5})
    assert (token["function"], token["args"], token["kwargs"]) == ("mypkg.mod:fit", [1, 2],
                                                                   {"a": 1})
    assert "command" not in token and token["input"] == {"n": 5}
    # args and kwargs are not input beside a function; elsewhere they still are
    assert shape({"command": "x", "args": 1})["input"] == {"args": 1}


def test_the_id_depends_on_the_function_and_its_arguments():
    ids = {shape({"function": "m:f", "args": [1]})["_id"],
           shape({"function": "m:f", "args": [2]})["_id"],
           shape({"function": "m:g", "args": [1]})["_id"],
           shape({"function": "m:f", "args": [1], "kwargs": {"k": 1}})["_id"]}
    assert len(ids) == 4
    assert shape({"function": "m:f", "args": [1]})["_id"] in ids  # and it is stable
    # a command token's id is what it always was
    assert shaping.token_id({"command": "x", "input": {}}) == shape({"command": "x"})["_id"]


@pytest.mark.parametrize("fields, says", [
    ({"function": "no_colon"}, "function must name a Python function as 'module:name'"),
    ({"function": "m:f", "args": {"a": 1}}, "args must be a list"),
    ({"function": "m:f", "kwargs": [1]}, "kwargs must be an object"),
    ({"function": "m:f", "command": "echo"}, "a 'function' and a command"),
    ({"x": 1}, "no command: give the token a 'command' field"),
])
def test_malformed_function_records_are_refused_with_file_and_line(fields, says):
    with pytest.raises(errors.InvalidToken) as caught:
        shape(fields)
    assert str(caught.value).startswith("jobs.jsonl:3: ") and says in str(caught.value)


def test_tokens_add_takes_function_records(couch, db, tmp_path):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(json.dumps({"function": "math:hypot", "args": [3, 4]}) + "\n"
                    + json.dumps({"seed": 1}) + "\n")
    env = {"PICAS_URL": couch.url, "PICAS_DATABASE": db.name, "PICAS_USERNAME": couch.username,
           "PICAS_PASSWORD": couch.password, "PICAS_CONFIG": str(tmp_path / "none.yml")}
    refused = CliRunner().invoke(cli, ["tokens", "add", str(jobs)], env=env)
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert f"error: {jobs}:2: no command: give the token a 'command' field" in refused.stderr
    jobs.write_text(json.dumps({"function": "math:hypot", "args": [3, 4]}) + "\n")
    added = CliRunner().invoke(cli, ["tokens", "add", str(jobs)], env=env)
    assert added.exit_code == 0, added.output
    token_id = shape({"function": "math:hypot", "args": [3, 4]})["_id"]
    token = db.get(token_id)
    assert (token["function"], token["args"]) == ("math:hypot", [3, 4])
