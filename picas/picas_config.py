"""Upstream PiCaS's ``PicasConfig``: its config file, as upstream scripts use it.

``PicasConfig(load=True).config`` is the flat mapping that upstream's
``picasconfig.py`` reads: ``host_url``, ``database``, ``username`` and
``encrypted_password`` (decrypt it with :func:`picas.crypto.decrypt_password`).
The file is read through :mod:`picas.config`, the one config picas has:
an upstream file is taken as it is, and a file written by ``picas init``
gives its profile (``PICAS_PROFILE`` or its default one), with the
password encrypted with the key file on the fly.

Unlike upstream, nothing is printed; files are written readable by their
owner only.
"""
from __future__ import annotations

import getpass
import logging
import os
from pathlib import Path
from typing import Any

from . import config as _config
from . import errors, users
from .crypto import decrypt_password, encrypt_password, generate_and_save_key
from .transport import Transport

__all__ = ["PICAS_CONFIG_SCHEMA", "PicasConfig", "PicasConfigSchemaError", "decrypt_password",
           "encrypt_password", "generate_and_save_key"]

log = logging.getLogger(__name__)

DEFAULT_CONFIG_PATH = "~/.config/picas/conf.yml"

#: The keys of upstream's file; all four are required text, no others are allowed.
PICAS_CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "host_url": {"type": "string", "default": "http://localhost:5984",
                     "description": "the CouchDB server"},
        "database": {"type": "string", "default": "mypicasdb",
                     "description": "the database that holds the tokens"},
        "username": {"type": "string", "default": None,
                     "description": "the CouchDB user"},
        "encrypted_password": {"type": "string", "default": None,
                               "description": "the user's password, encrypted with the key file"},
    },
    "required": ["host_url", "database", "username", "encrypted_password"],
    "additionalProperties": False,
}


class PicasConfigSchemaError(errors.ConfigError):
    """The configuration does not have upstream's four keys as text."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


class PicasConfig:
    """Upstream's config file: read, validated, written, and its password changed."""

    def __init__(self, config_path: str | None = None, load: bool = True) -> None:
        self.config_path = config_path or os.environ.get("PICAS_CONFIG") or DEFAULT_CONFIG_PATH
        self.config: dict[str, Any] = {}
        if load:
            self.load_config()

    def __str__(self) -> str:
        if not self.config:
            return "PicasConfig: No configuration loaded"
        shown = {key: ("***masked***" if key == "encrypted_password" else value)
                 for key, value in self.config.items()}
        lines = "".join(f"  {key}: {value}\n" for key, value in sorted(shown.items()))
        return f"PicasConfig:\n{lines}"

    @property
    def _path(self) -> Path:
        return Path(self.config_path).expanduser()

    def validate_config(self, config: dict | None = None) -> None:
        """Raise :class:`PicasConfigSchemaError` unless ``config`` (or ours) is valid."""
        values = self.config if config is None else config
        if not isinstance(values, dict):
            raise PicasConfigSchemaError("configuration validation failed: "
                                         "it is not a mapping of settings")
        schema = PICAS_CONFIG_SCHEMA
        for key in schema["required"]:
            if not isinstance(values.get(key), str):
                problem = "is missing" if values.get(key) is None else "must be text"
                raise PicasConfigSchemaError(f"configuration validation failed: '{key}' {problem}")
        extra = sorted(set(values) - set(schema["properties"]))
        if extra:
            raise PicasConfigSchemaError(
                f"configuration validation failed: unknown key '{extra[0]}'")
        try:
            _config.Settings(url=values["host_url"], database=values["database"],
                             username=values["username"])
        except errors.ConfigError as exc:
            raise PicasConfigSchemaError(f"configuration validation failed: {exc}") from None

    def load_config(self) -> None:
        """Read and validate the file; FileNotFoundError if there is none."""
        path = self._path
        if not path.exists():
            raise FileNotFoundError(f"configuration file not found: {self.config_path} "
                                    "(write it with `picas-cli init`)")
        file = _config.ConfigFile(path)
        self.config = dict(file.data) if file.upstream else self._from_profile()
        self.validate_config()

    def _from_profile(self) -> dict[str, Any]:
        """A ``picas init`` profile in upstream's shape; a key file is made if missing."""
        settings = _config.resolve(self._path, env={
            k: v for k, v in os.environ.items() if k == "PICAS_PROFILE"})
        if settings.username is None or not settings.password:
            raise PicasConfigSchemaError(
                f"{self.config_path}: profile '{settings.profile}' has no username and "
                "password: add them with `picas init`")
        generate_and_save_key()
        return {"host_url": settings.url, "database": settings.database,
                "username": settings.username,
                "encrypted_password": encrypt_password(settings.password).decode()}

    def save_config(self, args: Any) -> None:
        """Write the settings in ``args`` (host_url, database, username, password).

        A password of None is asked for without echo. The key file is made
        first if it is missing; an existing key is kept.
        """
        password = args.password
        if password is None:
            password = getpass.getpass(f"enter the CouchDB password for the account "
                                       f"'{args.username}' and database '{args.database}': ")
        generate_and_save_key()
        self.write_config({"host_url": args.host_url, "database": args.database,
                           "username": args.username,
                           "encrypted_password": encrypt_password(password).decode()})

    def write_config(self, config: dict) -> None:
        """Validate ``config`` and write it (mode 0600); it becomes ``self.config``.

        A file of ``picas init`` profiles is not overwritten: its profiles
        would be lost.
        """
        self.validate_config(config)
        path = self._path
        existing = _config.ConfigFile(path) if path.exists() else None
        if existing is not None and existing.data and not existing.upstream:
            raise PicasConfigSchemaError(
                f"{path} holds picas profiles (written by `picas init`), which this would "
                "replace: upstream scripts read it as it is, or choose another file with --config")
        import yaml

        _config.write_private(path, yaml.safe_dump(config, default_flow_style=False))
        self.config = dict(config)
        log.info("wrote the configuration to %s", path)

    def change_couchdb_password(self, uri: str, username: str, old_password: bytes | str,
                                new_password: bytes | str) -> None:
        """Change the user's password on the server; ValueError if it cannot be done."""
        old, new = (p.decode("utf-8") if isinstance(p, bytes) else p
                    for p in (old_password, new_password))
        try:
            users.change_password(Transport(uri, username, old), new)
        except errors.NotFound:
            raise ValueError(f"{uri} has no user record for '{username}' in _users "
                             "(a server admin changes their password in the server's "
                             "config)") from None
        except errors.PermissionDenied:
            # CouchDB 3 keeps _users to admins unless its _security is opened up.
            raise ValueError(f"{uri} does not let '{username}' read their own record in "
                             "_users, so the password cannot be changed from here: ask a "
                             "server admin to change it") from None
        except errors.PicasError as exc:
            raise ValueError(f"could not change the password at {uri}: {exc}") from None

    def change_password(self, args: Any) -> None:
        """Change the password on the server, then store it encrypted.

        ``args.new_password`` of None is asked for without echo. The file is
        written only after the server took the new password.
        """
        if "encrypted_password" not in self.config:
            raise ValueError("No encrypted password found in the configuration.")
        new_password = args.new_password
        if new_password is None:
            new_password = getpass.getpass(
                f"enter the new CouchDB password for the account '{self.config['username']}' "
                f"and database '{self.config['database']}': ")
        old_password = decrypt_password(self.config["encrypted_password"])
        self.change_couchdb_password(self.config["host_url"], self.config["username"],
                                     old_password, new_password)
        self.write_config({**self.config,
                           "encrypted_password": encrypt_password(new_password).decode()})
