"""An in-memory CouchDB, so that the claim path can be tested in milliseconds.

:class:`MemoryServer` answers the requests that
:class:`picas.database.Database` sends, in place of a
:class:`picas.transport.Transport`, with CouchDB's semantics where the
claim path depends on them:

* ``_rev`` compare-and-set: a write must name a current leaf revision
  (any branch, as CouchDB allows), else 409;
* ``_bulk_docs`` with one result per document, ``new_edits=false``
  (a revision stored as given, which makes branches), and writes a
  cluster could not confirm: :attr:`MemoryServer.unconfirmed` picks them;
  they answer ``"accepted": true`` (202 for a single write) and stay on
  a minority of replicas: nobody else reads them, and a write on the
  revision they replaced still succeeds, until :meth:`MemoryServer.heal`
  merges them in (as a branch where someone wrote meanwhile), as
  CouchDB's internal replication would;
* reads with ``conflicts=true``, ``open_revs=all`` and ``rev=``;
* ``_all_docs``, the changes feed (``include_docs``, ``conflicts``,
  ``since``, ``limit``) and ``_local`` documents (which, as on CouchDB
  3.5, take any write: no compare-and-set).

It runs no views (a view query answers 404: :class:`errors.ViewNotFound`),
checks no credentials, and keeps no attachments but the inline ones.
tests/test_memory.py runs one script of requests against it and against
pouchdb-server and compares the answers.
"""
from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .database import Database
from .transport import Transport, error_for, mark_accepted

Answer = tuple[int, Any]


@dataclass
class _Doc:
    """One document's revision tree, kept as its revisions and leaves."""

    revs: dict[str, dict] = field(default_factory=dict)  # rev -> body (with _deleted)
    leaves: set[str] = field(default_factory=set)
    #: unconfirmed revisions on a minority of replicas: rev -> the rev it replaced
    hidden: dict[str, str | None] = field(default_factory=dict)
    seq: int = 0

    def winner(self) -> str:
        """CouchDB's winning leaf: live before deleted, then the longest, then the
        highest revision id."""
        return max(self.leaves, key=lambda rev: (not self.revs[rev].get("_deleted"),
                                                 _pos(rev), rev))

    def deleted(self) -> bool:
        return bool(self.revs[self.winner()].get("_deleted"))

    def conflicts(self) -> list[str]:
        winner = self.winner()
        live = [rev for rev in self.leaves if rev != winner and not self.revs[rev].get("_deleted")]
        return sorted(live, key=lambda rev: (_pos(rev), rev), reverse=True)


def _pos(rev: str) -> int:
    return int(rev.split("-", 1)[0])


@dataclass
class _Database:
    docs: dict[str, _Doc] = field(default_factory=dict)
    local: dict[str, dict] = field(default_factory=dict)
    security: dict = field(default_factory=dict)
    seq: int = 0


_CONFLICT: Answer = (409, {"error": "conflict", "reason": "Document update conflict."})


def _missing(reason: str = "missing") -> Answer:
    return 404, {"error": "not_found", "reason": reason}


