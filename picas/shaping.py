"""Records into tokens: which fields a token takes, its command and its id.

A record's keys that are token fields (``command`` or ``function``,
``env``, ``priority``, ``tags``, ``max_attempts``, ``expected_runtime``,
``input``, ``inputs``, ``outputs``, ``stdin``, ``_id``, ``after``; ``args``
and ``kwargs`` beside a ``function``) stay on the token; every other key goes
into its ``input``. :func:`build` checks every record before any token is
written.

A token's id is a hash of what it runs (command or function and its
arguments, input, env, the files it reads) unless the record gives
``_id``, so adding the same input twice adds nothing the second time: the
conflict on the existing id means "already there".

A token ``after`` others waits until they are done (see
:mod:`picas.dependencies`); :func:`check` refuses a cycle among them.
"""
from __future__ import annotations

import hashlib
import json
import re
import shlex
import string
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from . import errors, functions, provenance, staging, state
from .jobid import JOB_ID_FIELDS
from .sources import Record
from .token import Token, blank

#: Record keys that are token fields; all other keys go into ``input``.
TOKEN_FIELDS = ("_id", "type", "command", "function", "env", "priority", "tags",
                "max_attempts", "expected_runtime", "input", "files", "inputs", "outputs",
                "stdin", "after")
#: Token fields only beside a ``function`` (elsewhere they are input, as they always were).
CALL_FIELDS = ("args", "kwargs")
#: Fields that only pilots and state changes write.
MANAGED_FIELDS = frozenset({"lock", "done", "hostname", "scrub_count", "exit_code", "output",
                            "error", "uploads", "attempts", "lease", "cancel_requested",
                            "retry_base", "outputs_skipped", "waiting_for", "blocked_by",
                            "dependents", *JOB_ID_FIELDS})
#: What a token runs besides its command, input and env: in its id when given.
#: (Only when given, so that the ids of tokens without them stay what they were.)
RUNS_WITH = ("function", "args", "kwargs", "inputs", "stdin")
MAX_REPORTED = 10


@dataclass(frozen=True)
class Shape:
    """What the command line sets on every token; it wins over the records."""

    command: str | None = None
    priority: float | None = None
    max_attempts: int | None = None
    tags: tuple[str, ...] = ()
    require_command: bool = True
    #: ids of tokens that every token waits for
    after: tuple[str, ...] = ()


class _Template(string.Formatter):
    """``str.format`` that shell-quotes every value it fills in."""

    def format_field(self, value: Any, format_spec: str) -> str:
        if isinstance(value, (dict, list)):
            text = json.dumps(value, sort_keys=True)
        else:
            text = format(value, format_spec)
        return shlex.quote(text)


