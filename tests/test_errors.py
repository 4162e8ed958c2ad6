"""Every error picas raises on purpose: its class, and a message that says
what to do, without ever showing a password."""
from __future__ import annotations

import logging
import subprocess
import sys
import traceback
import uuid
from urllib.parse import urlsplit

import couchdb.http
import pytest
import requests
import requests_mock
from conftest import ROOT

from picas import designdocs, errors
from picas.clients import CouchDB
from picas.database import Database
from picas.documents import Task
from picas.iterators import TaskViewIterator
from picas.server import free_port
from picas.transport import Transport, mask_url, split_credentials

SECRET = "Pa55-w0rd-XYZ"
FAKE = "http://couch.invalid:5984"


def _client(couch, db_name: str, username: str | None = None, password: str | None = None):
    return CouchDB(couch.url, db_name, username or couch.username,
                   couch.password if password is None else password)


def _everything_said(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc)


def test_every_error_is_a_picas_error():
    for cls in (errors.ConnectionFailed, errors.AuthenticationFailed, errors.PermissionDenied,
                errors.NotFound, errors.DatabaseNotFound, errors.ViewNotFound,
                errors.Conflict, errors.ServerError, errors.RequestRejected,
                errors.InvalidToken, errors.ConfigError):
        assert issubclass(cls, errors.PicasError), cls


# -- against the real server -----------------------------------------------------

def test_server_down_names_the_url():
    url = f"http://127.0.0.1:{free_port()}"
    client = CouchDB(url, "tokens")
    with pytest.raises(errors.ConnectionFailed) as caught:
        client.doc_count()
    assert url in str(caught.value)
    assert "server is running" in str(caught.value)


def test_wrong_password_says_check_the_username_and_password(couch, db, stranger):
    client = _client(couch, db.name, stranger, password="not-" + couch.password)
    with pytest.raises(errors.AuthenticationFailed) as caught:
        client.doc_count()
    message = str(caught.value)
    assert "check the username and password" in message
    assert couch.url in message and stranger in message
    assert "not-" + couch.password not in _everything_said(caught.value)


def test_a_rejected_login_is_not_tried_again(couch, db, stranger):
    """Every try counts as a failed login: five lock the user out on CouchDB 3.4+."""
    from faultproxy import FaultProxy
    with FaultProxy(couch.url) as proxy:
        client = CouchDB(proxy.url, db.name, stranger, "wrong")
        for _ in range(3):
            with pytest.raises(errors.AuthenticationFailed):
                client.doc_count()
        assert proxy.stats["requests"] == 1


def test_a_locked_out_user_is_told_why_and_for_how_long(fake_client):
    client, mock = fake_client
    mock.get(f"{FAKE}/tokens", status_code=403, json={
        "error": "forbidden",
        "reason": "Account is temporarily locked due to multiple authentication failures"})
    with pytest.raises(errors.AccountLocked) as caught:
        client.doc_count()
    message = str(caught.value)
    assert "user 'carol'" in message and "locked out" in message
    assert "5 minutes" in message and "fix the password" in message
    assert isinstance(caught.value, errors.AuthenticationFailed)
    assert SECRET not in _everything_said(caught.value)
    with pytest.raises(errors.AccountLocked):
        client.doc_count()
    assert mock.call_count == 1


def test_a_non_member_is_refused(couch, db):
    admin = couch.transport()
    name = f"picas_test_user_{uuid.uuid4().hex[:8]}"
    user_id = f"org.couchdb.user:{name}"
    rev = admin.request("PUT", ["_users", user_id], json={
        "name": name, "password": "member-pw", "roles": [], "type": "user"})["rev"]
    try:
        _client(couch, db.name).set_users(members=["somebody_else"])
        client = _client(couch, db.name, name, "member-pw")
        with pytest.raises((errors.PermissionDenied, errors.AuthenticationFailed)) as caught:
            client.doc_count()
        message = str(caught.value)
        assert db.name in message
        if isinstance(caught.value, errors.PermissionDenied):   # CouchDB: 403
            assert "member" in message and name in message
        else:                                                   # pouchdb-server: 401
            assert "check the username and password" in message
        assert "member-pw" not in _everything_said(caught.value)
    finally:
        admin.request("DELETE", ["_users", user_id], params={"rev": rev})


