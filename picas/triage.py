"""Why tokens failed: error signatures, groups of errors, and bad hosts.

A failed attempt gets a *signature* when its result is written: the last
lines of its stderr with what differs between runs of the same fault
(numbers, paths, hex) stripped. The ``Monitor/errors`` view emits it,
so grouping 100,000 error tokens reads one reduced view, not the tokens.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from . import designdocs, operations, state
from .database import Database

#: How many of stderr's last non-empty lines make a signature.
SIGNATURE_LINES = 3
SIGNATURE_CHARS = 200

_HEX = re.compile(r"\b0x[0-9a-fA-F]+\b|\b[0-9a-fA-F]*\d[0-9a-fA-F]*[a-fA-F][0-9a-fA-F]*\b"
                  r"|\b[0-9a-fA-F]*[a-fA-F][0-9a-fA-F]*\d[0-9a-fA-F]*\b")
_PATH = re.compile(r"(?:[A-Za-z]:)?(?:~|\.{1,2})?(?:/[^\s:'\"(),;\[\]]+)+/?")
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
_SPACE = re.compile(r"\s+")


def normalise(line: str) -> str:
    """One stderr line with paths, hex and numbers replaced by placeholders."""
    line = _PATH.sub("<path>", line)
    line = _HEX.sub("<hex>", line)
    line = _NUMBER.sub("<n>", line)
    return _SPACE.sub(" ", line).strip()


def signature(stderr: bytes | str, outcome: state.Outcome | None = None,
              error: str | None = None) -> str:
    """What a failure looks like, the same for every run of the same fault.

    From the last lines of stderr; without any, from picas's own error
    message (a token without a command) or how the attempt ended
    (``timed_out``).
    """
    text = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr
    lines = [normalise(line) for line in text.splitlines()[-4 * SIGNATURE_LINES:]]
    lines = [line for line in lines if line and not line.startswith("[picas: the first")]
    found = " | ".join(lines[-SIGNATURE_LINES:])
    if not found and error:
        found = normalise(error)
    if not found:
        found = f"({outcome.value if outcome else 'failed'}, no stderr)"
    return found[:SIGNATURE_CHARS]


def group_id(exit_code: Any, sig: str) -> str:
    """A short id for a group of errors that stays the same between calls."""
    return hashlib.sha1(f"{exit_code}\0{sig}".encode()).hexdigest()[:8]


@dataclass
class ErrorGroup:
    """Error tokens with the same exit code and signature."""

    id: str
    exit_code: Any
    signature: str
    count: int = 0
    hosts: dict[str, int] = field(default_factory=dict)
    sample: str | None = None

    def as_dict(self) -> dict:
        return {"group": self.id, "exit_code": self.exit_code, "signature": self.signature,
                "count": self.count, "hosts": self.hosts, "sample": self.sample}


def error_groups(db: Database, samples: bool = True) -> list[ErrorGroup]:
    """The error tokens grouped by exit code and signature, largest group first.

    One reduced query, plus one single-row query per group for its sample.
    """
    rows = db.view(designdocs.MONITOR, "errors", group=True)["rows"]
    groups: dict[tuple, ErrorGroup] = {}
    for row in rows:
        code, sig, host = row["key"]
        key = (_hashable(code), sig)
        group = groups.get(key)
        if group is None:
            group = groups[key] = ErrorGroup(group_id(code, sig), code, sig)
        group.count += int(row["value"])
        where = host or "(unknown)"
        group.hosts[where] = group.hosts.get(where, 0) + int(row["value"])
    ordered = sorted(groups.values(), key=lambda g: (-g.count, str(g.exit_code), g.signature))
    if samples:
        for group in ordered:
            first = db.view(designdocs.MONITOR, "errors", reduce=False, limit=1,
                            **_range(group))["rows"]
            group.sample = first[0]["id"] if first else None
    return ordered


def _hashable(value: Any) -> Any:
    return repr(value) if isinstance(value, (dict, list)) else value


def _range(group: ErrorGroup) -> dict:
    return {"startkey": [group.exit_code, group.signature],
            "endkey": [group.exit_code, group.signature, {}]}


def find_group(db: Database, wanted: str) -> ErrorGroup | None:
    """The group whose id starts with ``wanted`` (ids are short hashes)."""
    matches = [g for g in error_groups(db, samples=False) if g.id.startswith(wanted.lower())]
    return matches[0] if len(matches) == 1 else None


def reset_group(db: Database, group: ErrorGroup) -> operations.Report:
    """Put every error token of ``group`` back in todo (a person's decision)."""
    ids = list(dict.fromkeys(row["id"] for row in db.iter_view(
        designdocs.MONITOR, "errors", reduce=False, **_range(group))))
    return operations.apply(db, ids, state.reset)


# -- hosts ----------------------------------------------------------------------

#: A host is suspect when its failure rate is this many times the others'...
SUSPECT_RATIO = 3.0
#: ...and at least this high, over at least this many attempts.
SUSPECT_RATE = 0.5
SUSPECT_MIN_ATTEMPTS = 5


def host_attempts(db: Database) -> dict[str, dict[str, int]]:
    """Attempts per host and outcome, from one reduced query."""
    found: dict[str, dict[str, int]] = {}
    for row in db.view(designdocs.MONITOR, "attempts_by_host", group=True)["rows"]:
        host, outcome = row["key"]
        found.setdefault(host or "(unknown)", {})[outcome] = int(row["value"])
    return found


def suspect_hosts(by_host: dict[str, dict[str, int]]) -> list[dict]:
    """Hosts whose tasks fail far more often than on the other hosts.

    A host is listed when its share of failed attempts is at least
    SUSPECT_RATE and SUSPECT_RATIO times that of all other hosts together:
    a pool where every host fails alike (a broken task) lists none.
    """
    totals = {host: _failures_and_total(outcomes) for host, outcomes in by_host.items()}
    all_failed = sum(f for f, _ in totals.values())
    all_total = sum(t for _, t in totals.values())
    suspects = []
    for host, (failed, total) in totals.items():
        if total < SUSPECT_MIN_ATTEMPTS:
            continue
        rate = failed / total
        rest_total = all_total - total
        rest_rate = (all_failed - failed) / rest_total if rest_total else None
        if rest_rate is None or rate < SUSPECT_RATE or rate < SUSPECT_RATIO * rest_rate:
            continue
        suspects.append({"host": host, "attempts": total, "failed": failed,
                         "failure_rate": round(rate, 3), "others_rate": round(rest_rate, 3)})
    return sorted(suspects, key=lambda s: -s["failure_rate"])


def _failures_and_total(outcomes: dict[str, int]) -> tuple[int, int]:
    counted = {o.value for o in state.Outcome if o is not state.Outcome.CANCELLED}
    failed = sum(n for o, n in outcomes.items()
                 if o in counted and o != state.Outcome.SUCCEEDED.value)
    return failed, sum(n for o, n in outcomes.items() if o in counted)
