"""The design documents: what each view returns, that its JavaScript
compiles, and that pushing them is idempotent.

The state rules live in ``picas.state.classify``; the JavaScript in
``couchviews/`` must agree with it on every token, including the odd ones
that upstream PiCaS pilots leave behind.
"""
from __future__ import annotations

import itertools
import json
import shutil
import subprocess
from collections import Counter

import pytest
from support import eventually, missing

from picas import designdocs, state
from picas.clients import CouchDB
from picas.database import Database
from picas.documents import Task
from picas.state import TokenState

T = 1_700_000_000
MISSING = object()
STATE_VIEWS = {s.value: s for s in TokenState}

# (id, fields, state by the issue's rules, error_by_exit_code key)
CURATED = [
    ("todo_plain", dict(lock=0, done=0), "todo", None),
    ("todo_string_zeros", dict(lock="0", done="0"), "todo", None),
    ("todo_priority", dict(lock=0, done=0, priority=5, tags=["a", "b"]), "todo", None),
    ("locked_plain", dict(lock=T, done=0, tags=["a"]), "locked", None),
    ("locked_fraction", dict(lock=1.5, done=0), "locked", None),
    ("locked_lease", dict(lock=T, done=0, lease={"expires": T + 600.5, "pilot": "p1"}),
     "locked", None),
    ("locked_lease_string", dict(lock=T, done=0, lease={"expires": "soon", "pilot": "p2"}),
     "locked", None),
    ("done_int", dict(lock=T, done=T + 10, exit_code=0, tags=["a"]), "done", None),
    ("done_string", dict(lock=T, done=T + 11, exit_code="0"), "done", None),
    ("done_padded", dict(lock=T, done=T + 11, exit_code=" 0"), "done", None),
    ("error_int", dict(lock=T, done=T + 12, exit_code=1, tags=["b"]), "error", 1),
    ("error_string", dict(lock=T, done=T + 12, exit_code="1"), "error", 1),
    ("error_signal", dict(lock=T, done=T + 13, exit_code=-9), "error", -9),
    ("error_empty_code", dict(lock=T, done=T + 14, exit_code=""), "error", ""),
    ("error_no_code", dict(lock=T, done=T + 14), "error", "undefined"),
    ("error_null_code", dict(lock=T, done=T + 14, exit_code=None), "error", "null"),
    ("upstream_error_empty", dict(lock=99, done=99, exit_code=""), "error", ""),
    ("upstream_error_zero", dict(lock=99, done=99, exit_code=0), "error", 0),
    ("upstream_error_zero_string", dict(lock=99, done=99, exit_code="0", tags=["b"]),
     "error", 0),
    ("held", dict(lock=-1, done=0, tags=["a"]), "held", None),
    ("held_string", dict(lock="-1", done=0), "held", None),
    ("cancelled", dict(lock=-1, done=-1), "cancelled", None),
    ("waiting", dict(lock=-1, done=-2, after=["todo_plain"], waiting_for=["todo_plain"]),
     "waiting", None),
    ("waiting_string", dict(lock="-1", done="-2", tags=["b"]), "waiting", None),
    ("waiting_blocked", dict(lock=-1, done=-2, waiting_for=["error_int", "todo_plain"],
                             blocked_by=["error_int"]), "waiting", None),
    ("waiting_unlocked", dict(lock=0, done=-2), None, None),
    ("no_lock", dict(done=0), None, None),
    ("no_done", dict(lock=0), None, None),
    ("null_lock", dict(lock=None, done=0), None, None),
    ("done_without_lock", dict(lock=0, done=T), None, None),
    ("held_with_done", dict(lock=-1, done=T), None, None),
    ("negative_lock", dict(lock=-5, done=0), None, None),
    ("word_lock", dict(lock="abc", done=0), None, None),
]


def _token(doc_id: str, fields: dict) -> dict:
    return {"_id": doc_id, "type": "token", **fields}


def _others() -> list[dict]:
    """Documents that are in no state: other types, and a design document."""
    return [
        {"_id": "type_task", "type": "task", "lock": 0, "done": 0},
        {"_id": "type_job", "type": "job", "lock": 0, "done": 0},
        {"_id": "no_type", "lock": 0, "done": 0},
        {"_id": "_design/looks_like_a_token", "type": "token", "lock": 0, "done": 0},
    ]


