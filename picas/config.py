"""Connection settings: resolved once into a frozen, validated value.

Each setting comes from the first of: a flag, the environment
(``PICAS_URL`` ...), the config file's profile, the default. The file is
YAML with named profiles::

    default_profile: prod
    profiles:
      prod: {url: https://couch.example.org:6984, database: mydb, username: me, password: ...}

A flat file written by upstream PiCaS (``host_url``, ``database``,
``username``, ``encrypted_password``) is read as the profile ``default``.
Its password is decrypted with upstream's key file (:mod:`picas.crypto`),
and only when no flag or variable gives the password, so that a pilot
given ``PICAS_PASSWORD`` needs neither the key nor ``cryptography``.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

from .database import Database
from .errors import ConfigError
from .transport import Transport, split_credentials

if TYPE_CHECKING:
    import yaml

log = logging.getLogger(__name__)

DEFAULT_URL = "http://127.0.0.1:5984"
DEFAULT_DATABASE = "picas"
DEFAULT_PROFILE = "default"

#: Settings a profile (and the environment) may set, with their types.
FIELDS = {"url": str, "database": str, "username": str, "password": str,
          "verify": bool, "max_attempts": int, "lease": float}
ENVIRONMENT = {"url": "PICAS_URL", "database": "PICAS_DATABASE",
               "username": "PICAS_USERNAME", "password": "PICAS_PASSWORD",
               "max_attempts": "PICAS_MAX_ATTEMPTS", "lease": "PICAS_LEASE"}
UPSTREAM_KEYS = {"host_url": "url", "database": "database", "username": "username"}

# CouchDB's rule for database names.
_DB_NAME = re.compile(r"^[a-z][a-z0-9_$()+/-]*$")


@dataclass(frozen=True)
class Settings:
    """Where and as whom to connect; the password never shows in its repr."""

    url: str = DEFAULT_URL
    #: None: the database named at the end of the URL, else DEFAULT_DATABASE.
    database: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    verify: bool = True
    max_attempts: int = 3
    lease: float = 600.0
    profile: str = DEFAULT_PROFILE
    config_path: Path | None = None

    def __post_init__(self) -> None:
        clean, user, password = split_credentials(self.url)
        # Credentials in the URL are split off, so that the URL is safe to show.
        clean, database = split_database(clean, self.database)
        object.__setattr__(self, "url", clean)
        object.__setattr__(self, "database", database)
        if self.username is None and user:
            object.__setattr__(self, "username", user)
        if self.password is None and password is not None:
            object.__setattr__(self, "password", password)
        if not isinstance(self.database, str) or not _DB_NAME.match(self.database):
            raise ConfigError(
                f"'{self.database}' is not a valid database name: use lower-case letters, "
                "digits and _$()+-/, starting with a letter")
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int) \
                or self.max_attempts < 1:
            raise ConfigError("max_attempts must be a whole number >= 1, "
                              f"not {self.max_attempts!r}")
        if isinstance(self.lease, bool) or not isinstance(self.lease, (int, float)) \
                or not self.lease > 0:
            raise ConfigError(f"lease must be a number of seconds > 0, not {self.lease!r}")
        object.__setattr__(self, "lease", float(self.lease))

    def transport(self) -> Transport:
        return Transport(self.url, self.username, self.password, verify=self.verify)

    @property
    def database_name(self) -> str:
        """The database: always set once made (None in ``database`` asks
        for the one named in the URL, or the default)."""
        assert self.database is not None  # set by __post_init__
        return self.database

    def open_database(self) -> Database:
        """The configured database; nothing is sent until it is used."""
        return Database(self.transport(), self.database_name)


def split_database(url: str, database: str | None) -> tuple[str, str]:
    """The server's URL and the database, for a URL that may end in a database.

    Requests built on ``http://host:5984/mydb`` would land inside database
    ``mydb`` (creating a database there writes a document into it), so a
    path is taken as the database when no other is given, and refused when
    it names another one. ``url`` carries no credentials.
    """
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    if not path:
        return url, DEFAULT_DATABASE if database is None else database
    prefix, _, last = path.rpartition("/")
    name = unquote(last)
    server = urlunsplit((parts.scheme, parts.netloc, prefix, "", ""))
    if not _DB_NAME.match(name):
        raise ConfigError(f"the URL {url} has a path ('{path}') that names no database: "
                          f"give the server's URL, such as {server}")
    if database is None or database == name:
        return server, name
    raise ConfigError(f"the URL {url} names database '{name}', but the database setting is "
                      f"'{database}': give the server's URL ({server}) and the database "
                      "apart, or leave the database setting out")


def default_path() -> Path:
    env = os.environ.get("PICAS_CONFIG")
    return Path(env).expanduser() if env else Path("~/.config/picas/conf.yml").expanduser()


# -- reading -------------------------------------------------------------------

def _line_of(node: yaml.Node | None, *keys: str) -> int | None:
    """The 1-based line of ``keys`` (a path of mapping keys) in a composed YAML tree."""
    import yaml

    line = None
    for key in keys:
        if not isinstance(node, yaml.MappingNode):
            return line
        for key_node, value_node in node.value:
            if key_node.value == key:
                line = key_node.start_mark.line + 1
                node = value_node
                break
        else:
            return line
    return line


class ConfigFile:
    """A parsed config file, able to name the line of any key in its errors."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            text = ""
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the config file {path}: {_reason(exc)}") from None
        self.exists = path.exists()
        self.node: Any
        self.node, data = self._parse(path, text) if text else (None, None)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}:1: a config file must be a mapping of settings, "
                              f"not a {type(data).__name__}")
        self.data: dict = data
        self.upstream = "host_url" in data and "profiles" not in data

    @staticmethod
    def _parse(path: Path, text: str) -> tuple[yaml.Node | None, Any]:
        # Imported here: a pilot without a config file skips PyYAML's import (20 ms).
        import yaml

        try:
            return yaml.compose(text), yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark else str(path)
            problem = getattr(exc, "problem", None) or "not valid YAML"
            raise ConfigError(f"{where}: {problem} (the config file is not valid YAML)") from None

    def error(self, message: str, *keys: str) -> ConfigError:
        line = _line_of(self.node, *keys)
        return ConfigError(f"{self.path}{f':{line}' if line else ''}: {message}")

    def profile_names(self) -> list[str]:
        if self.upstream:
            return [DEFAULT_PROFILE]
        profiles = self.data.get("profiles") or {}
        return sorted(str(name) for name in profiles) if isinstance(profiles, dict) else []

    def default_profile(self) -> str:
        name = self.data.get("default_profile", DEFAULT_PROFILE)
        if not isinstance(name, str):
            raise self.error("default_profile must be a profile name", "default_profile")
        return name

    def profile(self, name: str) -> dict[str, Any] | None:
        """The profile's settings, converted and checked; None if it is not in the file."""
        if self.upstream:
            return self._upstream() if name == DEFAULT_PROFILE else None
        unknown = set(self.data) - {"profiles", "default_profile"}
        if unknown:
            key = sorted(unknown)[0]
            raise self.error(
                f"unknown key '{key}' (expected 'profiles' and 'default_profile')", key)
        profiles = self.data.get("profiles") or {}
        if not isinstance(profiles, dict):
            raise self.error("'profiles' must be a mapping of profile names to settings",
                             "profiles")
        if name not in profiles:
            return None
        raw = profiles[name] or {}
        if not isinstance(raw, dict):
            raise self.error(f"profile '{name}' must be a mapping of settings", "profiles", name)
        values = {}
        for key, value in raw.items():
            if key not in FIELDS:
                raise self.error(f"unknown setting '{key}' in profile '{name}' "
                                 f"(known: {', '.join(FIELDS)})", "profiles", name, str(key))
            try:
                values[key] = _convert(key, value)
            except ValueError as exc:
                raise self.error(f"profile '{name}': {exc}", "profiles", name, key) from None
        return values

    def decrypted_password(self) -> str:
        """Upstream's ``encrypted_password``, decrypted with its key file."""
        from . import crypto

        try:
            return crypto.decrypt_password(str(self.data["encrypted_password"])).decode("utf-8")
        except ConfigError as exc:
            raise self.error(f"encrypted_password: {exc}", "encrypted_password") from None
        except UnicodeDecodeError:
            raise self.error("encrypted_password does not hold UTF-8 text",
                             "encrypted_password") from None

    def _upstream(self) -> dict[str, Any]:
        values = {}
        for key, ours in UPSTREAM_KEYS.items():
            if self.data.get(key) is not None:
                try:
                    values[ours] = _convert(ours, self.data[key])
                except ValueError as exc:
                    raise self.error(str(exc), key) from None
        return values


