"""``picas pilots submit`` and ``picas autopilot``: pilots as Slurm jobs."""
from __future__ import annotations

import functools
import json
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import click

from .. import slurm
from ..database import Database
from ..errors import ConfigError
from .common import App, pass_app, plural

DEFAULT_MARGIN = 60


def _job_options(command: Callable) -> Callable:
    """The sbatch and pilot options that `pilots submit` and `autopilot` share."""
    options = [
        click.option("--time", "time_limit", metavar="HH:MM:SS",
                     help="Time limit of each pilot job [default: the partition's]."),
        click.option("--partition", help="Slurm partition [default: the cluster's]."),
        click.option("--cpus-per-task", type=click.IntRange(min=1), help="CPUs per pilot."),
        click.option("--mem", help="Memory per pilot, as sbatch reads it (4G, 500M)."),
        click.option("--job-name", help="Name of the pilot jobs [default: picas-DATABASE]; "
                                        "the autopilot counts queued pilots by this name."),
        click.option("--margin", type=click.IntRange(min=0), default=DEFAULT_MARGIN,
                     show_default=True, metavar="SECONDS",
                     help="Stop claiming this long before the time limit. Slurm then sends "
                          "the pilot SIGTERM: a token still running goes back to todo, "
                          "without using up its retries."),
        click.option("--max-token-time", type=click.FloatRange(min=0), metavar="SECONDS",
                     help="Passed to `picas pilot`: kill a token's command after this long."),
        click.option("--lease", type=click.FloatRange(min=1), metavar="SECONDS",
                     help="Passed to `picas pilot`: how long a claim lasts without a heartbeat."),
        click.argument("sbatch_args", nargs=-1, type=click.UNPROCESSED,
                       metavar="[-- SBATCH_ARGS]..."),
    ]
    return functools.reduce(lambda cmd, option: option(cmd), reversed(options), command)


def _pilot_job(app: App, name: str, count: int, time_limit: str | None,
               partition: str | None, cpus_per_task: int | None, mem: str | None,
               margin: int, max_token_time: float | None, lease: float | None,
               pilot_args: tuple[str, ...] = ()) -> slurm.PilotJob:
    if time_limit is not None:
        try:
            seconds = slurm.time_limit_seconds(time_limit)
        except ConfigError as exc:
            raise click.BadParameter(str(exc), param_hint="--time") from None
        if seconds is not None and seconds <= margin:
            raise click.BadParameter(
                f"the pilots would stop claiming at once: a time limit of {seconds} s leaves "
                f"nothing after the margin of {margin} s (lower it with --margin)",
                param_hint="--time")
    args = ["--margin", str(margin)]
    if max_token_time is not None:
        args += ["--max-token-time", f"{max_token_time:g}"]
    if lease is not None:
        args += ["--lease", f"{lease:g}"]
    return slurm.PilotJob(name=name, connection=slurm.connection(app.settings(), name),
                          count=count, time=time_limit, partition=partition,
                          cpus_per_task=cpus_per_task, mem=mem,
                          signal_before=margin or None, pilot_args=(*args, *pilot_args))


def _submit(job: slurm.PilotJob, sbatch_args: tuple[str, ...]) -> slurm.Submitted:
    submitted = slurm.submit(job, sbatch_args)
    if job.connection.env_file is not None:
        click.echo(f"the pilots read the password from {job.connection.env_file} "
                   "(readable by you only)", err=True)
    return submitted


@click.group("pilots")
def pilots() -> None:
    """Pilots as Slurm jobs."""


@pilots.command("submit")
@click.option("-n", "--pilots", "count", type=click.IntRange(min=1), default=1,
              show_default=True, help="How many pilots; more than one go in as a job array.")
@_job_options
@click.option("--dry-run", is_flag=True, help="Print the job script instead of submitting it.")
@click.option("--json", "as_json", is_flag=True, help="Print the job ids as JSON.")
@pass_app
def submit(app: App, count: int, time_limit: str | None, partition: str | None,
           cpus_per_task: int | None, mem: str | None, job_name: str | None, margin: int,
           max_token_time: float | None, lease: float | None, sbatch_args: tuple[str, ...],
           dry_run: bool, as_json: bool) -> None:
    """Submit pilots (-n of them) to Slurm with sbatch.

    Each pilot runs `picas pilot` with this Python, on this database, and
    records its Slurm job id on every attempt. The password never goes
    into the job script or a command line: the job reads your config file
    when the password is in it, else a file only you can read, written
    next to it (env/JOBNAME.env). Arguments after `--` go to sbatch.

    \b
    Examples:
      picas pilots submit -n 4 --time 2:00:00
      picas pilots submit -n 10 --partition short --mem 4G -- --output=logs/%x-%A_%a.out
      picas pilots submit --dry-run
    """
    name = job_name or slurm.job_name("picas", app.settings().database_name)
    job = _pilot_job(app, name, count, time_limit, partition, cpus_per_task, mem, margin,
                     max_token_time, lease)
    if dry_run:
        click.echo(job.script(), nl=False)
        command = shlex.join(["sbatch", "--parsable", *sbatch_args])
        click.echo(f"# not submitted; would run: {command}", err=True)
        return
    submitted = _submit(job, sbatch_args)
    if as_json:
        click.echo(json.dumps({"job_id": submitted.job_id, "job_name": name,
                               "pilots": submitted.pilots}))
    elif count == 1:
        click.echo(f"submitted 1 pilot: job {submitted.job_id} ({name})")
    else:
        click.echo(f"submitted {count} pilots: job array {submitted.job_id} "
                   f"({submitted.pilots[0]} to {submitted.pilots[-1]}, {name})")


