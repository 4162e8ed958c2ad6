"""Data in and out of a token's folder.

Before the command runs, the token's attachments (its logs excepted) and
the files or URLs of its ``inputs`` are placed in its folder, and its
``input`` is written as JSON to a file named by ``PICAS_INPUT_FILE``.
After a successful run, the files that match its ``outputs`` are attached
to the token within what CouchDB lets a document hold (:class:`Limits`);
what is left out is listed on the token, with the reason.
"""
from __future__ import annotations

import json
import mimetypes
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

from .errors import InputUnavailable, InvalidToken, PicasError

#: The variable that names the file with the token's ``input`` as JSON.
INPUT_FILE_ENV = "PICAS_INPUT_FILE"
#: Attachments the pilot writes itself: logs are not inputs.
LOG_NAME = re.compile(r"^attempt-\d+\.(stdout|stderr)$")
#: CouchDB's defaults: ``max_document_size`` and ``max_attachment_size``.
DEFAULT_MAX_TOKEN_SIZE = 8_000_000
DEFAULT_MAX_ATTACHMENT_SIZE = 1 << 30
#: How long reading one input URL may take, in seconds.
URL_TIMEOUT = 300.0
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Limits:
    """How much a token may hold: all its fields and attachments together,
    and any one attachment (CouchDB's ``max_attachment_size``)."""

    max_token_size: int = DEFAULT_MAX_TOKEN_SIZE
    max_attachment_size: int = DEFAULT_MAX_ATTACHMENT_SIZE


# -- what a token may declare (checked by ``picas tokens add`` and by the pilot) --

def check_inputs(value: Any) -> list[str]:
    """``inputs``: paths or file://, http:// or https:// URLs the pilot can read."""
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError("inputs must be a list of paths or URLs")
    for source in value:
        scheme = urlsplit(source).scheme
        if scheme and len(scheme) > 1 and scheme not in ("file", "http", "https"):
            raise ValueError(f"inputs: {source!r} is neither a path nor a file://, http:// "
                             "or https:// URL")
        if not _file_name(source):
            raise ValueError(f"inputs: {source!r} names no file")
    return list(value)


def check_outputs(value: Any) -> list[str]:
    """``outputs``: glob patterns inside the token's folder, such as ``*.csv``."""
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError("outputs must be a list of file patterns, such as [\"*.csv\"]")
    for pattern in value:
        path = PurePosixPath(pattern)
        if path.is_absolute() or ".." in path.parts:
            raise ValueError(f"outputs: {pattern!r} must stay inside the command's folder "
                             "(a relative pattern without '..')")
    return list(value)


def check_stdin(value: Any) -> str:
    """``stdin``: a file (relative paths are in the token's folder)."""
    if not isinstance(value, str) or not value:
        raise ValueError("stdin must name a file")
    return value


def _declared(token: dict, key: str, check: Callable[[Any], Any]) -> Any:
    """The token's ``key`` checked, or None; InvalidToken if malformed."""
    value = token.get(key)
    if value is None:
        return None
    try:
        return check(value)
    except ValueError as exc:
        raise InvalidToken(f"the token's {exc}") from None


def check_declared(token: dict) -> str | None:
    """Check the token's ``inputs`` and ``outputs`` (InvalidToken if malformed);
    its ``stdin``."""
    _declared(token, "inputs", check_inputs)
    _declared(token, "outputs", check_outputs)
    return _declared(token, "stdin", check_stdin)


# -- before the run ------------------------------------------------------------

def write_input(token: dict, path: Path) -> None:
    """The token's ``input`` as JSON, for the command to read."""
    path.write_text(json.dumps(token.get("input", {})))


def no_attachments(name: str) -> bytes:
    """The attachment reader of a runner without a database."""
    raise InputUnavailable(f"attachment {name!r}: this runner has no database to read it from")


