"""Helpers to run real pilot processes in tests."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from picas import state
from picas.database import Database

TOKEN_BASE = {"type": "token", "lock": 0, "done": 0, "hostname": "", "scrub_count": 0,
              "input": {}, "exit_code": "", "output": {}, "error": []}


def tokens(commands: dict[str, object], **fields: object) -> list[dict]:
    """Token documents: id -> command."""
    return [{**TOKEN_BASE, "_id": token_id, "command": command, **fields}
            for token_id, command in commands.items()]


def add(db: Database, docs: list[dict]) -> None:
    for i in range(0, len(docs), 500):
        results = db.bulk_docs(docs[i:i + 500])
        assert all("error" not in r for r in results), results


def start_pilot(env: dict, *args: str, workdir: Path) -> subprocess.Popen:
    """A ``picas pilot`` process (its own process group, so tests can signal it)."""
    return subprocess.Popen(
        [sys.executable, "-m", "picas", "pilot", "--workdir", str(workdir), "--json", *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float = 120) -> dict:
    """Wait for a pilot; return its JSON report (failing loudly if it crashed)."""
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"pilot failed ({proc.returncode}): {err.decode()[-2000:]}"
    return json.loads(out.decode().strip().splitlines()[-1])


def run_pilot(env: dict, *args: str, workdir: Path, timeout: float = 120) -> dict:
    return finish(start_pilot(env, *args, workdir=workdir), timeout)


def states(db: Database) -> dict[str, int]:
    rows = db.view("Monitor", "overview_total", group=True)["rows"]
    return {row["key"]: row["value"] for row in rows}


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.1):
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def state_of(db: Database, token_id: str) -> state.TokenState | None:
    return state.classify(db.get(token_id))


def executions(side_dir: Path) -> dict[str, int]:
    """How often each token id was written to the side files in ``side_dir``."""
    counts: dict[str, int] = {}
    for path in side_dir.glob("*"):
        for line in path.read_text().split():
            counts[line] = counts.get(line, 0) + 1
    return counts


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
