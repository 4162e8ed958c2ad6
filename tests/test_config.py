"""Settings: flags > environment > config file > defaults, validated once."""
from __future__ import annotations

import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from picas import config, crypto
from picas.errors import ConfigError


def write_yaml(path, data) -> None:
    path.write_text(yaml.safe_dump(data))


@pytest.fixture(autouse=True)
def no_user_config(tmp_path, monkeypatch):
    """Never read the user's real config or PICAS_* variables."""
    for name in ("PICAS_URL", "PICAS_DATABASE", "PICAS_USERNAME", "PICAS_PASSWORD",
                 "PICAS_PROFILE", "PICAS_MAX_ATTEMPTS", "PICAS_LEASE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PICAS_CONFIG", str(tmp_path / "missing.yml"))


def test_defaults_without_file_or_environment():
    settings = config.load()
    assert (settings.url, settings.database, settings.username, settings.password) == \
        ("http://127.0.0.1:5984", "picas", None, None)
    assert settings.max_attempts == 3 and settings.lease == 600.0


def test_default_path_follows_picas_config(tmp_path, monkeypatch):
    monkeypatch.setenv("PICAS_CONFIG", str(tmp_path / "x.yml"))
    assert config.default_path() == tmp_path / "x.yml"
    monkeypatch.delenv("PICAS_CONFIG")
    assert config.default_path().parts[-3:] == (".config", "picas", "conf.yml")


def test_flags_beat_environment_beat_file(tmp_path, monkeypatch):
    path = tmp_path / "conf.yml"
    write_yaml(path, {"profiles": {"default": {"url": "http://file:1", "database": "filedb",
                                               "username": "fileuser", "lease": 30}}})
    monkeypatch.setenv("PICAS_URL", "http://env:2")
    monkeypatch.setenv("PICAS_DATABASE", "envdb")
    settings = config.load(path, database="flagdb", username=None)
    assert settings.url == "http://env:2"
    assert settings.database == "flagdb"
    assert settings.username == "fileuser"      # None flags do not count
    assert settings.lease == 30.0


def test_profiles_and_default_profile(tmp_path, monkeypatch):
    path = tmp_path / "conf.yml"
    write_yaml(path, {"default_profile": "prod", "profiles": {
        "prod": {"database": "proddb"}, "test": {"database": "testdb"}}})
    assert config.load(path).database == "proddb"
    assert config.load(path, profile="test").database == "testdb"
    monkeypatch.setenv("PICAS_PROFILE", "test")
    assert config.load(path).profile == "test"


def test_unknown_profile_names_the_known_ones(tmp_path):
    path = tmp_path / "conf.yml"
    write_yaml(path, {"profiles": {"a": {}, "b": {}}})
    with pytest.raises(ConfigError, match=r"no profile 'c' in .*\(it has: a, b\).*picas init"):
        config.load(path, profile="c")


def test_password_in_url_is_split_off_and_never_shown(tmp_path):
    settings = config.load(url="http://alice:s3cret@host:5984/")
    assert settings.url == "http://host:5984"
    assert (settings.username, settings.password) == ("alice", "s3cret")
    assert "s3cret" not in repr(settings)
    assert settings.transport().credentials == ("alice", "s3cret")


def test_open_database_does_no_io():
    db = config.load(url="http://127.0.0.1:1", database="db1").open_database()
    assert db.name == "db1" and db.transport.request_count == 0


@pytest.mark.parametrize("flags, message", [
    ({"url": "ftp://x"}, "not a CouchDB URL"),
    ({"database": "Bad Name"}, "not a valid database name"),
    ({"max_attempts": 0}, "max_attempts must be a whole number >= 1"),
    ({"lease": -5.0}, "lease must be a number of seconds > 0"),
])
def test_invalid_settings_are_rejected(flags, message):
    with pytest.raises(ConfigError, match=message):
        config.load(**flags)


def test_environment_numbers_are_checked(monkeypatch):
    monkeypatch.setenv("PICAS_MAX_ATTEMPTS", "many")
    with pytest.raises(ConfigError, match="PICAS_MAX_ATTEMPTS: max_attempts must be a whole"):
        config.load()
    monkeypatch.setenv("PICAS_MAX_ATTEMPTS", "5")
    monkeypatch.setenv("PICAS_LEASE", "90")
    settings = config.load()
    assert (settings.max_attempts, settings.lease) == (5, 90.0)


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "conf.yml"
    path.write_text("profiles:\n  default:\n    url: http://x:1\n   database: [oops\n")
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert str(info.value).startswith(f"{path}:4: ")


def test_unknown_setting_names_its_line(tmp_path):
    path = tmp_path / "conf.yml"
    path.write_text("profiles:\n  default:\n    url: http://x:1\n    passwrd: x\n")
    with pytest.raises(ConfigError, match=rf"^{path}:4: unknown setting 'passwrd'"):
        config.load(path)


def test_wrong_type_names_its_line(tmp_path):
    path = tmp_path / "conf.yml"
    path.write_text("profiles:\n  default:\n    max_attempts: often\n")
    with pytest.raises(ConfigError, match=rf"^{path}:3: .*max_attempts must be a whole number"):
        config.load(path)


def test_upstream_config_is_read(tmp_path):
    path = tmp_path / "conf.yml"
    write_yaml(path, {"host_url": "https://couch.example.org:6984", "database": "mydb",
                      "username": "me", "encrypted_password": "gAAAA..."})
    settings = config.load(path, password="pw")
    assert (settings.url, settings.database, settings.username) == \
        ("https://couch.example.org:6984", "mydb", "me")


