"""Creating tokens: readers, grid, directory, shaping, validation, bulk add, watch."""
from __future__ import annotations

import json
import threading

import pytest

from picas import adding, injector, shaping, shutdown, sources, state
from picas.errors import InvalidToken
from picas.shaping import Shape
from picas.sources import Record


def shape_all(records, **how):
    return shaping.build(records, Shape(**how))


# -- readers -------------------------------------------------------------------

def test_json_array_records_know_their_lines(tmp_path):
    path = tmp_path / "t.json"
    path.write_text('[\n  {"command": "a"},\n\n  {"command": "b",\n   "x": 1}\n]\n')
    records = sources.read_file(path)
    assert [r.origin for r in records] == [f"{path}:2", f"{path}:4"]
    assert records[1].fields == {"command": "b", "x": 1}


@pytest.mark.parametrize("text, line, reason", [
    ('[\n {"command": "a"},\n {"command": }\n]', 3, "not valid JSON"),
    ('[\n {"command": "a"}\n {"command": "b"}\n]', 3, "expected ',' or ']'"),
    ('{"command": "a"}', 1, "expected a JSON array"),
    ('[{"command": "a"}] x', 1, "extra data"),
    ('', 1, "empty"),
])
def test_malformed_json_names_file_and_line(tmp_path, text, line, reason):
    path = tmp_path / "t.json"
    path.write_text(text)
    with pytest.raises(InvalidToken, match=rf"^{path}:{line}: .*{reason}"):
        sources.read_file(path)


def test_jsonl_skips_blank_lines_and_reports_bad_ones(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"command": "a"}\n\n{"command": "b"}\n')
    assert [r.origin for r in sources.read_file(path)] == [f"{path}:1", f"{path}:3"]
    path.write_text('{"command": "a"}\n{"command": "b"\n')
    with pytest.raises(InvalidToken, match=rf"^{path}:2: not valid JSON"):
        sources.read_file(path)