def _convert(key: str, value: Any) -> Any:
    """A setting's value in its type; ValueError says what is wrong."""
    if value is None:
        return None
    return _CONVERTERS.get(FIELDS[key], _to_text)(key, value)


def _to_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{key} must be true or false, not {value!r}")


def _to_int(key: str, value: Any) -> int:
    number = _to_float(key, value, "a whole number")
    if not number.is_integer():
        raise ValueError(f"{key} must be a whole number, not {value!r}")
    return int(number)


def _to_float(key: str, value: Any, kind: str = "a number") -> float:
    # bool is an int to Python, but "lease: true" is a mistake, not 1 second.
    if isinstance(value, bool):
        raise ValueError(f"{key} must be {kind}, not {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{key} must be {kind}, not {value!r}") from None


def _to_text(key: str, value: Any) -> str:
    if isinstance(value, (dict, list)):
        raise ValueError(f"{key} must be text, not a {type(value).__name__}")
    return str(value)


_CONVERTERS: dict[type, Callable[[str, Any], Any]] = {
    bool: _to_bool, int: _to_int, float: _to_float}


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or type(exc).__name__


def _environment(env: Mapping[str, str]) -> dict[str, Any]:
    values = {}
    for key, name in ENVIRONMENT.items():
        if env.get(name):
            try:
                values[key] = _convert(key, env[name])
            except ValueError as exc:
                raise ConfigError(f"{name}: {exc}") from None
    return values


