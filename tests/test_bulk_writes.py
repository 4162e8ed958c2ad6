"""Bulk writes match results to documents by id, not by position.

pouchdb-server on LevelDB, under load, sometimes answers ``_bulk_docs``
out of request order. Matched by position, a pilot then believed it had
lost a token it had locked (which stayed locked, never run) and won one it
had not (which ran twice). A real server cannot be made to do this on
demand, hence requests-mock.
"""
from __future__ import annotations

import pytest
import requests_mock

from picas import claim, errors
from picas.database import Database
from picas.state import Holder
from picas.transport import Transport

URL = "http://couch.invalid:5984"


@pytest.fixture
def fake_db():
    with requests_mock.Mocker() as mock:
        yield Database(Transport(URL, "admin", "secret"), "tokens"), mock


def test_results_in_another_order_are_matched_by_id(fake_db):
    db, mock = fake_db
    mock.post(f"{URL}/tokens/_bulk_docs", json=[
        {"id": "b", "error": "conflict", "reason": "Document update conflict."},
        {"id": "a", "ok": True, "rev": "2-aaa"},
    ])
    docs = [{"_id": "a", "_rev": "1-x"}, {"_id": "b", "_rev": "1-y"}]
    results = db.bulk_docs(docs)
    assert [r["id"] for r in results] == ["a", "b"]
    assert docs[0]["_rev"] == "2-aaa" and docs[1]["_rev"] == "1-y"


def test_a_missing_result_counts_as_not_written(fake_db):
    db, mock = fake_db
    mock.post(f"{URL}/tokens/_bulk_docs", json=[{"id": "a", "ok": True, "rev": "2-aaa"}])
    results = db.bulk_docs([{"_id": "a"}, {"_id": "b"}])
    assert "error" not in results[0] and results[1]["error"] == "unknown"


def test_a_claim_keeps_exactly_the_tokens_the_server_locked(fake_db):
    db, mock = fake_db
    # Twelve claimable tokens, so that a claim of three takes three of them.
    todo = [{"_id": i, "_rev": "1-r", "type": "token", "lock": 0, "done": 0}
            for i in "abcdefghijkl"]
    mock.get(f"{URL}/", json={"couchdb": "Welcome", "version": "3.5.0",
                              "vendor": {"name": "The Apache Software Foundation"}})
    mock.get(f"{URL}/tokens/_local/picas.frontier", status_code=404,
             json={"error": "not_found", "reason": "missing"})  # no pool frontier yet
    mock.post(f"{URL}/tokens/_changes", json={"results": [
        {"id": d["_id"], "seq": n, "doc": d} for n, d in enumerate(todo, 1)]})
    sent: list[str] = []

    def locked_only_the_second(request, context):
        ids = [doc["_id"] for doc in request.json()["docs"]]
        sent.extend(ids)
        answer = [{"id": i, "error": "conflict"} for i in ids]
        answer[1] = {"id": ids[1], "ok": True, "rev": "2-won"}
        return list(reversed(answer))

    mock.post(f"{URL}/tokens/_bulk_docs", json=locked_only_the_second)
    got = claim.claim(db, Holder("p", "h"), limit=3, source=claim.ChangesSource())
    assert len(sent) == 3
    assert [t["_id"] for t in got.tokens] == [sent[1]] and got.conflicts == 2
    assert got.tokens[0]["_rev"] == "2-won"


def test_documents_without_distinct_ids_are_refused(fake_db):
    db, _ = fake_db
    with pytest.raises(errors.InvalidToken):
        db.bulk_docs([{"_id": "a"}, {"_id": "a"}])