def _expected_ids(docs: list[dict]) -> dict[TokenState, list[str]]:
    expected: dict[TokenState, list[str]] = {s: [] for s in TokenState}
    for doc in docs:
        found = state.classify(doc)
        if found is not None:
            expected[found].append(doc["_id"])
    return {s: sorted(ids) for s, ids in expected.items()}


def _view_ids(db: Database, design: str, view: str) -> list[str]:
    return sorted(row["id"] for row in db.iter_view(design, view))


def _grouped(db: Database, view: str) -> dict:
    rows = db.view("Monitor", view, group=True)["rows"]
    return {json.dumps(row["key"]): row["value"] for row in rows}


def _save(db: Database, docs: list[dict]) -> None:
    results = db.bulk_docs(docs)
    assert all("error" not in r for r in results), results


@pytest.fixture
def curated(db: Database) -> list[dict]:
    docs = [_token(i, f) for i, f, _, _ in CURATED] + _others()
    default_task = Task({"_id": "todo_task_default"}).value
    docs.append(default_task)
    _save(db, docs)
    gone = _token("deleted_todo", dict(lock=0, done=0))
    _save(db, [gone])
    db.delete(gone["_id"], gone["_rev"])
    return docs


def test_classify_follows_the_issue_rules():
    for doc_id, fields, wanted, _ in CURATED:
        found = state.classify(_token(doc_id, fields))
        assert (found.value if found else None) == wanted, doc_id
    for doc in _others():
        assert state.classify(doc) is None, doc["_id"]
    assert state.classify(Task().value) is TokenState.TODO


def test_every_state_view_returns_exactly_what_classify_says(db, curated):
    expected = _expected_ids(curated)
    assert "todo_task_default" in expected[TokenState.TODO]
    for name, token_state in STATE_VIEWS.items():
        eventually(lambda name=name: _view_ids(db, "Monitor", name), expected[token_state])
    all_in_views = set().union(*expected.values())
    assert not all_in_views & {"no_lock", "type_task", "deleted_todo",
                               "_design/looks_like_a_token"}


def test_overview_total_counts_every_state(db, curated):
    counts = Counter(s.value for s in map(state.classify, curated) if s)
    assert _grouped(db, "overview_total") == {json.dumps(k): v for k, v in counts.items()}
    total = db.view("Monitor", "overview_total")["rows"]
    assert total[0]["value"] == sum(counts.values())


def test_error_by_exit_code_groups_errors_by_code(db, curated):
    expected = Counter(code for _, _, wanted, code in CURATED if wanted == "error")
    assert _grouped(db, "error_by_exit_code") == {json.dumps(k): v for k, v in expected.items()}


def test_by_tag_counts_tags_per_state(db, curated):
    expected: Counter = Counter()
    for doc in curated:
        found = state.classify(doc)
        if found and isinstance(doc.get("tags"), list):
            for tag in doc["tags"]:
                expected[json.dumps([tag, found.value])] += 1
    assert expected  # the fixture has tags in several states
    assert _grouped(db, "by_tag") == dict(expected)
    rows = db.view("Monitor", "by_tag", group_level=1)["rows"]
    assert {row["key"][0]: row["value"] for row in rows} == {"a": 4, "b": 4}


def test_done_by_time_counts_finished_tokens_by_time(db, curated):
    finished = [d for d in curated
                if state.classify(d) in (TokenState.DONE, TokenState.ERROR)]
    expected = Counter(json.dumps(d["done"]) for d in finished)
    assert _grouped(db, "done_by_time") == dict(expected)


def test_locked_by_expiry_lists_leases_that_can_expire(db, curated):
    rows = db.view("Monitor", "locked_by_expiry")["rows"]
    assert [(r["id"], r["key"], r["value"]) for r in rows] == [("locked_lease", T + 600.5, "p1")]


