"""Pilots as Slurm jobs: submit them, count them, and read their walltime.

Everything goes through Slurm's own commands (``sbatch``, ``squeue``), so
picas needs no Slurm library and works with whatever the cluster runs.

A pilot job never carries a secret in its script or on a command line,
where other users of the cluster can read them (``ps``, ``scontrol show
job``, the spooled script): the password stays in a file only its owner
can read, either the user's config file or an environment file written
for the job (see :func:`connection`).
"""
from __future__ import annotations

import math
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import config, designdocs, overview
from .config import Settings
from .database import Database
from .errors import ConfigError, PicasError

#: What a Slurm command may take before picas gives up on it.
COMMAND_TIMEOUT = 60
#: Environment variables that may hold a secret: never passed on to sbatch.
SECRET_ENVIRONMENT = ("PICAS_PASSWORD", "PICAS_URL")


class SlurmError(PicasError):
    """A Slurm command is missing or failed; the message quotes what it said."""


def allocation_end(environ: Mapping[str, str] | None = None) -> float | None:
    """Epoch seconds when this Slurm job's time limit ends; None outside Slurm or unlimited.

    Slurm sets no variable with the end time, so ask ``squeue``.
    """
    env = os.environ if environ is None else environ
    job_id = env.get("SLURM_JOB_ID")
    if not job_id or shutil.which("squeue") is None:
        return None
    try:
        answer = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%e %l"],
                                env={**os.environ, "SLURM_TIME_FORMAT": "%s"},
                                capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    fields = answer.stdout.split()
    if answer.returncode != 0 or len(fields) != 2 or fields[1] == "UNLIMITED":
        return None
    try:
        return float(fields[0])
    except ValueError:
        return None


_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def time_limit_seconds(text: str) -> int | None:
    """Seconds in a Slurm ``--time`` value; None for ``UNLIMITED``/``INFINITE``.

    Slurm reads ``M``, ``M:S``, ``H:M:S``, ``D-H``, ``D-H:M`` and ``D-H:M:S``.
    """
    if text.strip().upper() in ("UNLIMITED", "INFINITE", "-1"):
        return None
    match = _TIME.match(text.strip())
    if not match:
        raise ConfigError(f"'{text}' is not a Slurm time limit: use minutes, MM:SS, "
                          "HH:MM:SS or DAYS-HH:MM:SS")
    days, first, second, third = match.groups()
    if days is not None:
        hours, minutes, seconds = int(first), int(second or 0), int(third or 0)
        return ((int(days) * 24 + hours) * 60 + minutes) * 60 + seconds
    if third is not None:
        return (int(first) * 60 + int(second)) * 60 + int(third)
    if second is not None:
        return int(first) * 60 + int(second)
    return int(first) * 60


def job_name(*parts: str) -> str:
    """``parts`` joined by ``-``, safe as a Slurm job name: how the autopilot finds its pilots.

    The default is ``job_name("picas", database)``; a tag or design
    document is appended, so that each kind of pilot is counted apart.
    """
    return re.sub(r"[^A-Za-z0-9_.-]", "_", "-".join(parts))


# -- the connection a job gets --------------------------------------------------

@dataclass(frozen=True)
class Connection:
    """How a pilot job finds its database, split by what may be seen."""

    #: non-secret settings, written into the script as exports
    exports: dict[str, str]
    #: a file only its owner can read, sourced by the script before the pilot starts
    env_file: Path | None = None
    #: what :func:`write_env_file` puts into ``env_file``
    secrets: dict[str, str] = field(default_factory=dict, repr=False)


def connection(settings: Settings, job: str) -> Connection:
    """The connection for pilot jobs named ``job``, without a secret in sight.

    When the password is the one in the user's config file, the job reads
    that file (``PICAS_CONFIG``). Otherwise (it came from ``PICAS_PASSWORD``
    or the URL) it goes into ``<config dir>/env/<job>.env``, mode 0600.
    """
    exports = {"PICAS_URL": settings.url, "PICAS_DATABASE": settings.database_name}
    if settings.username:
        exports["PICAS_USERNAME"] = settings.username
    if not settings.password:
        return Connection(exports)
    path = settings.config_path or config.default_path()
    if _password_in_file(path, settings):
        exports.update(PICAS_CONFIG=str(path.resolve()), PICAS_PROFILE=settings.profile)
        return Connection(exports)
    env_file = path.parent.resolve() / "env" / f"{job}.env"
    return Connection(exports, env_file, {"PICAS_PASSWORD": settings.password})


def _password_in_file(path: Path, settings: Settings) -> bool:
    if not path.is_file():
        return False
    try:
        from_file = config.resolve(path, settings.profile, env={})
    except ConfigError:
        return False
    return from_file.password == settings.password


def write_env_file(conn: Connection) -> None:
    """Write the connection's secrets where only their owner can read them."""
    if conn.env_file is None:
        return
    text = "".join(f"{name}={shlex.quote(value)}\n" for name, value in conn.secrets.items())
    folder = conn.env_file.parent
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    tmp = folder / f".{conn.env_file.name}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, conn.env_file)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# -- the job script ---------------------------------------------------------------