class MemoryServer(Transport):
    """A CouchDB server in this process; a :class:`Transport` that sends nothing."""

    def __init__(self) -> None:
        super().__init__("http://memory.invalid", "admin", "memory")
        self.databases: dict[str, _Database] = {}
        #: which writes (by document id) a cluster would not confirm
        self.unconfirmed: Callable[[str], bool] = lambda doc_id: False

    def __repr__(self) -> str:
        return f"<MemoryServer {sorted(self.databases)}>"

    def heal(self) -> None:
        """Merge every unconfirmed revision in, as the cluster's replication
        does: on top of what it replaced where that is still a leaf, else
        as a conflicting branch."""
        for db in self.databases.values():
            for doc in db.docs.values():
                for rev, parent in doc.hidden.items():
                    doc.leaves.discard(parent or "")
                    doc.leaves.add(rev)
                    db.seq += 1
                    doc.seq = db.seq
                doc.hidden.clear()

    def close(self) -> None:
        """Nothing to close: no connections."""

    def request(self, method: str, path: Any, *, params: Mapping[str, Any] | None = None,
                json: Any = None, data: bytes | None = None,
                headers: Mapping[str, str] | None = None,
                raw: bool = False, database: str | None = None) -> Any:
        path = [str(p) for p in path]
        self.request_count += 1
        status, body = self._answer(method, path, dict(params or {}), _copy(json))
        if status >= 400:
            reason = body.get("reason") or body.get("error") if isinstance(body, dict) else ""
            raise error_for(status, str(reason), path, self.url, self.username, database)
        if raw:
            return body
        if status == 202:
            mark_accepted(body)
        return _copy(body)

    def is_apache_couchdb(self) -> bool:
        """The fake serves the plain changes feed only (no ``_selector`` filter)."""
        return False

    # -- routing -------------------------------------------------------------
    def _answer(self, method: str, path: list[str], params: dict, body: Any) -> Answer:
        if not path or path[0].startswith("_"):
            return _missing()
        name, rest = path[0], path[1:]
        db = self.databases.get(name)
        if not rest:
            return self._database(method, name, db)
        if db is None:
            return _missing("Database does not exist.")
        head = rest[0]
        if head == "_design" and len(rest) > 2:
            return _missing("missing_named_view")  # views are not run here
        if head in ("_design", "_local"):
            doc_id, rest = f"{head}/{rest[1]}", rest[2:]
        elif head.startswith("_"):
            return self._special(db, method, head, params, body)
        else:
            doc_id, rest = head, rest[1:]
        if rest:
            return self._attachment(db, doc_id, rest[0])
        if doc_id.startswith("_local/"):
            return self._local(db, method, doc_id, body)
        return self._document(db, method, doc_id, params, body)

    def _database(self, method: str, name: str, db: _Database | None) -> Answer:
        if method == "PUT":
            if db is not None:
                return 412, {"error": "file_exists",
                             "reason": "The database could not be created, the file "
                                       "already exists."}
            self.databases[name] = _Database()
            return 201, {"ok": True}
        if db is None:
            return _missing("Database does not exist.")
        if method == "DELETE":
            del self.databases[name]
            return 200, {"ok": True}
        live = sum(not doc.deleted() for doc in db.docs.values())
        return 200, {"db_name": name, "doc_count": live, "update_seq": db.seq}

    def _special(self, db: _Database, method: str, head: str, params: dict,
                 body: Any) -> Answer:
        if head == "_bulk_docs" and method == "POST":
            return self._bulk_docs(db, body)
        if head == "_all_docs":
            return 200, _all_docs(db, params, (body or {}).get("keys"))
        if head == "_changes":
            return 200, _changes(db, params)
        if head == "_security":
            if method == "PUT":
                db.security = body
                return 200, {"ok": True}
            return 200, db.security
        return 400, {"error": "bad_request", "reason": f"{head} is not supported here"}

    # -- documents -----------------------------------------------------------
    def _document(self, db: _Database, method: str, doc_id: str, params: dict,
                  body: Any) -> Answer:
        doc = db.docs.get(doc_id)
        if method == "GET":
            return _read(doc_id, doc, params)
        if method == "DELETE":
            return self._write(db, doc_id, {"_rev": params.get("rev"), "_deleted": True})
        return self._write(db, doc_id, body)

    def _write(self, db: _Database, doc_id: str, body: dict) -> Answer:
        """One write with new edits: the ``_rev`` must be a current leaf."""
        doc = db.docs.get(doc_id) or _Doc()
        rev = body.pop("_rev", None)
        body.pop("_id", None)
        if rev is not None and rev not in doc.leaves and rev not in doc.hidden:
            return _CONFLICT
        if rev is None and doc.leaves and not doc.deleted():
            return _CONFLICT
        if rev is None and doc.leaves:
            rev = doc.winner()  # a deleted document is written again on top of its tombstone
        digest = hashlib.md5(json.dumps([rev, body], sort_keys=True).encode()).hexdigest()
        new = f"{_pos(rev) + 1 if rev else 1}-{digest}"
        db.docs[doc_id] = doc
        doc.revs[new] = body
        if rev in doc.hidden or self.unconfirmed(doc_id):
            # On the minority only, on top of what the writer had (its own
            # unconfirmed revision included): seen once healed.
            doc.hidden[new] = doc.hidden.pop(rev, rev) if rev in doc.hidden else rev
            return 202, {"ok": True, "id": doc_id, "rev": new}
        doc.leaves.discard(rev or "")
        doc.leaves.add(new)
        db.seq += 1
        doc.seq = db.seq
        return 201, {"ok": True, "id": doc_id, "rev": new}

    def _bulk_docs(self, db: _Database, body: dict) -> Answer:
        if body.get("new_edits") is False:
            for doc in body["docs"]:
                _store_as_given(db, doc)
            return 201, []
        results = []
        for doc in body["docs"]:
            doc_id = doc.get("_id")
            status, answer = self._write(db, doc_id, dict(doc))
            if status >= 400:
                results.append({"id": doc_id, **answer})
            else:
                results.append({**answer, **({"accepted": True} if status == 202 else {})})
        return 201, results

    def _local(self, db: _Database, method: str, doc_id: str, body: Any) -> Answer:
        stored = db.local.get(doc_id)
        if method == "GET":
            return (200, stored) if stored is not None else _missing()
        # No compare-and-set: CouchDB 3.5 takes any write of a local
        # document, numbered on from the _rev given (pouchdb-server refuses
        # a stale one).
        rev = (body or {}).get("_rev")
        new = f"0-{int(rev.split('-')[1]) + 1 if rev else 1}"
        if method == "DELETE":
            db.local.pop(doc_id, None)
        else:
            db.local[doc_id] = {**body, "_id": doc_id, "_rev": new}
        return 201, {"ok": True, "id": doc_id, "rev": new}

    def _attachment(self, db: _Database, doc_id: str, name: str) -> Answer:
        doc = db.docs.get(doc_id)
        if doc is None or doc.deleted():
            return _missing()
        stub = doc.revs[doc.winner()].get("_attachments", {}).get(name)
        if stub is None or "data" not in stub:
            return _missing("Document is missing attachment")
        return 200, base64.b64decode(stub["data"])


