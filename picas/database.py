"""One CouchDB database, as plain dicts.

This is the storage layer the domain builds on: it knows CouchDB's HTTP
API but nothing about tokens.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from . import errors
from .transport import Transport


def doc_path(doc_id: str) -> list[str]:
    """Path segments for a document id (design and local documents keep their slash)."""
    for prefix in ("_design/", "_local/"):
        if doc_id.startswith(prefix):
            return [prefix[:-1], doc_id[len(prefix):]]
    return [doc_id]


def confirmed(result: dict) -> bool:
    """Whether a ``_bulk_docs`` result is a write that surely took effect.

    On a cluster, ``"accepted": true`` marks a write that reached fewer
    replicas than a quorum: a conflicting write may still win over it.
    """
    return "error" not in result and not result.get("accepted")


class Database:
    """A named database on a :class:`Transport`. No I/O until a call."""

    def __init__(self, transport: Transport, name: str) -> None:
        if not name:
            raise errors.ConfigError("no database name given: set PICAS_DATABASE or --database")
        self.transport = transport
        self.name = name
        #: design documents whose index is being built: their views are read
        #: stale (see :mod:`picas.indexing`) rather than waited for
        self.lagging: set[str] = set()

    def __repr__(self) -> str:
        return f"<Database {self.name} at {self.transport.url}>"

    def _request(self, method: str, *path: str, **kwargs: Any) -> Any:
        return self.transport.request(method, [self.name, *path],
                                      database=self.name, **kwargs)

    def _missing(self) -> errors.DatabaseNotFound:
        return errors.DatabaseNotFound(
            f"database '{self.name}' does not exist at {self.transport.url}: "
            f"create it with `picas db create` (or check the name)")

    # -- the database itself ------------------------------------------------
    def info(self) -> dict:
        try:
            return self._request("GET")
        except errors.NotFound:
            raise self._missing() from None

    def exists(self) -> bool:
        try:
            self._request("GET")
            return True
        except errors.NotFound:
            return False

    def create(self) -> bool:
        """Create the database; False when it already existed.

        Only admins may create databases on CouchDB; an anonymous attempt is
        refused here, because it crashes pouchdb-server.
        """
        if self.transport.credentials is None:
            raise errors.ConfigError(
                f"creating database '{self.name}' needs a server admin: set "
                "PICAS_USERNAME and PICAS_PASSWORD (or `picas init`)")
        try:
            self._request("PUT")
            return True
        except errors.Conflict:
            return False

    def destroy(self) -> None:
        try:
            self._request("DELETE")
        except errors.NotFound:
            raise self._missing() from None

    def security(self) -> dict:
        return self._request("GET", "_security")

    def set_security(self, security: dict) -> None:
        self._request("PUT", "_security", json=security)

    # -- documents ----------------------------------------------------------
    def get(self, doc_id: str, **params: Any) -> dict:
        """The document, or :class:`errors.NotFound` naming it."""
        try:
            return self._request("GET", *doc_path(doc_id), params=params)
        except errors.NotFound:
            if not self.exists():
                raise self._missing() from None
            raise errors.DocumentNotFound(
                f"no document '{doc_id}' in database '{self.name}'") from None

    def find(self, doc_id: str) -> dict | None:
        """The document, or None when there is none: one request, where
        :meth:`get` spends a second one on telling why."""
        try:
            return self._request("GET", *doc_path(doc_id))
        except errors.NotFound:
            return None

    def put(self, doc: dict) -> str:
        """Write ``doc`` (creating or updating by its ``_rev``); store and return the new rev.

        A write that a cluster could not confirm with a quorum raises
        :class:`errors.WriteInDoubt` (with ``_rev`` set to the new revision,
        so that the writer can withdraw it). ``_local`` documents are not
        replicated between nodes, so they are never in doubt.
        """
        if "_id" not in doc:
            raise errors.InvalidToken("a document needs an _id to be saved with put")
        try:
            result = self._request("PUT", *doc_path(doc["_id"]), json=doc)
        except errors.NotFound:
            raise self._missing() from None
        doc["_rev"] = result["rev"]
        if result.get("accepted") and not doc["_id"].startswith("_local/"):
            raise errors.WriteInDoubt(
                f"the server stored '{doc['_id']}' on fewer replicas than a quorum "
                "(HTTP 202): a conflicting write may win", rev=result["rev"])
        return result["rev"]

    def leaves(self, doc_id: str) -> list[dict]:
        """Every leaf revision of a document, deleted ones included.

        A cluster answers this from a quorum of replicas, so a revision
        that was confirmed by a quorum is always among them: the one read
        that tells for sure whether a document has conflicting branches.
        """
        try:
            answer = self._request("GET", *doc_path(doc_id), params={"open_revs": "all"})
        except errors.NotFound:
            if not self.exists():
                raise self._missing() from None
            return []
        return [item["ok"] for item in answer if isinstance(item, dict) and "ok" in item]

    def delete(self, doc_id: str, rev: str) -> str:
        """Delete one revision (a conflicting branch, or the document)."""
        result = self._request("DELETE", *doc_path(doc_id), params={"rev": rev})
        return result["rev"]

    def bulk_docs(self, docs: list[dict]) -> list[dict]:
        """Write many documents in one request; one result dict per doc, in order.

        Conflicts are reported per document (``"error": "conflict"``), not
        raised. Successful writes get their new ``_rev`` set in place.
        Results are matched to documents by id: pouchdb-server does not
        always answer in the order of the request.
        """
        if not docs:
            return []
        ids = [doc.get("_id") for doc in docs]
        if None in ids or len(set(ids)) != len(ids):
            raise errors.InvalidToken("bulk writes need documents with distinct _ids")
        try:
            answer = self._request("POST", "_bulk_docs", json={"docs": docs})
        except errors.NotFound:
            raise self._missing() from None
        by_id = {result.get("id"): result for result in answer}
        results = []
        for doc in docs:
            result = by_id.get(doc["_id"]) or {
                "id": doc["_id"], "error": "unknown", "reason": "no result from the server"}
            if "rev" in result and "error" not in result:
                doc["_rev"] = result["rev"]  # accepted ones too: the writer may withdraw them
            results.append(result)
        return results

    def all_docs(self, **params: Any) -> dict:
        try:
            if "keys" in params:
                keys = params.pop("keys")
                return self._request("POST", "_all_docs", params=params, json={"keys": keys})
            return self._request("GET", "_all_docs", params=params)
        except errors.NotFound:
            raise self._missing() from None

    def iter_all_docs(self, page: int = 1000, **params: Any) -> Iterator[dict]:
        """All rows of ``_all_docs`` (design documents included), paged."""
        yield from self.paged(lambda **p: self.all_docs(**p), page, params)

    def view(self, design: str, view: str, **params: Any) -> dict:
        """Query ``_design/design/_view/view``; missing views get a clear error.

        A view whose index is still being built is not waited for: once a
        query timed out on it (CouchDB's answer while it builds), the rows it
        has so far are read (``stale=ok``) and ``design`` joins :attr:`lagging`.
        """
        if design in self.lagging and "stale" not in params:
            params = {**params, "stale": "ok"}
        try:
            return self._view(design, view, params)
        except errors.ViewBuilding:
            if "stale" in params:
                raise
            self.lagging.add(design)
            return self._view(design, view, {**params, "stale": "ok"})

    def _view(self, design: str, view: str, params: dict) -> dict:
        params = dict(params)
        try:
            if "keys" in params:
                keys = params.pop("keys")
                return self._request("POST", "_design", design, "_view", view,
                                     params=params, json={"keys": keys})
            return self._request("GET", "_design", design, "_view", view, params=params)
        except errors.NotFound:
            if not self.exists():
                raise self._missing() from None
            raise errors.ViewNotFound(
                f"view {design}/{view} is missing in database '{self.name}': "
                "push the views with `picas views push`") from None

    def iter_view(self, design: str, view: str, page: int = 1000,
                  **params: Any) -> Iterator[dict]:
        """Every row of a view, fetched ``page`` rows at a time."""
        yield from self.paged(lambda **p: self.view(design, view, **p), page, params)

    @staticmethod
    def paged(query: Any, page: int, params: dict) -> Iterator[dict]:
        params = dict(params)
        limit = params.pop("limit", None)
        seen = 0
        while True:
            want = page if limit is None else min(page, limit - seen)
            if want <= 0:
                return
            rows = query(limit=want + 1, **params)["rows"]
            yield from rows[:want]
            seen += min(len(rows), want)
            if len(rows) <= want:
                return
            last = rows[want]
            params["startkey"] = last["key"]
            params["startkey_docid"] = last["id"]

    def changes(self, selector: dict | None = None, **params: Any) -> dict:
        """One page of the changes feed (``feed=normal``).

        With a Mango ``selector`` only matching documents come back; CouchDB
        still reads every change, but skips sending the others. pouchdb-server
        knows no such filter: only give one to Apache CouchDB.
        """
        try:
            if selector is not None:
                return self._request("POST", "_changes", params={**params, "filter": "_selector"},
                                     json={"selector": selector})
            return self._request("GET", "_changes", params=params)
        except errors.NotFound:
            raise self._missing() from None

    # -- attachments --------------------------------------------------------
    def get_attachment(self, doc_id: str, name: str) -> bytes:
        try:
            return self._request("GET", *doc_path(doc_id), name, raw=True)
        except errors.NotFound:
            raise errors.NotFound(
                f"token '{doc_id}' has no attachment '{name}' in database '{self.name}'") from None

    def put_attachment(self, doc_id: str, rev: str, name: str, data: bytes,
                       content_type: str = "text/plain") -> str:
        result = self._request("PUT", *doc_path(doc_id), name, params={"rev": rev},
                               data=data, headers={"Content-Type": content_type})
        return result["rev"]

