"""The one module that imports CouchDB-Python; only the upstream-style API imports it.

picas speaks HTTP through :mod:`picas.transport`; CouchDB-Python stays
here only so that scripts written for upstream PiCaS keep working: they
catch ``couchdb.http.ResourceConflict`` and friends, and some reach for
``client.db`` to use a ``couchdb.Database`` directly. Swapping the library
out means changing this file alone.

On import, it adds CouchDB-Python's error classes to the bases of ours
(:mod:`picas.errors` itself needs only the standard library). ``except``
compares classes by their real bases, never by ``__subclasscheck__``, so a
registered virtual subclass would not be caught: the bases must be real.
Changing ``__bases__`` also changes every subclass and every error raised
afterwards, wherever it was imported from.
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import sys

from . import errors

# On import, CouchDB-Python asks pkg_resources for its own version, and
# importing pkg_resources takes 60 ms: more than the rest of a pilot's
# start-up imports. Hide it during the import (CouchDB-Python then says
# "?") and ask importlib.metadata instead, which takes about 1 ms.
_hidden = "pkg_resources" not in sys.modules
if _hidden:
    sys.modules["pkg_resources"] = None  # type: ignore[assignment]
try:
    import couchdb
    import couchdb.http
finally:
    if _hidden:
        del sys.modules["pkg_resources"]
if couchdb.__version__ == "?":
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        couchdb.__version__ = importlib.metadata.version("CouchDB")

#: Ours, and the CouchDB-Python error that upstream scripts catch instead.
LEGACY_BASES: dict[type[errors.PicasError], type[Exception]] = {
    errors.ConnectionFailed: couchdb.http.HTTPError,
    errors.AuthenticationFailed: couchdb.http.Unauthorized,
    errors.PermissionDenied: couchdb.http.Unauthorized,
    errors.NotFound: couchdb.http.ResourceNotFound,
    errors.Conflict: couchdb.http.ResourceConflict,
    errors.DatabaseExists: couchdb.http.PreconditionFailed,
    errors.ServerError: couchdb.http.ServerError,
}


def _adopt_legacy_bases() -> None:
    for ours, legacy in LEGACY_BASES.items():
        if not issubclass(ours, legacy):
            ours.__bases__ = (*ours.__bases__, legacy)


_adopt_legacy_bases()


def legacy_database(server_url: str, name: str,
                    credentials: tuple[str, str] | None,
                    verify: bool = True) -> couchdb.Database:
    """A CouchDB-Python handle on the same database; makes no request."""
    server = couchdb.Server(server_url)
    if credentials is not None:
        server.resource.credentials = credentials
    if not verify:
        server.resource.session.disable_ssl_verification()
    return couchdb.Database(server.resource(name), name)
