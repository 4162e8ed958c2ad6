"""The thin HTTP layer: dicts in, dicts out, statuses become exceptions.

Everything picas sends to CouchDB goes through :class:`Transport.request`,
which is why requests can be counted here and credentials masked once.
"""
from __future__ import annotations

import json as jsonlib
import logging
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from requests.utils import get_netrc_auth
from urllib3.util.retry import Retry

from . import errors

log = logging.getLogger(__name__)

#: View and _all_docs parameters that CouchDB expects JSON-encoded.
JSON_PARAMS = frozenset({"key", "keys", "startkey", "start_key", "endkey",
                         "end_key", "startkey_docid", "endkey_docid"})


def split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """Return ``url`` without user info, and the user and password in it."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise errors.ConfigError(
            f"'{mask_url(url)}' is not a CouchDB URL: use the form "
            "http://HOST:PORT or https://HOST:PORT")
    netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    if parts.port:
        netloc += f":{parts.port}"
    clean = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    user = parts.username and unquote(parts.username)
    password = parts.password and unquote(parts.password)
    return clean, user or None, password


def mask_url(url: str) -> str:
    """The URL with any password replaced by ``***``, safe for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit((parts.scheme, f"{user}:***@{netloc}", parts.path,
                       parts.query, parts.fragment))


def encode_params(params: Mapping[str, Any] | None) -> dict[str, str]:
    """Turn Python values into CouchDB query-string values."""
    out: dict[str, str] = {}
    for name, value in (params or {}).items():
        if value is None:
            continue
        if name in JSON_PARAMS or isinstance(value, (list, dict)):
            out[name] = jsonlib.dumps(value)
        elif isinstance(value, bool):
            out[name] = "true" if value else "false"
        else:
            out[name] = str(value)
    return out


class Transport:
    """One CouchDB server, reached over one keep-alive HTTP session.

    Construction does no I/O; the session is opened on the first request.
    ``request_count`` counts every HTTP request sent, for benchmarks.
    """

    def __init__(self, url: str, username: str | None = None,
                 password: str | None = None, verify: bool = True,
                 timeout: float = 300.0, connect_timeout: float = 5.0) -> None:
        clean, url_user, url_password = split_credentials(url)
        self.url = clean
        self.username = username if username is not None else url_user
        self._password = password if password is not None else (url_password or "")
        self.verify = verify
        self.timeout = (connect_timeout, timeout)
        self.request_count = 0
        self._session: requests.Session | None = None
        self._server_info: dict | None = None
        #: the login error once the server rejected these credentials
        self._rejected: errors.AuthenticationFailed | None = None

    @property
    def credentials(self) -> tuple[str, str] | None:
        """``(username, password)`` or None when anonymous."""
        if self.username is None:
            return None
        return (self.username, self._password)

    def __repr__(self) -> str:
        who = f"{self.username}@" if self.username else ""
        return f"<Transport {who}{self.url}>"

    def _open(self) -> requests.Session:
        if self._session is None:
            session = requests.Session()
            # requests reads proxy, CA bundle and netrc settings from the
            # environment on every request, which costs more than a claim's
            # own work; every request goes to one server, so read them once.
            settings = session.merge_environment_settings(self.url, {}, None, self.verify, None)
            session.proxies, session.verify = settings["proxies"], settings["verify"]
            session.auth = self.credentials or get_netrc_auth(self.url)
            session.trust_env = False
            # Ask for plain bodies: compressing a changes window costs the
            # server more CPU than sending it over a site network takes
            # (CouchDB does not compress answers anyway; pouchdb-server does).
            session.headers["Accept-Encoding"] = "identity"
            # Retry only failures to connect: nothing was sent, so even a
            # POST is safe to repeat. Read errors are left to the caller.
            retry = Retry(total=2, connect=2, read=0, status=0, other=0,
                          redirect=0, backoff_factor=0.2)
            adapter = HTTPAdapter(max_retries=retry, pool_maxsize=4)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            self._session = session
        return self._session

    def server_info(self) -> dict:
        """The server's welcome document (``GET /``), read once."""
        if self._server_info is None:
            self._server_info = self.request("GET", [""])
        return self._server_info

    def is_apache_couchdb(self) -> bool:
        """Whether the server is Apache CouchDB, rather than pouchdb-server."""
        vendor = self.server_info().get("vendor") or {}
        return "Apache" in str(vendor.get("name", ""))

    def copy(self) -> Transport:
        """The same server and credentials on a session of its own, for another
        thread (a session must not be shared between threads)."""
        twin = Transport(self.url, self.username, self._password, self.verify,
                         self.timeout[1], self.timeout[0])
        twin._server_info = self._server_info
        return twin

    def close(self) -> None:
        """Close the keep-alive connections (reopened on the next request)."""
        if self._session is not None:
            self._session.close()
            self._session = None

    def path_url(self, path: Iterable[str]) -> str:
        return self.url + "/" + "/".join(quote(str(p), safe="") for p in path)

    def request(self, method: str, path: Iterable[str], *,
                params: Mapping[str, Any] | None = None,
                json: Any = None, data: bytes | None = None,
                headers: Mapping[str, str] | None = None,
                raw: bool = False, database: str | None = None) -> Any:
        """Send one request; return decoded JSON (or bytes when ``raw``).

        ``database`` only improves error messages.
        """
        if self._rejected is not None:
            # Every further try with the same password counts as a failed
            # login, and CouchDB 3.4+ locks the user out after five.
            raise self._rejected
        path = list(path)
        url = self.path_url(path)
        session = self._open()
        self.request_count += 1
        try:
            response = session.request(
                method, url, params=encode_params(params),
                data=jsonlib.dumps(json).encode() if json is not None else data,
                headers={"Accept": "application/json",
                         **({"Content-Type": "application/json"} if json is not None else {}),
                         **(headers or {})},
                timeout=self.timeout)
        except requests.exceptions.SSLError as exc:
            raise errors.ConnectionFailed(
                f"TLS failed with {self.url}: {type(exc).__name__}; check the "
                "URL scheme, or the server certificate") from None
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise errors.ConnectionFailed(
                f"cannot reach CouchDB at {self.url} ({_reason(exc)}): check the "
                "URL and that the server is running") from None
        except requests.RequestException as exc:
            raise errors.ConnectionFailed(
                f"request to {self.url} failed ({_reason(exc)}): check the "
                "network and the server") from None
        if response.status_code >= 400:
            error = self._error(response, path, database)
            if isinstance(error, errors.AuthenticationFailed):
                self._rejected = error
            raise error
        if raw:
            return response.content
        try:
            body = response.json()
        except ValueError:
            raise errors.ServerError(
                f"{self.url} answered {method} {path[:1]} with something that is "
                "not JSON: is this URL a CouchDB server?") from None
        if response.status_code == 202:
            mark_accepted(body)
        return body

    def _error(self, response: requests.Response, path: list[str],
               database: str | None) -> errors.PicasError:
        try:
            body = response.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        reason = body.get("reason") or body.get("error") or response.reason
        return error_for(response.status_code, reason, path, self.url, self.username, database,
                         kind=body.get("error"))