def test_yaml_list_with_lines(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("- command: a\n  x: 1\n- command: b\n")
    records = sources.read_file(path)
    assert [(r.fields, r.origin) for r in records] == [
        ({"command": "a", "x": 1}, f"{path}:1"), ({"command": "b"}, f"{path}:3")]
    path.write_text("- command: a\n- command: [b\n")
    with pytest.raises(InvalidToken, match=rf"^{path}:\d+: not valid YAML"):
        sources.read_file(path)
    path.write_text("command: a\n")
    with pytest.raises(InvalidToken, match="expected a YAML list"):
        sources.read_file(path)


def test_csv_rows_become_input_with_text_values(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("name,seed,priority\nalpha,1,5\nbeta,2,7\n")
    built = shape_all(sources.read_file(path), command="run {name} {seed}")
    assert [t["input"] for t in built] == [{"name": "alpha", "seed": "1"},
                                           {"name": "beta", "seed": "2"}]
    assert [t["priority"] for t in built] == [5, 7]
    assert built[0]["command"] == "run alpha 1"


def test_csv_row_with_wrong_width_names_its_line(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b\n1,2\n3,4,5\n")
    with pytest.raises(InvalidToken, match=rf"^{path}:3: more values than columns"):
        sources.read_file(path)


def test_unknown_extension_and_non_utf8(tmp_path):
    with pytest.raises(InvalidToken, match=r"unknown file type '\.txt'"):
        (tmp_path / "t.txt").write_text("x")
        sources.read_file(tmp_path / "t.txt")
    path = tmp_path / "t.jsonl"
    path.write_bytes(b'{"command": "a"}\n{"command": "\xff"}\n')
    with pytest.raises(InvalidToken, match=rf"^{path}:2: not UTF-8"):
        sources.read_file(path)


def test_missing_file_is_an_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        sources.read_file(tmp_path / "nope.json")


# -- grid and directory ------------------------------------------------------------

def test_grid_is_the_product_of_its_values():
    records = list(sources.grid(["alpha=0.1,0.2", "seed=1..3", "mode=fast"]))
    assert len(records) == 6
    assert records[0].fields == {"alpha": 0.1, "seed": 1, "mode": "fast"}
    assert records[-1].fields == {"alpha": 0.2, "seed": 3, "mode": "fast"}
    assert [r.fields["n"] for r in sources.grid(["n=1..2,5,-1..0"])] == [1, 2, 5, -1, 0]


@pytest.mark.parametrize("specs, message", [
    (["seed"], "use NAME=V1,V2"),
    (["seed=5..1"], "'seed=5..1': the range 5..1 is empty"),
    (["seed=1,,2"], "empty value"),
    (["seed="], "'seed=': empty value"),
    (["seed=1.."], "'seed=1..': '1..' is not a range"),
    (["seed=a..b"], "'a..b' is not a range: use FIRST..LAST"),
    (["seed=..3"], "'..3' is not a range"),
    (["a=1", "a=2"], "--grid a is given twice"),
    (["a=1..4000", "b=1..3000"], "more than 10,000,000"),
])
def test_bad_grids_are_rejected(specs, message):
    with pytest.raises(InvalidToken, match=message):
        sources.grid(specs)


def test_from_dir_makes_one_token_per_matching_file(tmp_path):
    (tmp_path / "a.dat").write_text("1")
    (tmp_path / "b.dat").write_text("2")
    (tmp_path / "c.txt").write_text("3")
    (tmp_path / ".d.dat").write_text("partial copy")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "e.dat").write_text("5")
    built = shape_all(sources.scan_dir(tmp_path, "*.dat"), command="process {path}")
    assert [t["input"]["name"] for t in built] == ["a.dat", "b.dat"]
    assert built[0]["input"] == {"path": str(tmp_path / "a.dat"), "name": "a.dat", "stem": "a"}
    assert built[0]["command"] == f"process {tmp_path / 'a.dat'}"
    assert len(sources.scan_dir(tmp_path, "**/*.dat")) == 3
    with pytest.raises(InvalidToken, match="not a directory"):
        sources.scan_dir(tmp_path / "a.dat")


# -- shaping -----------------------------------------------------------------------

def test_new_tokens_have_upstream_fields_and_are_todo():
    token = shape_all([Record({"command": "true", "x": 1}, "here")])[0]
    for key, value in {"type": "token", "lock": 0, "done": 0, "hostname": "",
                       "scrub_count": 0, "exit_code": "", "output": {}, "error": []}.items():
        assert token[key] == value
    assert token["input"] == {"x": 1}
    assert state.classify(token) is state.TokenState.TODO


def test_template_values_are_shell_quoted():
    record = Record({"name": "a b; rm -rf /", "n": 3, "cfg": {"k": 1}}, "here")
    token = shape_all([record], command="run {name} --n {n:03d} --cfg {cfg}")[0]
    assert token["command"] == "run 'a b; rm -rf /' --n 003 --cfg '{\"k\": 1}'"


def test_template_sees_token_fields_and_literal_braces():
    token = shape_all([Record({"x": 1}, "here")], command="echo {{x}} {x} {priority}",
                      priority=4)[0]
    assert token["command"] == "echo {x} 1 4"


def test_template_missing_field_names_the_origin():
    with pytest.raises(InvalidToken, match=r"^f.csv:3: --command uses \{seed\}, but the token "
                                           r"has no such field \(its fields: input, name"):
        shape_all([Record({"name": "a"}, "f.csv:3")], command="run {seed}")


@pytest.mark.parametrize("template, message", [
    ("run {seed", "expected '}'"),
    ("run {}", "name the token field"),
])
def test_malformed_template_fails_once(template, message):
    records = [Record({"seed": n}, f"r{n}") for n in range(3)]
    with pytest.raises(InvalidToken, match=message) as info:
        shape_all(records, command=template)
    assert "invalid tokens" not in str(info.value)


def test_command_line_settings_win_and_tags_add_up():
    record = Record({"command": "a", "priority": 1, "max_attempts": 2, "tags": ["x"]}, "r")
    token = shape_all([record], priority=9, max_attempts=5, tags=("y", "x"))[0]
    assert (token["priority"], token["max_attempts"], token["tags"]) == (9, 5, ["x", "y"])


def test_ids_derive_from_what_runs():
    one = shape_all([Record({"command": "a", "x": 1, "priority": 1}, "r")])[0]
    same = shape_all([Record({"command": "a", "x": 1, "priority": 7, "tags": ["t"]}, "r")])[0]
    other = shape_all([Record({"command": "a", "x": 2}, "r")])[0]
    assert one["_id"] == same["_id"] != other["_id"]
    assert one["_id"].startswith("t-") and len(one["_id"]) == 22
    given = shape_all([Record({"_id": "mine", "command": "a"}, "r")])[0]
    assert given["_id"] == "mine"


def test_everything_is_checked_and_every_problem_reported():
    records = [Record({"command": "ok"}, "f:1"), Record({"x": 1}, "f:2"),
               Record({"command": "b", "lock": 1}, "f:3"), Record([1, 2], "f:4"),
               Record({"command": "c", "priority": "high"}, "f:5"),
               Record({"command": "d", "env": {"A": [1]}}, "f:6"),
               Record({"command": ["ls", 3]}, "f:7")]
    with pytest.raises(InvalidToken) as info:
        shaping.build(records)
    lines = str(info.value).splitlines()
    assert lines[0] == "6 invalid tokens:"
    assert [line.split(":")[1] for line in lines[1:]] == ["2", "3", "4", "5", "6", "7"]
    assert "--command TEMPLATE" in lines[1]
    assert "'lock' is managed by picas" in lines[2]


def test_same_given_id_for_different_tokens_is_an_error():
    records = [Record({"_id": "x", "command": "a"}, "f:1"),
               Record({"_id": "x", "command": "b"}, "f:2")]
    with pytest.raises(InvalidToken, match="f:2: _id 'x' is already used by a different "
                                           "token at f:1"):
        shaping.build(records)


def test_tokens_without_command_pass_when_not_required():
    token = shaping.build([Record({"x": 1}, "r")], Shape(require_command=False))[0]
    assert "command" not in token


# -- adding ------------------------------------------------------------------------

def grid_tokens(n: int) -> list[dict]:
    return shaping.build(sources.grid([f"seed=1..{n}"]), Shape(command="echo {seed}"))


def test_add_twice_adds_nothing_the_second_time(db):
    new = grid_tokens(7)
    steps = []
    first = adding.add(db, new, batch=3, progress=steps.append)
    assert (first.added, first.existing, first.failed) == (7, 0, [])
    assert steps == [3, 3, 1]
    again = adding.add(db, grid_tokens(7), batch=3)
    assert (again.added, again.existing) == (0, 7)
    rows = db.view("Monitor", "todo")["rows"]
    assert sorted(r["id"] for r in rows) == sorted(t["_id"] for t in new)


def test_duplicates_in_one_input_are_added_once(db):
    report = adding.add(db, grid_tokens(2) + grid_tokens(2))
    assert (report.added, report.duplicates) == (2, 2)


def test_given_id_conflicts_only_when_the_content_differs(db):
    first = shaping.build([Record({"_id": "job-1", "command": "a"}, "r")])
    assert adding.add(db, first).added == 1
    same = adding.add(db, shaping.build([Record({"_id": "job-1", "command": "a"}, "r")]))
    assert (same.existing, same.failed) == (1, [])
    other = adding.add(db, shaping.build([Record({"_id": "job-1", "command": "b"}, "r")]))
    assert other.failed == [("job-1", "a different document with this _id exists")]
    assert db.get("job-1")["command"] == "a"


def test_added_tokens_keep_their_fields(db):
    record = Record({"command": ["python", "x.py"], "env": {"A": 1}, "x": 2,
                     "expected_runtime": 30}, "r")
    token = shaping.build([record], Shape(priority=3, tags=("t",)))[0]
    adding.add(db, [token])
    stored = db.get(token["_id"])
    assert stored["command"] == ["python", "x.py"]
    assert stored["env"] == {"A": "1"}
    assert (stored["priority"], stored["tags"], stored["expected_runtime"]) == (3, ["t"], 30)


# -- watching ----------------------------------------------------------------------

def test_watch_adds_new_files_once_they_stop_changing(db, tmp_path):
    shutdown.reset()
    (tmp_path / "first.dat").write_text("1")
    reports = []

    def added(report: adding.AddReport) -> None:
        reports.append(report)
        if len(reports) == 1:
            (tmp_path / "second.dat").write_text("2")
            (tmp_path / "ignored.txt").write_text("3")
        else:
            shutdown.requested.set()

    try:
        total = injector.watch(db, tmp_path, "*.dat", Shape(command="cat {path}"),
                             interval=0.1, max_time=30, on_added=added)
    finally:
        shutdown.reset()
    assert total.added == 2
    assert [r.added for r in reports] == [1, 1]
    commands = sorted(doc["doc"]["command"] for doc in
                      db.view("Monitor", "todo", include_docs=True)["rows"])
    assert commands == [f"cat {tmp_path / 'first.dat'}", f"cat {tmp_path / 'second.dat'}"]


def test_watch_stops_on_the_shutdown_flag(db, tmp_path):
    shutdown.reset()
    result = []
    watcher = threading.Thread(target=lambda: result.append(injector.watch(
        db, tmp_path, "*", Shape(command="cat {path}"), interval=0.1, max_time=30)))
    watcher.start()
    shutdown.requested.set()
    watcher.join(timeout=20)
    shutdown.reset()
    assert not watcher.is_alive(), "watch ignored the shutdown flag"
    assert result[0].added == 0


def test_watch_records_json_ready_reports(db, tmp_path):
    (tmp_path / "a.dat").write_text("1")
    total = injector.watch(db, tmp_path, "*", Shape(command="cat {path}"), interval=0.1,
                         max_time=0)
    assert json.loads(json.dumps(total.as_dict()))["added"] == 1


def test_adding_a_token_with_a_priority_switches_the_pool_to_priorities(db):
    from picas import pool
    plain = {**pilot_token("plain"), "priority": 0}
    adding.add(db, [plain])
    assert pool.uses_priorities(db) is False
    adding.add(db, [{**pilot_token("urgent"), "priority": 5}])
    assert pool.uses_priorities(db) is True


def pilot_token(token_id: str) -> dict:
    return {"_id": token_id, "type": "token", "lock": 0, "done": 0, "command": "true"}
