"""`picas tokens ...`, `picas logs` and `picas export`: creating and managing tokens."""
from __future__ import annotations

import itertools
import json
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from .. import (
    adding,
    dependencies,
    designdocs,
    errors,
    indexing,
    injector,
    operations,
    shaping,
    shutdown,
    sources,
    state,
    storage,
)
from ..database import Database
from .common import App, CliError, confirm, duration, echo_json, pass_app, plural, shorten, table

STATE_VIEWS = operations.STATE_VIEWS
PROGRESS_FROM = 1000


@click.group("tokens")
def tokens_group() -> None:
    """Add, list, inspect and change tokens.

    \b
    Examples:
      picas tokens add jobs.jsonl
      picas tokens list --view error
      picas tokens reset --view error --yes
    """


# -- add -------------------------------------------------------------------------

def _add_summary(report: adding.AddReport, db: Database) -> str:
    text = f"added {plural(report.added, 'token')} to database '{db.name}'"
    notes = []
    if report.existing:
        notes.append(f"{report.existing} already there")
    if report.duplicates:
        notes.append(f"{plural(report.duplicates, 'duplicate')} in the input")
    if report.added == 0 and report.existing and not report.failed:
        return f"added nothing: all {plural(report.existing, 'token')} were already in " \
               f"database '{db.name}'"
    return text + (f" ({', '.join(notes)})" if notes else "")


def _fail_if_failed(report: adding.AddReport, db: Database) -> None:
    reasons = {reason for _, reason in report.failed}
    if len(reasons) == 1 and len(report.failed) > 1:
        # One cause (a user who may not write, say): say it once.
        raise CliError(f"{plural(len(report.failed), 'token')} could not be added to database "
                       f"'{db.name}': {reasons.pop()}")
    if report.failed:
        shown = "; ".join(f"{i}: {r}" for i, r in report.failed[:5])
        more = f" (and {len(report.failed) - 5} more)" if len(report.failed) > 5 else ""
        raise CliError(f"{plural(len(report.failed), 'token')} could not be added: {shown}{more}")


class _Signals:
    """Route SIGINT/SIGTERM to picas.shutdown for a loop, then put them back."""

    def __enter__(self) -> None:
        self.previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        shutdown.reset()
        shutdown.install()

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


@tokens_group.command("add")
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--grid", "grids", multiple=True, metavar="NAME=VALUES",
              help="A parameter and its values, NAME=v1,v2 or NAME=1..100 (repeatable: "
                   "one token per combination).")
@click.option("--from-dir", type=click.Path(file_okay=False, path_type=Path),
              help="One token per file in this directory (input: path, name, stem).")
@click.option("--glob", "pattern", metavar="PATTERN",
              help="Which files of --from-dir [default: *]; ** recurses.")
@click.option("--watch", is_flag=True,
              help="With --from-dir: keep adding tokens for new files until Ctrl-C.")
@click.option("--interval", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
              help="With --watch: seconds between scans.")
@click.option("--max-time", type=click.FloatRange(min=0), metavar="SECONDS",
              help="With --watch: stop after this long.")
@click.option("--command", "template", metavar="TEMPLATE",
              help="Command for every token; {name} is replaced by the token's field "
                   "(shell-quoted).")
@click.option("--priority", type=float, help="Priority (higher runs first).")
@click.option("--max-attempts", type=click.IntRange(min=1), help="Tries before a token "
              "goes to error.")
@click.option("--tag", "tag_names", multiple=True, metavar="TAG", help="Tag (repeatable).")
@click.option("--after", "after", multiple=True, metavar="ID",
              help="Every token waits until this token is done (repeatable).")
@click.option("--no-command", is_flag=True,
              help="Allow tokens without a command, for your own pilot script (RunActor) "
                   "that reads their input.")
@click.option("--batch", type=click.IntRange(1, 10000), default=adding.DEFAULT_BATCH,
              show_default=True, help="Tokens per bulk request.")