def test_a_missing_database_says_how_to_create_it(couch):
    name = f"picas_missing_{uuid.uuid4().hex[:8]}"
    client = _client(couch, name)
    calls = [client.doc_count, lambda: client.view("todo"), lambda: client["t1"],
             lambda: client.save(Task({"_id": "t1"})),
             lambda: client.save_documents([Task()]),
             lambda: designdocs.push(client.database)]
    for call in calls:
        with pytest.raises(errors.DatabaseNotFound) as caught:
            call()
        assert "picas db create" in str(caught.value)
        assert name in str(caught.value)


def test_missing_views_say_how_to_push_them(couch, empty_db):
    client = _client(couch, empty_db.name)
    # (TaskViewIterator reads the stock Monitor/todo through the changes
    # feed, so it needs no view; any other view it must find.)
    for call, view in ((lambda: client.view("todo"), "todo"),
                       (lambda: client.get_from_view("todo"), "todo"),
                       (lambda: next(TaskViewIterator(client, "error")), "error")):
        with pytest.raises(errors.ViewNotFound) as caught:
            call()
        assert "picas views push" in str(caught.value)
        assert f"Monitor/{view}" in str(caught.value)
    assert client.is_view_nonempty("todo") is False


def test_a_missing_document_is_named(client, db):
    for call in (lambda: client["no_such_token"], lambda: client.get("no_such_token")):
        with pytest.raises(errors.NotFound) as caught:
            call()
        assert not isinstance(caught.value, errors.DatabaseNotFound)
        assert "no_such_token" in str(caught.value) and db.name in str(caught.value)
    client.save(Task({"_id": "t1"}))
    with pytest.raises(errors.NotFound) as caught:
        db.get_attachment("t1", "log.txt")
    assert "log.txt" in str(caught.value) and "t1" in str(caught.value)


def test_upstream_scripts_catch_our_errors(client, db, couch, stranger):
    task = Task({"_id": "t1"})
    client.save(task)
    stale = Task(dict(task.value))
    client.save(task)
    try:
        client.save(stale)
    except couchdb.http.ResourceConflict as exc:
        assert isinstance(exc, errors.Conflict)
    else:
        pytest.fail("a stale save did not conflict")
    try:
        client["missing"]
    except couchdb.http.ResourceNotFound as exc:
        assert isinstance(exc, errors.NotFound)
    else:
        pytest.fail("a missing document was found")
    try:
        _client(couch, db.name, stranger, password="wrong").doc_count()
    except couchdb.http.Unauthorized as exc:
        assert isinstance(exc, errors.AuthenticationFailed)
    else:
        pytest.fail("a wrong password was accepted")


# -- credentials never show -------------------------------------------------------

def test_credentials_in_the_url_never_appear(caplog):
    caplog.set_level(logging.DEBUG)
    url = f"http://carol:{SECRET}@127.0.0.1:{free_port()}"
    client = CouchDB(url, "tokens")
    assert client.transport.credentials == ("carol", SECRET)
    with pytest.raises(errors.ConnectionFailed) as caught:
        client.doc_count()
    said = _everything_said(caught.value)
    assert "127.0.0.1" in said and SECRET not in said
    for shown in (repr(client.transport), repr(client.database), str(client.transport.url)):
        assert SECRET not in shown
    assert SECRET not in caplog.text


def test_credentials_in_a_url_reach_the_server(couch, db, stranger):
    client = CouchDB(couch.admin_url, db.name)
    assert client.doc_count() >= 0
    wrong = couch.admin_url.replace(f"{couch.username}:{couch.password}@", f"{stranger}:{SECRET}@")
    with pytest.raises(errors.AuthenticationFailed) as caught:
        CouchDB(wrong, db.name).doc_count()
    assert SECRET not in _everything_said(caught.value)


def test_a_bad_url_is_refused_without_its_password():
    with pytest.raises(errors.ConfigError) as caught:
        split_credentials(f"ftp://carol:{SECRET}@example.org")
    assert SECRET not in str(caught.value) and "http://HOST:PORT" in str(caught.value)