def test_todo_by_priority_is_the_todo_view_highest_priority_first(db):
    priorities = [3, 0, 10, -2, 7, 7, None, "4"]
    docs = [_token(f"p{i}", dict(lock=0, done=0, priority=p)) for i, p in enumerate(priorities)]
    docs.append(_token("locked_high", dict(lock=T, done=0, priority=100)))
    _save(db, docs)
    eventually(lambda: len(db.view("Monitor", "todo_by_priority")["rows"]), 8)
    rows = db.view("Monitor", "todo_by_priority", include_docs=True)["rows"]
    assert sorted(r["id"] for r in rows) == _view_ids(db, "Monitor", "todo")
    got = [float(r["doc"].get("priority") or 0) for r in rows]
    assert got == sorted(got, reverse=True) == [10, 7, 7, 4, 3, 0, 0, -2]
    assert [r["key"] for r in rows] == [-p for p in got]


def test_views_agree_with_classify_on_every_combination(db):
    """Odd field values, combined: JavaScript's comparisons must match classify's."""
    locks = [0, "0", "", T, 1.5, 99, "99", -1, "-1", -5, None, "abc", MISSING]
    dones = [0, "0", T + 5, 99, -1, -2, "-2", None, MISSING]
    codes = [0, "0", " 0", 1, "1", -9, "", None, True, MISSING]
    combinations = [(lock, done, 0) for lock, done in itertools.product(locks, dones)]
    finished = [(T, T + 5), (99, 99), ("99", 99), (1.5, "7")]
    combinations += [(lock, done, code)
                     for (lock, done), code in itertools.product(finished, codes)]
    docs = []
    for n, (lock, done, code) in enumerate(combinations):
        fields = {k: v for k, v in (("lock", lock), ("done", done), ("exit_code", code))
                  if v is not MISSING}
        docs.append(_token(f"c{n:04d}", fields))
    _save(db, docs)
    expected = _expected_ids(docs)
    assert all(expected.values())
    for name, token_state in STATE_VIEWS.items():
        eventually(lambda name=name: _view_ids(db, "Monitor", name), expected[token_state])
    counts = {json.dumps(s.value): len(ids) for s, ids in expected.items()}
    assert _grouped(db, "overview_total") == counts


def test_blocked_lists_waiting_tokens_held_up_by_a_failed_parent(db, curated):
    rows = db.view("Monitor", "blocked", reduce=False)["rows"]
    assert [(row["id"], row["value"]) for row in rows] == [("waiting_blocked", ["error_int"])]
    assert db.view("Monitor", "blocked")["rows"][0]["value"] == 1


def test_conflicts_counts_tokens_with_branches_and_locks_in_doubt(db):
    for doc_id in ("plain", "branched", "doubtful"):
        db.put({"_id": doc_id, "type": "token", "lock": 0, "done": 0})
    branched = db.get("branched")
    db.put({**branched, "priority": 1})
    sibling = {**branched, "lock": 5, "_rev": "2-" + "a" * 32,
               "_revisions": {"start": 2, "ids": ["a" * 32, branched["_rev"].split("-")[1]]}}
    db.transport.request("POST", [db.name, "_bulk_docs"],
                         json={"docs": [sibling], "new_edits": False})
    doubtful = state.lock(db.get("doubtful"), state.Holder("p", "h"), 60)
    db.put(state.withdraw(doubtful))
    rows = db.view("Monitor", "conflicts", reduce=False)["rows"]
    assert sorted((row["key"], row["id"]) for row in rows) == [
        ("conflicts", "branched"), ("in_doubt", "doubtful")]


def _attempt(host: str, outcome: str, **fields) -> dict:
    return {"host": host, "outcome": outcome, "end": T, "duration": 1.5, **fields}


def test_triage_errors_groups_errors_by_code_last_signature_and_host(db, curated):
    _save(db, [
        _token("sig_a", dict(lock=T, done=T, exit_code=2, attempts=[
            _attempt("h1", "failed", signature="old"),
            _attempt("h2", "failed", signature="boom <n>"),
            _attempt("h3", "failed", signature="late one", late=True)])),
        _token("sig_b", dict(lock=T, done=T, exit_code=2, hostname="h9",
                             attempts=[_attempt("h2", "failed", signature="boom <n>")])),
        _token("sig_done", dict(lock=T, done=T, exit_code=0,
                                attempts=[_attempt("h1", "succeeded")])),
    ])
    rows = db.view("Monitor", "errors", group=True)["rows"]
    found = {json.dumps(row["key"]): row["value"] for row in rows}
    assert found.pop(json.dumps([2, "boom <n>", "h2"])) == 2
    # every other error token (none with attempts) by its code, hostname or ""
    expected = Counter(json.dumps([code, "", ""]) for _, _, wanted, code in CURATED
                       if wanted == "error")
    assert found == dict(expected)


