"""One CouchDB-compatible server for the whole session, one database per test.

By default the session starts pouchdb-server in memory, with an admin, on a
free port on 127.0.0.1, and stops it by PID at the end. With
PICAS_TEST_COUCHDB_URL=http://admin:secret@host:5984 every test runs
against that server instead (an Apache CouchDB 3.x in production use);
each test makes its own uniquely named database there and deletes it.
"""
from __future__ import annotations

import contextlib
import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from support import missing

from picas import designdocs, errors, server
from picas.database import Database
from picas.transport import Transport, split_credentials

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"
ADMIN = ("admin", "secret")


@dataclass
class CouchServer:
    url: str            # without credentials
    username: str
    password: str
    local: server.LocalServer | None = None

    @property
    def admin_url(self) -> str:
        scheme, rest = self.url.split("://", 1)
        return f"{scheme}://{self.username}:{self.password}@{rest}"

    def transport(self) -> Transport:
        return Transport(self.url, self.username, self.password)

    def check_alive(self) -> None:
        """Fail (do not hang) when the local server process has died."""
        if self.local is not None and not self.local.alive():
            code = self.local.process.returncode if self.local.process else None
            log = ARTIFACTS / "pouchdb-server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            pytest.fail(f"pouchdb-server died (exit code {code}); last log lines:\n{tail}",
                        pytrace=False)


@pytest.fixture(scope="session")
def couch() -> CouchServer:
    external = os.environ.get("PICAS_TEST_COUCHDB_URL")
    if external:
        url, user, password = split_credentials(external)
        if not user:
            pytest.exit("PICAS_TEST_COUCHDB_URL must carry admin credentials: "
                        "http://USER:PASSWORD@HOST:PORT", returncode=2)
        try:
            requests.get(url + "/", timeout=5).raise_for_status()
        except requests.RequestException as exc:
            pytest.exit(f"PICAS_TEST_COUCHDB_URL={url} does not answer: {exc}", returncode=2)
        yield CouchServer(url, user, password)
        return
    try:
        server.executable()
    except errors.ConfigError as exc:
        missing(f"pouchdb-server ({exc})")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    local = server.LocalServer(log_path=ARTIFACTS / "pouchdb-server.log").start()
    try:
        server.ensure_admin(local.url, *ADMIN)
        yield CouchServer(local.url, *ADMIN, local=local)
    finally:
        local.stop()


@pytest.fixture(autouse=True)
def _no_user_key(tmp_path_factory: pytest.TempPathFactory, monkeypatch) -> None:
    """No test reads or writes the user's own ~/.config/picas/key.dat."""
    import picas.crypto
    monkeypatch.setattr(picas.crypto, "CRYPTO_KEY_PATH",
                        str(tmp_path_factory.mktemp("key") / "key.dat"))


@pytest.fixture(autouse=True)
def _server_alive(request: pytest.FixtureRequest) -> None:
    """Every test that touched the server checks, afterwards, that it still lives."""
    yield
    if "couch" in request.fixturenames:
        request.getfixturevalue("couch").check_alive()


@pytest.fixture
def stranger() -> str:
    """A user name for wrong-password tests, new in every test.

    Never the admin's: CouchDB 3.4+ locks a user out after five failed
    logins, and a locked-out admin would fail every test after it.
    """
    return unique_name("picas_stranger")


def unique_name(prefix: str = "picas_test") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def empty_db(couch: CouchServer) -> Database:
    """A new, uniquely named database without views; deleted afterwards."""
    couch.check_alive()
    db = Database(couch.transport(), unique_name())
    db.create()
    yield db
    with contextlib.suppress(errors.PicasError):
        db.destroy()


@pytest.fixture
def db(empty_db: Database) -> Database:
    """A new database with picas's design documents pushed."""
    designdocs.push(empty_db)
    return empty_db


@pytest.fixture
def client(db: Database):
    """The upstream-compatible client on the test database."""
    from picas.clients import CouchDB
    return CouchDB(db.transport.url, db.name, db.transport.username, db.transport._password)


@pytest.fixture
def pilot_env(couch: CouchServer, db: Database) -> dict[str, str]:
    """Environment for a pilot subprocess: the connection, nothing else hidden."""
    env = dict(os.environ)
    env.update(PICAS_URL=couch.url, PICAS_DATABASE=db.name,
               PICAS_USERNAME=couch.username, PICAS_PASSWORD=couch.password,
               PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""))
    env.pop("PICAS_CONFIG", None)
    return env


PYTHON = sys.executable


@pytest.fixture
def run(couch, db, tmp_path):
    """``run(*args)``: the picas CLI on the test database, with a private config."""
    from click.testing import CliRunner

    from picas.cli import cli

    env = {"PICAS_URL": couch.url, "PICAS_DATABASE": db.name,
           "PICAS_USERNAME": couch.username, "PICAS_PASSWORD": couch.password,
           "PICAS_CONFIG": str(tmp_path / "conf.yml"), "PICAS_PROFILE": None}

    def invoke(*args: str, input: str | None = None, **extra: str | None):
        return CliRunner().invoke(cli, list(args), input=input, env={**env, **extra})

    return invoke
