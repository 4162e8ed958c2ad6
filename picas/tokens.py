"""Creating tokens: read records, shape them into tokens, add them in bulk.

Three sources make *records* (plain dicts, each with its origin for error
messages): files (JSON array, JSONL, YAML list, CSV), a parameter grid,
and the files in a directory. :func:`build` turns records into tokens and
checks all of them before anything is written. A record's keys that are
token fields (``command``, ``env``, ``priority``, ``tags``,
``max_attempts``, ``expected_runtime``, ``input``, ``_id``) stay on the
token; every other key goes into its ``input``.

A token's id is a hash of what it runs (command, input, env) unless the
record gives ``_id``, so adding the same input twice adds nothing the
second time: the conflict on the existing id means "already there".
"""
from __future__ import annotations

import copy
import csv
import hashlib
import io
import itertools
import json
import logging
import os
import re
import shlex
import string
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import yaml

from . import errors, pool, provenance, shutdown
from .database import Database
from .documents import Task
from .jobid import JOB_ID_FIELDS

log = logging.getLogger(__name__)

#: Record keys that are token fields; all other keys go into ``input``.
TOKEN_FIELDS = ("_id", "type", "command", "env", "priority", "tags", "max_attempts",
                "expected_runtime", "input", "files")
#: Fields that only pilots and state changes write.
MANAGED_FIELDS = frozenset({"lock", "done", "hostname", "scrub_count", "exit_code", "output",
                            "error", "uploads", "attempts", "lease", "cancel_requested",
                            "retry_base", *JOB_ID_FIELDS})
FORMATS = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".yaml": "yaml",
           ".yml": "yaml", ".csv": "csv"}
MAX_GRID = 1_000_000
MAX_REPORTED = 10
DEFAULT_BATCH = 500


@dataclass(frozen=True)
class Record:
    """One token's worth of input, and where it came from (``FILE:LINE``)."""

    fields: dict
    origin: str


# -- sources -------------------------------------------------------------------

def read_file(path: Path | str) -> list[Record]:
    """The records in a JSON (array), JSONL, YAML (list) or CSV file.

    Raises :class:`OSError` when the file cannot be read, and
    :class:`InvalidToken` naming the file and line when it is malformed.
    """
    path = Path(path)
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise errors.InvalidToken(
            f"{path}: unknown file type '{path.suffix}': use .json (an array), .jsonl, "
            ".yaml or .csv")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise errors.InvalidToken(f"{path}:{line}: not UTF-8 text") from None
    reader = {"json": _read_json, "jsonl": _read_jsonl, "yaml": _read_yaml, "csv": _read_csv}
    return reader[kind](text, str(path))