def _warn_if_readable(path: Path, profile: dict) -> None:
    if not profile.get("password"):
        return
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("%s holds a password and others may read it: chmod 600 %s", path, path)


def resolve(config_path: Path | str | None = None, profile: str | None = None,
            flags: Mapping[str, Any] | None = None, require_profile: bool = True,
            env: Mapping[str, str] | None = None) -> Settings:
    """Settings from flags, environment, file and defaults, in that order.

    ``require_profile`` makes a profile named by a flag or ``PICAS_PROFILE``
    that the file lacks an error; ``picas init`` turns it off to create one.
    """
    env = os.environ if env is None else env
    path = Path(config_path).expanduser() if config_path else default_path()
    file = ConfigFile(path)
    explicit = profile or env.get("PICAS_PROFILE") or None
    name = explicit or file.default_profile()
    from_file = file.profile(name)
    if from_file is None:
        known = file.profile_names()
        if explicit and require_profile:
            listed = f" (it has: {', '.join(known)})" if known else ""
            where = f"{path}{listed}" if file.exists else f"{path}, which does not exist"
            raise ConfigError(f"no profile '{name}' in {where}: "
                              f"create it with `picas init --profile {name}`")
        if not explicit and file.exists and name != DEFAULT_PROFILE and require_profile:
            raise file.error(f"default_profile '{name}' is not in profiles", "default_profile")
        from_file = {}
    _warn_if_readable(path, from_file)
    values: dict[str, Any] = {**from_file, **_environment(env)}
    values.update({k: v for k, v in (flags or {}).items() if v is not None})
    unknown = set(values) - set(FIELDS)
    if unknown:
        raise ConfigError(f"unknown settings: {', '.join(sorted(unknown))}")
    settings = Settings(**values, profile=name, config_path=path)
    if file.upstream and settings.password is None and file.data.get("encrypted_password"):
        settings = replace(settings, password=file.decrypted_password())
    return settings


def load(config_path: Path | str | None = None, profile: str | None = None,
         **flags: Any) -> Settings:
    """The settings to connect with; flags left None do not count."""
    return resolve(config_path, profile, flags)


# -- writing -------------------------------------------------------------------

def _fields(settings_or_fields: Settings | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(settings_or_fields, Settings):
        return {key: getattr(settings_or_fields, key) for key in FIELDS}
    unknown = set(settings_or_fields) - set(FIELDS)
    if unknown:
        raise ConfigError(f"unknown settings: {', '.join(sorted(unknown))}")
    return dict(settings_or_fields)


def write(path: Path | str, settings_or_fields: Settings | Mapping[str, Any],
          profile: str = DEFAULT_PROFILE) -> Path | None:
    """Write (merge) one profile into the config file, readable by its owner only.

    Settings given as None are removed from the profile. An upstream PiCaS
    file is kept next to it as ``<name>.upstream`` (returned) and its
    settings become the profile ``default``.
    """
    path = Path(path).expanduser()
    file = ConfigFile(path)
    backup = None
    if file.upstream:
        backup = path.with_name(path.name + ".upstream")
        if not backup.exists():
            shutil.copy2(path, backup)
        data: dict = {"default_profile": DEFAULT_PROFILE,
                      "profiles": {DEFAULT_PROFILE: file.profile(DEFAULT_PROFILE)}}
    else:
        file.profile(profile)  # refuse to merge into a file we cannot read
        profiles = file.data.get("profiles") or {}
        data = {"default_profile": file.data.get("default_profile",
                                                 DEFAULT_PROFILE if profiles else profile),
                "profiles": profiles}
    current = dict(data["profiles"].get(profile) or {})
    for key, value in _fields(settings_or_fields).items():
        if value is None:
            current.pop(key, None)
        else:
            current[key] = value
    # Validate before writing: a file picas cannot load is worse than none.
    Settings(**current)
    data["profiles"] = {**data["profiles"], profile: current}
    import yaml

    text = yaml.safe_dump(data, default_flow_style=False, sort_keys=False)
    write_private(path, text)
    log.info("wrote profile '%s' to %s", profile, path)
    return backup


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` atomically with a file only its owner can read."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
