"""Where token input comes from: files, a parameter grid, a directory.

Each source makes *records*: plain dicts of fields, each with its origin
(``FILE:LINE``, ``--grid point N``) for error messages. Files can be a
JSON array, JSONL, a YAML list or CSV with a header row; each record knows
its line. :mod:`picas.shaping` turns records into tokens.
"""
from __future__ import annotations

import csv
import itertools
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import errors

FORMATS = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".yaml": "yaml",
           ".yml": "yaml", ".csv": "csv"}
MAX_GRID = 10_000_000


@dataclass(frozen=True)
class Record:
    """One token's worth of input, and where it came from (``FILE:LINE``)."""

    fields: dict
    origin: str



def read_file(path: Path | str) -> list[Record]:
    """The records in a JSON (array), JSONL, YAML (list) or CSV file.

    Raises :class:`OSError` when the file cannot be read, and
    :class:`InvalidToken` naming the file and line when it is malformed.
    """
    return list(stream_file(path))


def stream_file(path: Path | str) -> Iterator[Record]:
    """The records of :func:`read_file`, read as they are used.

    JSONL and CSV are read a line at a time, so that a file of millions of
    tokens never sits in memory; a JSON array or YAML list is parsed whole.
    Errors in a JSONL or CSV file are raised where iteration reaches them.
    """
    path = Path(path)
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise errors.InvalidToken(
            f"{path}: unknown file type '{path.suffix}': use .json (an array), .jsonl, "
            ".yaml or .csv")
    if kind == "jsonl":
        return _read_jsonl(path)
    if kind == "csv":
        return _read_csv(path)
    return iter(_read_whole(path, kind))


def _read_whole(path: Path, kind: str) -> list[Record]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise errors.InvalidToken(f"{path}:{line}: not UTF-8 text") from None
    reader = {"json": _read_json, "yaml": _read_yaml}
    return reader[kind](text, str(path))


def _line(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


_SPACE = re.compile(r"\s*")


def _skip_space(text: str, pos: int) -> int:
    match = _SPACE.match(text, pos)
    assert match is not None  # r"\s*" matches everywhere, if only the empty string
    return match.end()


def _read_json(text: str, name: str) -> list[Record]:
    """A JSON array, parsed element by element so each record knows its line."""
    decoder = json.JSONDecoder()
    pos = _skip_space(text, 0)
    if pos == len(text):
        raise errors.InvalidToken(f"{name}:1: the file is empty; expected a JSON array of tokens")
    if text[pos] != "[":
        raise errors.InvalidToken(
            f"{name}:{_line(text, pos)}: expected a JSON array of tokens ([{{...}}, ...]); "
            "for one token per line use a .jsonl file")
    records = []
    pos = _skip_space(text, pos + 1)
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
            pos = _skip_space(text, end)
            if pos < len(text) and text[pos] == ",":
                pos = _skip_space(text, pos + 1)
                continue
            if pos < len(text) and text[pos] == "]":
                pos += 1
                break
            raise errors.InvalidToken(
                f"{name}:{_line(text, pos)}: not valid JSON: expected ',' or ']' after a token")
    if _skip_space(text, pos) != len(text):
        raise errors.InvalidToken(f"{name}:{_line(text, pos)}: not valid JSON: "
                                  "extra data after the array")
    return records


def _read_jsonl(path: Path) -> Iterator[Record]:
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError:
                raise errors.InvalidToken(f"{path}:{number}: not UTF-8 text") from None
            if not line.strip():
                continue
            try:
                yield Record(json.loads(line), f"{path}:{number}")
            except json.JSONDecodeError as exc:
                raise errors.InvalidToken(
                    f"{path}:{number}: not valid JSON: {exc.msg}") from None


def _read_yaml(text: str, name: str) -> list[Record]:
    import yaml  # only for YAML input: PyYAML takes a while to import

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
            for value, item in zip(data, node.value, strict=True)]


def _read_csv(path: Path) -> Iterator[Record]:
    """CSV with a header row; every value is text (numeric token fields are converted)."""
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        try:
            yield from _csv_rows(reader, str(path))
        except UnicodeDecodeError:
            raise errors.InvalidToken(
                f"{path}:{reader.line_num + 1}: not UTF-8 text") from None
        except csv.Error as exc:
            raise errors.InvalidToken(
                f"{path}:{reader.line_num}: not valid CSV: {exc}") from None


def _csv_rows(reader: csv.DictReader, name: str) -> Iterator[Record]:
    if not reader.fieldnames:
        return
    header = [h.strip() for h in reader.fieldnames]
    if any(not h for h in header) or len(set(header)) != len(header):
        raise errors.InvalidToken(f"{name}:1: the header row needs distinct, non-empty "
                                  "column names")
    reader.fieldnames = header
    for row in reader:
        origin = f"{name}:{reader.line_num}"
        if None in row:
            raise errors.InvalidToken(f"{origin}: more values than columns in the header")
        values = {k: v for k, v in row.items() if v is not None}
        if len(values) < len(header):
            raise errors.InvalidToken(f"{origin}: fewer values than columns in the header")
        yield Record(values, origin)


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


def grid(specs: Iterable[str]) -> Iterator[Record]:
    """One record per combination of the ``--grid`` values (their product),
    made as they are read; a bad spec is refused at once."""
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
    return (Record(dict(zip(names, combo, strict=True)),
                   f"--grid point {n} ({_describe(names, combo)})")
            for n, combo in enumerate(itertools.product(*(v for _, v in axes)), 1))


def _describe(names: list[str], values: tuple) -> str:
    return ", ".join(f"{k}={v}" for k, v in zip(names, values, strict=True))


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
