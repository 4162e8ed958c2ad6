"""What an attempt needs to be understood and reproduced later.

Each attempt records how much it used (wall, CPU, peak memory, from the
kernel's accounting when the command is reaped: no polling) and what ran
(picas and Python versions, the exact command, the token's environment
variables, and checksums of the files the token declares in ``files``).
The host is on the attempt already. It is kept small: it goes on every
attempt of every token.
"""
from __future__ import annotations

import functools
import hashlib
import resource
import sys
from pathlib import Path
from typing import Any

from . import __version__

#: Files larger than this are not hashed (the cost would fall on every attempt).
MAX_HASHED_BYTES = 1 << 30
_CHUNK = 1 << 20
#: ``ru_maxrss`` is in KiB on Linux, in bytes on macOS.
_RSS_UNIT = 1 if sys.platform != "darwin" else 1 / 1024


def usage(rusage: resource.struct_rusage | None) -> dict[str, Any]:
    """CPU seconds and peak memory of a command's process tree, for its attempt.

    The kernel counts the memory that a new process starts with, a copy of
    the pilot's, in its peak: so no attempt shows less than about the
    pilot's own size (some 30 MiB), and small commands show just that.
    """
    if rusage is None:
        return {}
    return {"cpu_user_s": round(rusage.ru_utime, 3), "cpu_sys_s": round(rusage.ru_stime, 3),
            "max_rss_kib": int(rusage.ru_maxrss * _RSS_UNIT)}


@functools.lru_cache(maxsize=1)
def _software() -> dict[str, str]:
    return {"picas": __version__,
            "python": f"{sys.implementation.name} {'.'.join(map(str, sys.version_info[:3]))}"}


def declared_files(token: dict) -> tuple[list[str], list[str]]:
    """The token's ``files``: ``{"inputs": [paths], "outputs": [paths]}``; relative
    paths are in the command's working folder. Anything else declares nothing."""
    files = token.get("files")
    if not isinstance(files, dict):
        return [], []

    def paths(key: str) -> list[str]:
        value = files.get(key)
        return [p for p in value if isinstance(p, str) and p] if isinstance(value, list) else []
    return paths("inputs"), paths("outputs")


def check_files(value: Any) -> dict[str, list[str]]:
    """A token's ``files`` as given to ``picas tokens add``; ValueError if malformed."""
    if not isinstance(value, dict) or set(value) - {"inputs", "outputs"}:
        raise ValueError("files must be an object with 'inputs' and/or 'outputs'")
    for key, paths in value.items():
        if not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
            raise ValueError(f"files.{key} must be a list of paths")
    return {key: list(paths) for key, paths in value.items()}


def checksums(paths: list[str], folder: Path) -> dict[str, str | None]:
    """``sha256:...`` of each file, None for one that is missing or unreadable,
    ``"too large"`` past MAX_HASHED_BYTES."""
    found: dict[str, str | None] = {}
    for name in paths:
        path = folder / name
        try:
            if path.stat().st_size > MAX_HASHED_BYTES:
                found[name] = "too large"
                continue
            digest = hashlib.sha256()
            with open(path, "rb") as handle:
                while chunk := handle.read(_CHUNK):
                    digest.update(chunk)
            found[name] = "sha256:" + digest.hexdigest()
        except OSError:
            found[name] = None
    return found


def record(token: dict, command: str | list[str], function: str | None = None,
           ) -> dict[str, Any]:
    """What ran: software versions, the command (or the function of a
    function token), the token's own env variables."""
    found: dict[str, Any] = {**_software(),
                             **({"function": function} if function else {"command": command})}
    env = token.get("env")
    if isinstance(env, dict) and env:
        found["env"] = {str(k): str(v) for k, v in env.items()}
    return found