@click.option("--dry-run", is_flag=True, help="Check the input and show the tokens; add nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_app
def add(app: App, files: tuple[Path, ...], grids: tuple[str, ...], from_dir: Path | None,
        pattern: str | None, watch: bool, interval: float, max_time: float | None,
        template: str | None, priority: float | None, max_attempts: int | None,
        tag_names: tuple[str, ...], after: tuple[str, ...], no_command: bool, batch: int,
        dry_run: bool, as_json: bool) -> None:
    """Add tokens from files, a parameter grid, or the files in a directory.

    FILE can be JSON (an array), JSONL, YAML (a list) or CSV (with a header
    row). Keys other than command (or function, with args and kwargs),
    env, priority, tags, max_attempts, expected_runtime, files, inputs,
    outputs, stdin, input, _id and after go into the token's input. Every
    token is checked before any is written, so a bad line adds nothing. Ids
    come from the content, so adding the same input twice adds nothing new.
    A token with "after": [ids] waits until those tokens are done; unknown
    ids and cycles are refused.

    \b
    Examples:
      picas tokens add jobs.jsonl
      picas tokens add --grid alpha=0.1,0.2 --grid seed=1..100 \\
          --command 'python sim.py --alpha {alpha} --seed {seed}'
      picas tokens add --from-dir data/ --glob '*.fits' --command 'reduce {path}'
      picas tokens add --from-dir incoming/ --watch --command 'process {path}'
      picas tokens add merge.jsonl --after split
    """
    _check_add_options(files, grids, from_dir, pattern, watch, dry_run, no_command, template)
    how = shaping.Shape(command=template, priority=priority, max_attempts=max_attempts,
                       tags=tuple(tag_names), require_command=not no_command,
                       after=after)
    if watch:
        assert from_dir is not None  # checked above: --watch needs --from-dir
        _watch(app, files, from_dir, pattern or "*", how, interval, max_time, batch, as_json)
        return
    def records() -> Iterator[sources.Record]:
        return _read_records(files, grids, from_dir, pattern)

    edges: dict[str, list[str]] = {}
    try:
        total = shaping.check(records(), how, edges)
    except errors.InvalidToken as exc:
        raise errors.InvalidToken(f"{exc}\nnothing was added") from None
    if dry_run:
        _show_dry_run(shaping.stream(records(), how), total, as_json)
        return
    db = app.open_database()
    if not total:
        click.echo("nothing to add: the input holds no tokens", err=True)
        return
    plan = None
    if edges:
        plan = dependencies.plan(db, edges,
                                 lambda: (t["_id"] for t in shaping.stream(records(), how)))
    report = _add_with_progress(db, shaping.stream(records(), how), total, batch, plan)
    if report.added:
        indexing.start(db)
    if as_json:
        echo_json({**report.as_dict(), "database": db.name})
    else:
        click.echo(_add_summary(report, db))
    _fail_if_stopped(report, total)
    _fail_if_failed(report, db)


def _fail_if_stopped(report: adding.AddReport, total: int) -> None:
    """A failed request stops the add: say what was written, and how to finish."""
    cause = report.stopped_by
    if cause is None:
        return
    raise CliError(f"stopped after {report.added + report.existing:,} of {total:,} tokens "
                   f"were added or found: {cause}\nrun the same command again to add the "
                   "rest (tokens already there are recognised by their ids)")


def _check_add_options(files: tuple[Path, ...], grids: tuple[str, ...],
                       from_dir: Path | None, pattern: str | None, watch: bool,
                       dry_run: bool, no_command: bool, template: str | None) -> None:
    """Usage errors for options that do not go together."""
    if not (files or grids or from_dir):
        raise click.UsageError("nothing to add: give FILE..., --grid or --from-dir")
    if grids and (files or from_dir):
        raise click.UsageError("--grid makes tokens on its own: do not combine it with "
                               "FILE or --from-dir")
    if (watch or pattern) and not from_dir:
        raise click.UsageError("--watch and --glob need --from-dir")
    if watch and dry_run:
        raise click.UsageError("--watch cannot be a --dry-run")
    if no_command and template:
        raise click.UsageError("--no-command and --command contradict each other")


def _read_records(files: tuple[Path, ...], grids: tuple[str, ...], from_dir: Path | None,
                  pattern: str | None) -> Iterator[sources.Record]:
    """The input's records, read as they are used (the input is read twice: once
    to check every token, once to add them)."""
    if grids:
        yield from sources.grid(grids)
        return
    for path in files:
        yield from sources.stream_file(path)
    if from_dir:
        yield from sources.scan_dir(from_dir, pattern or "*")


def _add_with_progress(db: Database, new: Iterator[dict], total: int, batch: int,
                       plan: dependencies.Plan | None) -> adding.AddReport:
    if total < PROGRESS_FROM:
        return adding.add(db, new, batch, plan=plan)
    started = time.monotonic()
    done = [0]

    def rate(_: object) -> str:
        elapsed = time.monotonic() - started
        return f"{done[0] / elapsed:,.0f} tokens/s" if elapsed > 0 and done[0] else ""

    def step(count: int) -> None:
        done[0] += count
        bar.update(count)

    with click.progressbar(length=total, label=f"adding {total:,} tokens", file=sys.stderr,
                           item_show_func=rate, show_pos=True) as bar:
        return adding.add(db, new, batch, progress=step, plan=plan)


def _show_dry_run(new: Iterator[dict], total: int, as_json: bool) -> None:
    if as_json:
        click.echo("[", nl=False)
        for n, token in enumerate(new):
            click.echo(("," if n else "") + json.dumps(token, sort_keys=True), nl=False)
        click.echo("]")
        return
    click.echo(f"would add {plural(total, 'token')} (dry run: nothing was written)")
    for token in itertools.islice(new, 5):
        click.echo(f"  {token['_id']}  {shorten(_command_text(token), 70)}")
    if total > 5:
        click.echo(f"  ... and {total - 5} more")


def _watch(app: App, files: tuple[Path, ...], directory: Path, pattern: str,
           how: shaping.Shape, interval: float, max_time: float | None, batch: int,
           as_json: bool) -> None:
    db = app.open_database()
    if files:
        new = shaping.build([r for path in files for r in sources.read_file(path)], how)
        first = adding.add(db, new, batch)
        _fail_if_stopped(first, len(new))
        _fail_if_failed(first, db)

    def report(step: adding.AddReport) -> None:
        if not as_json:
            click.echo(_add_summary(step, db))

    if not as_json:
        click.echo(f"watching {directory} for {pattern} (Ctrl-C stops)", err=True)
    with _Signals():
        total = injector.watch(db, directory, pattern, how, interval=interval,
                             max_time=max_time, batch=batch, on_added=report)
    if as_json:
        echo_json({**total.as_dict(), "database": db.name})
    else:
        click.echo(f"stopped watching; {_add_summary(total, db)}")
    _fail_if_failed(total, db)


# -- reading ---------------------------------------------------------------------

def _command_text(token: dict) -> str:
    command = token.get("command")
    if command is None and isinstance(token.get("function"), str):
        return f"{token['function']}(...)"
    if isinstance(command, list):
        return " ".join(command)
    return "" if command is None else str(command)


def _iter_tokens(db: Database, view: str | None, tag: str | None,
                 limit: int | None = None) -> Iterator[dict]:
    """Token documents of a state view and/or tag, or all of them."""
    if tag is not None:
        key = {"key": [tag, view]} if view else {"startkey": [tag], "endkey": [tag, {}]}
        rows = db.iter_view(designdocs.MONITOR, "by_tag", reduce=False, include_docs=True,
                            limit=limit, **key)
    elif view is not None:
        rows = db.iter_view(designdocs.MONITOR, view, include_docs=True, limit=limit)
    else:
        page = min(limit, 1000) if limit else 1000
        rows = (row for row in db.iter_all_docs(page=page, include_docs=True)
                if row.get("doc") and state.is_token(row["doc"]))
    for count, row in enumerate(rows):
        if limit is not None and count >= limit:
            return
        yield row["doc"]


def _state_text(doc: dict) -> str:
    """The state, and for a waiting token what holds it up."""
    current = state.classify(doc)
    if current is not state.TokenState.WAITING:
        return current.value if current else "-"
    blocked = doc.get("blocked_by") or []
    if blocked:
        more = f" +{len(blocked) - 1}" if len(blocked) > 1 else ""
        return f"blocked by {blocked[0]}{more}"
    return f"waiting for {len(doc.get('waiting_for') or [])}"


def _row(doc: dict) -> list[Any]:
    return [doc["_id"], _state_text(doc), doc.get("priority", ""),
            len(doc.get("attempts", [])) or "", doc.get("hostname") or "",
            ",".join(doc.get("tags", [])), shorten(_command_text(doc), 50)]


@tokens_group.command("list")
@click.option("--view", type=click.Choice(STATE_VIEWS), help="Only tokens in this state.")
@click.option("--tag", help="Only tokens with this tag.")
@click.option("--limit", type=click.IntRange(min=0), default=50, show_default=True,
              help="At most this many tokens (0: all).")
@click.option("--json", "as_json", is_flag=True, help="Print the tokens as a JSON array.")
@pass_app
def list_tokens(app: App, view: str | None, tag: str | None, limit: int,
                as_json: bool) -> None:
    """List tokens, optionally by state and tag.

    \b
    Examples:
      picas tokens list --view error
      picas tokens list --tag batch1 --view todo --limit 10
      picas tokens list --view done --json --limit 0 | jq '.[]._id'
    """
    db = app.open_database()
    docs = list(_iter_tokens(db, view, tag, None if limit == 0 else limit + 1))
    more = bool(limit) and len(docs) > limit
    docs = docs[:limit] if limit else docs
    if as_json:
        echo_json(docs)
    elif docs:
        click.echo(table(["ID", "STATE", "PRIORITY", "TRIES", "HOST", "TAGS", "COMMAND"],
                         [_row(doc) for doc in docs]))
    else:
        click.echo("no tokens" + (f" in view {view}" if view else "")
                   + (f" with tag {tag}" if tag else ""))
    if more:
        click.echo(f"(showing the first {limit}; use --limit, or `picas export`)", err=True)


def _format_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _field_lines(doc: dict) -> list[str]:
    """The fields that say what a token runs, waits for and left out."""
    lines = []
    for key in ("command", "function", "args", "kwargs", "input", "inputs", "stdin",
                "outputs", "env", "priority", "tags", "max_attempts", "expected_runtime",
                "exit_code", "hostname", "scrub_count", "output",
                "after", "waiting_for", "blocked_by", "dependents", "gate"):
        if doc.get(key) not in (None, "", {}, []):
            lines.append(f"{key:<12} {_format_value(doc[key])}")
    if doc.get("blocked_by"):
        lines.append("blocked      a token it waits for is in error or cancelled: reset it "
                     "(`picas tokens reset ID`) to let this one go on once it is done")
    for item in doc.get("outputs_skipped") or []:
        lines.append(f"left out     {item.get('name')} ({item.get('size', '?')} bytes): "
                     f"{item.get('reason')}")
    return lines


def _show(doc: dict) -> str:
    current = state.classify(doc)
    lines = [f"id           {doc['_id']}",
             f"state        {current.value if current else 'not a token'}"]
    lines.extend(_field_lines(doc))
    lease = doc.get("lease")
    if lease:
        expires = lease.get("expires")
        left = duration(expires - time.time()) if isinstance(expires, (int, float)) else "-"
        lines.append(f"lease        held by pilot {lease.get('pilot')} on {lease.get('host')}"
                     f" (attempt {lease.get('attempt')}), expires in {left}")
    if doc.get("cancel_requested"):
        lines.append("cancel       requested: the pilot stops it at its next heartbeat")
    attempts = doc.get("attempts", [])
    if attempts:
        lines.append("attempts")
        for a in attempts:
            late = " (late)" if a.get("late") else ""
            logs = ", ".join(a.get("logs", [])) or "no logs"
            lines.append(f"  #{a.get('n')} {a.get('outcome')}{late}, "
                         f"{_exit_code(doc, a, current, a is attempts[-1])}, "
                         f"{duration(a.get('duration'))} on {a.get('host')}; {logs}")
    for entry in doc.get("error", []) or []:
        lines.append(f"error        {_format_value(entry)}")
    attachments = doc.get("_attachments", {})
    if attachments:
        lines.append("attachments  " + ", ".join(
            f"{name} ({info.get('length', '?')} bytes)"
            for name, info in sorted(attachments.items())))
    return "\n".join(lines)


def _exit_code(doc: dict, attempt: dict, current: state.TokenState | None, last: bool) -> str:
    """An attempt's exit code; for the attempt that finished the token, the code the
    token records when the attempt itself has none (a command that never ran)."""
    code = attempt.get("exit_code")
    if code is None and last and not attempt.get("late") and current in (
            state.TokenState.DONE, state.TokenState.ERROR):
        code = doc.get("exit_code")
    return "no exit code" if code in (None, "") else f"exit code {code}"


@tokens_group.command("show")
@click.argument("token_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print the whole document as JSON.")
@pass_app
def show(app: App, token_id: str, as_json: bool) -> None:
    """Show one token: its state, command, lease and attempts.

    \b
    Examples:
      picas tokens show t-3f2a9c0d1e4b5a6f7e8d
      picas tokens show t-3f2a9c0d1e4b5a6f7e8d --json | jq .attempts
    """
    doc = app.open_database().get(token_id)
    if as_json:
        echo_json(doc)
    else:
        click.echo(_show(doc))


@click.command("logs")
@click.argument("token_id", metavar="ID")
@click.option("--attempt", type=click.IntRange(min=1), metavar="N",
              help="Which attempt [default: the latest].")
@click.option("--stderr", "stream", flag_value="stderr", help="The standard error log.")
@click.option("--stdout", "stream", flag_value="stdout", default=True,
              help="The standard output log [default].")
@click.option("--name", help="Any attachment by name (for logs attached by upstream scripts).")
@pass_app
def logs(app: App, token_id: str, attempt: int | None, stream: str, name: str | None) -> None:
    """Print a token's logs (stdout by default) of one attempt.

    \b
    Examples:
      picas logs t-3f2a9c0d1e4b5a6f7e8d
      picas logs t-3f2a9c0d1e4b5a6f7e8d --attempt 1 --stderr
      picas logs t-3f2a9c0d1e4b5a6f7e8d --name logs_t1.err
    """
    db = app.open_database()
    doc = db.get(token_id)
    if name is None:
        name = _log_name(doc, attempt, stream)
    elif name not in doc.get("_attachments", {}):
        raise errors.NotFound(f"token '{token_id}' has no attachment '{name}'"
                              + _attachment_hint(doc))
    out = sys.stdout.buffer
    out.write(db.get_attachment(token_id, name))
    out.flush()


def _attachment_hint(doc: dict) -> str:
    names = sorted(doc.get("_attachments", {}))
    return f"; it has: {', '.join(names)}" if names else "; it has no attachments"


def _log_name(doc: dict, attempt: int | None, stream: str) -> str:
    records = [a for a in doc.get("attempts", []) if isinstance(a.get("n"), int)]
    if not records:
        raise errors.NotFound(f"token '{doc['_id']}' has no recorded attempts"
                              + _attachment_hint(doc) + " (pick one with --name)")
    if attempt is None:
        record = max(records, key=lambda a: a["n"])
    else:
        matching = [a for a in records if a["n"] == attempt]
        if not matching:
            numbers = ", ".join(str(n) for n in sorted({a["n"] for a in records}))
            raise errors.NotFound(f"token '{doc['_id']}' has no attempt {attempt} "
                                  f"(its attempts: {numbers})")
        record = matching[-1]
    name = f"attempt-{record['n']}.{stream}"
    if name not in record.get("logs", []) or name not in doc.get("_attachments", {}):
        raise errors.NotFound(f"attempt {record['n']} of token '{doc['_id']}' kept no "
                              f"{stream} log" + _attachment_hint(doc))
    return name


# -- changing ----------------------------------------------------------------------

def _operation(name: str, done: str, asks: bool, doc: str,
               describe: Callable[[operations.Report], str] | None = None
               ) -> click.Command:
    """A command applying one :mod:`picas.operations` transition to selected tokens."""

    @click.command(name, help=doc)
    @click.argument("ids", nargs=-1, metavar="[IDS]...")
    @click.option("--view", "views", multiple=True, type=click.Choice(STATE_VIEWS),
                  help="Tokens in this state (repeatable).")
    @click.option("--tag", help="Tokens with this tag (with --view: and in that state).")
    @click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
    @click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
    @pass_app
    def command(app: App, ids: tuple[str, ...], views: tuple[str, ...], tag: str | None,
                yes: bool, as_json: bool) -> None:
        if not (ids or views or tag):
            raise click.UsageError("choose tokens: give IDS, --view or --tag")
        db = app.open_database()
        selected = operations.select(db, ids, views, tag)
        if not selected:
            if as_json:
                echo_json(operations.Report().as_dict())
            else:
                click.echo(f"no tokens selected: nothing to {name}")
            return
        if asks:
            confirm(f"{name} {plural(len(selected), 'token')} in database '{db.name}'?", yes)
        report = operations.apply(db, selected, operations.TRANSITIONS[name])
        if as_json:
            echo_json(report.as_dict())
        else:
            text = describe(report) if describe else f"{done} {plural(report.changed, 'token')}"
            if report.skipped:
                text += f" ({report.skipped} skipped: not in a state to {name})"
            click.echo(text)
        if report.conflicts or report.failed:
            problems = [f"{i}: {r}" for i, r in report.failed[:5]]
            if report.conflicts:
                problems.insert(0, f"{plural(report.conflicts, 'token')} kept changing "
                                   "while we wrote them: run the command again")
            raise CliError("; ".join(problems))

    return command


def _cancel_summary(report: operations.Report) -> str:
    """Running tokens are only asked to stop: say so apart."""
    text = f"cancelled {plural(report.states.get(state.TokenState.CANCELLED.value, 0), 'token')}"
    running = report.states.get(state.TokenState.LOCKED.value, 0)
    if running:
        text += (f"; {plural(running, 'running token')} will be stopped by "
                 f"{'its pilot' if running == 1 else 'their pilots'} at the next heartbeat")
    return text


reset = _operation("reset", "reset", True, """Put tokens back to todo (locked, error, done,
cancelled or held ones), counting a scrub.

Attempts stay on the token as history; the retry budget starts afresh.
A pilot still running a reset token records its result as a late attempt.

\b
Examples:
  picas tokens reset --view error
  picas tokens reset --view locked --view error --tag batch1 --yes
  picas tokens reset t-3f2a9c0d1e4b5a6f7e8d
""")
delete = _operation("delete", "deleted", True, """Delete tokens (in any state).

\b
Examples:
  picas tokens delete --view done --yes
  picas tokens delete --tag test-run
  picas tokens delete t-3f2a9c0d1e4b5a6f7e8d t-0a1b2c3d4e5f6a7b8c9d
""")
hold = _operation("hold", "held", False, """Keep todo tokens from being claimed until
released.

\b
Examples:
  picas tokens hold --tag big-memory
  picas tokens hold t-3f2a9c0d1e4b5a6f7e8d
""")
release = _operation("release", "released", False, """Make held tokens todo again.

\b
Examples:
  picas tokens release --view held
  picas tokens release --tag big-memory
""")
cancel = _operation("cancel", "cancelled", True, """Cancel tokens: todo and held ones at once,
running ones at their pilot's next heartbeat (the task is killed).

\b
Examples:
  picas tokens cancel --tag wrong-input
  picas tokens cancel --view todo --view locked --yes
""", _cancel_summary)

for _command in (reset, delete, hold, release, cancel):
    tokens_group.add_command(_command)


# -- export ------------------------------------------------------------------------

@click.command("export")
@click.option("--view", "views", multiple=True, type=click.Choice(STATE_VIEWS),
              help="Only tokens in this state (repeatable) [default: all tokens].")
@click.option("--tag", help="Only tokens with this tag.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write to this file [default: standard output].")
@pass_app
def export(app: App, views: tuple[str, ...], tag: str | None, output: Path | None) -> None:
    """Write tokens as JSON Lines, one document per line.

    \b
    Examples:
      picas export -o all-tokens.jsonl
      picas export --view error | jq -r '[._id, .exit_code] | @tsv'
    """
    db = app.open_database()
    if views or tag:
        ids = operations.select(db, (), views, tag)
        docs: Iterator[dict] = (row["doc"] for start in range(0, len(ids), 500)
                                for row in db.all_docs(keys=ids[start:start + 500],
                                                       include_docs=True)["rows"]
                                if row.get("doc"))
    else:
        docs = _iter_tokens(db, None, None)
    count = 0
    with click.open_file(str(output) if output else "-", "w", encoding="utf-8",
                         atomic=bool(output)) as out:
        for doc in docs:
            out.write(json.dumps(doc, sort_keys=True) + "\n")
            count += 1
    if output:
        click.echo(f"exported {plural(count, 'token')} to {output}", err=True)


@tokens_group.command("purge")
@click.option("--view", "views", multiple=True, type=click.Choice(["done", "error", "cancelled"]),
              default=("done",), show_default=True,
              help="Finished tokens in this state (repeatable).")
@click.option("--tag", help="Only tokens with this tag.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="JSON Lines file to write them to (appended to when it exists).")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@pass_app
def purge(app: App, views: tuple[str, ...], tag: str | None, output: Path, yes: bool,
          as_json: bool) -> None:
    """Move finished tokens out of the database into a file.

    Each token, attachments (logs) included, is written to the file and the
    file synced to disk before the token is removed; a token that changes
    meanwhile stays. Apache CouchDB purges them (needs a database admin);
    other servers get deletions. Keeps a pool of millions small: see
    "Millions of tokens" in the README.

    \b
    Examples:
      picas tokens purge --view done -o done-2026-12.jsonl
      picas tokens purge --view done --view error --tag run1 -o run1.jsonl --yes
    """
    db = app.open_database()
    ids = operations.select(db, (), views, tag)
    if not ids:
        click.echo("no tokens selected: nothing to purge")
        return
    confirm(f"move {plural(len(ids), 'token')} from database '{db.name}' to {output}?", yes)
    with output.open("a", encoding="utf-8") as out, \
            click.progressbar(length=len(ids), label="purging", file=sys.stderr) as bar:
        report = storage.purge(db, ids, out, progress=bar.update)
    if as_json:
        echo_json({"written": report.written, "removed": report.removed,
                   "changed": report.changed, "output": str(output)})
    else:
        kept = f"; {len(report.changed)} changed meanwhile and stayed" if report.changed else ""
        click.echo(f"wrote {plural(report.written, 'token')} to {output} and removed "
                   f"{report.removed} from database '{db.name}'{kept}")


COMMANDS = [tokens_group, logs, export]