def test_triage_attempts_by_host_counts_every_attempt(db):
    _save(db, [
        _token("a", dict(lock=T, done=T, exit_code=0, attempts=[
            _attempt("h1", "failed"), _attempt("h1", "succeeded"),
            _attempt("h2", "lease_lost")])),
        _token("b", dict(lock=0, done=0, attempts=[_attempt("h1", "failed", late=True)])),
        {"_id": "not_a_token", "attempts": [_attempt("h1", "failed")]},
    ])
    rows = db.view("Monitor", "attempts_by_host", group=True)["rows"]
    assert {tuple(row["key"]): row["value"] for row in rows} == {
        ("h1", "failed"): 2, ("h1", "succeeded"): 1, ("h2", "lease_lost"): 1}


def test_triage_attempts_lists_every_attempt_by_its_end(db):
    _save(db, [_token("a", dict(lock=T, done=T, exit_code=1, attempts=[
        _attempt("h1", "failed", end=T + 2, max_rss_kib=2048, cpu_user_s=1.0, cpu_sys_s=0.5,
                 signature="x"),
        {"host": "h2", "outcome": "lease_lost"}]))])
    rows = db.view("Monitor", "attempts")["rows"]
    assert [(r["id"], r["key"], r["value"]) for r in rows] == [
        ("a", 0, [None, None, "h2", "lease_lost", "", None]),
        ("a", T + 2, [1.5, 2048, "h1", "failed", "x", 1.5])]


def test_every_view_in_couchviews_is_covered_here():
    """A new view must come with a test of its contents in this file."""
    covered = {"Monitor": set(STATE_VIEWS) | {"overview_total", "error_by_exit_code", "by_tag",
                                              "done_by_time", "conflicts", "blocked",
                                              "todo_by_priority", "locked_by_expiry", "errors",
                                              "attempts_by_host", "attempts"}}
    loaded = designdocs.load()
    assert {name: set(doc["views"]) for name, doc in loaded.items()} == covered


# -- the JavaScript compiles --------------------------------------------------

COMPILE_JS = r"""
const vm = require('vm');
const sources = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const failures = {};
for (const [name, src] of Object.entries(sources)) {
  try {
    const fn = new vm.Script('(' + src + ')', {filename: name}).runInNewContext({});
    if (typeof fn !== 'function') failures[name] = 'is not a function';
  } catch (e) {
    failures[name] = String(e);
  }
}
process.stdout.write(JSON.stringify(failures));
"""


def _compile_errors(sources: dict[str, str]) -> dict[str, str]:
    node = shutil.which("node")
    if node is None:
        missing("node (to compile the views' JavaScript)")
    out = subprocess.run([node, "-e", COMPILE_JS], input=json.dumps(sources),
                         capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout)


def _javascript_files() -> dict[str, str]:
    root = designdocs.source_dir()
    files = sorted(root.glob("*/views/*/map.js")) + sorted(root.glob("*/views/*/reduce.js"))
    return {str(p.relative_to(root)): p.read_text() for p in files}


def test_every_view_function_compiles():
    sources = _javascript_files()
    assert len(sources) >= len(STATE_VIEWS) + 6
    assert _compile_errors(sources) == {}


def test_the_compile_check_catches_broken_javascript():
    broken = {
        "syntax": "function (doc) { emit(doc._id, ; }",
        "not_a_function": "emit(doc._id, 1)",
        "fine": "function (doc) { emit(doc._id, 1); }",
    }
    errors = _compile_errors(broken)
    assert set(errors) == {"syntax", "not_a_function"}
    assert "SyntaxError" in errors["syntax"]


def test_view_folders_hold_a_map_and_at_most_one_builtin_reduce():
    root = designdocs.source_dir()
    view_dirs = sorted(p for p in root.glob("*/views/*") if p.is_dir())
    assert view_dirs
    for view_dir in view_dirs:
        names = {p.name for p in view_dir.iterdir()}
        assert "map.js" in names, view_dir
        assert names <= {"map.js", "reduce.js", "reduce.builtin"}, view_dir
        assert not {"reduce.js", "reduce.builtin"} <= names, view_dir
        builtin = view_dir / "reduce.builtin"
        if builtin.exists():
            assert builtin.read_text().strip() in {"_sum", "_count", "_stats"}, view_dir