def upstream_file(path, password: str = "s3cret") -> None:
    """A config as upstream's `picas-cli init` writes it, with a new key."""
    crypto.generate_and_save_key()
    write_yaml(path, {"host_url": "http://h:5984", "database": "mydb", "username": "me",
                      "encrypted_password": crypto.encrypt_password(password).decode()})


def test_upstream_encrypted_password_is_decrypted_with_its_key(tmp_path):
    path = tmp_path / "conf.yml"
    upstream_file(path, "pässword")
    settings = config.load(path)
    assert (settings.url, settings.username, settings.password) == \
        ("http://h:5984", "me", "pässword")
    assert "pässword" not in repr(settings)


def test_upstream_encrypted_password_without_its_key_is_one_clear_error(tmp_path):
    path = tmp_path / "conf.yml"
    upstream_file(path)
    key = Path(crypto.CRYPTO_KEY_PATH)
    key.unlink()
    with pytest.raises(ConfigError, match=rf"^{path}:2: encrypted_password: cannot read "
                                          rf"the key .*{key}: No such file"):
        config.load(path)
    crypto.generate_and_save_key()  # another key
    with pytest.raises(ConfigError, match="does not decrypt with this key"):
        config.load(path)


def test_upstream_encrypted_password_is_not_decrypted_when_the_password_is_given(tmp_path):
    path = tmp_path / "conf.yml"
    write_yaml(path, {"host_url": "http://h:5984", "database": "mydb", "username": "me",
                      "encrypted_password": "gAAAA-no-key-needed"})
    assert config.load(path, password="pw").password == "pw"
    assert config.resolve(path, env={"PICAS_PASSWORD": "env"}).password == "env"


def test_reading_a_plain_config_does_not_import_cryptography(tmp_path):
    path = tmp_path / "conf.yml"
    write_yaml(path, {"profiles": {"default": {"username": "me", "password": "pw"}}})
    check = ("import sys; from picas import config; "
             f"assert config.load({str(path)!r}).password == 'pw'; "
             "assert 'cryptography' not in sys.modules, 'imported'")
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_write_creates_private_file_and_merges_profiles(tmp_path):
    path = tmp_path / "sub" / "conf.yml"
    config.write(path, {"url": "http://a:1", "database": "one", "username": "u",
                        "password": "pw"}, "first")
    config.write(path, config.Settings(url="http://b:2", database="two"), "second")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    data = yaml.safe_load(path.read_text())
    assert data["default_profile"] == "first"
    assert config.load(path).password == "pw"
    assert config.load(path, profile="second").database == "two"
    config.write(path, {"password": None}, "first")
    assert config.load(path).password is None
    assert config.load(path).database == "one"


def test_write_refuses_invalid_settings(tmp_path):
    path = tmp_path / "conf.yml"
    with pytest.raises(ConfigError):
        config.write(path, {"database": "NO"}, "default")
    assert not path.exists()


def test_write_over_upstream_config_keeps_a_copy(tmp_path):
    path = tmp_path / "conf.yml"
    original = {"host_url": "http://h:5984", "database": "mydb", "username": "me",
                "encrypted_password": "gAAAA..."}
    write_yaml(path, original)
    backup = config.write(path, {"password": "pw"}, "default")
    assert yaml.safe_load(backup.read_text()) == original
    settings = config.load(path)
    assert (settings.url, settings.database, settings.username, settings.password) == \
        ("http://h:5984", "mydb", "me", "pw")


def test_password_readable_by_others_is_warned_about(tmp_path, caplog):
    path = tmp_path / "conf.yml"
    write_yaml(path, {"profiles": {"default": {"password": "hunter2"}}})
    path.chmod(0o644)
    with caplog.at_level("WARNING", logger="picas"):
        config.load(path)
    assert "chmod 600" in caplog.text and "hunter2" not in caplog.text


@pytest.mark.parametrize("url, database, expected", [
    ("http://h:5984/demo", None, ("http://h:5984", "demo")),
    ("http://h:5984/demo/", "demo", ("http://h:5984", "demo")),
    ("https://h/couchdb/mydb", None, ("https://h/couchdb", "mydb")),
    ("http://u:pw@h:5984/demo", None, ("http://h:5984", "demo")),
    ("http://h:5984", None, ("http://h:5984", "picas")),
])
def test_a_url_that_ends_in_a_database_gives_the_database(url, database, expected):
    settings = config.load(url=url, database=database)
    assert (settings.url, settings.database) == expected


@pytest.mark.parametrize("url, database, message", [
    ("http://h:5984/demo", "picas", "names database 'demo', but the database setting is "
                                    "'picas': give the server's URL (http://h:5984)"),
    ("http://h:5984/_utils", None, "has a path ('/_utils') that names no database: give the "
                                   "server's URL, such as http://h:5984"),
])
def test_a_url_that_names_another_database_is_refused(url, database, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        config.load(url=url, database=database)


def test_the_upstream_client_refuses_a_url_that_names_another_database():
    from picas.clients import CouchDB
    with pytest.raises(ConfigError, match="names database 'demo'"):
        CouchDB(url="http://h:5984/demo", db="mydb")
    assert CouchDB(url="http://h:5984/mydb/", db="mydb").database.transport.url == \
        "http://h:5984"
