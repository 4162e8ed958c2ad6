"""``picas pilot`` and ``picas recover``."""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import asdict
from pathlib import Path

import click

from .. import conflicts, dependencies, lease, pilot, results, slurm, staging
from ..state import Holder
from .common import App, pass_app, plural

#: ``picas pilot``'s exit code when it took its host for broken.
BLACK_HOLE_EXIT = 4


class BatchSize(click.ParamType):
    """A whole number of tokens, or ``auto`` (None)."""

    name = "N|auto"

    def convert(self, value: object, param: click.Parameter | None,
                ctx: click.Context | None) -> int | None:
        if value is None or value == "auto":
            return None
        try:
            size = int(value if isinstance(value, int) else str(value))
        except (TypeError, ValueError):
            size = 0
        if size < 1:
            self.fail(f"{value!r} is neither a whole number of at least 1 nor 'auto'",
                      param, ctx)
        return size


@click.command("pilot")
@click.option("--max-tasks", type=click.IntRange(min=1),
              help="Stop after starting this many tokens.")
@click.option("--max-time", type=click.FloatRange(min=0), metavar="SECONDS",
              help="Stop claiming after this long.")
@click.option("--max-token-time", type=click.FloatRange(min=0), metavar="SECONDS",
              help="Kill a token's command (its whole process tree) after this long; "
                   "the attempt counts as timed out.")
@click.option("--lease", type=click.FloatRange(min=1), metavar="SECONDS",
              help="How long a claim lasts without a heartbeat [default: config, 600]. "
                   "The pilot renews it every third of that while a token runs.")
@click.option("--batch", type=BatchSize(), default="auto", show_default=True, metavar="N|auto",
              help="Tokens to claim per request, or `auto`: one at first, then about "
                   f"{pilot.BATCH_SECONDS:g} seconds of work (up to {pilot.MAX_AUTO_BATCH}) as "
                   "tokens turn out short. Never more than a quarter of what is claimable "
                   "(next to other pilots, its own share of it), so that they get work too.")
@click.option("--endless", is_flag=True,
              help="When there is no work, wait and poll again (with backoff) instead of exiting.")
@click.option("--view", default=None,
              help="Claim from this view instead of the changes feed, e.g. todo_by_priority "
                   "for strict priority order.")
@click.option("--design-doc", default="Monitor", show_default=True,
              help="Design document of --view.")
@click.option("--tag", help="Claim only tokens with this tag.")
@click.option("--end-time", type=float, metavar="EPOCH",
              help="When the allocation ends; read from Slurm when running in a Slurm job.")
@click.option("--margin", type=click.FloatRange(min=0), default=60.0, show_default=True,
              metavar="SECONDS",
              help="Stop claiming when less than this is left before the end time.")
@click.option("--max-attempts", type=click.IntRange(min=1),
              help="Attempts for tokens that set no max_attempts [default: config, 3].")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              help="Where tokens get their fresh working folders [default: $TMPDIR/picas-work].")
@click.option("--spool", type=click.Path(file_okay=False, path_type=Path),
              help="Where results go when the server cannot be reached [default: WORKDIR/spool].")
@click.option("--log-cap", type=click.IntRange(min=1024), default=1 << 20, show_default=True,
              metavar="BYTES", help="Keep at most the last BYTES of stdout and of stderr.")
@click.option("--grace", type=click.FloatRange(min=0), default=5.0, show_default=True,
              metavar="SECONDS", help="Time between SIGTERM and SIGKILL when a command must stop.")
@click.option("--max-token-size", type=click.IntRange(min=1024),
              default=staging.DEFAULT_MAX_TOKEN_SIZE, show_default=True, metavar="BYTES",
              help="The most a token may hold, fields and attachments together: declared "
                   "outputs that would take it past this are left out, and the token says so.")
@click.option("--max-attachment-size", type=click.IntRange(min=1),
              default=staging.DEFAULT_MAX_ATTACHMENT_SIZE, show_default=True, metavar="BYTES",
              help="The largest output file to attach: the server's max_attachment_size.")
@click.option("--black-hole", type=click.IntRange(min=0), default=pilot.DEFAULT_BLACK_HOLE,
              show_default=True, metavar="K",
              help="Stop (exit code 4) after K failures in a row of different tokens that "
                   "did not fail on other hosts, while other hosts run tokens well: this host "
                   "is broken. Those failures then do not use up the tokens' retries. "
                   "0 turns this off.")
@click.option("--host", metavar="NAME",
              help="The host name this pilot records [default: the machine's].")
