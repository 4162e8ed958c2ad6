"""The one module that imports CouchDB-Python.

picas speaks HTTP through :mod:`picas.transport`; CouchDB-Python stays
here only so that scripts written for upstream PiCaS keep working: they
catch ``couchdb.http.ResourceConflict`` and friends, and some reach for
``client.db`` to use a ``couchdb.Database`` directly. Swapping the library
out means changing this file alone.
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import sys

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

LegacyHTTPError = couchdb.http.HTTPError
LegacyConflict = couchdb.http.ResourceConflict
LegacyNotFound = couchdb.http.ResourceNotFound
LegacyUnauthorized = couchdb.http.Unauthorized
LegacyPreconditionFailed = couchdb.http.PreconditionFailed
LegacyServerError = couchdb.http.ServerError


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