def _copy(value: Any) -> Any:
    return json.loads(json.dumps(value)) if value is not None else None


def _body(doc_id: str, rev: str, doc: _Doc, conflicts: bool = False) -> dict:
    out = {"_id": doc_id, "_rev": rev, **doc.revs[rev]}
    if conflicts and doc.conflicts():
        out["_conflicts"] = doc.conflicts()
    return out


def _read(doc_id: str, doc: _Doc | None, params: dict) -> Answer:
    if doc is None or not doc.leaves:
        return _missing()
    if params.get("open_revs") == "all":
        return 200, [{"ok": _body(doc_id, rev, doc)}
                     for rev in sorted(doc.leaves, key=lambda r: (_pos(r), r), reverse=True)]
    rev = params.get("rev") or doc.winner()
    if rev not in doc.revs:
        return _missing()
    if doc.revs[rev].get("_deleted") and "rev" not in params:
        return _missing("deleted")
    return 200, _body(doc_id, rev, doc, conflicts=bool(params.get("conflicts")))


def _store_as_given(db: _Database, given: dict) -> None:
    """A revision written with ``new_edits=false``: stored as it is, beside
    or on top of what is there, as replication stores it."""
    given = dict(given)
    doc_id, rev = given.pop("_id"), given.pop("_rev")
    history = given.pop("_revisions", None)
    doc = db.docs.setdefault(doc_id, _Doc())
    if rev in doc.revs:
        return
    if history and len(history.get("ids", [])) > 1:
        doc.leaves.discard(f"{history['start'] - 1}-{history['ids'][1]}")
    doc.revs[rev] = given
    doc.leaves.add(rev)
    db.seq += 1
    doc.seq = db.seq


def _all_docs(db: _Database, params: dict, keys: list[str] | None) -> dict:
    def row(doc_id: str) -> dict:
        doc = db.docs.get(doc_id)
        if doc is None or not doc.leaves:
            return {"key": doc_id, "error": "not_found"}
        rev = doc.winner()
        if doc.deleted():
            return {"id": doc_id, "key": doc_id, "value": {"rev": rev, "deleted": True},
                    **({"doc": None} if params.get("include_docs") else {})}
        out = {"id": doc_id, "key": doc_id, "value": {"rev": rev}}
        if params.get("include_docs"):
            out["doc"] = _body(doc_id, rev, doc, conflicts=bool(params.get("conflicts")))
        return out

    if keys is not None:
        return {"total_rows": len(db.docs), "offset": 0, "rows": [row(k) for k in keys]}
    ids = sorted(i for i, doc in db.docs.items() if doc.leaves and not doc.deleted())
    start = params.get("startkey", params.get("start_key"))
    end = params.get("endkey", params.get("end_key"))
    chosen = [i for i in ids if (start is None or i >= start) and (end is None or i <= end)]
    if params.get("limit") is not None:
        chosen = chosen[:int(params["limit"])]
    return {"total_rows": len(ids), "offset": 0, "rows": [row(i) for i in chosen]}


def _changes(db: _Database, params: dict) -> dict:
    since = int(params.get("since") or 0)
    changed = sorted((doc.seq, doc_id) for doc_id, doc in db.docs.items()
                     if doc.seq > since and doc.leaves)
    limit = params.get("limit")
    shown = changed if limit is None else changed[:int(limit)]
    results = []
    for seq, doc_id in shown:
        doc = db.docs[doc_id]
        rev = doc.winner()
        row: dict[str, Any] = {"seq": seq, "id": doc_id, "changes": [{"rev": rev}]}
        if doc.deleted():
            row["deleted"] = True
        if params.get("include_docs"):
            row["doc"] = _body(doc_id, rev, doc, conflicts=bool(params.get("conflicts")))
        results.append(row)
    last = shown[-1][0] if shown else since
    return {"results": results, "last_seq": last, "pending": len(changed) - len(shown)}


def memory_database(name: str = "picas", server: MemoryServer | None = None) -> Database:
    """A new, empty database on ``server`` (a new server when None)."""
    server = server or MemoryServer()
    db = Database(server, name)
    db.create()
    return db
