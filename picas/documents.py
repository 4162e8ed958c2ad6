"""Upstream PiCaS's document classes: dict-like wrappers around token JSON.

Scripts written for PiCaS 1.1 build ``Task`` objects, lock them, attach
logs and save them; all of that works unchanged. One upstream defect is
fixed: a default ``Task`` has ``type: "token"``, so the views see it.
"""
from __future__ import annotations

import base64
import mimetypes
import socket
import traceback
import uuid
from collections.abc import Iterator, MutableMapping
from typing import Any, ClassVar, TypeVar

from . import jobid, state
from .token import blank
from .util import merge_dicts, seconds

_D = TypeVar("_D", bound="Document")

class Document(MutableMapping):
    """A CouchDB document that behaves like the dict it wraps.

    A full mapping, so that scripts may call any dict method on a token
    (``pop``, ``setdefault``, ``items``, ``copy`` ...); upstream's own
    modifiers call ``pop`` through :mod:`picas.jobid`.
    """

    def __init__(self, data: Any = None, base: dict | None = None) -> None:
        if isinstance(data, Document):
            data = data.value
        data = {} if data is None else data
        # Documents read from the database are taken as they are; new ones
        # get the defaults of their class.
        self.doc: dict = data if "_rev" in data else merge_dicts(base or {}, data)

    def __len__(self) -> int:
        return len(self.doc)

    def __getitem__(self, key: str) -> Any:
        return self.doc[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.doc[key] = value

    def __delitem__(self, key: str) -> None:
        del self.doc[key]

    def __contains__(self, key: object) -> bool:
        return key in self.doc

    def __iter__(self) -> Iterator[str]:
        return iter(self.doc)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.doc.get('_id')}>"

    def get(self, key: str, default: Any = None) -> Any:
        return self.doc.get(key, default)

    # The dict's own methods, rather than MutableMapping's generic ones, so
    # that each behaves exactly as on a dict (``popitem`` takes the last key).
    def keys(self) -> Any:
        return self.doc.keys()

    def items(self) -> Any:
        return self.doc.items()

    def values(self) -> Any:
        return self.doc.values()

    def pop(self, key: str, *default: Any) -> Any:
        return self.doc.pop(key, *default)

    def popitem(self) -> tuple[str, Any]:
        return self.doc.popitem()

    def clear(self) -> None:
        self.doc.clear()

    def setdefault(self, key: str, default: Any = None) -> Any:
        return self.doc.setdefault(key, default)

    def update(self, *args: Any, **kwargs: Any) -> None:
        self.doc.update(*args, **kwargs)

    def copy(self) -> dict:
        """A shallow copy of the document's data, as ``dict.copy`` gives."""
        return dict(self.doc)

    fromkeys = staticmethod(dict.fromkeys)

    def __or__(self, other: Any) -> Any:
        return {**self.doc, **other} if isinstance(other, (dict, Document)) else NotImplemented

    def __ror__(self, other: Any) -> Any:
        return {**other, **self.doc} if isinstance(other, dict) else NotImplemented

    def __ior__(self, other: Any) -> Document:
        self.doc.update(other)
        return self

    def __reversed__(self) -> Iterator[str]:
        return reversed(self.doc)

    @property
    def id(self) -> str:
        try:
            return self.doc["_id"]
        except KeyError:
            raise AttributeError("_id for document is not set") from None

    @id.setter
    def id(self, new_id: str) -> None:
        self.doc["_id"] = new_id

    @property
    def rev(self) -> str:
        try:
            return self.doc["_rev"]
        except KeyError:
            raise AttributeError("_rev is not available: document is not "
                                 "retrieved from database") from None

    @property
    def value(self) -> dict:
        return self.doc

    def put_attachment(self, name: str, data: bytes | str, mimetype: str | None = None) -> None:
        """Attach ``data`` inline; it is uploaded with the next save."""
        if mimetype is None:
            mimetype = mimetypes.guess_type(name)[0] or "text/plain"
        raw = data if isinstance(data, bytes) else data.encode()
        self.doc.setdefault("_attachments", {})[name] = {
            "content_type": mimetype, "data": base64.b64encode(raw).decode()}

    def get_attachment(self, name: str, retrieve_from_database: Any = None) -> dict:
        """The attachment's metadata with its bytes under ``data``.

        Attachments read from the database are stubs; pass the
        :class:`picas.clients.CouchDB` as ``retrieve_from_database`` to
        fetch their bytes. Raises KeyError for an unknown name.
        """
        stored = self.doc["_attachments"][name]
        attachment = {k: v for k, v in stored.items() if k != "data"}
        if "data" in stored:
            attachment["data"] = base64.b64decode(stored["data"])
        elif retrieve_from_database is not None:
            attachment["data"] = retrieve_from_database.database.get_attachment(self.id, name)
        return attachment

    def remove_attachment(self, name: str) -> Document:
        del self.doc["_attachments"][name]
        return self

    def _update_hostname(self: _D) -> _D:
        self.doc["hostname"] = socket.gethostname()
        return self


