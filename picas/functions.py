"""Tokens that name a Python function instead of a command.

``{"function": "mypkg.mod:fit", "args": [1, 2], "kwargs": {"alpha": 0.1}}``

The pilot runs such a token as a command, so that timeouts, signals,
process groups, leases and attempts are the same for both: the command is
this module, run by the pilot's own interpreter (:func:`command`), in the
token's folder. The child imports the function, calls it, and writes what
came of it to a file: the return value as JSON, or the exception's type,
message and traceback. The pilot reads that file after the child has
exited (:func:`read_result`). A child killed before it wrote anything
leaves no file, and its attempt is judged by how it ended, as a command's.
"""
from __future__ import annotations

import importlib
import json
import os
import re
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InvalidToken

#: ``module.path:name``, where the name may be dotted (``Class.method``).
_DOTTED = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
SPEC = re.compile(rf"^{_DOTTED}:{_DOTTED}$")
#: The child's exit codes when the function could not be imported, or raised.
CANNOT_IMPORT = 2
RAISED = 1


def check(function: Any, args: Any = None, kwargs: Any = None) -> dict[str, Any]:
    """``function``, ``args`` and ``kwargs`` as a token keeps them; ValueError if malformed."""
    if not isinstance(function, str) or not SPEC.match(function):
        raise ValueError(f"function must name a Python function as 'module:name' (for example "
                         f"'mypkg.fit:run'), not {json.dumps(function)}")
    call: dict[str, Any] = {"function": function}
    if args is not None:
        if not isinstance(args, list):
            raise ValueError("args must be a list of the function's positional arguments")
        call["args"] = args
    if kwargs is not None:
        if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
            raise ValueError("kwargs must be an object of the function's keyword arguments")
        call["kwargs"] = kwargs
    return call


def call_of(token: dict) -> dict[str, Any] | None:
    """The call a token asks for, None for a command token; InvalidToken if malformed."""
    if "function" not in token:
        return None
    if token.get("command") is not None:
        raise InvalidToken("the token has both a 'command' and a 'function': keep one")
    try:
        return check(token["function"], token.get("args"), token.get("kwargs"))
    except ValueError as exc:
        raise InvalidToken(f"the token's {exc}") from None


def command(call_file: Path, result_file: Path) -> list[str]:
    """The command that runs the call in ``call_file``, with the pilot's own Python."""
    return [sys.executable, "-m", __name__, str(call_file), str(result_file)]


def write_call(call: dict[str, Any], path: Path) -> None:
    """The call, for the child; it imports from the pilot's folder as well."""
    path.write_text(json.dumps({**call, "path": os.getcwd()}))


@dataclass(frozen=True)
class Returned:
    """What came of a call, as the child wrote it."""

    #: the return value (when ``exception`` is None)
    output: Any = None
    #: ``{"type", "message", "traceback"}`` when the function raised or could not be imported
    exception: dict[str, str] | None = None


def read_result(path: Path) -> Returned | None:
    """What the child wrote; None when it wrote nothing (it was killed, or crashed)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    if isinstance(data.get("exception"), dict):
        return Returned(exception=data["exception"])
    return Returned(output=data.get("output"))


def describe(exception: dict[str, str]) -> str:
    """One line for an exception record: ``Type: message``."""
    message = exception.get("message", "")
    return f"{exception.get('type', 'Exception')}: {message}" if message else \
        str(exception.get("type", "Exception"))


# -- the child -----------------------------------------------------------------

def _exception(exc: BaseException, note: str | None = None) -> dict[str, str]:
    message = str(exc) if note is None else f"{note}: {exc}"
    return {"type": type(exc).__name__, "message": message,
            "traceback": "".join(traceback.format_exception(exc))}


def _load(spec: str) -> Any:
    module_name, _, name = spec.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in name.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise TypeError(f"{spec} is a {type(target).__name__}, not a function")
    return target


def _write(path: Path, text: str) -> None:
    """Write so that the pilot finds the whole file or none."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _raised(path: Path, exc: Exception, note: str | None = None) -> None:
    found = _exception(exc, note)
    _write(path, json.dumps({"exception": found}))
    sys.stderr.write(found["traceback"])


def main(argv: list[str]) -> int:
    """Import and call the function of ``argv[0]``'s call; write what came of it to ``argv[1]``."""
    call = json.loads(Path(argv[0]).read_text())
    result = Path(argv[1])
    sys.path.insert(1, call.get("path") or os.getcwd())
    spec = call["function"]
    try:
        function = _load(spec)
    except Exception as exc:  # noqa: BLE001 -- any failure to import is the token's to record
        _raised(result, exc, f"cannot import {spec}")
        return CANNOT_IMPORT
    try:
        value = function(*call.get("args", []), **call.get("kwargs", {}))
        try:
            text = json.dumps({"output": value}, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{spec} returned a {type(value).__name__}, which is not "
                            f"JSON-serialisable ({exc}): return lists, dicts, strings, "
                            "numbers, booleans or None") from None
    except Exception as exc:  # noqa: BLE001 -- whatever it raised is the token's to record
        _raised(result, exc)
        return RAISED
    _write(result, text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