@click.option("--json", "as_json", is_flag=True, help="Print the pilot's report as JSON.")
@pass_app
def pilot_command(app: App, max_tasks: int | None, max_time: float | None,
                  max_token_time: float | None, lease: float | None, batch: int | None,
                  endless: bool, view: str | None, design_doc: str, tag: str | None,
                  end_time: float | None,
                  margin: float, max_attempts: int | None, workdir: Path | None,
                  spool: Path | None, log_cap: int, grace: float, max_token_size: int,
                  max_attachment_size: int, black_hole: int, host: str | None,
                  as_json: bool) -> None:
    """Run tokens until there are none left (or a limit is reached).

    Each token's `command` runs in a fresh folder, with the token's `env`:
    a string runs through the shell, a list runs directly. A token with a
    `function` instead runs that Python function in a child process, and
    its return value becomes the token's `output`. The token's attachments
    and `inputs` are put in the folder first; after a successful run the
    files matching its `outputs` are attached. stdout and stderr are
    attached to the token, and every attempt is recorded.

    A failed token goes back to todo until its max_attempts are used up.
    If this pilot is killed, its tokens come back to todo when their lease
    expires; on SIGTERM or Ctrl-C it stops the command and hands the token
    back at once. In a Slurm job it stops claiming before the walltime.

    \b
    Examples:
      picas pilot
      picas pilot --max-time 3600 --max-token-time 600
      picas pilot --endless --lease 120
    """
    settings = app.settings()
    db = settings.open_database()
    if end_time is None:
        end_time = slurm.allocation_end()
    options = pilot.PilotOptions(
        max_tasks=max_tasks, max_time=max_time, max_token_time=max_token_time,
        lease=lease or settings.lease, batch=batch, endless=endless, view=view,
        design_doc=design_doc, tag=tag, end_time=end_time, margin=margin,
        default_max_attempts=max_attempts or settings.max_attempts,
        log_cap=log_cap, grace=grace, spool=spool, black_hole=black_hole or None,
        max_token_size=max_token_size, max_attachment_size=max_attachment_size)
    if workdir:
        options = dataclasses.replace(options, workdir=workdir)
    started = time.monotonic()
    report = pilot.Pilot(db, options, Holder.here(hostname=host)).run()
    elapsed = time.monotonic() - started
    if report.black_hole:
        click.echo(f"error: stopped claiming: {report.black_hole}; handed back "
                   f"{plural(report.released, 'claimed token')}; check the node "
                   f"(--black-hole {black_hole})", err=True)
    if as_json:
        click.echo(json.dumps({**asdict(report), "seconds": round(elapsed, 3)}, sort_keys=True))
    else:
        _summarise(report, options, elapsed)
    if report.black_hole:
        click.get_current_context().exit(BLACK_HOLE_EXIT)


def _summarise(report: pilot.PilotReport, options: pilot.PilotOptions, elapsed: float) -> None:
    outcomes = ", ".join(f"{n} {name.replace('_', ' ')}"
                         for name, n in sorted(report.outcomes.items()))
    click.echo(f"pilot {report.pilot_id}: ran {plural(report.started, 'token')}"
               f"{f' ({outcomes})' if outcomes else ''} in {elapsed:.1f} s; "
               f"stopped: {report.stopped_because}")
    if report.spooled:
        click.echo(f"{plural(report.spooled, 'result')} could not be written and wait in "
                   f"{options.spool or options.workdir / 'spool'}: push them with "
                   "`picas recover --spool DIR`", err=True)


@click.command("recover")
@click.option("--spool", type=click.Path(file_okay=False, path_type=Path),
              help="Also push results that pilots spooled to this folder.")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@pass_app
def recover(app: App, spool: Path | None, as_json: bool) -> None:
    """Put tokens whose pilot vanished back in todo, and resolve what a
    cluster's split writes left behind, now.

    Pilots do this by themselves; this command does it on demand. A token
    is taken over only when its lease has expired, and the lost attempt is
    recorded (after too many, the token goes to error). Tokens locked by
    upstream PiCaS pilots have no lease: reset those with `picas tokens reset`.

    On a CouchDB cluster, racing writes can leave a token with conflicting
    branches, or a lock that the cluster never confirmed ("in doubt"). This
    keeps one branch of each (a finished attempt before a running lock, a
    running lock before anything else; attempts of every branch are kept)
    and puts locks in doubt back in todo, since they never ran.

    It also looks at the tokens that wait for others: one whose parents are
    all done goes to todo (a pilot that died after a parent's result could
    not release it), and parents in error or cancelled are named in its
    blocked_by.

    \b
    Examples:
      picas recover
      picas recover --spool /scratch/picas-work/spool
    """
    settings = app.settings()
    db = settings.open_database()
    pushed = results.push_spool(db, spool, settings.max_attempts) if spool else 0
    resolved, waiting = conflicts.resolve_all(db)
    recovered = 0
    while True:
        count = lease.recover_expired(db)
        recovered += count
        if count == 0:
            break
    deps = dependencies.recheck(db)
    if as_json:
        click.echo(json.dumps({"recovered": recovered, "pushed": pushed, "resolved": resolved,
                               "waiting": waiting, "released": deps.released,
                               "blocked": deps.blocked}))
        return
    click.echo(f"recovered {plural(recovered, 'token')} whose lease had expired or was in doubt")
    if resolved or waiting:
        click.echo(f"resolved {plural(resolved, 'token')} with conflicting branches"
                   + (f"; {waiting} must wait: two running locks, one of them unconfirmed "
                      "(try again once a lease runs out)" if waiting else ""))
    if spool:
        click.echo(f"pushed {plural(pushed, 'spooled result')} from {spool}")
    if deps.waiting:
        click.echo(f"released {plural(deps.released, 'waiting token')} whose parents are all "
                   f"done; {deps.blocked} blocked by a parent in error or cancelled")


COMMANDS = [pilot_command, recover]
