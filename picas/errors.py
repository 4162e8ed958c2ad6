"""One exception tree for picas.

HTTP statuses become these classes in :mod:`picas.transport` and nowhere
else. Each message says what to do next. The classes also derive from
CouchDB-Python's errors, so upstream PiCaS scripts that catch
``couchdb.http.ResourceConflict`` still catch our conflicts.
"""
from __future__ import annotations


class PicasError(Exception):
    """Base class of every error picas raises on purpose."""


class ConnectionFailed(PicasError):
    """The server could not be reached: wrong URL, server down, network."""


class AuthenticationFailed(PicasError):
    """HTTP 401: the server rejected the credentials."""


class AccountLocked(AuthenticationFailed):
    """HTTP 403 from CouchDB 3.4+'s login lockout: too many failed logins.

    A subclass of :class:`AuthenticationFailed` so that whatever stops at a
    wrong password stops here too: every further try would prolong the lock.
    """


class PermissionDenied(PicasError):
    """HTTP 403: authenticated, but not allowed on this database."""


class NotFound(PicasError):
    """HTTP 404: a database, document, view or attachment is missing."""


class DocumentNotFound(NotFound, ValueError):
    """No document with that id (a ValueError too, as upstream's ``get`` raised)."""


class DatabaseNotFound(NotFound):
    """The database itself does not exist."""


class ViewNotFound(NotFound):
    """The design document or one of its views is missing."""


class Conflict(PicasError):
    """HTTP 409: someone else changed the document first."""


class WriteInDoubt(PicasError):
    """HTTP 202 (or ``"accepted": true``): a cluster stored the write on fewer
    replicas than a quorum. It may yet lose to a conflicting write, so it
    must not be acted on as if it had won."""

    def __init__(self, message: str, rev: str | None = None) -> None:
        super().__init__(message)
        self.rev = rev


class NoQuorum(PicasError):
    """Writes keep coming back unconfirmed: too few of the cluster's nodes are up."""


class DatabaseExists(Conflict):
    """HTTP 412 on creating a database: it is there already."""


class ServerError(PicasError):
    """HTTP 5xx or an unusable answer from the server."""


class ViewBuilding(ServerError):
    """A view query timed out while the server builds the view's index.

    CouchDB answers such a query with HTTP 500 ``timeout`` after its
    ``[fabric] request_timeout`` (60 s) and goes on building; so this is
    "not yet", not a failure: :mod:`picas.indexing` reads stale rows then.
    """


class RequestRejected(PicasError):
    """HTTP 400 and other 4xx: the server refused a malformed request."""


class TooLarge(RequestRejected):
    """HTTP 413: a document, an attachment or a request larger than the server allows."""


class InputUnavailable(PicasError):
    """A token's input (an attachment, a file or a URL) could not be read."""


class InvalidToken(PicasError, ValueError):
    """A token (or token input) that picas cannot run or store."""


class ConfigError(PicasError):
    """The configuration is incomplete or invalid."""