def test_mask_url():
    assert mask_url(f"http://carol:{SECRET}@h:5984/db?x=1") == "http://carol:***@h:5984/db?x=1"
    assert mask_url("http://carol@h:5984") == "http://carol@h:5984"
    assert mask_url("https://h:6984/") == "https://h:6984/"
    assert split_credentials("http://c%40rol:p%3Ass@h:5984/") == ("http://h:5984", "c@rol", "p:ss")


# -- failures a real server cannot produce on demand ---------------------------------

@pytest.fixture
def fake_client():
    with requests_mock.Mocker() as mock:
        yield CouchDB(f"http://carol:{SECRET}@couch.invalid:5984", "tokens"), mock


@pytest.mark.parametrize("status, cls, words", [
    (500, errors.ServerError, "HTTP 500"),
    (503, errors.ServerError, "try again"),
    (400, errors.RequestRejected, "HTTP 400"),
    (403, errors.PermissionDenied, "member"),
    (412, errors.Conflict, "conflict"),
    (413, errors.TooLarge, "too large"),
])
def test_http_statuses_become_errors(fake_client, status, cls, words):
    client, mock = fake_client
    mock.get(f"{FAKE}/tokens", status_code=status, json={"error": "x", "reason": "boom"})
    with pytest.raises(cls) as caught:
        client.doc_count()
    assert words in str(caught.value)
    assert SECRET not in _everything_said(caught.value)


@pytest.mark.parametrize("exc", [
    requests.exceptions.ChunkedEncodingError("Connection broken: IncompleteRead(3 bytes read)"),
    requests.exceptions.ConnectionError("Connection aborted."),
    requests.exceptions.ReadTimeout("read timed out"),
])
def test_a_connection_dropped_mid_response_is_a_connection_failure(fake_client, exc):
    client, mock = fake_client
    mock.get(f"{FAKE}/tokens", exc=exc)
    with pytest.raises(errors.ConnectionFailed) as caught:
        client.doc_count()
    assert FAKE in str(caught.value)
    assert SECRET not in _everything_said(caught.value)


def test_an_answer_that_is_not_json(fake_client):
    client, mock = fake_client
    mock.get(f"{FAKE}/tokens", text="<html>a proxy login page</html>")
    with pytest.raises(errors.ServerError) as caught:
        client.doc_count()
    assert "not JSON" in str(caught.value) and FAKE in str(caught.value)
    mock.get(f"{FAKE}/tokens", status_code=404, text="<html>not here</html>")
    with pytest.raises(errors.DatabaseNotFound):
        client.doc_count()


def test_the_transport_sends_credentials_but_shows_none(fake_client):
    client, mock = fake_client
    mock.get(f"{FAKE}/tokens", json={"doc_count": 3})
    assert client.doc_count() == 3
    assert mock.last_request.headers["Authorization"].startswith("Basic ")
    assert SECRET not in repr(client.transport) and SECRET not in mock.last_request.url
    assert isinstance(client.transport, Transport) and client.transport.request_count == 1


# -- logging --------------------------------------------------------------------

def test_importing_picas_configures_no_logging():
    code = (
        "import logging, pkgutil, importlib, picas\n"
        "for m in pkgutil.iter_modules(picas.__path__):\n"
        "    if m.name not in ('cli', '__main__'):\n"
        "        importlib.import_module('picas.' + m.name)\n"
        "assert not logging.getLogger().handlers, logging.getLogger().handlers\n"
        "assert not logging.getLogger('picas').handlers\n"
        "assert logging.getLogger().level == logging.WARNING\n"
        "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_proxy_settings_in_the_environment_are_followed(couch, db, monkeypatch):
    """Read once per connection, not per request, but still read."""
    dead_proxy = f"http://127.0.0.1:{free_port()}"
    for name in ("NO_PROXY", "no_proxy", "HTTP_PROXY", "http_proxy", "HTTPS_PROXY",
                 "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", dead_proxy)
    monkeypatch.setenv("HTTPS_PROXY", dead_proxy)
    through_proxy = Database(Transport(couch.url, couch.username, couch.password), db.name)
    with pytest.raises(errors.ConnectionFailed):
        through_proxy.info()
    monkeypatch.setenv("NO_PROXY", urlsplit(couch.url).hostname)
    direct = Database(Transport(couch.url, couch.username, couch.password), db.name)
    assert direct.info()["db_name"] == db.name