class User(Document):
    """A CouchDB user document (``_users`` database)."""

    def __init__(self, username: str, password: str, roles: list[str] | None = None,
                 data: dict | None = None) -> None:
        super().__init__(data or {}, base={
            "_id": f"org.couchdb.user:{username}", "name": username, "type": "user",
            "password": password, "roles": list(roles or [])})


class Task(Document):
    """A token, with upstream PiCaS's fields and methods."""

    #: A new token's fields (upstream's name for :data:`picas.token.BLANK`).
    BASE: ClassVar[dict[str, Any]] = blank()

    def __init__(self, task: Any = None) -> None:
        super().__init__(task, Task.BASE)
        if "_id" not in self.doc:
            self.doc["_id"] = "task_" + uuid.uuid4().hex

    def lock(self) -> Task:
        self.doc["lock"] = seconds()
        jobid.add_job_id(self.doc)
        return self._update_hostname()

    def done(self) -> Task:
        self.doc["done"] = seconds()
        return self

    @property
    def input(self) -> Any:
        return self.doc["input"]

    @input.setter
    def input(self, value: Any) -> None:
        self.doc["input"] = value

    @property
    def output(self) -> Any:
        return self.doc["output"]

    @output.setter
    def output(self, value: Any) -> None:
        self.doc["output"] = value

    @property
    def uploads(self) -> Any:
        return self.doc["uploads"]

    @uploads.setter
    def uploads(self, value: Any) -> None:
        self.doc["uploads"] = value

    def scrub(self) -> Task:
        """Make the task todo again, counting the reset in ``scrub_count``."""
        self.doc["scrub_count"] = int(self.doc.get("scrub_count") or 0) + 1
        self.doc["lock"] = 0
        self.doc["done"] = 0
        self.doc.pop("lease", None)
        jobid.remove_job_id(self.doc)
        return self._update_hostname()

    def error(self, msg: Any = None, exception: BaseException | None = None) -> Task:
        """Record an error and mark the task failed the upstream way (99/99)."""
        entry: dict[str, Any] = {"time": seconds()}
        if msg is not None:
            entry["message"] = str(msg)
        if exception is not None:
            entry["exception"] = "".join(traceback.format_exception(exception)) \
                if exception.__traceback__ else repr(exception)
        self.doc["lock"] = state.UPSTREAM_ERROR
        self.doc["done"] = state.UPSTREAM_ERROR
        self.doc.setdefault("error", []).append(entry)
        return self

    def has_error(self) -> bool:
        # Also for upstream's type "task" documents, which no view classifies.
        upstream_mark = self.doc.get("lock") == state.UPSTREAM_ERROR == self.doc.get("done")
        return upstream_mark or state.classify(self.doc) is state.TokenState.ERROR

    def get_errors(self) -> list:
        return self.doc.get("error", [])

    def is_done(self) -> bool:
        return self.doc.get("done", 0) != 0


class Job(Document):
    """Upstream's job record: timing of a piece of work, archived when done."""

    BASE: ClassVar[dict[str, Any]] = {"type": "job", "hostname": "", "start": 0, "done": 0,
                                      "queue": 0, "method": "", "archive": 0}

    def __init__(self, job: Any) -> None:
        super().__init__(job, Job.BASE)
        if "_id" not in self.doc:
            raise ValueError("Job ID must be set")

    def queue(self, method: str, host: str | None = None) -> Job:
        self.doc["method"] = method
        if host is not None:
            self.doc["hostname"] = host
        self.doc["queue"] = seconds()
        return self

    def start(self) -> Job:
        self.doc.update(start=seconds(), done=0, archive=0)
        return self._update_hostname()

    def finish(self) -> Job:
        self.doc["done"] = seconds()
        return self

    def archive(self) -> Job:
        if self.doc["done"] <= 0:
            self.doc["done"] = seconds()
        self.doc["archive"] = seconds()
        self.id = f"archived-{self.id}-{seconds()}"
        self.doc.pop("_rev", None)
        return self

    def is_done(self) -> bool:
        return self.doc["done"] != 0
