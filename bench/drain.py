"""One measured case: N trivial tokens drained by P pilot processes.

Each case gets a fresh database, filled and indexed before the clock
starts, so that every implementation starts from the same state. The
clock runs from the start of the first pilot process until the last one
has exited; the server's CPU time is read from /proc over the same span.
Only then is the database checked: every token must be done.
"""
from __future__ import annotations

import collections
import json
import os
import resource
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from picas import designdocs, errors
from picas.database import Database
from picas.transport import Transport

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUR_PYTHON = ROOT / ".venv" / "bin" / "python"
OUR_PICAS = ROOT / ".venv" / "bin" / "picas"

OURS_PILOT, OURS_ACTOR, UPSTREAM = "ours_pilot", "ours_actor", "upstream"
IMPLEMENTATIONS = (OURS_PILOT, OURS_ACTOR, UPSTREAM)

#: Appends the token's id to this pilot's side file, so that executions can be counted.
COMMAND = 'echo "$PICAS_TOKEN_ID" >> "$SIDE"'
BULK = 500


@dataclass(frozen=True)
class Target:
    """The server under test, and who may create databases on it."""

    url: str
    username: str
    password: str
    #: the server's processes (three for a local 3-node cluster); none when remote
    pids: tuple[int, ...]

    def transport(self) -> Transport:
        return Transport(self.url, self.username, self.password)


