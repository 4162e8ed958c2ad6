"""CouchDB users (the ``_users`` database): what a user may do to their own record."""
from __future__ import annotations

from .transport import Transport


def user_doc_id(username: str) -> str:
    return f"org.couchdb.user:{username}"


def change_password(transport: Transport, new_password: str) -> None:
    """Give the transport's user ``new_password`` on the server.

    The user's record is written back with only its password changed, so
    that its roles stay (CouchDB refuses a user who changes their own
    roles). A server admin defined in the server's config has no record
    here: that is a :class:`picas.errors.NotFound`.
    """
    path = ["_users", user_doc_id(transport.username or "")]
    record = transport.request("GET", path, database="_users")
    record["password"] = new_password
    transport.request("PUT", path, json=record, headers={"If-Match": record["_rev"]},
                      database="_users")
