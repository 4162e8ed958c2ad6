"""Upstream PiCaS 1.1's config file, its encryption and its `picas-cli` command.

The files are upstream's formats: ``conf.yml`` with the four keys, the
password a Fernet token, the key in ``~/.config/picas/key.dat``. These
tests run ``picas-cli`` as a command, with HOME in a temporary folder.
"""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests
import yaml
from support import skip_unless_users_read_their_record

from picas import config, crypto, errors
from picas.picas_config import PicasConfig, PicasConfigSchemaError

BIN = Path(sys.executable).parent


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A HOME of its own, for the commands run here and for this process."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setattr(crypto, "CRYPTO_KEY_PATH", str(home / ".config/picas/key.dat"))
    monkeypatch.delenv("PICAS_CONFIG", raising=False)
    monkeypatch.delenv("PICAS_PROFILE", raising=False)
    return home


def command(home: Path, *args: str, input: str | None = None,
            **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PICAS_")}
    environ.update(HOME=str(home), **env)
    return subprocess.run([str(BIN / args[0]), *args[1:]], input=input, env=environ,
                          capture_output=True, text=True, timeout=120)


def init(home: Path, url: str, database: str, username: str, password: str) -> None:
    done = command(home, "picas-cli", "init", "--host-url", url, "--database", database,
                   "--username", username, "--password-stdin", input=password + "\n")
    assert done.returncode == 0, done.stderr
    assert password not in done.stdout + done.stderr


def test_init_writes_upstreams_files_readable_by_their_owner_only(home):
    init(home, "https://couch.example.org:6984", "mydb", "me", "pässword")
    folder = home / ".config" / "picas"
    data = yaml.safe_load((folder / "conf.yml").read_text())
    assert set(data) == {"host_url", "database", "username", "encrypted_password"}
    assert (data["host_url"], data["database"], data["username"]) == \
        ("https://couch.example.org:6984", "mydb", "me")
    # Upstream reads it with Fernet and the raw key in key.dat.
    from cryptography.fernet import Fernet
    key = (folder / "key.dat").read_bytes()
    assert Fernet(key).decrypt(data["encrypted_password"].encode()) == "pässword".encode()
    for path, mode in ((folder, 0o700), (folder / "conf.yml", 0o600), (folder / "key.dat", 0o600)):
        assert stat.S_IMODE(path.stat().st_mode) == mode, path


def test_init_again_keeps_the_key(home):
    init(home, "http://h:5984", "one", "me", "first")
    key = Path(crypto.CRYPTO_KEY_PATH).read_bytes()
    init(home, "http://h:5984", "two", "me", "second")
    assert Path(crypto.CRYPTO_KEY_PATH).read_bytes() == key
    values = PicasConfig(load=True).config
    assert values["database"] == "two"
    assert crypto.decrypt_password(values["encrypted_password"]) == b"second"


def test_a_password_on_the_command_line_works_but_is_warned_about(home):
    done = command(home, "picas-cli", "init", "--username", "me", "--password", "visible")
    assert done.returncode == 0, done.stderr
    assert "other users" in done.stderr and "visible" not in done.stderr + done.stdout
    assert crypto.decrypt_password(PicasConfig().config["encrypted_password"]) == b"visible"


def test_init_takes_the_password_from_the_environment(home):
    done = command(home, "picas-cli", "init", "--username", "me", PICAS_PASSWORD="from-env")
    assert done.returncode == 0, done.stderr
    assert crypto.decrypt_password(PicasConfig().config["encrypted_password"]) == b"from-env"


def test_a_file_written_by_upstream_is_read(home):
    """As upstream 1.1 writes them: a raw key file, a default-mode YAML file."""
    from cryptography.fernet import Fernet
    folder = home / ".config" / "picas"
    folder.mkdir(parents=True)
    key = Fernet.generate_key()
    (folder / "key.dat").write_bytes(key)
    (folder / "conf.yml").write_text(yaml.safe_dump({
        "host_url": "http://127.0.0.1:5984", "database": "updb", "username": "up",
        "encrypted_password": Fernet(key).encrypt(b"up-pw").decode()}))
    picas_config = PicasConfig(load=True)
    assert crypto.decrypt_password(picas_config.config["encrypted_password"]).decode() == "up-pw"
    assert "up-pw" not in str(picas_config) and "***masked***" in str(picas_config)
    settings = config.load(folder / "conf.yml")
    assert (settings.database, settings.username, settings.password) == ("updb", "up", "up-pw")


def test_dump_config_prints_or_writes_a_plain_picasconfig(home, tmp_path):
    init(home, "http://h:5984", "mydb", "me", "it's")
    printed = command(home, "picas-cli", "dump-config")
    assert printed.returncode == 0, printed.stderr
    target = tmp_path / "out" / "picasconfig.py"
    written = command(home, "picas-cli", "dump", "-o", str(target))
    assert written.returncode == 0, written.stderr
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    for text in (printed.stdout, target.read_text()):
        values: dict = {}
        exec(text, values)
        assert (values["PICAS_HOST_URL"], values["PICAS_DATABASE"], values["PICAS_USERNAME"],
                values["PICAS_PASSWORD"]) == ("http://h:5984", "mydb", "me", "it's")


def test_mistakes_are_one_line_without_a_traceback(home):
    missing = command(home, "picas-cli", "dump-config")
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines() == [
        "error: configuration file not found: ~/.config/picas/conf.yml "
        "(write it with `picas-cli init`)"]
    bad = command(home, "picas-cli", "init", "--username", "me", "--database", "Not Valid",
                  PICAS_PASSWORD="pw")
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.startswith("error: configuration validation failed: 'Not Valid' is not "
                                 "a valid database name")
    init(home, "http://h:5984", "mydb", "me", "pw")
    Path(crypto.CRYPTO_KEY_PATH).write_bytes(b"not a key")
    broken = command(home, "picas-cli", "dump")
    assert broken.returncode == 1 and len(broken.stderr.splitlines()) == 1
    assert "is not a Fernet key" in broken.stderr


def test_init_does_not_overwrite_picas_profiles(home):
    path = home / ".config" / "picas" / "conf.yml"
    config.write(path, {"url": "http://h:5984", "username": "me", "password": "pw"}, "work")
    before = path.read_text()
    done = command(home, "picas-cli", "init", "--username", "me", PICAS_PASSWORD="pw")
    assert done.returncode == 1 and "holds picas profiles" in done.stderr
    assert path.read_text() == before


def test_picas_config_reads_a_picas_init_profile_in_upstreams_shape(home, monkeypatch):
    path = home / ".config" / "picas" / "conf.yml"
    config.write(path, {"url": "http://a:1", "database": "one", "username": "me",
                        "password": "pw1"}, "default")
    config.write(path, {"url": "http://b:2", "database": "two", "username": "you",
                        "password": "pw2"}, "other")
    values = PicasConfig(load=True).config
    assert (values["host_url"], values["database"], values["username"]) == \
        ("http://a:1", "one", "me")
    assert crypto.decrypt_password(values["encrypted_password"]) == b"pw1"
    assert stat.S_IMODE(Path(crypto.CRYPTO_KEY_PATH).stat().st_mode) == 0o600
    monkeypatch.setenv("PICAS_PROFILE", "other")
    assert PicasConfig(str(path)).config["database"] == "two"


@pytest.mark.parametrize("values, problem", [
    ({"host_url": "http://h:1", "database": "d", "username": "u"},
     "'encrypted_password' is missing"),
    ({"host_url": "http://h:1", "database": "d", "username": 7, "encrypted_password": "x"},
     "'username' must be text"),
    ({"host_url": "http://h:1", "database": "d", "username": "u", "encrypted_password": "x",
      "password": "plain"}, "unknown key 'password'"),
])
def test_validation_names_the_problem(values, problem):
    with pytest.raises(PicasConfigSchemaError, match=problem):
        PicasConfig(load=False).validate_config(values)
    assert issubclass(PicasConfigSchemaError, errors.ConfigError)


def test_picas_reads_the_encrypted_config_that_picas_cli_wrote(home, couch, db):
    init(home, couch.url, db.name, couch.username, couch.password)
    done = command(home, "picas", "status", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["database"] == db.name


@pytest.fixture
def user(couch):
    """A throwaway CouchDB user (never the admin: CouchDB locks out after failed logins)."""
    name = f"picas_user_{uuid.uuid4().hex[:8]}"
    url = f"{couch.url}/_users/org.couchdb.user:{name}"
    auth = (couch.username, couch.password)
    requests.put(url, json={"name": name, "password": "old-pw", "roles": ["reader"],
                            "type": "user"}, auth=auth, timeout=10).raise_for_status()
    yield name
    rev = requests.get(url, auth=auth, timeout=10).json()["_rev"]
    requests.delete(url, params={"rev": rev}, auth=auth, timeout=10)


def test_passwd_changes_the_password_on_the_server_and_in_the_file(home, couch, user):
    skip_unless_users_read_their_record(couch.url, user, "old-pw")
    init(home, couch.url, "anydb", user, "old-pw")
    done = command(home, "picas-cli", "passwd", "--password-stdin", input="new-pw\n")
    assert done.returncode == 0, done.stderr
    assert "new-pw" not in done.stdout + done.stderr
    session = f"{couch.url}/_session"
    assert requests.get(session, auth=(user, "new-pw"), timeout=10).status_code == 200
    assert requests.get(session, auth=(user, "old-pw"), timeout=10).status_code == 401
    record = requests.get(f"{couch.url}/_users/org.couchdb.user:{user}",
                          auth=(couch.username, couch.password), timeout=10).json()
    assert record["roles"] == ["reader"]  # kept: CouchDB refuses a user changing them
    assert crypto.decrypt_password(PicasConfig().config["encrypted_password"]) == b"new-pw"


def test_passwd_keeps_the_file_when_the_server_refuses(home, couch):
    init(home, couch.url, "anydb", "nobody_here", "wrong")
    before = (home / ".config/picas/conf.yml").read_text()
    done = command(home, "picas-cli", "passwd", "--password-stdin", input="new-pw\n")
    assert done.returncode == 1 and len(done.stderr.splitlines()) == 1
    assert done.stderr.startswith("error: could not change the password at")
    assert (home / ".config/picas/conf.yml").read_text() == before


def test_passwd_says_when_the_server_keeps_users_from_their_own_record():
    """CouchDB 3's default _users security; pouchdb-server lets users read their record."""
    import requests_mock
    with requests_mock.Mocker() as mock:
        mock.get("http://couch.example.org:5984/_users/org.couchdb.user%3Ame", status_code=403,
                 json={"error": "forbidden", "reason": "You are not allowed to access this db."})
        with pytest.raises(ValueError, match=r"does not let 'me' read their own record in "
                                             r"_users.*ask a server admin"):
            PicasConfig(load=False).change_couchdb_password(
                "http://couch.example.org:5984", "me", b"old", "new")