@dataclass(frozen=True)
class _Kind:
    """One kind of pilot the autopilot keeps sized: all tokens, one tag, or one design doc."""

    name: str
    tag: str | None = None
    design_doc: str | None = None

    def pilot_args(self) -> tuple[str, ...]:
        if self.tag is not None:
            return ("--tag", self.tag)
        if self.design_doc is not None:
            return ("--design-doc", self.design_doc, "--view", "todo")
        return ()


@click.command("autopilot")
@click.option("--once", is_flag=True, help="Decide and submit once, then exit.")
@click.option("--interval", type=click.FloatRange(min=1), default=60.0, show_default=True,
              metavar="SECONDS", help="Time between rounds.")
@click.option("--max-pilots", type=click.IntRange(min=1), default=10, show_default=True,
              help="Never more pilots than this queued or running (per tag or design doc).")
@click.option("--tokens-per-pilot", type=click.IntRange(min=1), default=100, show_default=True,
              help="One pilot for every this many todo tokens.")
@click.option("--tag", "tags", multiple=True,
              help="Size pilots for this tag's tokens only, named JOBNAME-TAG (repeatable).")
@click.option("--design-doc", "design_docs", multiple=True,
              help="Size pilots for this design document's `todo` view, named "
                   "JOBNAME-DESIGN (repeatable), as in upstream's SingleCore/MultiCore example.")
@_job_options
@click.option("--json", "as_json", is_flag=True,
              help="Print each round's decisions as a JSON line.")
@pass_app
def autopilot(app: App, once: bool, interval: float, max_pilots: int, tokens_per_pilot: int,
              tags: tuple[str, ...], design_docs: tuple[str, ...], time_limit: str | None,
              partition: str | None, cpus_per_task: int | None, mem: str | None,
              job_name: str | None, margin: int, max_token_time: float | None,
              lease: float | None, sbatch_args: tuple[str, ...], as_json: bool) -> None:
    """Keep as many pilots queued or running as the todo backlog needs.

    Each round reads how many tokens are todo and counts your pilots that
    Slurm has queued or running under the job name (`squeue`), then submits
    the difference up to min(MAX_PILOTS, ceil(todo / TOKENS_PER_PILOT)).
    It never cancels pilots and never submits more than that, and it stops
    once nothing is todo. With --tag or --design-doc each kind of token
    gets pilots of its own, sized and counted separately, so that each can
    ask for its own resources (run one autopilot per kind for that).

    \b
    Examples:
      picas autopilot --max-pilots 20 --tokens-per-pilot 50 --time 4:00:00
      picas autopilot --once --design-doc MultiCore --cpus-per-task 4
    """
    if tags and design_docs:
        raise click.UsageError("give --tag or --design-doc, not both")
    base = job_name or slurm.job_name("picas", app.settings().database_name)
    kinds = ([_Kind(slurm.job_name(base, tag), tag=tag) for tag in tags]
             + [_Kind(slurm.job_name(base, design), design_doc=design) for design in design_docs]
             or [_Kind(base)])
    jobs = {kind: _pilot_job(app, kind.name, 1, time_limit, partition, cpus_per_task, mem,
                             margin, max_token_time, lease, kind.pilot_args())
            for kind in kinds}
    db = app.open_database()
    try:
        while True:
            decisions = [_decide(db, kind, jobs[kind], sbatch_args, tokens_per_pilot, max_pilots)
                         for kind in kinds]
            finished = all(d["todo"] == 0 for d in decisions)
            _report(decisions, finished, as_json)
            if once or finished:
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        click.echo("autopilot stopped; the pilots it submitted keep running", err=True)


def _decide(db: Database, kind: _Kind, job: slurm.PilotJob, sbatch_args: tuple[str, ...],
            tokens_per_pilot: int, max_pilots: int) -> dict[str, Any]:
    backlog = slurm.backlog(db, tag=kind.tag, design_doc=kind.design_doc)
    active = slurm.active_pilots(kind.name)
    count = slurm.pilots_to_submit(backlog.todo, active, tokens_per_pilot, max_pilots)
    submitted = _submit(replace(job, count=count), sbatch_args) if count else None
    return {"job_name": kind.name, "tag": kind.tag, "design_doc": kind.design_doc,
            "todo": backlog.todo, "locked": backlog.locked, "active": active,
            "submitted": count, "job_id": submitted.job_id if submitted else None,
            "pilots": submitted.pilots if submitted else []}


def _report(decisions: list[dict[str, Any]], finished: bool, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"time": round(time.time(), 3), "finished": finished,
                               "kinds": decisions}, sort_keys=True))
        return
    for d in decisions:
        action = (f"submitted {plural(d['submitted'], 'pilot')} (job {d['job_id']})"
                  if d["submitted"] else "submitted none")
        click.echo(f"{d['job_name']}: {d['todo']} todo, {d['active']} pilots queued or "
                   f"running: {action}")
    if finished:
        click.echo("nothing left to do: autopilot done")


COMMANDS = [pilots, autopilot]
