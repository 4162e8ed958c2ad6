"""Upstream PiCaS's password encryption: Fernet, with the key in a file.

The key lives in ``~/.config/picas/key.dat``, next to the config file that
holds the ciphertext, so anyone who can read both can read the password:
this keeps the password out of sight, it does not protect it. Both files
are written readable by their owner only.

``cryptography`` is imported only when a password is encrypted or
decrypted, so that a pilot with a plain config does not pay for it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .errors import ConfigError

#: Where upstream PiCaS keeps its key (and so where picas looks for it).
CRYPTO_KEY_PATH = os.path.expanduser("~/.config/picas/key.dat")


def _fernet_class() -> Any:
    try:
        from cryptography.fernet import Fernet
    except ImportError:
        raise ConfigError("an encrypted password needs the 'cryptography' package: "
                          "pip install cryptography") from None
    return Fernet


def _fernet(key: bytes | str | None) -> Any:
    try:
        return _fernet_class()(read_key() if key is None else key)
    except (TypeError, ValueError):
        raise ConfigError("the key of the encrypted password is not a Fernet key "
                          "(32 url-safe base64-encoded bytes)") from None


def read_key(key_path: str | os.PathLike | None = None) -> bytes:
    """The key in ``key_path`` (default :data:`CRYPTO_KEY_PATH`)."""
    path = Path(key_path or CRYPTO_KEY_PATH).expanduser()
    try:
        return path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the key of the encrypted password, {path}: "
                          f"{exc.strerror or type(exc).__name__}") from None


def generate_and_save_key(key_path: str | os.PathLike | None = None,
                          skip_if_exists: bool = True) -> bool:
    """Write a new random key (mode 0600, in a 0700 folder); True if one was written.

    An existing key is kept when ``skip_if_exists``: replacing it would make
    every password encrypted with it unreadable. Without it, an existing
    key is replaced.
    """
    from .config import write_private

    path = Path(key_path or CRYPTO_KEY_PATH).expanduser()
    if skip_if_exists and path.exists():
        return False
    key = _fernet_class().generate_key()
    write_private(path, key.decode("ascii"))
    return True


def encrypt_password(password: bytes | str, key: bytes | str | None = None) -> bytes:
    """The Fernet token of ``password`` (bytes, as upstream returns it)."""
    raw = password.encode("utf-8") if isinstance(password, str) else password
    return _fernet(key).encrypt(raw)


def decrypt_password(encrypted: bytes | str, key: bytes | str | None = None) -> bytes:
    """The password in ``encrypted`` (bytes; ``.decode()`` gives the text).

    A wrong key or a damaged ciphertext is a :class:`ConfigError` that says so.
    """
    fernet = _fernet(key)
    from cryptography.fernet import InvalidToken

    try:
        return fernet.decrypt(encrypted)
    except (InvalidToken, TypeError, ValueError):
        raise ConfigError("the encrypted password does not decrypt with this key "
                          "(was it written with another key.dat?)") from None