# -- idempotent push ----------------------------------------------------------

def _revs(db: Database) -> dict[str, str]:
    return {name: db.get(f"_design/{name}")["_rev"] for name in designdocs.load()}


def test_first_push_adds_every_view(empty_db):
    report = designdocs.push(empty_db)
    for name, doc in designdocs.load().items():
        assert sorted(report[name].added) == sorted(doc["views"])
        assert empty_db.get(f"_design/{name}")["views"] == doc["views"]


def test_second_push_writes_nothing(db):
    before = _revs(db)
    report = designdocs.push(db)
    assert not any(r.wrote for r in report.values())
    assert sorted(report["Monitor"].unchanged) == sorted(designdocs.load()["Monitor"]["views"])
    assert _revs(db) == before


def test_a_changed_view_is_updated_and_reported(db):
    design = db.get("_design/Monitor")
    design["views"]["todo"]["map"] = "function (doc) { emit(doc._id, 1); }"
    db.put(design)
    before = _revs(db)
    report = designdocs.push(db)
    assert report["Monitor"].changed == ["todo"]
    assert _revs(db)["Monitor"] != before["Monitor"]
    shipped = designdocs.load()["Monitor"]["views"]["todo"]
    assert db.get("_design/Monitor")["views"]["todo"] == shipped


def test_views_that_users_added_are_kept(db):
    mine = {"map": "function (doc) { if (doc.type == 'token') emit(doc.input, 1); }"}
    design = db.get("_design/Monitor")
    design["views"]["mine"] = mine
    design["views"]["todo"]["map"] = "function (doc) {}"
    db.put(design)
    report = designdocs.push(db)
    assert report["Monitor"].changed == ["todo"]
    assert db.get("_design/Monitor")["views"]["mine"] == mine
    assert not designdocs.push(db)["Monitor"].wrote


def test_push_views_can_drop_other_views(db):
    views = {"todo": designdocs.load()["Monitor"]["views"]["todo"]}
    report = designdocs.push_views(db, "Monitor", views, keep_others=False)
    assert report.unchanged == ["todo"] and not report.wrote
    assert set(db.get("_design/Monitor")["views"]) == {"todo"}


def test_add_view_is_idempotent(client: CouchDB, db: Database):
    map_fun = "function (doc) { if (doc.type == 'token') emit(doc._id, 1); }"
    client.add_view("mine", map_fun, "_count")
    rev = db.get("_design/Monitor")["_rev"]
    client.add_view("mine", map_fun, "_count")
    assert db.get("_design/Monitor")["_rev"] == rev
    client.add_view("mine", map_fun)
    assert db.get("_design/Monitor")["_rev"] != rev
    assert db.get("_design/Monitor")["views"]["mine"] == {"map": map_fun}
    client.add_view("other", map_fun, design_doc="Custom")
    rev = db.get("_design/Custom")["_rev"]
    client.add_view("other", map_fun, design_doc="Custom")
    assert db.get("_design/Custom")["_rev"] == rev
    client.save(Task({"_id": "t1"}))
    assert [row.id for row in client.view("other", design_doc="Custom")] == ["t1"]


def test_the_retired_design_documents_are_removed_unless_they_hold_own_views(db):
    """Before 0.x, pilots' views and triage's had design documents of their own:
    left in place, CouchDB would index every write for them too."""
    views = designdocs.load()["Monitor"]["views"]
    db.put({"_id": "_design/Pilot", "language": "javascript",
            "views": {k: views[k] for k in ("todo_by_priority", "locked_by_expiry")}})
    db.put({"_id": "_design/Triage", "language": "javascript",
            "views": {"errors": views["errors"], "mine": views["todo"]}})
    report = designdocs.push(db)
    assert report["Pilot"].removed == ["locked_by_expiry", "todo_by_priority"]
    assert db.find("_design/Pilot") is None
    assert "Triage" not in report and db.find("_design/Triage") is not None
