"""Keeping a large pool small: sizes, compaction, finished tokens moved to a file."""
from __future__ import annotations

import json

from support import eventually
from test_cli_tokens import failed, ok

from picas import state, storage
from picas.shaping import build
from picas.sources import Record
from picas.state import Holder, Outcome


def _finished(db, n: int, first: int = 0) -> list[str]:
    tokens = build([Record({"command": f"echo {i}"}, f"t:{i}") for i in range(first, first + n)])
    db.bulk_docs(tokens)
    ids = []
    for token in tokens:
        token = db.get(token["_id"])
        locked = state.lock(token, Holder("p", "h"), 60)
        db.put(locked)
        db.put(state.finish(locked, state.new_attempt(locked, Outcome.SUCCEEDED, exit_code=0)))
        ids.append(token["_id"])
    return ids


def test_purge_writes_the_tokens_to_the_file_before_removing_them(db, run, tmp_path):
    done = _finished(db, 4)
    waiting = build([Record({"command": "echo later"}, "t:x")])
    db.bulk_docs(waiting)
    out = tmp_path / "done.jsonl"
    eventually(lambda: len(db.view("Monitor", "done")["rows"]), 4)
    result = ok(run("tokens", "purge", "--view", "done", "-o", str(out), "--yes"))
    assert f"wrote 4 tokens to {out} and removed 4" in result.stdout
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(doc["_id"] for doc in lines) == sorted(done)
    assert all(doc["attempts"][0]["outcome"] == "succeeded" for doc in lines)
    assert all(db.find(doc_id) is None for doc_id in done)
    assert db.find(waiting[0]["_id"]) is not None


def test_a_token_changed_after_it_was_read_is_kept(db, tmp_path):
    ids = _finished(db, 2)
    original = db.all_docs

    def reset_one_meanwhile(**params):
        answer = original(**params)
        db.put(state.reset(db.get(ids[0])))
        return answer

    db.all_docs = reset_one_meanwhile
    with (tmp_path / "out.jsonl").open("w") as out:
        report = storage.purge(db, ids, out)
    del db.all_docs
    assert (report.written, report.removed, report.changed) == (2, 1, [ids[0]])
    assert state.classify(db.get(ids[0])) is state.TokenState.TODO


def test_purge_needs_an_output_file(run):
    failed(run("tokens", "purge", "--view", "done"), "Missing option '-o'", code=2)


def test_size_and_compact_report_on_the_database(db, run):
    _finished(db, 3)
    sizes = json.loads(ok(run("db", "size", "--json")).stdout)
    # (the test server may keep its data in memory: no bytes on disk then)
    assert sizes["documents"] == 3 + 1 and sizes["file_bytes"] >= sizes["active_bytes"] >= 0
    result = ok(run("db", "compact"))
    assert f"compaction started on database '{db.name}': database" in result.stdout
    human = ok(run("db", "size")).stdout
    assert "documents" in human and "MiB on disk" in human