def check_template(template: str) -> None:
    """Fail once for a malformed template, not once per token."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise errors.InvalidToken(f"--command {template!r}: {exc}; write {{{{ and }}}} "
                                  "for literal braces") from None
    for name in fields:
        if name == "" or name.isdigit():
            raise errors.InvalidToken(f"--command {template!r}: name the token field in "
                                      "each {}, for example {seed}")


def fill(template: str, token: Token) -> str:
    """The command for ``token``: ``{name}`` becomes the (shell-quoted) field value.

    Fields of ``input`` and the token's own fields (``priority``,
    ``tags`` ...) can be used; input wins when both have a name.
    """
    values = {k: v for k, v in token.items() if k in TOKEN_FIELDS and k != "command"}
    if isinstance(token.get("input"), dict):
        values.update(token["input"])
    try:
        return _Template().vformat(template, (), values)
    except (KeyError, IndexError, AttributeError, TypeError) as exc:
        known = ", ".join(sorted(str(k) for k in values)) or "none"
        missing = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        raise errors.InvalidToken(f"--command uses {{{missing}}}, but the token has no such "
                                  f"field (its fields: {known})") from None
    except ValueError as exc:
        raise errors.InvalidToken(f"--command {template!r}: {exc}") from None


def token_id(token: Token) -> str:
    """The id a token gets from its content: what it runs, with what, and after what."""
    content = {"command": token.get("command"), "input": token.get("input", {}),
               "env": token.get("env") or {},
               **{key: token[key] for key in RUNS_WITH if key in token}}
    if token.get("after"):
        content["after"] = sorted(token["after"])
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "t-" + hashlib.sha256(canonical.encode()).hexdigest()[:20]


def _number(name: str, value: Any, *, whole: bool = False, minimum: float | None = None) -> Any:
    """A numeric field, from a number or (CSV) text; ValueError says what is wrong."""
    kind = "a whole number" if whole else "a number"
    if isinstance(value, bool):
        raise ValueError(f"{name} must be {kind}, not {json.dumps(value)}")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ValueError(f"{name} must be {kind}, not {value!r}") from None
    if not isinstance(value, (int, float)) or value != value:
        raise ValueError(f"{name} must be {kind}, not {json.dumps(value)}")
    if whole:
        if float(value) != int(value):
            raise ValueError(f"{name} must be {kind}, not {value}")
        value = int(value)
    elif float(value).is_integer():
        value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be at least {minimum:g}, not {value}")
    return value


def _command(value: Any) -> str | list[str]:
    if isinstance(value, str):
        if not value.strip():
            raise ValueError("command is empty")
        return value
    if isinstance(value, list) and value and all(isinstance(a, str) for a in value):
        return list(value)
    raise ValueError("command must be a string (run by a shell) or a non-empty list of "
                     "strings (run directly)")


def _env(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ValueError("env must be a mapping of variable names to values")
    env = {}
    for key, item in value.items():
        if not isinstance(key, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
            raise ValueError(f"env: {key!r} is not a valid variable name")
        if isinstance(item, (dict, list)) or item is None:
            raise ValueError(f"env: {key} must be text or a number")
        env[key] = item if isinstance(item, str) else json.dumps(item)
    return env


def _tags(value: Any) -> list[str]:
    if isinstance(value, str):
        value = [t for t in (part.strip() for part in value.split(",")) if t]
    if not isinstance(value, list) or not all(isinstance(t, str) and t for t in value):
        raise ValueError("tags must be a list of non-empty strings")
    return value


def _after(value: Any) -> list[str]:
    """Ids of tokens to wait for: a list, or (as in CSV) text separated by commas."""
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list) or not all(isinstance(i, str) and i for i in value):
        raise ValueError("after must be a list of token ids")
    return value


def shape(record: Record, how: Shape = Shape()) -> Token:
    """The token for one record; :class:`InvalidToken` says ``ORIGIN: reason``."""
    try:
        return _shape(record.fields, how)
    except (ValueError, errors.InvalidToken) as exc:
        raise errors.InvalidToken(f"{record.origin}: {exc}") from None


def _shape(fields: Any, how: Shape) -> Token:
    own, extra = _split(fields)
    if own.get("type", "token") != "token":
        raise ValueError(f"type must be \"token\", not {json.dumps(own['type'])}")
    token = blank(input=_input(own, extra))
    _set_options(token, own, how)
    if "_id" in own:
        if not isinstance(own["_id"], str) or not own["_id"] or own["_id"].startswith("_"):
            raise ValueError("_id must be a non-empty string not starting with '_'")
        token["_id"] = own["_id"]
    if "function" in own:
        if how.command is not None or "command" in own:
            raise ValueError("the token has a 'function' and a command: keep one")
        token.update(functions.check(own["function"], own.get("args"), own.get("kwargs")))
    elif how.command is not None:
        token["command"] = fill(how.command, token)
    elif "command" in own:
        token["command"] = _command(own["command"])
    elif how.require_command:
        raise ValueError("no command: give the token a 'command' field, or use "
                         "--command TEMPLATE (for example --command 'run.sh {path}'), or "
                         "name a Python 'function' (module:name)")
    after = list(dict.fromkeys(_after(own.get("after", [])) + list(how.after)))
    if after:
        token = state.wait(token, after)
    token.setdefault("_id", token_id(token))
    return token


def _split(fields: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The token's own fields, and the rest (which go into its input)."""
    if not isinstance(fields, dict):
        kind = "a list" if isinstance(fields, list) else json.dumps(fields)
        raise ValueError(f"a token must be an object of fields, not {kind}")
    own: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in fields.items():
        if not isinstance(key, str):
            raise ValueError(f"field name {key!r} is not text")
        if key in MANAGED_FIELDS or (key.startswith("_") and key != "_id"):
            raise ValueError(f"field '{key}' is managed by picas: remove it from the input")
        ours = key in TOKEN_FIELDS or (key in CALL_FIELDS and "function" in fields)
        (own if ours else extra)[key] = value
    return own, extra


def _input(own: dict[str, Any], extra: dict[str, Any]) -> Any:
    data = own.get("input", {})
    if not extra:
        return data
    if not isinstance(data, dict):
        raise ValueError("input is not an object, so the fields "
                         f"{', '.join(sorted(extra))} cannot go into it")
    clash = sorted(set(extra) & set(data))
    if clash:
        raise ValueError(f"'{clash[0]}' is given both in input and beside it")
    return {**data, **extra}