@dataclass
class CaseResult:
    implementation: str
    pilots: int
    rep: int
    n: int
    seconds: float = 0.0
    tokens_per_s: float = 0.0
    requests: int = 0
    requests_per_token: float = 0.0
    conflicts: int = 0
    executions: int = 0
    duplicates: int = 0
    tokens_run_more_than_once: int = 0
    never_run: int = 0
    server_cpu_s: float = 0.0
    server_cpu_s_per_token: float = 0.0
    #: CPU of the pilot processes and of everything they ran (the commands too)
    pilot_cpu_s: float = 0.0
    pilot_cpu_s_per_token: float = 0.0
    states: dict[str, int] = field(default_factory=dict)
    drained: bool = False
    timed_out: bool = False
    pilot_failures: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def cpu_seconds(pids: tuple[int, ...]) -> float:
    """User plus system CPU time of processes, from /proc/PID/stat."""
    total = 0
    for pid in pids:
        stat = Path(f"/proc/{pid}/stat").read_text()
        # The command name may hold spaces: the fields that matter follow its ')'.
        fields = stat[stat.rindex(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    """User plus system CPU time of this process's children that have been waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def fresh_database(target: Target, name: str) -> Database:
    """An empty database with picas's design documents (upstream's views included)."""
    db = Database(target.transport(), name)
    if db.exists():
        db.destroy()
    db.create()
    designdocs.push(db)
    return db


def token(i: int) -> dict:
    """A trivial token in upstream's schema, with a command that only records its run."""
    return {"_id": f"t{i:07d}", "type": "token", "lock": 0, "done": 0, "hostname": "",
            "scrub_count": 0, "input": {}, "exit_code": "", "output": {}, "error": [],
            "command": COMMAND}


def add_tokens(db: Database, n: int) -> None:
    for start in range(0, n, BULK):
        outcomes = db.bulk_docs([token(i) for i in range(start, min(n, start + BULK))])
        failed = [o for o in outcomes if "error" in o]
        if failed:
            raise errors.PicasError(f"could not add tokens to {db.name}: {failed[:3]}")


def states(db: Database) -> dict[str, int]:
    """Tokens per state, from the overview view everybody monitors with."""
    rows = db.view(designdocs.MONITOR, "overview_total", group=True)["rows"]
    return {row["key"]: row["value"] for row in rows}


def pilot_argv(implementation: str, upstream_python: Path) -> list[str]:
    if implementation == OURS_PILOT:
        return [str(OUR_PICAS), "pilot", "--json"]
    if implementation == OURS_ACTOR:
        return [str(OUR_PYTHON), str(HERE / "drivers" / "ours_actor.py")]
    return [str(upstream_python), str(HERE / "drivers" / "upstream_actor.py")]


def pilot_env(target: Target, database: str, side: Path, config: Path) -> dict[str, str]:
    """The environment of one pilot: connection, its own side file, nothing inherited
    that could change which picas is imported or which settings apply."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PICAS_") and k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update({"PICAS_URL": target.url, "PICAS_DATABASE": database,
                "PICAS_USERNAME": target.username, "PICAS_PASSWORD": target.password,
                # A config file that does not exist: defaults for everything else.
                "PICAS_CONFIG": str(config), "SIDE": str(side)})
    return env


def count_executions(sides: list[Path]) -> collections.Counter:
    runs: collections.Counter = collections.Counter()
    for side in sides:
        if side.exists():
            runs.update(line for line in side.read_text().split("\n") if line)
    return runs


def _stop(process: subprocess.Popen) -> None:
    """Stop a pilot and everything it started (its own process group)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(5)
            return
        except subprocess.TimeoutExpired:
            continue


def run_case(target: Target, implementation: str, pilots: int, n: int, rep: int,
             workdir: Path, upstream_python: Path, timeout: float) -> CaseResult:
    """Fill a fresh database with ``n`` tokens and drain it with ``pilots`` processes."""
    name = f"bench-{implementation.replace('_', '-')}-{pilots}p-r{rep}"
    case_dir = workdir / name
    case_dir.mkdir(parents=True, exist_ok=True)
    db = fresh_database(target, name)
    add_tokens(db, n)
    # Build the index of the view that actors claim from before the clock starts:
    # indexing the initial tokens is a one-off, not a cost of draining.
    db.view(designdocs.MONITOR, "todo", limit=1)
    result = CaseResult(implementation, pilots, rep, n)
    argv = pilot_argv(implementation, upstream_python)
    sides = [case_dir / f"side-{i}.txt" for i in range(pilots)]
    processes: list[subprocess.Popen] = []
    cpu_before = cpu_seconds(target.pids)
    pilot_cpu_before = children_cpu_seconds()
    started = time.perf_counter()
    try:
        for i in range(pilots):
            env = pilot_env(target, name, sides[i], case_dir / "no-config.yml")
            with open(case_dir / f"pilot-{i}.out", "wb") as out, \
                    open(case_dir / f"pilot-{i}.err", "wb") as err:
                processes.append(subprocess.Popen(
                    argv, env=env, cwd=case_dir, stdin=subprocess.DEVNULL, stdout=out,
                    stderr=err, start_new_session=True))
        deadline = started + timeout
        for process in processes:
            try:
                process.wait(max(0.0, deadline - time.perf_counter()))
            except subprocess.TimeoutExpired:
                result.timed_out = True
                break
        result.seconds = time.perf_counter() - started
        result.server_cpu_s = cpu_seconds(target.pids) - cpu_before
        result.pilot_cpu_s = children_cpu_seconds() - pilot_cpu_before
    finally:
        for process in processes:
            if process.poll() is None:
                _stop(process)
    for i, process in enumerate(processes):
        report = _report(case_dir, i)
        result.requests += int(report.get("requests", 0))
        result.conflicts += int(report.get("conflicts", 0))
        if process.returncode != 0 or report.get("failure") or not report:
            err = (case_dir / f"pilot-{i}.err").read_text(errors="replace").strip()
            why = report.get("failure") or (err.splitlines()[-1] if err else "no report")
            result.pilot_failures.append(f"pilot {i} exited {process.returncode}: {why}")
    runs = count_executions(sides)
    result.executions = sum(runs.values())
    result.duplicates = result.executions - len(runs)
    result.tokens_run_more_than_once = sum(1 for count in runs.values() if count > 1)
    result.never_run = n - len(runs)
    result.states = states(db)
    result.drained = result.states.get("done", 0) == n and sum(result.states.values()) == n
    done = result.states.get("done", 0)
    result.tokens_per_s = done / result.seconds if result.seconds else 0.0
    result.requests_per_token = result.requests / n
    result.server_cpu_s_per_token = result.server_cpu_s / n
    result.pilot_cpu_s_per_token = result.pilot_cpu_s / n
    db.destroy()
    return result


def _report(case_dir: Path, i: int) -> dict:
    """The JSON line a pilot printed last, or {} if it printed none."""
    lines = (case_dir / f"pilot-{i}.out").read_text(errors="replace").strip().splitlines()
    for line in reversed(lines):
        try:
            report = json.loads(line)
        except ValueError:
            continue
        if isinstance(report, dict):
            return report
    return {}


def bulk_write_rate(target: Target, rep: int, bulks: int = 10, size: int = BULK) -> float:
    """Documents per second the server accepts through ``_bulk_docs`` on a fresh database."""
    db = fresh_database(target, f"bench-bulk-r{rep}")
    batches = [[token(b * size + i) for i in range(size)] for b in range(bulks)]
    bodies = [json.dumps({"docs": batch}).encode() for batch in batches]
    transport = db.transport
    started = time.perf_counter()
    for body in bodies:
        transport.request("POST", [db.name, "_bulk_docs"], data=body,
                          headers={"Content-Type": "application/json"})
    seconds = time.perf_counter() - started
    db.destroy()
    return bulks * size / seconds
