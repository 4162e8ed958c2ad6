"""``picas.clients.CouchDB``: upstream PiCaS's client, on picas's transport.

Names, signatures and meanings follow PiCaS 1.1 so existing pilot and
token scripts run unchanged. Differences, all deliberate:

* the constructor makes no request: a missing database or bad password is
  reported, with what to do, by the first call that needs the server;
* an empty view is not an ``IndexError``: ``get_single_from_view`` returns
  None and iterators simply stop;
* ``delete_documents`` reports a conflict as False instead of crashing.
"""
from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Iterator
from typing import Any

from . import _couchdb, config, designdocs, errors
from .database import Database
from .documents import Document
from .transport import Transport

log = logging.getLogger(__name__)


class Row(dict):
    """A view row: a dict that also answers ``row.id``, ``row.key``, ``row.value``, ``row.doc``."""

    @property
    def id(self) -> str | None:
        return self.get("id")

    @property
    def key(self) -> Any:
        return self.get("key")

    @property
    def value(self) -> Any:
        return self.get("value")

    @property
    def doc(self) -> dict | None:
        return self.get("doc")


class ViewResult:
    """The answer of a view query, iterable over :class:`Row`."""

    def __init__(self, answer: dict) -> None:
        self.rows = [Row(row) for row in answer.get("rows", [])]
        self.total_rows = answer.get("total_rows", len(self.rows))
        self.offset = answer.get("offset", 0)

    def __iter__(self) -> Iterator[Row]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)


class CouchDB:
    """A CouchDB database holding tokens, the upstream PiCaS way."""

    def __init__(self, url: str = "http://localhost:5984", db: str = "test",
                 username: str | None = None, password: str = "",
                 ssl_verification: bool = True, create: bool = False) -> None:
        self.transport = Transport(url, username=username,
                                   password=password if username is not None else None,
                                   verify=ssl_verification)
        # A URL ending in the database would put every document inside it.
        self.transport.url, db = config.split_database(self.transport.url, db)
        self.database = Database(self.transport, db)
        self._create = create

    @classmethod
    def from_database(cls, database: Database) -> CouchDB:
        """Wrap an existing :class:`Database` (sharing its connection)."""
        client = cls.__new__(cls)
        client.transport = database.transport
        client.database = database
        client._create = False
        return client

    @property
    def db(self) -> Any:
        """A CouchDB-Python ``Database`` on the same database, for old scripts."""
        return _couchdb.legacy_database(self.transport.url, self.database.name,
                                        self.transport.credentials, self.transport.verify)

    @property
    def _db(self) -> Database:
        # create=True is honoured lazily, on first use: constructors do no I/O.
        if self._create:
            self._create = False
            if not self.database.create():
                raise errors.DatabaseExists(
                    f"database '{self.database.name}' already exists at "
                    f"{self.transport.url}: drop create=True to use it")
        return self.database

    def copy(self) -> CouchDB:
        """A new client with its own connection to the same database."""
        username, password = self.transport.credentials or (None, "")
        return CouchDB(self.transport.url, self.database.name, username, password,
                       self.transport.verify)

    # -- reading ------------------------------------------------------------
    def __getitem__(self, idx: str) -> Document:
        return self.get(idx)

    def get(self, id: str) -> Document:
        """The document with this id; :class:`errors.NotFound` if there is none."""
        return Document(self._db.get(id))

    def view(self, view: str, design_doc: str = "Monitor", **view_params: Any) -> ViewResult:
        return ViewResult(self._db.view(design_doc, view, **view_params))

    def get_from_view(self, view: str, **view_params: Any) -> list[Document]:
        """The current documents of every row in a view."""
        view_params.pop("include_docs", None)
        rows = self.view(view, include_docs=True, **view_params)
        return [Document(row.doc) for row in rows if row.doc]

    def get_single_from_view(self, view: str, window_size: int = 1,
                             **view_params: Any) -> Document | None:
        """One document picked at random among the first ``window_size`` rows.

        None when the view is empty (upstream raised IndexError).
        """
        view_params.pop("include_docs", None)
        rows = [row for row in self.view(view, limit=window_size, include_docs=True,
                                         **view_params) if row.doc]
        return Document(random.choice(rows).doc) if rows else None

    def is_view_nonempty(self, view: str, **view_params: Any) -> bool:
        """True when ``view`` has a row: for example, pilots are worth starting."""
        design_doc = view_params.pop("design_doc", "Monitor")
        try:
            nonempty = bool(self.view(view, design_doc=design_doc, limit=1, **view_params).rows)
        except errors.ViewNotFound:
            log.info("view %s/%s does not exist", design_doc, view)
            return False
        log.info("view %s/%s is %s", design_doc, view, "non-empty" if nonempty else "empty")
        return nonempty

    def doc_count(self) -> int:
        return self._db.info()["doc_count"]

    # -- writing ------------------------------------------------------------
    def save(self, doc: Document | dict) -> Document | dict:
        """Write ``doc``; raises :class:`errors.Conflict` on a stale ``_rev``."""
        value = doc.value if isinstance(doc, Document) else doc
        value.setdefault("_id", uuid.uuid4().hex)
        self._db.put(value)
        return doc

    def save_documents(self, docs: list[Document]) -> list[bool]:
        """Write many documents in one request; True where the write succeeded."""
        values = [d.value if isinstance(d, Document) else d for d in docs]
        for value in values:
            value.setdefault("_id", uuid.uuid4().hex)
        return ["error" not in result for result in self._db.bulk_docs(values)]

    def add_view(self, view: str, map_fun: str, reduce_fun: str | None = None,
                 design_doc: str = "Monitor") -> None:
        """Add or update one view; an identical view is left untouched."""
        definition = {"map": map_fun.strip()}
        if reduce_fun:
            definition["reduce"] = reduce_fun.strip()
        designdocs.push_views(self._db, design_doc, {view: definition})

    # -- deleting -----------------------------------------------------------
    def delete(self, doc: Document | dict) -> None:
        """Delete ``doc`` at its ``_rev``; raises :class:`errors.Conflict` if it changed."""
        value = doc.value if isinstance(doc, Document) else doc
        self._db.delete(value["_id"], value["_rev"])

    def delete_documents(self, docs: list[Document]) -> list[bool]:
        """Delete many documents in one request; False where one had changed."""
        stubs = [{"_id": d["_id"], "_rev": d["_rev"], "_deleted": True} for d in docs]
        results = self._db.bulk_docs(stubs)
        for doc, result in zip(docs, results, strict=True):
            if "error" in result:
                log.info("could not delete %s (rev %s): %s", doc["_id"], doc["_rev"],
                         result.get("reason", result["error"]))
        return ["error" not in result for result in results]

    def delete_from_view(self, view: str, design_doc: str = "Monitor") -> list[bool]:
        return self.delete_documents(self.get_from_view(view, design_doc=design_doc))

    def set_users(self, admins: list[str] | None = None, members: list[str] | None = None,
                  admin_roles: list[str] | None = None,
                  member_roles: list[str] | None = None) -> None:
        """Set who may use the database; arguments left None are kept."""
        security = self._db.security()
        for section, key, value in (("admins", "names", admins), ("members", "names", members),
                                    ("admins", "roles", admin_roles),
                                    ("members", "roles", member_roles)):
            if value is not None:
                security.setdefault(section, {})[key] = list(value)
        self._db.set_security(security)
