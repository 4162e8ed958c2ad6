"""Who may use a database: its ``_security`` object, and who is asking.

CouchDB leaves a database without members open to everyone, anonymous
users included, so picas gives every database it creates members unless
told, in so many words, to leave it public.
"""
from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass

from . import errors
from .transport import Transport

POUCHDB_SERVER = "pouchdb-server"
COUCHDB = "couchdb"


@dataclass(frozen=True)
class User:
    """The user the server sees behind our credentials (``name`` None: anonymous)."""

    name: str | None
    roles: tuple[str, ...]

    @property
    def server_admin(self) -> bool:
        return "_admin" in self.roles


def whoami(transport: Transport) -> User:
    """Ask the server who our credentials make us; wrong ones raise AuthenticationFailed."""
    context = transport.request("GET", ["_session"]).get("userCtx") or {}
    return User(context.get("name"), tuple(context.get("roles") or ()))


def server_software(transport: Transport) -> str:
    """``couchdb`` or ``pouchdb-server``, from the server's welcome.

    A URL that leads to a database instead of the server is refused here,
    before anything is written through it.
    """
    welcome = transport.request("GET", [])
    if "db_name" in welcome:
        raise errors.ConfigError(
            f"{transport.url} is database '{welcome['db_name']}', not a CouchDB server: "
            "give the server's URL and the database apart")
    if "express-pouchdb" in welcome:
        return POUCHDB_SERVER
    if "couchdb" in welcome:
        return COUCHDB
    raise errors.ConfigError(f"{transport.url} does not answer as a CouchDB server: "
                             "check the URL")


def is_public(security: dict) -> bool:
    """CouchDB's rule: no member names and no member roles means anyone may read and write."""
    members = security.get("members") or {}
    return not (members.get("names") or members.get("roles"))


def _has_members(security: dict) -> bool:
    """Whether anyone but the server admins is a member. CouchDB 3 gives a new
    database the members role ``_admin`` only: closed, but to everyone else too."""
    members = security.get("members") or {}
    return bool(members.get("names") or set(members.get("roles") or ()) - {"_admin"})


def _add(security: dict, section: str, key: str, values: Iterable[str]) -> None:
    values = list(values)
    if values:
        entry = security.setdefault(section, {})
        entry[key] = list(dict.fromkeys([*entry.get(key, []), *values]))


def updated(current: dict, *, members: Iterable[str] = (), member_roles: Iterable[str] = (),
            admins: Iterable[str] = (), admin_roles: Iterable[str] = (), public: bool = False,
            default_member: str | None = None) -> dict:
    """``current`` with the names and roles added.

    A database left without members (server admins aside) gets
    ``default_member``, unless ``public`` asks for it to stay open (which
    also drops its members).
    """
    security = copy.deepcopy(current)
    _add(security, "admins", "names", admins)
    _add(security, "admins", "roles", admin_roles)
    if public:
        security["members"] = {"names": [], "roles": []}
        return security
    _add(security, "members", "names", members)
    _add(security, "members", "roles", member_roles)
    if not _has_members(security) and default_member:
        _add(security, "members", "names", [default_member])
    return security