def _set_options(token: dict[str, Any], own: dict[str, Any], how: Shape) -> None:
    """env, priority, max_attempts, expected_runtime and tags, checked."""
    if "env" in own:
        token["env"] = _env(own["env"])
    priority = how.priority if how.priority is not None else own.get("priority")
    if priority is not None:
        token["priority"] = _number("priority", priority)
    attempts = how.max_attempts if how.max_attempts is not None else own.get("max_attempts")
    if attempts is not None:
        token["max_attempts"] = _number("max_attempts", attempts, whole=True, minimum=1)
    if own.get("expected_runtime") is not None:
        token["expected_runtime"] = _number("expected_runtime", own["expected_runtime"],
                                            minimum=0)
    if "files" in own:
        token["files"] = provenance.check_files(own["files"])
    for key, check in (("inputs", staging.check_inputs), ("outputs", staging.check_outputs),
                       ("stdin", staging.check_stdin)):
        if key in own:
            token[key] = check(own[key])
    tags = _tags(own.get("tags", [])) + list(how.tags)
    if tags:
        token["tags"] = list(dict.fromkeys(tags))


def check(records: Iterable[Record], how: Shape = Shape(),
          after: dict[str, list[str]] | None = None) -> int:
    """How many tokens the records make, or one :class:`InvalidToken` listing
    what is wrong. Keeps no token, so it goes over any number of records
    before a single one is written: a bad record anywhere adds nothing.

    ``after`` gets the ``after`` of each token that has one (by id): the
    edges that :func:`picas.dependencies.plan` needs, kept only for those
    tokens, so plain tokens cost no memory. A cycle among them is refused."""
    if how.command is not None:
        check_template(how.command)
    found: dict[str, list[str]] = {} if after is None else after
    count = 0
    problems: list[str] = []
    #: given _id -> (digest of the token's content, where it was first given)
    given: dict[str, tuple[str, str]] = {}
    for record in records:
        try:
            token = shape(record, how)
        except errors.InvalidToken as exc:
            problems.append(str(exc))
            continue
        if isinstance(record.fields, dict) and "_id" in record.fields:
            digest = _digest(token)
            first = given.setdefault(token["_id"], (digest, record.origin))
            if first[0] != digest:
                problems.append(f"{record.origin}: _id '{token['_id']}' is already used by "
                                f"a different token at {first[1]}")
                continue
        count += 1
        if token.get("after"):
            found[token["_id"]] = list(token["after"])
    problems.extend(_cycles(found))
    if problems:
        shown = problems[:MAX_REPORTED]
        more = len(problems) - len(shown)
        header = f"{len(problems)} invalid tokens:\n" if len(problems) > 1 else ""
        tail = f"\n... and {more} more" if more else ""
        raise errors.InvalidToken(header + "\n".join(shown) + tail)
    return count


def stream(records: Iterable[Record], how: Shape = Shape()) -> Iterator[Token]:
    """The tokens of records that :func:`check` passed, made one at a time."""
    for record in records:
        yield shape(record, how)


def build(records: Iterable[Record], how: Shape = Shape()) -> list[Token]:
    """Tokens for all records, or one :class:`InvalidToken` listing what is wrong."""
    records = list(records)
    check(records, how)
    return list(stream(records, how))


def _digest(token: Token) -> str:
    content = json.dumps(_content(token), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(content.encode()).hexdigest()


def _cycles(waits: dict[str, list[str]]) -> list[str]:
    """A line naming a cycle of ``after`` among the tokens in ``waits`` (id ->
    its after; tokens that would wait forever), or none."""
    left = {i: sum(1 for p in set(ps) if p in waits) for i, ps in waits.items()}
    dependents: dict[str, list[str]] = {}
    for i, ps in waits.items():
        for p in set(ps) & waits.keys():
            dependents.setdefault(p, []).append(i)
    # Take away the tokens that wait for nothing left, again and again: what
    # remains waits, directly or not, for itself.
    free = [i for i, n in left.items() if n == 0]
    while free:
        for child in dependents.get(free.pop(), []):
            left[child] -= 1
            if left[child] == 0:
                free.append(child)
    stuck = {i for i, n in left.items() if n}
    if not stuck:
        return []
    path, seen = [min(stuck)], {min(stuck): 0}
    while True:
        parent = min(p for p in waits[path[-1]] if p in stuck)
        if parent in seen:
            cycle = [*path[seen[parent]:], parent]
            return [f"after makes a cycle (each waits for the next): "
                    f"{' -> '.join(cycle)}"]
        seen[parent] = len(path)
        path.append(parent)


def _content(token: Token) -> Token:
    return {k: v for k, v in token.items() if not k.startswith("_")}