def pilot_command(pilot_args: Sequence[str] = ()) -> list[str]:
    """``picas pilot`` run by this very Python, so the job gets this installation of picas."""
    return [os.path.abspath(sys.executable), "-m", "picas", "pilot", *pilot_args]


@dataclass(frozen=True)
class PilotJob:
    """One ``sbatch`` submission of ``count`` pilots: a job array when more than one."""

    name: str
    connection: Connection
    count: int = 1
    time: str | None = None
    partition: str | None = None
    cpus_per_task: int | None = None
    mem: str | None = None
    #: seconds before the time limit Slurm sends SIGTERM to the pilot
    signal_before: int | None = None
    pilot_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ConfigError("submit at least one pilot")

    def directives(self) -> list[str]:
        options = [f"--job-name={self.name}"]
        if self.count > 1:
            options.append(f"--array=0-{self.count - 1}")
        for flag, value in (("time", self.time), ("partition", self.partition),
                            ("cpus-per-task", self.cpus_per_task), ("mem", self.mem)):
            if value is not None:
                options.append(f"--{flag}={value}")
        if self.signal_before:
            # B: only the batch shell, which is the pilot itself (exec below):
            # the pilot then stops its token's command and hands the token back.
            options.append(f"--signal=B:TERM@{self.signal_before}")
        return options

    def script(self) -> str:
        exports = " ".join(f"{name}={shlex.quote(value)}"
                           for name, value in self.connection.exports.items())
        lines = ["#!/bin/bash"]
        lines += [f"#SBATCH {option}" for option in self.directives()]
        lines += ["# Written by `picas pilots submit`: each job (or array task) runs one",
                  "# picas pilot, which hands its token back on scancel or before walltime.",
                  "set -eu",
                  f"export {exports}"]
        if self.connection.env_file is not None:
            lines.append(f"set -a; . {shlex.quote(str(self.connection.env_file))}; set +a")
        lines.append("exec " + shlex.join(pilot_command(self.pilot_args)))
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Submitted:
    job_id: str
    count: int

    @property
    def pilots(self) -> list[str]:
        """Each pilot's job id, as Slurm (and the token's attempts) spell it."""
        if self.count == 1:
            return [self.job_id]
        return [f"{self.job_id}_{task}" for task in range(self.count)]


def _run(args: list[str], stdin: str | None = None,
         env: Mapping[str, str] | None = None) -> str:
    if shutil.which(args[0]) is None:
        raise SlurmError(f"`{args[0]}` is not on PATH: run this on a Slurm login node "
                         "(or load the Slurm module)")
    try:
        answer = subprocess.run(args, input=stdin, env=env, capture_output=True, text=True,
                                timeout=COMMAND_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise SlurmError(f"`{args[0]}` did not answer within {COMMAND_TIMEOUT} s: "
                         "is the Slurm controller up?") from None
    if answer.returncode != 0:
        said = " ".join(answer.stderr.split()) or f"exit code {answer.returncode}"
        raise SlurmError(f"`{shlex.join(args)}` failed: {said}")
    return answer.stdout


def submit(job: PilotJob, sbatch_args: Sequence[str] = ()) -> Submitted:
    """Submit ``job`` (its script on stdin, so no file is left behind).

    sbatch hands the submitting environment to the job: variables that may
    hold a secret are left out of it, the job gets them from its files.
    """
    write_env_file(job.connection)
    env = {k: v for k, v in os.environ.items() if k not in SECRET_ENVIRONMENT}
    out = _run(["sbatch", "--parsable", *sbatch_args], stdin=job.script(), env=env)
    job_id = out.strip().split(";")[0]
    if not job_id:
        raise SlurmError(f"sbatch printed no job id (it said {out.strip()!r})")
    return Submitted(job_id, job.count)


def active_pilots(name: str) -> int:
    """This user's pilots named ``name`` that are queued or running, array tasks one by one."""
    out = _run(["squeue", "--me", "-h", "-r", "-n", name, "-t", "PENDING,RUNNING", "-o", "%i"])
    return len(out.split())


# -- sizing to the backlog --------------------------------------------------------

def pilots_to_submit(todo: int, active: int, tokens_per_pilot: int, max_pilots: int) -> int:
    """How many more pilots ``todo`` tokens need, given ``active`` ones queued or running."""
    wanted = min(max_pilots, math.ceil(todo / tokens_per_pilot))
    return max(0, wanted - active)


@dataclass(frozen=True)
class Backlog:
    """Tokens waiting for one kind of pilot; ``locked`` is None where unknown."""

    todo: int
    locked: int | None


def backlog(db: Database, tag: str | None = None, design_doc: str | None = None) -> Backlog:
    """Work for one kind of pilot: all tokens, one tag's, or a design document's ``todo``."""
    if tag is not None:
        rows = db.view(designdocs.MONITOR, "by_tag", group=True, startkey=[tag],
                       endkey=[tag, {}])["rows"]
        found = {row["key"][1]: int(row["value"]) for row in rows}
        return Backlog(found.get("todo", 0), found.get("locked", 0))
    if design_doc is not None:
        return Backlog(int(db.view(design_doc, "todo", limit=0)["total_rows"]), None)
    counts = overview.counts(db)
    return Backlog(counts["todo"], counts["locked"])