def _line(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def _read_json(text: str, name: str) -> list[Record]:
    """A JSON array, parsed element by element so each record knows its line."""
    decoder = json.JSONDecoder()
    ws = re.compile(r"\s*")
    pos = ws.match(text, 0).end()
    if pos == len(text):
        raise errors.InvalidToken(f"{name}:1: the file is empty; expected a JSON array of tokens")
    if text[pos] != "[":
        raise errors.InvalidToken(
            f"{name}:{_line(text, pos)}: expected a JSON array of tokens ([{{...}}, ...]); "
            "for one token per line use a .jsonl file")
    records = []
    pos = ws.match(text, pos + 1).end()
    if pos < len(text) and text[pos] == "]":
        pos += 1
    else:
        while True:
            try:
                value, end = decoder.raw_decode(text, pos)
            except json.JSONDecodeError as exc:
                raise errors.InvalidToken(f"{name}:{exc.lineno}: not valid JSON: {exc.msg}") \
                    from None
            records.append(Record(value, f"{name}:{_line(text, pos)}"))
            pos = ws.match(text, end).end()
            if pos < len(text) and text[pos] == ",":
                pos = ws.match(text, pos + 1).end()
                continue
            if pos < len(text) and text[pos] == "]":
                pos += 1
                break
            raise errors.InvalidToken(
                f"{name}:{_line(text, pos)}: not valid JSON: expected ',' or ']' after a token")
    if ws.match(text, pos).end() != len(text):
        raise errors.InvalidToken(f"{name}:{_line(text, pos)}: not valid JSON: "
                                  "extra data after the array")
    return records


def _read_jsonl(text: str, name: str) -> list[Record]:
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(Record(json.loads(line), f"{name}:{number}"))
        except json.JSONDecodeError as exc:
            raise errors.InvalidToken(f"{name}:{number}: not valid JSON: {exc.msg}") from None
    return records


def _read_yaml(text: str, name: str) -> list[Record]:
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{name}:{mark.line + 1}" if mark else name
        raise errors.InvalidToken(
            f"{where}: not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    if data is None:
        return []
    if not isinstance(data, list) or not isinstance(node, yaml.SequenceNode):
        raise errors.InvalidToken(f"{name}:1: expected a YAML list of tokens (- command: ...)")
    return [Record(value, f"{name}:{item.start_mark.line + 1}")
            for value, item in zip(data, node.value)]


def _read_csv(text: str, name: str) -> list[Record]:
    """CSV with a header row; every value is text (numeric token fields are converted)."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames:
        return []
    header = [h.strip() for h in reader.fieldnames]
    if any(not h for h in header) or len(set(header)) != len(header):
        raise errors.InvalidToken(f"{name}:1: the header row needs distinct, non-empty "
                                  "column names")
    reader.fieldnames = header
    records = []
    try:
        for row in reader:
            origin = f"{name}:{reader.line_num}"
            if None in row:
                raise errors.InvalidToken(f"{origin}: more values than columns in the header")
            values = {k: v for k, v in row.items() if v is not None}
            if len(values) < len(header):
                raise errors.InvalidToken(f"{origin}: fewer values than columns in the header")
            records.append(Record(values, origin))
    except csv.Error as exc:
        raise errors.InvalidToken(f"{name}:{reader.line_num}: not valid CSV: {exc}") from None
    return records


_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def _scalar(text: str) -> Any:
    """A grid value: an int or float when it reads as one, else the text."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def parse_grid_option(spec: str) -> tuple[str, list[Any]]:
    """``name=v1,v2`` or ``name=1..100`` (both inclusive, and mixable: ``1..3,10``)."""
    name, sep, values = spec.partition("=")
    name = name.strip()
    if not sep or not _NAME.match(name):
        raise errors.InvalidToken(f"--grid {spec!r}: use NAME=V1,V2 or NAME=FIRST..LAST "
                                  "(NAME: letters, digits, _ or -)")
    out: list[Any] = []
    for item in values.split(","):
        item = item.strip()
        if not item:
            raise errors.InvalidToken(f"--grid {spec!r}: empty value (NAME=V1,V2: every "
                                      "value between the commas needs text)")
        match = _RANGE.match(item)
        if match:
            first, last = int(match.group(1)), int(match.group(2))
            if first > last:
                raise errors.InvalidToken(f"--grid {spec!r}: the range {item} is empty "
                                          f"(write it upwards: {last}..{first})")
            out.extend(range(first, last + 1))
        elif ".." in item:
            # A typo in a range would otherwise become one token with a literal value.
            raise errors.InvalidToken(f"--grid {spec!r}: {item!r} is not a range: use "
                                      "FIRST..LAST with whole numbers on both sides")
        else:
            out.append(_scalar(item))
    return name, out


def grid(specs: Iterable[str]) -> list[Record]:
    """One record per combination of the ``--grid`` values (their product)."""
    axes = [parse_grid_option(spec) for spec in specs]
    names = [name for name, _ in axes]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise errors.InvalidToken(f"--grid {sorted(duplicates)[0]} is given twice")
    size = 1
    for _, values in axes:
        size *= len(values)
    if size > MAX_GRID:
        raise errors.InvalidToken(f"--grid makes {size:,} tokens, more than {MAX_GRID:,}: "
                                  "split the grid over several adds")
    return [Record(dict(zip(names, combo)), f"--grid point {n} ({_describe(names, combo)})")
            for n, combo in enumerate(itertools.product(*(v for _, v in axes)), 1)]


def _describe(names: list[str], values: tuple) -> str:
    return ", ".join(f"{k}={v}" for k, v in zip(names, values))


def _matching_files(directory: Path, pattern: str) -> Iterator[Path]:
    """Regular files under ``directory`` matching ``pattern``; hidden files are skipped
    (copies in progress are often hidden)."""
    for path in sorted(directory.glob(pattern)):
        if not any(part.startswith(".") for part in path.relative_to(directory).parts) \
                and path.is_file():
            yield path


def file_record(path: Path) -> Record:
    """The record of one file: its absolute path, name and stem, for the command."""
    full = os.path.abspath(path)
    return Record({"input": {"path": full, "name": path.name, "stem": path.stem}}, full)


def scan_dir(directory: Path | str, pattern: str = "*") -> list[Record]:
    """One record per file in ``directory`` matching the glob ``pattern``."""
    directory = Path(directory)
    if not directory.is_dir():
        raise errors.InvalidToken(f"--from-dir {directory}: not a directory")
    return [file_record(path) for path in _matching_files(directory, pattern)]


# -- shaping -------------------------------------------------------------------

@dataclass(frozen=True)
class Shape:
    """What the command line sets on every token; it wins over the records."""

    command: str | None = None
    priority: float | None = None
    max_attempts: int | None = None
    tags: tuple[str, ...] = ()
    require_command: bool = True


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


def fill(template: str, token: dict) -> str:
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


def token_id(token: dict) -> str:
    """The id a token gets from its content: what it runs and with what."""
    content = {"command": token.get("command"), "input": token.get("input", {}),
               "env": token.get("env") or {}}
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


def shape(record: Record, how: Shape = Shape()) -> dict:
    """The token for one record; :class:`InvalidToken` says ``ORIGIN: reason``."""
    try:
        return _shape(record.fields, how)
    except (ValueError, errors.InvalidToken) as exc:
        raise errors.InvalidToken(f"{record.origin}: {exc}") from None


def _shape(fields: Any, how: Shape) -> dict:
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
        (own if key in TOKEN_FIELDS else extra)[key] = value
    if own.get("type", "token") != "token":
        raise ValueError(f"type must be \"token\", not {json.dumps(own['type'])}")
    data = own.get("input", {})
    if extra:
        if not isinstance(data, dict):
            raise ValueError("input is not an object, so the fields "
                             f"{', '.join(sorted(extra))} cannot go into it")
        clash = sorted(set(extra) & set(data))
        if clash:
            raise ValueError(f"'{clash[0]}' is given both in input and beside it")
        data = {**data, **extra}
    token: dict[str, Any] = {**copy.deepcopy(Task.BASE), "input": data}
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
    tags = _tags(own.get("tags", [])) + list(how.tags)
    if tags:
        token["tags"] = list(dict.fromkeys(tags))
    if "_id" in own:
        if not isinstance(own["_id"], str) or not own["_id"] or own["_id"].startswith("_"):
            raise ValueError("_id must be a non-empty string not starting with '_'")
        token["_id"] = own["_id"]
    if how.command is not None:
        token["command"] = fill(how.command, token)
    elif "command" in own:
        token["command"] = _command(own["command"])
    elif how.require_command:
        raise ValueError("no command: give the token a 'command' field, or use "
                         "--command TEMPLATE (for example --command 'run.sh {path}')")
    token.setdefault("_id", token_id(token))
    return token


def build(records: Iterable[Record], how: Shape = Shape()) -> list[dict]:
    """Tokens for all records, or one :class:`InvalidToken` listing what is wrong.

    Everything is checked first, so a bad record anywhere adds nothing.
    """
    if how.command is not None:
        check_template(how.command)
    tokens: list[dict] = []
    problems: list[str] = []
    given: dict[str, tuple[dict, str]] = {}
    for record in records:
        try:
            token = shape(record, how)
        except errors.InvalidToken as exc:
            problems.append(str(exc))
            continue
        if isinstance(record.fields, dict) and "_id" in record.fields:
            first = given.setdefault(token["_id"], (token, record.origin))
            if first[0] is not token and _content(first[0]) != _content(token):
                problems.append(f"{record.origin}: _id '{token['_id']}' is already used by "
                                f"a different token at {first[1]}")
                continue
        tokens.append(token)
    if problems:
        shown = problems[:MAX_REPORTED]
        more = len(problems) - len(shown)
        header = f"{len(problems)} invalid tokens:\n" if len(problems) > 1 else ""
        tail = f"\n... and {more} more" if more else ""
        raise errors.InvalidToken(header + "\n".join(shown) + tail)
    return tokens


def _content(token: dict) -> dict:
    return {k: v for k, v in token.items() if not k.startswith("_")}


# -- adding --------------------------------------------------------------------

@dataclass
class AddReport:
    """What an add did: ``existing`` tokens were in the database already."""

    added: int = 0
    existing: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    #: tokens given more than once in the same input (added once)
    duplicates: int = 0

    def merge(self, other: "AddReport") -> None:
        self.added += other.added
        self.existing += other.existing
        self.failed.extend(other.failed)
        self.duplicates += other.duplicates

    def as_dict(self) -> dict:
        return {"added": self.added, "existing": self.existing, "duplicates": self.duplicates,
                "failed": [{"id": i, "reason": r} for i, r in self.failed]}


def _has_priority(token: dict) -> bool:
    try:
        return float(token.get("priority") or 0) != 0
    except (TypeError, ValueError):
        return False


def add(db: Database, tokens: Iterable[dict], batch: int = DEFAULT_BATCH,
        progress: Callable[[int], None] | None = None) -> AddReport:
    """Write new tokens with ``_bulk_docs``, ``batch`` at a time.

    A conflict means the id exists: for a content-hash id that is the same
    token, so it counts as ``existing``. A given ``_id`` counts as existing
    only when the stored token runs the same thing; otherwise it failed.
    ``progress`` gets the number of tokens done after each batch.
    """
    report = AddReport()
    unique: dict[str, dict] = {}
    for token in tokens:
        if token["_id"] in unique:
            report.duplicates += 1
        else:
            unique[token["_id"]] = token
    items = list(unique.values())
    if any(_has_priority(token) for token in items):
        # Before the tokens exist, so that no pilot takes them out of order.
        pool.enable_priorities(db)
    for start in range(0, len(items), batch):
        chunk = [dict(token) for token in items[start:start + batch]]
        given_ids = []
        for doc, result in zip(chunk, db.bulk_docs(chunk)):
            if "error" not in result:
                report.added += 1
            elif result["error"] != "conflict":
                report.failed.append((doc["_id"], result.get("reason") or result["error"]))
            elif token_id(doc) == doc["_id"]:
                report.existing += 1
            else:
                given_ids.append(doc)
        if given_ids:
            _compare_existing(db, given_ids, report)
        if progress is not None:
            progress(len(chunk))
    return report


def _compare_existing(db: Database, docs: list[dict], report: AddReport) -> None:
    rows = db.all_docs(keys=[d["_id"] for d in docs], include_docs=True)["rows"]
    stored = {row["id"]: row.get("doc") for row in rows if row.get("doc")}
    for doc in docs:
        there = stored.get(doc["_id"])
        if there is not None and token_id(there) == token_id(doc):
            report.existing += 1
        else:
            report.failed.append((doc["_id"], "a different document with this _id exists"))


def watch(db: Database, directory: Path | str, pattern: str, how: Shape = Shape(), *,
          interval: float = 5.0, max_time: float | None = None, batch: int = DEFAULT_BATCH,
          on_added: Callable[[AddReport], None] | None = None) -> AddReport:
    """Keep adding a token for each new file in ``directory`` (an injector).

    Files there at the start are added at once; a file that appears later
    is added once its size and modification time stay the same over one
    ``interval``, so that files still being written are not picked up.
    Stops when :data:`picas.shutdown.requested` is set or after
    ``max_time`` seconds. A server that cannot be reached is retried at
    the next interval.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise errors.InvalidToken(f"--from-dir {directory}: not a directory")
    if how.command is not None:
        check_template(how.command)
    total = AddReport()
    added: set[Path] = set()
    last_seen: dict[Path, tuple[int, int]] = {}
    first = True
    end = None if max_time is None else time.monotonic() + max_time
    while True:
        ready, seen = [], {}
        for path in _matching_files(directory, pattern):
            if path in added:
                continue
            try:
                info = path.stat()
            except FileNotFoundError:
                continue
            seen[path] = (info.st_size, info.st_mtime_ns)
            if first or last_seen.get(path) == seen[path]:
                ready.append(path)
        last_seen = seen
        if ready:
            tokens = build([file_record(path) for path in ready], how)
            try:
                report = add(db, tokens, batch)
            except (errors.ConnectionFailed, errors.ServerError) as exc:
                log.warning("%s; retrying in %g s", exc, interval)
            else:
                added.update(ready)
                first = False
                total.merge(report)
                if on_added is not None:
                    on_added(report)
        else:
            first = False
        if shutdown.requested.is_set():
            break
        wait = interval if end is None else min(interval, end - time.monotonic())
        if wait <= 0 or shutdown.requested.wait(wait):
            break
    return total