def place(token: dict, folder: Path, read_attachment: Callable[[str], bytes]) -> None:
    """Put the token's attachments and ``inputs`` into ``folder``.

    InputUnavailable when one cannot be read; InvalidToken for a
    malformed list. Attachments come first, so an input of the same name wins.
    """
    inputs = _declared(token, "inputs", check_inputs) or []
    names = sorted(name for name in token.get("_attachments") or {} if not LOG_NAME.match(name))
    for name in names:
        target = _inside(folder, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            target.write_bytes(read_attachment(name))
        except PicasError as exc:
            raise InputUnavailable(f"attachment {name!r}: {exc}") from None
    for source in inputs:
        _fetch(source, folder / _file_name(source))


def _inside(folder: Path, name: str) -> Path:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise InputUnavailable(f"attachment {name!r} would land outside the command's folder")
    return folder.joinpath(*path.parts)


def _file_name(source: str) -> str:
    parts = urlsplit(source)
    path = unquote(parts.path) if len(parts.scheme) > 1 else source
    return PurePosixPath(path).name


def _fetch(source: str, target: Path) -> None:
    """Copy a path, or read a URL, to ``target``."""
    scheme = urlsplit(source).scheme
    try:
        if len(scheme) > 1:  # a URL (a one-letter "scheme" is a Windows drive)
            _download(source, target)
        elif Path(source).is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copyfile(source, target)
    except OSError as exc:  # urllib's errors too: HTTPError has a code, URLError a reason
        reason = getattr(exc, "reason", None) or exc.strerror or exc
        code = getattr(exc, "code", None)
        if code:
            reason = f"HTTP {code} ({reason})"
        raise InputUnavailable(f"input {source!r}: {reason}") from None


def _download(url: str, target: Path) -> None:
    # Imported here: most pilots read no URL, and every pilot start pays for imports.
    import urllib.request
    with urllib.request.urlopen(url, timeout=URL_TIMEOUT) as answer, \
            open(target, "wb") as handle:
        shutil.copyfileobj(answer, handle, _CHUNK)


# -- after the run ---------------------------------------------------------------

def token_size(token: dict) -> int:
    """What a token holds now: its fields as JSON and its attachments."""
    body = {k: v for k, v in token.items() if k != "_attachments"}
    stored = sum(int(a.get("length") or 0) for a in (token.get("_attachments") or {}).values()
                 if isinstance(a, dict))
    return len(json.dumps(body, separators=(",", ":"))) + stored


def gather(token: dict, folder: Path, limits: Limits,
           used: int) -> tuple[dict[str, tuple[str, bytes]], list[dict[str, Any]]]:
    """The output files to attach, by name, and those left out with the reason.

    ``used`` is what the token will hold without them. Files are taken in
    name order while they fit; a pattern that matches nothing is noted too.
    """
    patterns = _declared(token, "outputs", check_outputs) or []
    attached: dict[str, tuple[str, bytes]] = {}
    skipped: list[dict[str, Any]] = []
    found: dict[str, Path] = {}
    for pattern in patterns:
        matches = sorted(p for p in folder.glob(pattern) if p.is_file())
        if not matches:
            skipped.append({"name": pattern, "size": 0, "reason": "no file matches"})
        for path in matches:
            found.setdefault(path.relative_to(folder).as_posix(), path)
    for name, path in sorted(found.items()):
        size = path.stat().st_size
        reason = None
        if LOG_NAME.match(name):
            reason = "the name is that of a log"
        elif size > limits.max_attachment_size:
            reason = f"larger than max_attachment_size ({limits.max_attachment_size} bytes)"
        elif used + size > limits.max_token_size:
            reason = (f"would take the token past {limits.max_token_size} bytes "
                      f"(--max-token-size); {max(0, limits.max_token_size - used)} were left")
        if reason:
            skipped.append({"name": name, "size": size, "reason": reason})
            continue
        ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        attached[name] = (ctype, path.read_bytes())
        used += size
    return attached, skipped