def error_for(status: int, reason: str, path: list[str], url: str, username: str | None,
              database: str | None, kind: str | None = None) -> errors.PicasError:
    """The exception for an HTTP error status from the server at ``url``."""
    db = database or (path[0] if path else "")
    if status in (401, 403):
        return _refusal(status, reason, path, url, username, db)
    if status == 404:
        return errors.NotFound(f"not found at {url}: /{'/'.join(path)} ({reason})")
    if status == 409:
        return errors.Conflict(f"conflict on /{'/'.join(path)}: {reason}")
    if status == 412:
        # CouchDB's answer to creating a database that exists.
        return errors.DatabaseExists(f"conflict on /{'/'.join(path)}: {reason}")
    if status == 500 and "timeout" in (kind, reason) and "_view" in path:
        return errors.ViewBuilding(
            f"{url} timed out on view {'/'.join(path[-3::2])} of database '{db}', "
            "which it is still indexing: wait for the build (`picas status` shows it) "
            "and try again")
    if status == 413:
        return errors.TooLarge(f"{url} refused /{'/'.join(path)} as too large ({reason}): "
                               "CouchDB's max_document_size or max_attachment_size")
    if status >= 500:
        return errors.ServerError(
            f"{url} failed with HTTP {status} ({reason}); try again, "
            "and check the server's log if it persists")
    return errors.RequestRejected(
        f"{url} refused the request with HTTP {status}: {reason}")


def _refusal(status: int, reason: str, path: list[str], url: str, username: str | None,
             db: str) -> errors.PicasError:
    """401 and 403: a login the server rejected, or a user it will not let do this."""
    who = f"user '{username}'" if username else "anonymous access"
    if status == 401 and "not a server admin" in str(reason):
        # CouchDB's answer to a member on an admin-only resource: the login
        # itself was fine, so this must not stop the transport.
        return errors.PermissionDenied(f"{who} is not a server admin at {url}: "
                                       f"/{'/'.join(path)} needs one")
    if status == 401:
        return errors.AuthenticationFailed(
            f"{url} rejected {who}: check the username and password "
            "(PICAS_USERNAME / PICAS_PASSWORD), and that the user may use "
            f"database '{db}'")
    if "locked" in str(reason).lower():
        return errors.AccountLocked(
            f"{url} has locked out {who} after repeated failed logins "
            f"({reason}): fix the password, and start nothing with it until the "
            "lock ends (CouchDB's [chttpd_auth_lockout] lockout_duration, "
            "5 minutes by default)")
    return errors.PermissionDenied(
        f"{who} may not do this on database '{db}' at {url} ({reason}): "
        "ask a server admin to add the user as a member "
        f"(picas db create --member NAME)")


def mark_accepted(body: Any) -> None:
    """Mark the writes of a 202 answer as ``"accepted": true``.

    A CouchDB cluster answers 202 when a write reached fewer replicas than
    a quorum. Single writes say so only by that status, and older servers
    do not mark which documents of a ``_bulk_docs`` it was: then every
    write of the answer counts as unconfirmed.
    """
    if isinstance(body, dict) and body.get("ok"):
        body["accepted"] = True
    elif isinstance(body, list) and not any(
            isinstance(item, dict) and item.get("accepted") for item in body):
        for item in body:
            if isinstance(item, dict) and "error" not in item:
                item["accepted"] = True


def _reason(exc: Exception) -> str:
    """A one-line, credential-free cause for a requests exception."""
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known",
                   "Temporary failure in name resolution", "timed out",
                   "Connection reset", "Connection aborted", "Max retries exceeded"):
        if marker in text:
            return marker.lower()
    return type(exc).__name__
